"""Structured logs: journald JSON lines, terminal text, no locals, no patient data."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import select
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import structlog

from cryod.daemon.logging import REDACTED, configure_logging, get_logger, reset_logging

SECRET = "PT-7Q4X-SECRET"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    yield
    structlog.contextvars.clear_contextvars()
    reset_logging()


def lines(buf: io.StringIO) -> list[tuple[int, dict[str, Any]]]:
    """Each line as (priority, record); fails on a line that is not `<N>{json}`."""
    out = []
    for line in buf.getvalue().splitlines():
        assert re.match(r"<[0-7]>\{", line), line
        prio, _, body = line[1:].partition(">")
        out.append((int(prio), json.loads(body)))
    return out


def json_stream(level: str = "debug") -> io.StringIO:
    buf = io.StringIO()
    configure_logging(level=level, stream=buf)  # not a TTY: JSON chosen
    return buf


def test_json_lines_carry_journald_priority_and_utc_timestamp() -> None:
    buf = json_stream()
    log = get_logger("cryod.test")
    log.debug("polled", console="sim-8", tip_c=-62.5)
    log.info("freeze started", probe=1)
    log.warning("reading stale", age_s=2.1)
    log.error("link lost")
    log.critical("supervisor tripped")
    records = lines(buf)
    assert [p for p, _ in records] == [7, 6, 4, 3, 2]
    assert [r["level"] for _, r in records] == ["debug", "info", "warning", "error", "critical"]
    first = records[0][1]
    assert first == {**first, "event": "polled", "console": "sim-8", "tip_c": -62.5}
    assert first["logger"] == "cryod.test"
    for _, record in records:
        ts = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
        assert ts.utcoffset() == UTC.utcoffset(None)
        assert abs((datetime.now(UTC) - ts).total_seconds()) < 60


def test_standard_library_loggers_use_the_same_format() -> None:
    buf = json_stream()
    logging.getLogger("pymodbus.client").warning("retry %d of %d", 2, 3)
    [(prio, record)] = lines(buf)
    assert prio == 4
    assert record["event"] == "retry 2 of 3"
    assert record["logger"] == "pymodbus.client"


def test_level_filters_and_unknown_level_is_an_error() -> None:
    buf = json_stream(level="warning")
    get_logger("cryod.test").info("chatty")
    logging.getLogger("sqlalchemy").info("chatty too")
    get_logger("cryod.test").warning("kept")
    assert [r["event"] for _, r in lines(buf)] == ["kept"]
    with pytest.raises(ValueError, match="verbose"):
        configure_logging(level="verbose")


def _open_cycle(patient_ref: str, probe: int) -> None:
    """Holds the secret only as a local variable, as real code would."""
    cycle = {"probe": probe, "for": patient_ref}
    raise RuntimeError(f"valve did not open on probe {cycle['probe']}")


def test_exception_is_logged_without_local_variables() -> None:
    buf = json_stream()
    try:
        _open_cycle(SECRET, probe=2)
    except RuntimeError:
        get_logger("cryod.engine").exception("cycle failed")
    out = buf.getvalue()
    assert SECRET not in out
    [(prio, record)] = lines(buf)
    assert prio == 3
    [exc] = record["exception"]
    assert exc["exc_type"] == "RuntimeError"
    assert exc["exc_value"] == "valve did not open on probe 2"
    assert [f["name"] for f in exc["frames"]][-1] == "_open_cycle"
    assert all("locals" not in f for f in exc["frames"])


def test_patient_fields_are_redacted_at_any_depth() -> None:
    buf = json_stream()
    structlog.contextvars.bind_contextvars(patient_ref=SECRET, procedure_id=41)
    log = get_logger("cryod.store")
    log.info(
        "procedure opened",
        patient=SECRET,
        Patient_Name=SECRET,
        meta={"patientRef": SECRET, "site": "foot", "probes": [{"patient_id": SECRET}]},
        nhs_number=SECRET,
        operator="op-3",
    )
    assert SECRET not in buf.getvalue()
    [(_, record)] = lines(buf)
    assert record["patient"] == record["Patient_Name"] == record["patient_ref"] == REDACTED
    assert record["nhs_number"] == REDACTED
    assert record["meta"] == {
        "patientRef": REDACTED,
        "site": "foot",
        "probes": [{"patient_id": REDACTED}],
    }
    assert (record["operator"], record["procedure_id"]) == ("op-3", 41)


class Pty:
    def __init__(self) -> None:
        self.master, slave = pty.openpty()
        self.slave = os.fdopen(slave, "w", buffering=1)

    def read(self) -> str:
        chunks = []
        while select.select([self.master], [], [], 0.2)[0]:
            chunks.append(os.read(self.master, 65536))
        return b"".join(chunks).decode(errors="replace")

    def close(self) -> None:
        self.slave.close()
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[Pty]:
    term = Pty()
    try:
        yield term
    finally:
        reset_logging()  # before the stream it writes to is closed
        term.close()


def test_terminal_gets_human_readable_text(terminal: Pty) -> None:
    configure_logging(stream=terminal.slave)  # a TTY: console rendering chosen
    log = get_logger("cryod.test")
    log.warning("reading stale", console="sim-8", patient_ref=SECRET)
    try:
        _open_cycle(SECRET, probe=1)
    except RuntimeError:
        log.exception("cycle failed")
    text = terminal.read()
    assert "reading stale" in text
    for expected in ("console", "sim-8", "cycle failed", "RuntimeError", "_open_cycle"):
        assert expected in text, text
    assert SECRET not in text  # neither the field nor the traceback's locals
    assert not any(line.startswith("<") for line in text.splitlines())
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_json_can_be_forced_on_a_terminal(terminal: Pty) -> None:
    configure_logging(json=True, stream=terminal.slave)
    get_logger("cryod.test").info("forced")
    line = terminal.read().strip()
    assert line.startswith("<6>{")
    assert json.loads(line[3:])["event"] == "forced"


def test_piped_stdout_of_a_process_is_json() -> None:
    """What journald receives: stdout is a pipe and no stream is passed."""
    code = (
        "from cryod.daemon.logging import configure_logging, get_logger\n"
        "configure_logging()\n"
        "get_logger('cryod.daemon').info('ready', consoles=1)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.startswith("<6>{")
    assert json.loads(result.stdout[3:])["event"] == "ready"
