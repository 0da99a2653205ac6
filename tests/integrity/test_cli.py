"""What a user of ``cryoctl verify``, ``cryoctl redact`` and ``cryod check-config``
sees for bad input: one line, a documented exit code, never a traceback (a bad
value on the command line 2, a file that cannot be used 7, a refusal 1)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cryod.daemon import cli, ctl
from cryod.daemon.ctl import EXIT_BAD_FILE, EXIT_REFUSED, EXIT_USAGE
from cryod.daemon.store import migrate

EXAMPLE = Path(__file__).resolve().parents[2] / "config" / "cryod.example.toml"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "cryod.db"
    migrate.upgrade_on_start(path, node="ws-cli")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    rc = ctl.main(["--socket", "/nonexistent.sock", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_a_fresh_database_verifies(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(capsys, "verify", "--db", str(db))
    assert rc == 0
    assert out.splitlines()[0].startswith("chain: ok (2 entries; node ws-cli")


@pytest.mark.parametrize(
    ("args", "says", "code"),
    [
        (("--head", "bogus"), "--head 'bogus': expected SEQ:HASH", EXIT_USAGE),
        (("--head", "12:abc"), "--head '12:abc': expected SEQ:HASH", EXIT_USAGE),
        (("--head", "0:" + "a" * 64), "expected SEQ:HASH", EXIT_USAGE),
        (("--log", "/nonexistent/cryod.log"), "--log /nonexistent/cryod.log: no such file",
         EXIT_BAD_FILE),
        (("--anchors", "/nonexistent/a.jsonl"), "--anchors /nonexistent/a.jsonl: no such file",
         EXIT_BAD_FILE),
    ],
)  # fmt: skip
def test_bad_anchor_arguments_are_one_line_and_a_documented_status(
    db: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...], says: str, code: int
) -> None:
    rc, out, err = run(capsys, "verify", "--db", str(db), *args)
    assert rc == code
    assert out == ""
    assert len(err.splitlines()) == 1
    assert says in err


@pytest.mark.parametrize("kind", ["text", "empty", "foreign", "missing"])
def test_a_file_that_is_not_a_cryod_database_is_one_line_and_exit_7(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    path = tmp_path / "x.db"
    if kind == "text":
        path.write_text("not a database\n" * 100)
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "foreign":
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE patients (name TEXT)")
        con.commit()
        con.close()
    rc, _out, err = run(capsys, "verify", "--db", str(path))
    assert rc == EXIT_BAD_FILE
    assert len(err.splitlines()) == 1, err
    assert str(path) in err
    assert "Traceback" not in err


def test_export_files_that_cannot_be_verified(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    rc, _, err = run(capsys, "verify", "--export", str(bad))
    assert (rc, "not JSON" in err) == (EXIT_BAD_FILE, True)
    rc, _, err = run(capsys, "verify", "--export", str(tmp_path / "none.json"))
    assert (rc, "no such file" in err) == (EXIT_BAD_FILE, True)
    old = tmp_path / "v1.json"
    old.write_text('{"schema": "cryod.export/1", "procedures": []}')
    rc, _, err = run(capsys, "verify", "--export", str(old))
    assert (rc, "the export format is now cryod.export/2" in err) == (EXIT_BAD_FILE, True)


def test_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ctl.main(["verify", "--help"])
    text = capsys.readouterr().out
    for line in ("0  every check passed", "1  the chain", "4  a table", "5  the chain disagrees",
                 "6  the export", "2  bad command line", "3  the daemon",
                 "7  a file cannot be used"):  # fmt: skip
        assert line in text


def test_redact_refuses_clearly(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(capsys, "redact", "--db", str(db), "--row", "alarms:x", "--by", "a",
                     "--reason", "b")  # fmt: skip
    assert (rc, "expected TABLE:ID" in err) == (EXIT_USAGE, True)
    rc, _, err = run(capsys, "redact", "--db", str(db), "--procedure", "3", "--by", "a",
                     "--reason", "b")  # fmt: skip
    assert (rc, "procedure 3 does not exist" in err) == (EXIT_REFUSED, True)
    rc, _, err = run(capsys, "redact", "--db", str(db.with_name("none.db")), "--procedure", "1",
                     "--by", "a", "--reason", "b")  # fmt: skip
    assert (rc, err) == (EXIT_BAD_FILE, f"cryoctl: {db.with_name('none.db')}: no such file\n")


def test_check_config_warns_when_every_anchor_is_on_this_host(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = EXAMPLE.read_text().replace("/var/lib/cryod/cryod.db", str(tmp_path / "cryod.db"))
    plain = tmp_path / "plain.toml"
    plain.write_text(text)
    assert cli.main(["check-config", str(plain)]) == 0
    err = capsys.readouterr().err
    assert "warning: every anchor of the record is on this host" in err
    same_fs = tmp_path / "same.toml"
    same_fs.write_text(text + f'\n[anchors]\nfile = "{tmp_path / "anchors.jsonl"}"\n')
    assert cli.main(["check-config", str(same_fs)]) == 0
    assert "is on the database's own filesystem" in capsys.readouterr().err
