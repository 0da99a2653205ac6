"""A database file that cannot be used: one line naming the file and the problem,
a documented exit status, never a traceback.

``cryoctl procedures|show|export|verify|report|redact --db FILE`` exit 7 and
``cryod run`` exits 3 (docs/cli.md) on a missing, empty, plain-text, corrupt or
foreign (another application's SQLite) file, or a cryod database at another
schema revision. The check is ``daemon/store/db.py: check_database``; a
corrupt page it does not read is reported when a command reads it.
"""

from __future__ import annotations

import random
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from cryod.daemon import cli, ctl
from cryod.daemon.cli import EXIT_DATABASE
from cryod.daemon.cli import main as cryod_main
from cryod.daemon.ctl import EXIT_BAD_FILE
from cryod.daemon.ctl import main as ctl_main
from cryod.daemon.store import migrate
from cryod.daemon.store.db import SQLITE_HEADER
from cryod.daemon.store.schema_version import HEAD_REVISION

from .rig import REPO, run_cli
from .test_bad_config import base_config

pytestmark = pytest.mark.timeout(120)

PAGE = 4096


def _cryod_db(path: Path, revision: str = "head") -> Path:
    """A real cryod database at ``revision``, as one self-contained file."""
    migrate.upgrade(path, revision)
    con = sqlite3.connect(path)
    try:
        con.execute("PRAGMA journal_mode=DELETE")
        assert con.execute("PRAGMA page_size").fetchone()[0] == PAGE
    finally:
        con.close()
    return path


def _garbage(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def _header_then_garbage(tmp: Path) -> Path:
    """The SQLite header, then garbage pages (the schema page included)."""
    good = _cryod_db(tmp / "good-for-garbage.db").read_bytes()
    path = tmp / "garbage-pages.db"
    path.write_bytes(good[:100] + _garbage(len(good) - 100, seed=1))
    return path


def _corrupt_tables(tmp: Path) -> Path:
    """Schema and schema revision intact, the pages of the cryod tables garbage:
    the start-up check passes, reading the tables does not."""
    db = _cryod_db(tmp / "corrupt-tables.db")
    con = sqlite3.connect(db)
    try:
        pages = [
            p
            for (p,) in con.execute(
                "SELECT rootpage FROM sqlite_master WHERE type = 'table' "
                "AND name IN ('procedures', 'cycles', 'audit', 'alarms')"
            )
        ]
    finally:
        con.close()
    data = bytearray(db.read_bytes())
    for p in pages:
        data[(p - 1) * PAGE : p * PAGE] = _garbage(PAGE, seed=p)
    db.write_bytes(bytes(data))
    return db


def _foreign(tmp: Path) -> Path:
    path = tmp / "foreign.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE patients (name TEXT)")
    con.execute("INSERT INTO patients VALUES ('someone')")
    con.commit()
    con.close()
    return path


