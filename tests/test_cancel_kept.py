"""A cancel is never lost (issue 16): no ``asyncio.wait_for`` in the packages.

On Python 3.11 ``asyncio.wait_for`` returns the awaited result when the waiting
task is cancelled in the same loop pass as the result arrives, and the cancel is
gone: ``cryoctl watch`` needed a second Ctrl-C, a control request could keep a
connection handler alive through shutdown. ``asyncio.timeout`` keeps it.
"""

from __future__ import annotations

import ast
import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from cryod.daemon import engine as E
from cryod.daemon.config import ConsoleConfig
from cryod.daemon.console_service import ConsoleService
from cryod.daemon.limits import ConsoleEnvelope
from cryod.drivers.profile import load_profile
from tests.timing import until

REPO = Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.name for p in (REPO / "cryod").iterdir() if p.is_symlink())
PROFILE = REPO / "config" / "consoles" / "cryosim-8.toml"


def wait_for_calls(source: str, filename: str) -> list[str]:
    """``file:line`` of each ``asyncio.wait_for`` (or a bare imported ``wait_for``) call."""
    tree = ast.parse(source, filename)
    imported = any(
        isinstance(n, ast.ImportFrom)
        and n.module == "asyncio"
        and any(a.name == "wait_for" for a in n.names)
        for n in ast.walk(tree)
    )
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        fn = node.func
        attr = isinstance(fn, ast.Attribute) and fn.attr == "wait_for"
        attr = attr and isinstance(fn.value, ast.Name) and fn.value.id == "asyncio"
        bare = isinstance(fn, ast.Name) and fn.id == "wait_for"
        if attr or (bare and imported):
            found.append(f"{filename}:{node.lineno}")
    return found


def test_the_check_finds_a_wait_for() -> None:
    assert wait_for_calls(
        "import asyncio\nasync def f(c):\n    await asyncio.wait_for(c, 1)\n", "x"
    )
    assert wait_for_calls(
        "from asyncio import wait_for\nasync def f(c):\n    await wait_for(c, 1)\n", "x"
    )
    assert not wait_for_calls("async def f(c):\n    await wait_for(c, 1)\n", "x")  # someone else's
    assert not wait_for_calls(
        "import asyncio\nasync def f(c):\n    async with asyncio.timeout(1):\n        await c\n",
        "x",
    )


def test_no_package_uses_asyncio_wait_for() -> None:
    found = []
    for name in PACKAGES:
        for path in sorted((REPO / "cryod" / name).resolve().rglob("*.py")):
            found += wait_for_calls(path.read_text(encoding="utf-8"), str(path.relative_to(REPO)))
    assert found == [], "use asyncio.timeout: on 3.11 wait_for can drop a cancel"


def _service() -> ConsoleService:
    cfg = ConsoleConfig(
        id="c1", driver="modbus-tcp", profile=str(PROFILE), simulated=True, options={}
    )
    envelope = ConsoleEnvelope.from_profile(load_profile(str(PROFILE)))
    # nothing here runs the poll loop, the driver or the store: only the operator inbox
    return ConsoleService(cfg, None, envelope, writer=None, plog=None)  # type: ignore[arg-type]


async def test_a_cancel_landing_with_the_answer_reaches_the_operator_call() -> None:
    """The control connection's handler is cancelled (the daemon stops) in the pass the
    poll loop answers: the handler ends, it does not go on with the answer."""
    svc = _service()
    call = asyncio.create_task(svc.submit(E.AdHocFreeze(1, 10.0), timeout_s=30.0))
    await until(lambda: not svc._inbox.empty(), "the call in the poll loop's inbox")
    request: Any = svc._inbox.get_nowait()
    request.future.set_result({"state": "freezing"})
    call.cancel()  # the same pass
    with pytest.raises(asyncio.CancelledError):
        await call


async def test_an_operator_call_still_times_out() -> None:
    svc = _service()
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await svc.submit(E.AdHocFreeze(1, 10.0), timeout_s=0.05)
    assert time.monotonic() - started < 30.0
    request: Any = svc._inbox.get_nowait()
    assert request.future.cancelled()  # the poll loop will not answer a caller gone
