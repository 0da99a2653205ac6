"""The layering is enforced, not described: the lint rules fire on what they forbid.

``make lint`` runs ruff and import-linter on the tree as it is; these tests show
each rule would catch a violation (a rule that cannot fire checks nothing).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# every package installed under cryod/ (the symlinks), so a new one is covered too
PACKAGES = tuple(
    sorted(p.name for p in (REPO / "cryod").iterdir() if p.is_symlink() and p.name != "defaults")
)
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _ruff(source: str, filename: str) -> subprocess.CompletedProcess[str]:
    """ruff with the project's configuration on ``source`` as if it were ``filename``."""
    args = ["check", "--no-cache", "--select", "TID251", "--stdin-filename", filename, "-"]
    return subprocess.run(
        [sys.executable, "-m", "ruff", *args],
        input=source,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


@pytest.mark.parametrize("name", PACKAGES)
@pytest.mark.parametrize("form", ["import {n}.x", "from {n} import x", "from {n}.x import y"])
@pytest.mark.parametrize("where", ["tests/_probe.py", "tools_probe.py"])
def test_ruff_refuses_a_bare_package_import(name: str, form: str, where: str) -> None:
    """``import daemon.engine`` under pytest loads a second copy of the module."""
    done = _ruff(form.format(n=name) + "\n", where)
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"TID251 `{name}` is banned" in done.stdout
    assert f"import cryod.{name}" in done.stdout


def test_ruff_accepts_the_cryod_namespace() -> None:
    source = "".join(f"from cryod.{n} import x as x_{n}\nimport cryod.{n}.y\n" for n in PACKAGES)
    done = _ruff(source, "tests/_probe.py")
    assert done.returncode == 0, done.stdout + done.stderr


#: contract name -> (a module of the tree, an import it must not make)
CONTRACTS = {
    "the daemon never imports the simulator": (
        "daemon/clock.py",
        "from cryod.simulators import console",
    ),
    "the drivers import nothing of the daemon": (
        "drivers/backoff.py",
        "from cryod.daemon import alarms",
    ),
    "research data imports nothing of the daemon, drivers or simulator": (
        "research/problems.py",
        "from cryod.drivers import base",
    ),
    "no bare top-level imports inside the package (a second copy of each module)": (
        "daemon/recorder.py",
        "import daemon.alarms",
    ),
    "the supervisor is independent of the engine": (
        "daemon/supervisor.py",
        "from cryod.daemon import engine",
    ),
    "the pure core does no I/O and knows no asyncio": (
        "daemon/coordinator.py",
        "import asyncio",
    ),
    "the collector imports nothing of the daemon, drivers or simulator": (
        "hub/ingest.py",
        "from cryod.daemon import alarms",
    ),
    "the edge daemon, drivers and simulator never import the study collector": (
        "daemon/clock.py",
        "from cryod.hub import ingest",
    ),
    "the collector's ingest core does no I/O": (
        "hub/ingest.py",
        "import sqlalchemy",
    ),
    "the web app's pure parts do no I/O": (
        "hub/web/board.py",
        "import sqlalchemy",
    ),
    "the web app's route modules sit between create_app and the page plumbing": (
        "hub/web/pages.py",
        "from cryod.hub.web import followup_pages",
    ),
    "the rest of the collector never imports the web app": (
        "hub/admin.py",
        "from cryod.hub.web import app",
    ),
    "the shared helpers import nothing of cryod (every layer may import them)": (
        "common/validation.py",
        "from cryod.daemon import alarms",
    ),
    "the record channel's core (cursor, message) does no I/O and knows no asyncio": (
        "daemon/record_channel/cursor.py",
        "import asyncio",
    ),
    "the collector's MQTT client is behind one module (cryod.hub.subscriber)": (
        "hub/web/telemetry.py",  # the web app's board watches telemetry through hub.subscriber
        "import aiomqtt",
    ),
}


def test_the_import_contracts_are_declared() -> None:
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]
    names = {c["name"] for c in declared["contracts"]}
    assert set(CONTRACTS) <= names


def _copy_tree(dest: Path) -> None:
    """The package as ``make lint`` sees it: the top-level folders and the cryod/ symlinks."""
    for n in (*PACKAGES, "config"):
        shutil.copytree(REPO / n, dest / n, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "cryod").mkdir()
    shutil.copy(REPO / "cryod" / "__init__.py", dest / "cryod" / "__init__.py")
    for n in PACKAGES:
        (dest / "cryod" / n).symlink_to(Path("..") / n)
    (dest / "cryod" / "defaults").symlink_to(Path("..") / "config")
    shutil.copy(REPO / "pyproject.toml", dest / "pyproject.toml")


def _lint_imports(cwd: Path) -> str:
    done = subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], capture_output=True, text=True, cwd=cwd, timeout=120
    )
    return done.stdout + done.stderr


def test_each_import_contract_breaks_on_a_forbidden_import(tmp_path: Path) -> None:
    _copy_tree(tmp_path)
    clean = _lint_imports(tmp_path)
    for name in CONTRACTS:
        assert f"{name} KEPT" in clean, clean
    for path, line in CONTRACTS.values():
        with (tmp_path / path).open("a") as fh:
            fh.write(f"\n{line}  # noqa: E402, F401\n")
    broken = _lint_imports(tmp_path)
    for name, (path, _) in CONTRACTS.items():
        assert f"{name} BROKEN" in broken, broken
        module = "cryod." + path.removesuffix(".py").replace("/", ".")
        assert module in broken, broken