def _write(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        path = tmp / name
        path.write_bytes(content)
        return path

    return make


def _revision(revision: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        db = _cryod_db(tmp / f"rev-{revision}.db", "0001" if revision == "0099" else revision)
        con = sqlite3.connect(db)
        con.execute("UPDATE alembic_version SET version_num = ?", (revision,))
        con.commit()
        con.close()
        return db

    return make


# (id, make the file, the problem after "FILE: ")
CASES: list[tuple[str, Callable[[Path], Path], str]] = [
    ("missing", lambda t: t / "missing.db", "no such file"),
    ("empty", _write("empty.db", b""), "empty file, not a cryod database"),
    ("plain-text", _write("notes.db", b"procedure notes, not a database\n" * 50),
     "not an SQLite database (no SQLite header)"),
    ("header-then-garbage", _header_then_garbage,
     "corrupt SQLite database (database disk image is malformed)"),
    ("corrupt-tables", _corrupt_tables,
     "corrupt SQLite database (database disk image is malformed)"),
    ("foreign", _foreign, "an SQLite database, but not a cryod database (no cryod tables)"),
    ("older-revision", _revision("0002"),
     f"cryod database at schema revision '0002', older than this cryoctl reads "
     f"('{HEAD_REVISION}'): upgrade a copy first (python -m cryod.daemon.store.migrate COPY)"),
    ("unknown-revision", _revision("0099"),
     f"cryod database at schema revision '0099', unknown to this cryoctl "
     f"(it reads '{HEAD_REVISION}'): written by a newer cryod?"),
]  # fmt: skip

COMMANDS = [
    ["procedures"],
    ["show", "1"],
    ["export"],
    ["export", "1", "--format", "csv"],
    ["verify"],
    ["report", "1", "--out", "REPORT"],
    ["redact", "--procedure", "1", "--by", "dpo", "--reason", "consent withdrawn"],
]


def test_the_corruptions_are_what_they_claim(tmp_path: Path) -> None:
    """Positive controls: the header case keeps SQLite's header; the corrupt-tables
    case still has its schema and revision readable, and SQLite finds it corrupt."""
    garbage = _header_then_garbage(tmp_path)
    assert garbage.read_bytes().startswith(SQLITE_HEADER)
    db = _corrupt_tables(tmp_path)
    con = sqlite3.connect(db)
    try:
        assert con.execute("SELECT version_num FROM alembic_version").fetchone() == (HEAD_REVISION,)
        with pytest.raises(sqlite3.DatabaseError, match="malformed"):
            con.execute("SELECT * FROM procedures").fetchall()
    finally:
        con.close()
    good = _cryod_db(tmp_path / "good.db")
    assert ctl_main(["procedures", "--db", str(good)]) == 0


@pytest.mark.parametrize(("case", "make", "problem"), CASES, ids=[c[0] for c in CASES])
def test_offline_cryoctl_names_the_file_and_the_problem(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    make: Callable[[Path], Path],
    problem: str,
) -> None:
    db = make(tmp_path)
    for command in COMMANDS:
        argv = [a.replace("REPORT", str(tmp_path / "r.html")) for a in command]
        # an exception escaping main() would be the traceback a user sees
        rc = ctl_main([*argv, "--db", str(db)])
        out, err = capsys.readouterr()
        assert (rc, err, out) == (EXIT_BAD_FILE, f"cryoctl: {db}: {problem}\n", ""), command
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("case", ["plain-text", "corrupt-tables"])
def test_cryoctl_prints_no_traceback(tmp_path: Path, case: str) -> None:
    """The same through the installed entry point, as a user runs it."""
    _, make, problem = next(c for c in CASES if c[0] == case)
    db = make(tmp_path)
    r = run_cli("daemon.ctl", "export", "--db", str(db), timeout=60)
    assert (r.returncode, r.stderr, r.stdout) == (EXIT_BAD_FILE, f"cryoctl: {db}: {problem}\n", "")


def test_verify_log_that_does_not_exist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = _cryod_db(tmp_path / "cryod.db")
    log = tmp_path / "no-such.log"
    rc = ctl_main(["verify", "--db", str(db), "--log", str(log)])
    out, err = capsys.readouterr()
    assert (rc, err, out) == (EXIT_BAD_FILE, f"cryoctl: --log {log}: no such file\n", "")


def test_export_out_into_a_missing_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = _cryod_db(tmp_path / "cryod.db")
    out_path = tmp_path / "nowhere" / "export.json"
    rc = ctl_main(["export", "--db", str(db), "--out", str(out_path)])
    out, err = capsys.readouterr()
    assert (rc, err, out) == (
        EXIT_BAD_FILE,
        f"cryoctl: {out_path}: cannot write the export (No such file or directory)\n",
        "",
    )


def _exit_constants(module: object) -> set[int]:
    return {v for k, v in vars(module).items() if k.startswith("EXIT_") and isinstance(v, int)}


def test_cryoctl_verify_statuses_are_the_record_checks() -> None:
    """One number per meaning: verify's statuses are cryoctl's, and no other status of
    cryoctl means something else (an unusable file is not a table mismatch)."""
    from cryod.daemon.store.record_check import VerifyExit

    assert (ctl.EXIT_OK, ctl.EXIT_REFUSED, ctl.EXIT_NO_DAEMON) == (
        VerifyExit.OK, VerifyExit.CHAIN, VerifyExit.UNREACHABLE,
    )  # fmt: skip
    assert (ctl.EXIT_TABLES, ctl.EXIT_ANCHORS, ctl.EXIT_EXPORT) == (
        VerifyExit.TABLES, VerifyExit.ANCHORS, VerifyExit.EXPORT,
    )  # fmt: skip
    assert (ctl.EXIT_USAGE, ctl.EXIT_BAD_FILE) == (VerifyExit.BAD_INPUT, VerifyExit.BAD_FILE)
    named = [v for k, v in vars(ctl).items() if k.startswith("EXIT_") and isinstance(v, int)]
    assert len(named) == len(set(named)) == 8  # no two names for one status


def test_exit_statuses_are_in_the_help_and_the_docs(capsys: pytest.CaptureFixture[str]) -> None:
    doc = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    for name, module, main in (("cryod", cli, cryod_main), ("cryoctl", ctl, ctl_main)):
        codes = _exit_constants(module)
        assert len(codes) >= 4, name
        with pytest.raises(SystemExit):
            main(["--help"])
        help_text = capsys.readouterr().out
        section = doc.split(f"## `{name}`")[1].split("\n## ")[0]
        documented = {int(m) for m in re.findall(r"^\| `(\d+)` \|", section, flags=re.M)}
        assert documented == codes, name
        for code in codes:
            assert f"\n  {code}  " in help_text, (name, code)


# ---- cryod run ----------------------------------------------------------------
RUN_CASES = ["plain-text", "header-then-garbage", "corrupt-tables", "foreign"]


@pytest.mark.parametrize("case", RUN_CASES)
def test_cryod_run_refuses_an_unusable_database(tmp_path: Path, case: str) -> None:
    """Refused before any console or socket: one line, exit 3 (no restart by systemd)."""
    _, make, problem = next(c for c in CASES if c[0] == case)
    db = make(tmp_path).rename(tmp_path / "cryod.db")
    before = db.read_bytes()
    config = tmp_path / "cryod.toml"
    config.write_text(base_config(tmp_path))
    r = run_cli("daemon.cli", "run", "--config", str(config), timeout=60)
    assert r.returncode == EXIT_DATABASE, (r.stdout[-2000:], r.stderr[-2000:])
    assert r.stderr.splitlines()[-1:] == [f"cryod: {db}: {problem}"], r.stderr[-2000:]
    assert "Traceback" not in r.stdout + r.stderr
    assert not (tmp_path / "cryod.sock").exists()
    # left as it was for whoever investigates (the daemon's open may switch the
    # header to WAL), and not "upgraded" over with a backup
    assert db.read_bytes()[100:] == before[100:]
    assert not list(tmp_path.glob("cryod.db.bak-*"))
