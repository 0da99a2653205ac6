"""Issue 9, fault 5: the database disk fills up or turns read-only during a freeze.

Required: the supervisor still works, the freeze is ended safely with a
high-priority alarm, the condition is reported (status: writer healthy=false
with the reason), no crash; once storage is back an operator can acknowledge
and reset, and after a restart the cycle cut short is closed in the record.

How the storage is broken, mid-freeze, under the running daemon:

- ``disk-full``: the database lives on a small tmpfs; the test fills it, so the
  daemon's next write gets ENOSPC ("database or disk is full"). Needs root
  (mount); skipped otherwise.
- ``read-only``: ``chattr +i`` on the database, its WAL and its directory, so
  every write gets EPERM as on a filesystem gone read-only. Needs root
  (CAP_LINUX_IMMUTABLE); skipped otherwise.
- ``write-refused``: runs anywhere. The daemon's RLIMIT_FSIZE soft limit is
  lowered to 0 (``prlimit``), so every write to a regular file fails with
  EFBIG. The daemon's stdout is a pipe here, as under systemd (journald), so
  only the database is affected.
"""

from __future__ import annotations

import contextlib
import errno
import os
import random
import resource
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from cryod.daemon.control import ControlError
from tests.e2e.harness import Daemon

from .rig import (
    fresh_procedure,
    gas_stopped_at,
    integrity,
    log_events,
    log_problems,
    record,
    recover,
    rig,
    seed_from_env,
    valve_events,
    wait_for,
)

IS_ROOT = os.geteuid() == 0


class _Breaker:
    """Breaks and restores the storage under a running daemon."""

    kinds: frozenset[str] = frozenset()

    def __init__(self, tmp: Path) -> None:
        self.dir = tmp / "db"
        self.dir.mkdir()

    @property
    def db(self) -> Path:
        return self.dir / "cryod.db"

    def setup(self) -> None:
        pass

    def break_(self, pid: int) -> None:
        raise NotImplementedError

    def restore(self, pid: int) -> None:
        raise NotImplementedError

    def cleanup(self) -> None:
        pass


class _DiskFull(_Breaker):
    kinds = frozenset({"disk_full"})

    def setup(self) -> None:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(self.dir)],
            check=True,
        )
        self.filler = self.dir / "filler"

    def break_(self, pid: int) -> None:
        chunk = b"\0" * 65536
        with open(self.filler, "wb", buffering=0) as fh:
            with pytest.raises(OSError, match="No space left") as full:  # noqa: PT012
                while True:  # write until the filesystem is full
                    fh.write(chunk)
            assert full.value.errno == errno.ENOSPC, full.value
        # the last partial pages too
        with contextlib.suppress(OSError), open(self.filler, "ab", buffering=0) as fh:
            for _ in range(64):
                fh.write(b"\0" * 512)

    def restore(self, pid: int) -> None:
        self.filler.unlink()

    def cleanup(self) -> None:
        if subprocess.run(["umount", str(self.dir)], check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(self.dir)], check=False)


class _ReadOnly(_Breaker):
    kinds = frozenset({"read_only", "io"})

    def _targets(self) -> list[str]:
        return [str(p) for p in (self.dir, self.db, Path(f"{self.db}-wal")) if p.exists()]

    def break_(self, pid: int) -> None:
        self.set = self._targets()
        subprocess.run(["chattr", "+i", *self.set], check=True)

    def restore(self, pid: int) -> None:
        subprocess.run(["chattr", "-i", *self.set], check=True)

    def cleanup(self) -> None:
        with contextlib.suppress(AttributeError):
            subprocess.run(["chattr", "-i", *self.set], check=False)


class _WriteRefused(_Breaker):
    kinds = frozenset({"io", "disk_full"})

    def break_(self, pid: int) -> None:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))

    def restore(self, pid: int) -> None:
        resource.prlimit(
            pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
        )


METHODS = {"disk-full": _DiskFull, "read-only": _ReadOnly, "write-refused": _WriteRefused}


def _alarm(d: Daemon, code: str) -> dict[str, object] | None:
    return next((a for a in d.status()["alarms"] if a["code"] == code), None)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", list(METHODS))
