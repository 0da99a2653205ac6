"""The leak check itself must be able to fail."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]


def test_leak_check_catches_a_leaked_task_and_socket(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    pytester.makeconftest("from tests.conftest import no_leaks  # noqa: F401\n")
    pytester.makepyfile(
        """
        import asyncio, socket
        KEEP = []
        async def test_leaks_task():
            KEEP.append(asyncio.get_running_loop().create_task(asyncio.sleep(60)))
        def test_leaks_socket():
            KEEP.append(socket.socket())
        def test_clean():
            pass
        """
    )
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "-o",
        "asyncio_mode=auto",
        "-o",
        "asyncio_default_fixture_loop_scope=function",
    )
    # the leaky tests pass their body and then error in the leak check's teardown
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(["*tasks left running*", "*sockets or terminals left open*"])


async def test_a_clean_async_test_passes() -> None:
    await asyncio.sleep(0)
