"""The package works from a wheel install, with no file from the checkout.

Builds the wheel, installs it (without dependencies) into a fresh virtual
environment that borrows only the third-party packages of the test
environment, and runs ``cryod demo`` at high speed from an empty directory:
the defaults (console profile, protocols, migrations, export schema) must
come from package data.

The wheel is built from a copy of the checkout without its build outputs:
setuptools reuses ``build/lib`` and never removes a file from it, so a module
renamed since the last build (a migration: two Alembic heads) would ship in a
wheel built in place.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(
        ROOT,
        src,
        symlinks=True,  # cryod/daemon -> ../daemon, as in the repository
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache",
            ".hypothesis",
        ),
    )  # fmt: skip
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(tmp / "dist"),
            str(src),
        ],
        check=True,
        timeout=300,
    )
    (wheel,) = (tmp / "dist").glob("cryod-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_paths(vars={"base": str(venv), "platbase": str(venv)})["purelib"])
    # borrow third-party packages only: a plain path entry does not run the
    # editable-install hook of the checkout, so `cryod` must come from the wheel
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(venv / "bin" / "python"),
            "install",
            "--no-deps",
            "-q",
            str(wheel),
        ],
        check=True,
        timeout=300,
    )
    return venv


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/bin:/bin"
    return env


def test_installed_from_the_wheel_not_the_checkout(wheel_venv: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            str(wheel_venv / "bin" / "python"),
            "-c",
            "import cryod, cryod.drivers.profile as p; print(cryod.__file__); "
            "print(p.builtin_profile_path())",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=_env(),
    ).stdout.splitlines()
    assert all(str(wheel_venv) in line for line in out), out
    for cmd in ("cryod", "cryoctl", "cryosim", "cryohub"):
        r = subprocess.run(
            [str(wheel_venv / "bin" / cmd), "--version"],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=_env(),
        )
        assert r.returncode == 0
        assert "0." in r.stdout


def test_study_profiles_ship_in_the_wheel(wheel_venv: Path, tmp_path: Path) -> None:
    out = subprocess.run(
        [
            str(wheel_venv / "bin" / "python"),
            "-c",
            "from cryod.research.profile import builtin_study_names, load_study_profile as load; "
            "print(*(load(n).stamp().profile_id for n in builtin_study_names()))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env=_env(),
    ).stdout.split()
    assert out == ["MN-CRYO-EXAMPLE", "SN-CRYO-EXAMPLE"]


def test_demo_from_the_wheel(wheel_venv: Path, tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    report = tmp_path / "report.html"
    r = subprocess.run(
        [
            str(wheel_venv / "bin" / "cryod"),
            "demo",
            "--speed",
            "40",
            "--quiet",
            "--db",
            str(db),
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
        timeout=180,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert str(db) in r.stdout
    assert str(report) in r.stdout
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    (n_proc,) = con.execute(
        "SELECT count(*) FROM procedures WHERE closed_at IS NOT NULL"
    ).fetchone()
    assert n_proc == 1
    outcomes = [row[0] for row in con.execute("SELECT outcome FROM cycles ORDER BY id")]
    assert outcomes[0] == "completed"
    (samples,) = con.execute("SELECT count(*) FROM sample_probes").fetchone()  # tip readings
    assert samples > 100
    html = report.read_text()
    assert "IPG747" in html
    assert "MN-CRYO-EXAMPLE" in html  # the demo runs under the example Morton's study profile
    assert "Simulated time ×40: this procedure ran on a simulated console" in html


def test_the_collector_migrates_from_the_wheel(wheel_venv: Path, tmp_path: Path) -> None:
    """cryohub's Alembic scripts ship as package data: a fresh SQLite database is
    created at head from the wheel alone."""
    (tmp_path / "anchors").mkdir()
    cfg = tmp_path / "cryohub.toml"
    cfg.write_text(
        f'[database]\nurl = "sqlite:///{tmp_path / "hub.db"}"\n'
        '[anchors]\nfile = "anchors/hub.jsonl"\njournal_socket = "/nonexistent/log"\n'
    )
    r = subprocess.run(
        [str(wheel_venv / "bin" / "cryohub"), "migrate", "--config", str(cfg)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "database created at" in r.stdout
    con = sqlite3.connect(tmp_path / "hub.db")
    assert con.execute("SELECT kind FROM audit").fetchall() == [("database_created",)]


def test_the_web_apps_templates_and_static_files_ship_in_the_wheel(
    wheel_venv: Path, tmp_path: Path
) -> None:
    """cryohub web renders its login page from the wheel alone (templates, htmx, css, js)."""
    code = (
        "import datetime as dt, pathlib, sys\n"
        "from starlette.testclient import TestClient\n"
        "from sqlalchemy import create_engine\n"
        "import cryod.hub.web.app as web\n"
        "assert str(pathlib.Path(web.__file__)).startswith(sys.argv[1]), web.__file__\n"
        "app = web.create_app(web.WebSettings(engine=create_engine('sqlite://'), node='n',"
        " anchor_file=pathlib.Path('a')))\n"
        "c = TestClient(app)\n"
        "print(c.get('/login').status_code)\n"
        "for f in ('htmx.min.js', 'app.css', 'board.js'):\n"
        "    print(f, c.get('/static/' + f).status_code)\n"
    )
    out = subprocess.run(
        [str(wheel_venv / "bin" / "python"), "-W", "ignore", "-c", code, str(wheel_venv)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=_env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["200", "htmx.min.js", "200", "app.css", "200", "board.js", "200"]