def test_storage_failure_during_freeze(tmp_path: Path, method: str) -> None:
    if method != "write-refused":
        if not IS_ROOT:
            pytest.skip(f"{method} needs root (mount / chattr); write-refused covers the path")
        if method == "read-only" and shutil.which("chattr") is None:
            pytest.skip("chattr not installed")
    seed = seed_from_env()
    rng = random.Random(f"{seed}-{method}")
    breaker = METHODS[method](tmp_path)
    breaker.setup()
    figures: dict[str, object] = {"seed": seed, "method": method}
    try:
        with rig(tmp_path, database=breaker.db, piped=True) as (sim, d, cfg):
            pid = fresh_procedure(d)
            t = time.monotonic()
            d.call("freeze", {"probe": 1, "seconds": 60})
            wait_for(lambda: valve_events(sim, probe=1, is_open=True, after=t), 5, "the valve")
            time.sleep(rng.uniform(0.3, 3.0))
            polls_before = d.status()["poll"]["polls"]
            t_break = time.monotonic()
            breaker.break_(d.proc.pid)
            try:
                # the freeze is ended safely: the daemon closes the valves by command
                stopped = wait_for(lambda: gas_stopped_at(sim, t_break), 10, "the gas to stop")
                closes = valve_events(sim, valve=None, is_open=False, after=t_break)
                assert closes, "no valve closed"
                assert {e["cause"] for e in closes} == {"command"}, closes
                alarm = wait_for(lambda: _alarm(d, "storage_failure"), 5, "the storage alarm")
                assert alarm["priority"] == "high"
                assert alarm["latched"] is True
                full = d.call("status")
                writer = full["writer"]
                assert writer["healthy"] is False, writer
                kind = str(alarm["message"]).split(":", 1)[0]
                assert kind in breaker.kinds, (kind, alarm)
                assert kind in writer["reason"], writer
                # a supervisor trip like any other: the engine faults
                st = wait_for(
                    lambda: (s := d.status())["engine"]["state"] == "fault" and s,
                    5,
                    "the engine to fault",
                )
                assert st["engine"]["reason"] == "supervisor: storage_failure", st["engine"]
                figures["gas_stopped_after_s"] = round(stopped - t_break, 3)
                figures["reported"] = writer["reason"][:80]
                # no new freeze while the record cannot be kept
                with pytest.raises(ControlError) as err:
                    d.call("freeze", {"probe": 2, "seconds": 30})
                assert err.value.code == "fault_latched", err.value
                assert "storage_failure" in err.value.message, err.value
                # the supervisor still works: a console over-pressure is seen and alarmed
                sim.ctl("fault", "overpressure")
                wait_for(lambda: _alarm(d, "console_overpressure"), 5, "the supervisor's alarm")
                sim.ctl("clear", "overpressure")
                # and the poll loop keeps running (waited for: the steps above may take
                # less than the half second that ten polls need)
                wait_for(
                    lambda: d.status()["poll"]["polls"] > polls_before + 10,
                    5,
                    "ten more polls",
                )
                assert d.proc.poll() is None, "cryod died"
                # a reset is refused while storage is still failing
                d.call("ack")
                with pytest.raises(ControlError) as err:
                    d.call("reset")
                assert err.value.code == "cause_present", err.value
            finally:
                breaker.restore(d.proc.pid)
            # storage back: the writer recovers, the operator clears the alarm
            wait_for(lambda: d.call("status")["writer"]["healthy"], 15, "the writer to recover")
            recover(d)
            assert _alarm(d, "storage_failure") is None
            rc = d.stop()
            assert rc == 0, f"cryod exited {rc}"
            # a restart closes in the record what the failure cut short
            d2 = Daemon(cfg, tmp_path)
            try:
                shown = d2.call("show", {"id": pid})
            finally:
                assert d2.stop() == 0
        outcomes = [c["outcome"] for c in shown["cycles"]]
        assert outcomes, shown
        assert set(outcomes) <= {"faulted", "interrupted"}, outcomes
        assert integrity(breaker.db) == "ok"
        raised = [
            e
            for e in log_events(tmp_path / "cryod.log", "alarm_raised")
            if e.get("code") == "storage_failure"
        ]
        assert raised, "the storage alarm is not in the log"
        assert raised[0]["priority"] == "high"
        assert log_problems(tmp_path / "cryod.log") == []
        figures["cycle_outcomes"] = outcomes
        record(f"storage_{method}", figures)
    finally:
        breaker.cleanup()
