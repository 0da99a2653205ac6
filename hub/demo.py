"""``cryohub demo``: the whole study on one machine (issue 22).

Three simulated rooms (``cryosim`` + ``cryod`` each, the record channel on),
one mosquitto started here on a free loopback port, the collector on its
embedded SQLite default with the rooms registered and ``cryohub run``
ingesting. A few procedures run at simulated speed under the Morton's and
stump neuroma example profiles; once every room's record reached the
collector, the rooms and the collector stop, follow-up is entered for the
time points (some missed, one subject lost to follow-up), a day-7 infection
is recorded and signed by an investigator, then the summary and every export
(json, csv, fhir, redcap, sdtm) are written and ``verify --all`` and
``verify --self`` run. ``cryohub web`` serves the collector's database from
the start (the live board while the rooms run) to the end: once the outputs
are written it keeps serving, with the broker, until Ctrl-C (or not, with
``--exit-when-done``). The demo's users' passwords are written to
``demo-passwords.json`` (mode 0600), never printed.

The collector imports nothing of the daemon (import-linter): the rooms are
processes, driven over their control sockets with the same one-line JSON
requests ``cryoctl`` sends. Follow-up happens weeks after a procedure: the
demo enters it on a simulated clock (``StudyClock``), the procedure day plus
the days each step needs, never the machine's clock.

Every process started here is stopped on exit, on an error and on Ctrl-C or
SIGTERM. Only study pseudonyms (``MN-0001``) are used and nothing
patient-identifying is printed; the collector's own command output goes to
``cryohub-commands.log`` in the work directory.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import json
import math
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

__all__ = ["add_parser", "cmd_demo", "run_demo"]

PY = sys.executable
FORMATS = ("json", "csv", "fhir", "redcap", "sdtm")
DONE = {"complete", "stopped", "aborted", "fault"}
#: simulated speed-up and polling: three rooms share the machine with the broker and the
#: collector; at 5 Hz a room's data is stale after 0.6 s of wall time (3 polls), not 0.15 s
#: (the simulated poll period is SPEED / POLL_HZ = 2 s: a stuck-sensor check still sees 4 polls)
SPEED = 10.0
POLL_HZ = 5.0

MORTONS = "mortons-neuroma-example"  # study MN-CRYO-EXAMPLE
STUMP = "stump-neuroma-example"  # study SN-CRYO-EXAMPLE
STUDY_IDS = {MORTONS: "MN-CRYO-EXAMPLE", STUMP: "SN-CRYO-EXAMPLE"}
PROTOCOLS = {MORTONS: "morton-neuroma-cazzato2016", STUMP: "stump-neuroma-prologo2017"}

#: the demo's people (passwords are made per run, kept in the work directory, mode 0600)
ADMIN, NURSE, INVESTIGATOR, MONITOR = (
    "demo-admin",
    "demo-nurse",
    "demo-investigator",
    "demo-monitor",
)
#: a coordinator of one study at one site (the web app shows only that site's subjects)
SITE_NURSE = "demo-site-a-nurse"
SITE_NURSE_SCOPE = ("MN-CRYO-EXAMPLE", "site-a")


@dataclass(frozen=True)
class RoomPlan:
    node: str
    site: str
    profile: str
    subjects: tuple[str, ...]


#: three rooms at two sites; the subjects are study pseudonyms, not people
ROOMS: tuple[RoomPlan, ...] = (
    RoomPlan("room-a", "site-a", MORTONS, ("MN-0001", "MN-0002")),
    RoomPlan("room-b", "site-b", MORTONS, ("MN-0003", "MN-0004")),
    RoomPlan("room-c", "site-b", STUMP, ("SN-0001", "SN-0002")),
)

_OPEN_COMMON: dict[str, Any] = {
    "imaging": "ultrasound",
    "anaesthesia": "local",
    "operator": "demo",
    "probe_model": "SIM-PROBE-17G",
    "probe_lot": "DEMO-LOT",
    "consent": {"confirmed": True},
}


def open_request(profile: str, subject: str) -> dict[str, Any]:
    """The ``procedure_open`` request of one demo procedure (demo values, not a patient)."""
    if profile == MORTONS:
        return {
            **_OPEN_COMMON,
            "patient_ref": subject,
            "indication": "mortons_neuroma",
            "site": "third intermetatarsal space",
            "side": "left",
            "study": profile,
            "consent": {"confirmed": True, "form_version": "1.0"},
            "selection": {
                "eligibility": {"items": {"*": True}},
                "symptom_duration_months": 14,
                "prior_treatments": ["insoles_footwear", "steroid_injection"],
                "aetiology": "idiopathic_mortons",
                "nerve": "common_plantar_digital",
                "web_space": "third",
                "neuroma_size_mm": 6.5,
            },
            "details": {
                "technical_success": True,
                "anaesthetic_agent": "lidocaine 1%",
                "setting": "day_case",
                "probe_gauge": 17,
                "probe_count": 1,
            },
        }
    return {
        **_OPEN_COMMON,
        "patient_ref": subject,
        "indication": "stump_neuroma",
        "site": "below-knee amputation stump",
        "side": "right",
        "study": profile,
        "consent": {"confirmed": True, "form_version": "2.1"},
        "selection": {
            "eligibility": {"items": {"*": True}},
            "symptom_duration_months": 20,
            "prior_treatments": ["medication", "physiotherapy"],
            "aetiology": "post_amputation",
            "nerve": "common_peroneal",
            "neuroma_size_mm": 9.0,
        },
        "details": {
            "technical_success": True,
            "setting": "day_case",
            "probe_gauge": 17,
            "probe_count": 1,
            "gas": "argon",
        },
    }


#: baseline pain at the room, before the first freeze (each study's scale)
BASELINE_PAIN = {MORTONS: {"score": 7}, STUMP: {"score": 65}}


# ---- small process helpers -------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(pred: Callable[[], Any], timeout_s: float, what: str) -> Any:
    """Poll ``pred`` until it is true, against a generous deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise DemoError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(0.1)


class DemoError(RuntimeError):
    """The demo cannot go on (a process did not start, a room's record did not arrive)."""


class ControlRefused(DemoError):
    pass


#: set when the demo stops early: the rooms' threads make no further request
STOPPING = threading.Event()


def control(
    sock: Path, cmd: str, args: dict[str, Any] | None = None, timeout_s: float = 15.0
) -> Any:
    """One request to a room's ``cryod`` over its control socket, as ``cryoctl`` sends it."""
    if STOPPING.is_set():
        raise DemoError("stopping")
    request = json.dumps({"id": 1, "cmd": cmd, "args": args or {}}) + "\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(str(sock))
        s.sendall(request.encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    if not buf:
        raise ControlRefused(f"{cmd}: the daemon closed the connection")
    resp = json.loads(buf)
    if not resp.get("ok"):
        err = resp.get("error", {})
        raise ControlRefused(f"{cmd}: {err.get('code', 'error')}: {err.get('message', '')}")
    return resp.get("result")


@dataclass
class Processes:
    """Every child process the demo started, stopped in reverse order (SIGTERM, then kill)."""

    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    on_stop: list[Callable[[], None]] = field(default_factory=list)

    def start(self, name: str, argv: Sequence[str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as fh:
            env = {
                k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")
            }
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=fh, stderr=fh, env=env,
                start_new_session=True,  # Ctrl-C reaches the demo only; it stops them in order
            )  # fmt: skip
        self.procs.append((name, proc))
        return proc

    def stop(self, proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        self.procs = [(n, p) for n, p in self.procs if p is not proc]
        return int(proc.returncode)

    def stop_all(self) -> None:
        for _name, proc in reversed(list(self.procs)):
            with contextlib.suppress(Exception):
                self.stop(proc)
        for fn in self.on_stop:
            with contextlib.suppress(Exception):
                fn()


class JournalSink:
    """The journal route of the anchors, for the demo: a datagram socket in the work
    directory (never the machine's /dev/log) whose lines are appended to a file."""

    def __init__(self, path: Path, out: Path) -> None:
        self.path, self.out = path, out
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.stop_flag = threading.Event()
        self.thread = threading.Thread(target=self._drain, name="journal-sink", daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        with self.out.open("a", encoding="utf-8") as fh:
            while not self.stop_flag.is_set():
                try:
                    data = self.sock.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                fh.write(data.decode(errors="replace").rstrip("\n") + "\n")
                fh.flush()

    def close(self) -> None:
        self.stop_flag.set()
        self.thread.join(timeout=10)
        self.sock.close()


# ---- the collector's commands, in process ---------------------------------------------------
class StudyClock:
    """The collector's clock for the follow-up phase: a fixed, simulated "now"."""

    @contextlib.contextmanager
    def at(self, when: dt.datetime) -> Iterator[None]:
        from . import cli

        real = cli._now
        cli._now = lambda: when  # the one place time is faked
        try:
            yield
        finally:
            cli._now = real


@dataclass
class Hub:
    config: Path
    log: Path
    passwords: dict[str, str]

    def run(
        self,
        *argv: str,
        as_user: str | None = None,
        new_password: str | None = None,
        ok: tuple[int, ...] = (0,),
    ) -> str:
        """``cryohub ARGV --config CONFIG`` in this process, acting as ``as_user`` (its
        password, then ``new_password``, on a pipe); its output into the command log."""
        from .cli import main

        args = [*argv, "--config", str(self.config)]
        if as_user is not None:
            args += ["--as", as_user]
        lines = [self.passwords[as_user]] if as_user is not None else []
        lines += [new_password] if new_password is not None else []
        out, err = io.StringIO(), io.StringIO()
        r, w = os.pipe()
        try:
            os.write(w, "".join(f"{line}\n" for line in lines).encode())
            os.close(w)
            if lines:
                args += ["--password-fd", str(r)]
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    rc = main(args)
                except SystemExit as exc:  # argparse: a usage error is the demo's bug
                    rc = exc.code if isinstance(exc.code, int) else 2
        finally:
            os.close(r)
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(f"$ cryohub {' '.join(argv)}{f' --as {as_user}' if as_user else ''}\n")
            fh.write(out.getvalue() + err.getvalue() + f"(exit {rc})\n\n")
        if rc not in ok:
            raise DemoError(f"cryohub {' '.join(argv)}: exit {rc}: {err.getvalue().strip()}")
        return out.getvalue()


# ---- the demo --------------------------------------------------------------------------------
@dataclass
class Room:
    plan: RoomPlan
    dir: Path
    sim: subprocess.Popen[bytes] | None = None
    daemon: subprocess.Popen[bytes] | None = None
    procedures: list[int] = field(default_factory=list)

    @property
    def socket(self) -> Path:
        return self.dir / "cryod.sock"


def _mosquitto_conf(workdir: Path, port: int) -> str:
    """The shipped broker's record-channel settings (config/mosquitto/cryod-record.conf),
    on a loopback port and with persistence in the work directory."""
    return (
        "persistence true\n"
        f"persistence_location {workdir / 'mosquitto'}/\n"
        "autosave_interval 30\n"
        "max_queued_messages 1500000\n"
        "max_queued_bytes 20000000000\n"
        "queue_qos0_messages false\n"
        "persistent_client_expiration 14d\n"
        "max_packet_size 16777472\n"
        f"listener {port} 127.0.0.1\n"
        "allow_anonymous true\n"
        f"log_dest file {workdir / 'mosquitto' / 'mosquitto.log'}\n"
    )


def _hub_config(workdir: Path, port: int) -> str:
    return (
        '[collector]\nid = "demo-hub"\nlog_level = "info"\n\n'
        f'[database]\nurl = "sqlite:///{workdir / "cryohub.db"}"\n\n'
        f'[broker]\nhost = "127.0.0.1"\nport = {port}\nclient_id = "cryohub-demo"\n'
        "session_expiry_s = 3600\n\n"
        '[studies]\nprofiles_dir = "studies"\n\n'
        '[anchors]\nfile = "anchors/cryohub.jsonl"\n'
        f'journal_socket = "{workdir / "journal.sock"}"\n'
    )


def _room_config(room: Room, sim_port: int, broker_port: int, speed: float) -> str:
    return (
        f'[daemon]\ndatabase = "{room.dir / "cryod.db"}"\n'
        f'control_socket = "{room.socket}"\nsite = "{room.plan.site}"\n'
        'log_level = "warning"\nrequire_study_id = true\n\n'
        f'[node]\nid = "{room.plan.node}"\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\nsite = "{room.plan.site}"\n\n'
        "[record]\nenabled = true\nrate_per_s = 500.0\nburst = 200\n\n"
        f'[[consoles]]\nid = "{room.plan.node}-console"\ndriver = "modbus-tcp"\n'
        f"simulated = true\ntime_scale = {speed}\npoll_hz = {POLL_HZ}\nlease_timeout_ms = 1000\n"
        f'[consoles.options]\nhost = "127.0.0.1"\nport = {sim_port}\n'
    )


def _console_ready(room: Room) -> bool:
    assert room.daemon is not None
    if room.daemon.poll() is not None:
        raise DemoError(f"{room.plan.node}: cryod exited {room.daemon.returncode} "
                        f"(see {room.dir / 'cryod.log'})")  # fmt: skip
    try:
        c = control(room.socket, "status", timeout_s=2)["consoles"][0]
    except (OSError, ValueError, DemoError):
        return False
    return bool(c["snapshot"] is not None and c["poll"]["polls"] > 2)


def _sim_up(sim: subprocess.Popen[bytes], port: int) -> bool:
    if sim.poll() is not None:
        raise DemoError(f"cryosim exited {sim.returncode}")
    return _port_open(port)


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def _recover(room: Room) -> None:
    """After a fault (a loaded machine can starve a room's polling: stale data), the
    operator acknowledges the alarms and resets once the cause is gone, as at a console."""
    deadline = time.monotonic() + 120
    while True:
        state = control(room.socket, "status")["consoles"][0]["engine"]["state"]
        if state != "fault":
            return
        with contextlib.suppress(ControlRefused):
            control(room.socket, "ack")
            control(room.socket, "reset")
        if time.monotonic() > deadline:
            raise DemoError(f"{room.plan.node}: the console did not reset (state {state})")
        time.sleep(0.5)


def _run_procedure(room: Room, subject: str, say: Callable[[str], None]) -> None:
    plan = room.plan
    _recover(room)
    pid = int(control(room.socket, "procedure_open", open_request(plan.profile, subject))[
        "procedure_id"
    ])  # fmt: skip
    control(room.socket, "baseline_pain", BASELINE_PAIN[plan.profile])
    # the run's precheck refuses a probe still cold from the room's last procedure (tip
    # outside 15..42 C): the operator waits for it to warm, as at a console
    deadline = time.monotonic() + 300
    while True:
        try:
            control(room.socket, "run", {"protocol": PROTOCOLS[plan.profile], "probes": [1]})
            break
        except ControlRefused as exc:
            if time.monotonic() > deadline:
                raise DemoError(f"{plan.node}: run refused for 300 s: {exc}") from None
            time.sleep(1.0)
    deadline = time.monotonic() + 300
    while True:
        eng = control(room.socket, "status")["consoles"][0]["engine"]
        state = str(eng["state"])
        if state in DONE:
            break
        if state == "hold":  # the stump protocol's CT check: the operator continues
            with contextlib.suppress(ControlRefused):
                control(room.socket, "continue")
        if time.monotonic() > deadline:
            raise DemoError(f"{plan.node}: procedure {pid} did not finish (state {state})")
        time.sleep(0.2)
    control(room.socket, "procedure_close", {"notes": f"demo run, final state {state}"})
    room.procedures.append(pid)
    say(f"  {plan.node}: procedure {pid} ({STUDY_IDS[plan.profile]}) {state}, closed")
    _recover(room)


def _received_seq(engine: Any, node: str) -> int:
    """The newest entry of ``node`` the collector stored (0: none yet)."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import Session

    from .store.models import ReceivedEntry

    with Session(engine) as s:
        got = s.execute(select(func.max(ReceivedEntry.seq)).where(ReceivedEntry.node == node))
        return int(got.scalar_one() or 0)


def _wait_delivered(room: Room, engine: Any, timeout_s: float) -> int:
    """The room's chain head now, and the collector holding every entry up to it."""
    head = int(control(room.socket, "status")["record"]["head_seq"] or 0)
    wait_until(lambda: _received_seq(engine, room.plan.node) >= head, timeout_s,
               f"{room.plan.node}'s record up to entry {head} at the collector")  # fmt: skip
    return head


# ---- follow-up -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Visit:
    subject: str
    time_point: str
    day: int  # days after the procedure day
    extra: tuple[str, ...]


def follow_up_plan() -> list[Visit]:
    """Each time point with what happened: most done, some missed, MN-0003 lost at month 1."""
    visits = [
        Visit("MN-0001", "d7", 7, ("--mode", "clinic", "--pain", "4", "--qol", "0.71")),
        Visit("MN-0002", "d7", 7, ("--status", "missed", "--reason", "patient on holiday")),
        Visit("MN-0003", "d7", 8, ("--mode", "phone", "--pain", "5")),
        Visit("MN-0004", "d7", 6, ("--mode", "clinic", "--pain", "3")),
        Visit("SN-0001", "d7", 7, ("--mode", "clinic", "--pain", "40")),
        Visit("SN-0002", "d7", 7, ("--status", "missed", "--reason", "transport unavailable")),
        Visit("MN-0001", "m1", 30, ("--mode", "clinic", "--pain", "2", "--function", "35")),
        Visit("MN-0002", "m1", 31, ("--mode", "post", "--pain", "3")),
        Visit("MN-0003", "m1", 33,
              ("--status", "lost_to_follow_up", "--reason", "moved away, no contact")),
        Visit("MN-0004", "m1", 29, ("--mode", "phone", "--pain", "2")),
        Visit("SN-0001", "m1", 30, ("--mode", "clinic", "--pain", "30")),
        Visit("SN-0002", "m1", 32, ("--mode", "phone", "--pain", "50")),
        Visit("MN-0001", "d45", 45, ("--mode", "clinic", "--pain", "1")),
        Visit("MN-0002", "d45", 46, ("--mode", "online", "--pain", "2")),
        Visit("MN-0004", "d45", 45, ("--status", "missed", "--reason", "unwell, not reached")),
    ]  # fmt: skip
    return visits


#: the day-7 infection, found after the procedure was closed
INFECTION = (
    "--category", "infection", "--subcategory", "superficial_infection",
    "--term", "Wound infection at the probe entry site", "--grade", "2", "--serious", "no",
    "--rel-device", "unlikely", "--rel-procedure", "probably", "--outcome",
    "recovered_resolved", "--action", "treatment_given", "--intervention", "antibiotics",
)  # fmt: skip


def _site_day(at: dt.datetime, zone: str = "Europe/London") -> dt.date:
    from zoneinfo import ZoneInfo

    return at.astimezone(ZoneInfo(zone)).date()


def _enter_follow_up(
    hub: Hub, clock: StudyClock, day0: dt.date, say: Callable[[str], None]
) -> dt.date:
    """Each visit entered on its day (the simulated clock at noon UTC); returns the last day."""
    visits = follow_up_plan()

    def noon(day: int) -> dt.datetime:
        d = day0 + dt.timedelta(days=day)
        return dt.datetime(d.year, d.month, d.day, 12, 0, tzinfo=dt.UTC)

    def study_of(subject: str) -> str:
        return STUDY_IDS[MORTONS] if subject.startswith("MN-") else STUDY_IDS[STUMP]

    # the baseline pain score is the one each room took before the first freeze (the
    # collector refuses a second one: docs/followup.md, "Baseline")
    for v in sorted(visits, key=lambda v: v.day):
        when = day0 + dt.timedelta(days=v.day)
        with clock.at(noon(v.day)):
            hub.run("followup", "record", "--study", study_of(v.subject), "--subject", v.subject,
                    "--time-point", v.time_point, "--date", when.isoformat(), *v.extra,
                    as_user=NURSE)  # fmt: skip
        if v.subject == "MN-0001" and v.time_point == "d7":
            onset = when.isoformat()
            with clock.at(noon(v.day)):
                hub.run("followup", "ae", "--study", STUDY_IDS[MORTONS], "--subject", "MN-0001",
                        *INFECTION, "--onset", onset, "--intervention-date", onset,
                        as_user=NURSE)  # fmt: skip
            with clock.at(noon(v.day + 1)):
                hub.run("followup", "sign", "1", as_user=INVESTIGATOR)
            say(f"  day {v.day}: a wound infection recorded and signed by {INVESTIGATOR}")
    last = max(v.day for v in visits) + 14
    subjects = sum(len(p.subjects) for p in ROOMS)
    say(f"  {subjects} baselines (taken in the rooms) and {len(visits)} visits entered "
        f"(simulated dates {day0} .. {day0 + dt.timedelta(days=last)})")  # fmt: skip
    return day0 + dt.timedelta(days=last)


# ---- the whole run ---------------------------------------------------------------------------
def argument_problem(speed: float, workdir: Path | None) -> str | None:
    """Why the demo's arguments cannot be used (one line), or None."""
    if not math.isfinite(speed) or speed <= 0:
        return f"--speed {speed:g}: give a finite speed-up greater than 0 (default {SPEED:g})"
    if workdir is None:
        return None
    if workdir.exists() and not workdir.is_dir():
        return f"--workdir {workdir}: is not a directory"
    try:
        workdir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--workdir {workdir}: cannot be created ({exc.strerror or exc})"
    if not os.access(workdir, os.W_OK | os.X_OK):
        return f"--workdir {workdir}: is not writable"
    if any(workdir.iterdir()):
        return f"--workdir {workdir}: is not empty; give an empty or new directory"
    return None


def run_demo(args: argparse.Namespace, say: Callable[[str], None] = print) -> int:
    """The demo; exit 0 when done, 2 for a bad argument, 1 on an error, 130 on Ctrl-C."""
    problem = argument_problem(args.speed, Path(args.workdir) if args.workdir else None)
    if problem is not None:
        print(f"cryohub demo: {problem}", file=sys.stderr)
        return 2
    workdir = Path(args.workdir).resolve() if args.workdir else Path(
        tempfile.mkdtemp(prefix="cryohub-demo-"))  # fmt: skip
    mosquitto = shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )
    if mosquitto is None:
        say("cryohub demo: mosquitto not found (apt-get install mosquitto)")
        return 2
    procs = Processes()
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(_signo: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    if _main_thread():
        signal.signal(signal.SIGTERM, on_term)
    started = time.monotonic()
    web: list[str] = []  # the web app's address once it serves
    rc: int | None = None
    took_said = False
    try:
        rc = _run(args, workdir, mosquitto, procs, say, web)
        say(f"demo took {time.monotonic() - started:.0f} s; everything is under {workdir}")
        took_said = True
        if rc == 0 and web and not args.exit_when_done:
            say(f"web app still serving at {web[0]} (users and passwords above); "
                "Ctrl-C stops it and the broker")  # fmt: skip
            _serve_until_stopped(procs)
    except KeyboardInterrupt:
        if rc == 0:  # the demo had finished; only the web app was serving
            say("cryohub demo: stopping the web app and the broker")
            rc = 0
        else:
            say("cryohub demo: interrupted; stopping the rooms, the collector, the web app and "
                "the broker")  # fmt: skip
            rc = 130
    except DemoError as exc:
        say(f"cryohub demo: {exc}")
        rc = 1
    finally:
        procs.stop_all()
        if _main_thread():
            signal.signal(signal.SIGTERM, previous)
    if not took_said:
        say(f"demo took {time.monotonic() - started:.0f} s; everything is under {workdir}")
    return 1 if rc is None else rc


def _serve_until_stopped(procs: Processes) -> None:
    """Wait for Ctrl-C (or SIGTERM); a child that dies meanwhile ends the wait."""
    while all(p.poll() is None for _name, p in procs.procs):
        time.sleep(0.5)
    dead = [name for name, p in procs.procs if p.poll() is not None]
    raise DemoError(f"{', '.join(dead)} exited while the web app was serving")


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _run(
    args: argparse.Namespace,
    workdir: Path,
    mosquitto: str,
    procs: Processes,
    say: Callable[[str], None],
    web: list[str],
) -> int:
    from cryod.research.profile import builtin_study_path

    # ---- the broker
    (workdir / "mosquitto").mkdir()
    broker_port = free_port()
    conf = workdir / "mosquitto" / "mosquitto.conf"
    conf.write_text(_mosquitto_conf(workdir, broker_port))
    broker = procs.start(
        "mosquitto", [mosquitto, "-c", str(conf)], workdir / "mosquitto" / "out.log"
    )
    wait_until(lambda: broker.poll() is None and _port_open(broker_port), 20,
               "mosquitto listening")  # fmt: skip
    say(f"broker:    mosquitto on 127.0.0.1:{broker_port} ({conf})")

    # ---- the collector: config, database, people, rooms
    (workdir / "studies").mkdir()
    (workdir / "anchors").mkdir()
    for name in (MORTONS, STUMP):
        shutil.copy(builtin_study_path(name), workdir / "studies" / f"{name}.toml")
    config = workdir / "cryohub.toml"
    config.write_text(_hub_config(workdir, broker_port))
    journal = JournalSink(workdir / "journal.sock", workdir / "anchors" / "journal.log")
    procs.on_stop.append(journal.close)
    passwords = {
        u: secrets.token_urlsafe(12) for u in (ADMIN, NURSE, INVESTIGATOR, MONITOR, SITE_NURSE)
    }
    pw_file = workdir / "demo-passwords.json"
    pw_file.touch(mode=0o600)
    pw_file.write_text(json.dumps(passwords, indent=2) + "\n")
    hub = Hub(config=config, log=workdir / "cryohub-commands.log", passwords=passwords)
    hub.run("migrate")
    hub.run("user", "add", ADMIN, "--role", "admin", new_password=passwords[ADMIN])
    for user, role in ((NURSE, "coordinator"), (INVESTIGATOR, "investigator"),
                       (MONITOR, "monitor")):  # fmt: skip
        hub.run("user", "add", user, "--role", role, as_user=ADMIN, new_password=passwords[user])
    study, site = SITE_NURSE_SCOPE
    hub.run("user", "add", SITE_NURSE, "--role", "coordinator", "--study", study, "--site", site,
            as_user=ADMIN, new_password=passwords[SITE_NURSE])  # fmt: skip
    for plan in ROOMS:
        hub.run("room", "add", plan.node, "--site", plan.site, "--credential", plan.node,
                as_user=ADMIN)  # fmt: skip
    say(f"collector: {config} (SQLite {workdir / 'cryohub.db'}), rooms "
        f"{', '.join(p.node for p in ROOMS)} registered")  # fmt: skip
    hub_log = workdir / "cryohub-run.log"
    collector = procs.start("cryohub run", [PY, "-m", "cryod.hub.cli", "run", "--config",
                            str(config)], hub_log)  # fmt: skip

    def subscribed() -> bool:
        if collector.poll() is not None:
            raise DemoError(f"cryohub run exited {collector.returncode} (see {hub_log})")
        return "broker: connected" in hub_log.read_text(errors="replace")

    wait_until(subscribed, 60, "cryohub run connected to the broker")
    say(f"           cryohub run ingesting (log {hub_log})")
    web.append(_start_web(config, workdir, procs))
    say(f"web app:   {web[0]} (log {workdir / 'cryohub-web.log'})")
    say(f"           users {ADMIN} (admin), {NURSE} (coordinator), {INVESTIGATOR} "
        f"(investigator), {MONITOR} (monitor), {SITE_NURSE} (coordinator of {study} at "
        f"{site}); their passwords are in {pw_file} (mode 0600), not printed")  # fmt: skip

    # ---- the rooms
    rooms = [Room(plan=p, dir=workdir / "rooms" / p.node) for p in ROOMS]
    for i, room in enumerate(rooms):
        room.dir.mkdir(parents=True)
        sim_port = free_port()
        room.sim = procs.start(f"cryosim {room.plan.node}", [
            PY, "-m", "cryod.simulators.cli", "serve", "--speed", str(args.speed),
            "--seed", str(i + 1), "--modbus-tcp", f"127.0.0.1:{sim_port}",
            "--event-log", str(room.dir / "console-events.jsonl"),
        ], room.dir / "cryosim.log")  # fmt: skip
        wait_until(partial(_sim_up, room.sim, sim_port), 30, f"cryosim of {room.plan.node}")
        cfg = room.dir / "cryod.toml"
        cfg.write_text(_room_config(room, sim_port, broker_port, args.speed))
        room.daemon = procs.start(
            f"cryod {room.plan.node}",
            [PY, "-m", "cryod.daemon.cli", "run", "--config", str(cfg)],
            room.dir / "cryod.log",
        )
    for room in rooms:
        wait_until(partial(_console_ready, room), 60, f"cryod of {room.plan.node} ready")
        say(f"room:      {room.plan.node} at {room.plan.site} "
            f"({STUDY_IDS[room.plan.profile]}): {room.dir}")  # fmt: skip

    # ---- procedures, the rooms side by side (one procedure per room at a time)
    say(f"procedures at {args.speed:g}x simulated speed:")
    import concurrent.futures as cf

    pool = cf.ThreadPoolExecutor(max_workers=len(rooms), thread_name_prefix="room")
    try:
        for f in [pool.submit(_room_procedures, r, say) for r in rooms]:
            f.result()
    except BaseException:
        # Ctrl-C (or a room's error): the rooms' threads stop at their next request
        STOPPING.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    day0 = _site_day(dt.datetime.now(dt.UTC))

    # ---- every room's record at the collector, then the rooms and the collector stop
    hub_db = workdir / "cryohub.db"
    from .store.db import make_engine

    engine = make_engine(f"sqlite:///{hub_db}")
    try:
        for room in rooms:
            head = _wait_delivered(room, engine, 180)
            say(f"  {room.plan.node}: record up to entry {head} at the collector")
    finally:
        engine.dispose()
    for room in rooms:
        for proc in (room.daemon, room.sim):
            if proc is not None:
                procs.stop(proc)
    if procs.stop(collector) != 0:
        raise DemoError(f"cryohub run did not stop cleanly (see {hub_log})")
    say("rooms and cryohub run stopped; follow-up on the collector:")

    # ---- follow-up on a simulated clock, the infection signed
    clock = StudyClock()
    as_of = _enter_follow_up(hub, clock, day0, say)

    # ---- summary and every export, as of the simulated day
    out = workdir / "out"
    studies = sorted({STUDY_IDS[p.profile] for p in ROOMS})
    noon = dt.datetime(as_of.year, as_of.month, as_of.day, 12, 0, tzinfo=dt.UTC)
    with clock.at(noon):
        for study in studies:
            sdir = out / study
            sdir.mkdir(parents=True)
            text = hub.run("summary", "--study", study, "--on", as_of.isoformat(), "--csv",
                           str(sdir / "summary.csv"), "--plot", str(sdir / "pain.png"))  # fmt: skip
            (sdir / "summary.txt").write_text(text, encoding="utf-8")
            for fmt in FORMATS:
                hub.run("export", "--study", study, "--format", fmt, "--out", str(sdir / fmt),
                        as_user=MONITOR)  # fmt: skip
            say(f"  {study}: summary and exports ({', '.join(FORMATS)}) in {sdir}")
    # exit 4: problems found; they are shown (and in verify-all.txt), the demo goes on
    verify_all = hub.run("verify", "--all", ok=(0, 4))
    (workdir / "verify-all.txt").write_text(verify_all, encoding="utf-8")
    verify_self = hub.run("verify", "--self", "--log", str(workdir / "anchors" / "journal.log"))
    (workdir / "verify-self.txt").write_text(verify_self, encoding="utf-8")
    for line in verify_all.splitlines():
        if "consistent" in line or "problem(s)" in line:
            say(f"  verify --all: {line.strip()}")
    say("")
    say(f"summary (as of {as_of}):")
    say((out / STUDY_IDS[MORTONS] / "summary.txt").read_text(encoding="utf-8").rstrip())
    say("")
    say("Where everything is:")
    say(f"  work directory      {workdir}")
    say(f"  collector database  {hub_db}")
    say(f"  collector config    {config}")
    say(f"  summaries, exports  {out}")
    say(f"  room databases      {workdir / 'rooms'}/<room>/cryod.db")
    say(f"  command log         {hub.log}")
    say(f"  demo passwords      {pw_file} (mode 0600)")
    say(f"  web app             {web[0]} (log {workdir / 'cryohub-web.log'})")
    say(f"  the study's page    {web[0]}studies/{STUDY_IDS[MORTONS]}?on={as_of.isoformat()} "
        "(as of the simulated last day)")  # fmt: skip
    say("Research use only (NICE IPG747/HTG652). Demo data, not patients.")
    return 0


def _start_web(config: Path, workdir: Path, procs: Processes) -> str:
    """``cryohub web`` on the collector's config and a free loopback port; its URL once
    ``/healthz`` answers."""
    import urllib.request

    port = free_port()
    log = workdir / "cryohub-web.log"
    proc = procs.start("cryohub web", [PY, "-m", "cryod.hub.cli", "web", "--config", str(config),
                       "--port", str(port)], log)  # fmt: skip
    url = f"http://127.0.0.1:{port}/"

    def healthy() -> bool:
        if proc.poll() is not None:
            raise DemoError(f"cryohub web exited {proc.returncode} (see {log})")
        try:
            with urllib.request.urlopen(f"{url}healthz", timeout=2) as resp:  # noqa: S310
                return bool(resp.status == 200)
        except OSError:
            return False

    wait_until(healthy, 60, "cryohub web answering /healthz")
    return url


def _room_procedures(room: Room, say: Callable[[str], None]) -> None:
    for subject in room.plan.subjects:
        _run_procedure(room, subject, say)


# ---- the command -----------------------------------------------------------------------------
def add_parser(sub: Any) -> None:
    demo = sub.add_parser(
        "demo",
        help="the whole study on one machine: three simulated rooms, a broker, the collector, "
        "follow-up, summary and every export",
    )
    demo.add_argument(
        "--workdir", type=Path, help="an empty or new directory (default: a temp dir)"
    )
    demo.add_argument(
        "--speed", type=float, default=SPEED, help=f"simulated time speed-up ({SPEED:g})"
    )
    demo.add_argument(
        "--exit-when-done",
        action="store_true",
        help="stop the web app and the broker once the outputs are written (default: the web "
        "app serves until Ctrl-C)",
    )


def cmd_demo(args: argparse.Namespace) -> int:
    return run_demo(args)
