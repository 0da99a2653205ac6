"""A real room's record-channel traffic, recorded for the collector's bench (tests/hub/bench.py).

    python -m tests.hub.record_traffic --seconds 30 --out /tmp/room.jsonl

**What runs** (every process real, started here): mosquitto on a free port,
``cryosim`` (the built-in 8-probe console profile ``cryosim-8``, real time,
speed 1) and ``cryod`` with the record channel on (node ``ROOM_NODE``, the
daemon's default ``sample_batch_interval_s``, 8 probes polled at 20 Hz). A
procedure is opened under the example Morton's neuroma study profile with the
demo's values (``cryod.daemon.demo``: no patient data), its baseline pain
score recorded, then the Cazzato protocol run on **all 8 probes**. A
subscriber that connected before the daemon started keeps every message on
``cryod-record/v1/#`` in arrival order: topic, payload bytes as sent, and the
time since the first message. The recording stops ``--seconds`` into the
freeze's steady part (which starts ``STEADY_AFTER_S`` after the ``run`` call
returned, past the run's own entries); the daemon and the console are stopped
after that, so nothing of the shutdown is in it.

**The file** is JSON lines: a header (``RECORDING_SCHEMA``, the code version it
was made with, node, site, where the freeze part starts) and one line per
message (``t_s``, ``topic``, ``payload_b64``). ``load`` validates every
message against docs/asyncapi.yaml again and refuses a recording with one that
fails (``RecordingError``, one line naming the message and the reason), or one
made with other code than this checkout's (``code_version``).

Exit status of the command: 0 recorded (a summary as JSON on stdout), 1 the
room did not give a valid recording (the reason on one line), 2 a bad option.

``cached`` is what the bench calls: the recording for this code version from
``.cache/bench-hub/`` if it is there, else made now (about ``seconds`` + 15 s:
the daemon's start, the procedure's opening, the freeze's first seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
CACHE_DIR = REPO / ".cache" / "bench-hub"
RECORDING_SCHEMA = "cryod-bench-recording/1"
ROOM_NODE = "room-rec"
ROOM_SITE = "rec"
PROBES = tuple(range(1, 9))
PROTOCOL = "morton-neuroma-cazzato2016"  # one 150 s freeze: longer than any recording here
#: the freeze's steady part starts this long after the ``run`` call returned
STEADY_AFTER_S = 2.0
#: the most freeze a recording can hold: the protocol's one freeze is 150 s
MAX_SECONDS = 140.0
#: what the recording depends on: the room's code, its configuration, the contract
_VERSIONED = ("daemon", "drivers", "simulators", "integrity", "common", "config")
_VERSIONED_FILES = ("docs/asyncapi.yaml", "tests/hub/record_traffic.py", "tests/e2e/harness.py")


class RecordingError(Exception):
    """A recording that must not be replayed; the message is one line."""


class MachineStalled(RecordingError):
    """The room's supervisor ended the freeze on stale data: this machine stalled the
    daemon's polls longer than its rule allows (3 polls, 150 ms at 20 Hz). The room
    did right; the recording is made again in a fresh room, as an operator would."""


#: rooms tried before a recording fails because this machine kept stalling the polls
ATTEMPTS = 3


@dataclass(frozen=True)
class Message:
    t_s: float  # since the recording's first message
    topic: str
    payload: bytes  # as the daemon sent it


@dataclass(frozen=True)
class Recording:
    code_version: str
    node: str
    site: str
    #: index of the first message of the freeze's steady part (what a long run loops)
    freeze_from: int
    messages: tuple[Message, ...]

    @property
    def freeze(self) -> tuple[Message, ...]:
        return self.messages[self.freeze_from :]


def code_version() -> str:
    """A digest of every file the recorded traffic depends on."""
    h = hashlib.sha256()
    files = [p for d in _VERSIONED for p in (REPO / d).rglob("*") if p.is_file()]
    files += [REPO / f for f in _VERSIONED_FILES]
    for path in sorted(files):
        if "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        h.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


# ---- validation and the file ----------------------------------------------------------------
def validate(messages: list[Message] | tuple[Message, ...]) -> None:
    """Every message against docs/asyncapi.yaml; RecordingError on the first that fails."""
    import jsonschema

    from tests.mqtt import asyncapi

    for i, m in enumerate(messages):
        try:
            doc = json.loads(m.payload)
            asyncapi.validate(m.topic, doc)
        except (ValueError, jsonschema.ValidationError, AssertionError) as exc:
            why = getattr(exc, "message", None) or str(exc).splitlines()[0]
            raise RecordingError(
                f"message {i} ({m.topic}) does not validate against docs/asyncapi.yaml: {why}"
            ) from None


def save(rec: Recording, path: Path) -> None:
    header = {
        "schema": RECORDING_SCHEMA,
        "code_version": rec.code_version,
        "node": rec.node,
        "site": rec.site,
        "freeze_from": rec.freeze_from,
        "messages": len(rec.messages),
    }
    lines = [json.dumps(header)]
    lines += [
        json.dumps({"t_s": round(m.t_s, 6), "topic": m.topic,
                    "payload_b64": base64.b64encode(m.payload).decode()})
        for m in rec.messages
    ]  # fmt: skip
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def load(path: Path, *, version: str | None = None) -> Recording:
    """Read and validate a recording; ``version``: the code version it must have been made with."""
    try:
        head, *rest = path.read_text().splitlines()
        header = json.loads(head)
        if header.get("schema") != RECORDING_SCHEMA:
            raise RecordingError(f"{path}: not a {RECORDING_SCHEMA} recording")
        messages = tuple(
            Message(float(d["t_s"]), str(d["topic"]), base64.b64decode(d["payload_b64"]))
            for d in map(json.loads, rest)
        )
        rec = Recording(str(header["code_version"]), str(header["node"]), str(header["site"]),
                        int(header["freeze_from"]), messages)  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RecordingError(f"{path}: cannot be read as a recording: {exc}") from None
    if len(messages) != header["messages"]:
        raise RecordingError(
            f"{path}: {len(messages)} messages, the header says {header['messages']}"
        )
    if version is not None and rec.code_version != version:
        raise RecordingError(
            f"{path}: made with code version {rec.code_version}, this is {version}"
        )
    if not 0 <= rec.freeze_from < len(messages):
        raise RecordingError(f"{path}: no freeze part (freeze_from {rec.freeze_from})")
    validate(messages)
    seqs = [json.loads(m.payload)["entry"]["seq"] for m in messages]
    if seqs != list(range(1, len(seqs) + 1)):
        raise RecordingError(f"{path}: the messages are not one chain from entry 1 without a gap")
    return rec


# ---- recording ------------------------------------------------------------------------------
def _room_config(workdir: Path, sim: Any, broker_port: int) -> Path:
    from tests.e2e.harness import daemon_config

    return daemon_config(
        workdir,
        sim,
        speed=1.0,
        poll_hz=20.0,
        lease_timeout_ms=1000,
        extra=(
            f'[mqtt]\nhost = "127.0.0.1"\nport = {broker_port}\nsite = "{ROOM_SITE}"\n'
            f'[node]\nid = "{ROOM_NODE}"\n'
            "[record]\nenabled = true\n"
        ),
    )


async def _record(seconds: float, workdir: Path, say: Any) -> Recording:
    import aiomqtt

    from cryod.daemon.demo import DEMO_BASELINE_PAIN, DEMO_OPEN
    from tests.e2e.harness import Daemon, Sim
    from tests.mqtt.broker import Mosquitto

    got: list[tuple[float, str, bytes]] = []
    broker = Mosquitto(workdir / "mq")
    broker.start()
    sim = daemon = None
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="bench-recorder") as client:
            await client.subscribe("cryod-record/v1/#", qos=1)

            async def pump() -> None:
                async for m in client.messages:
                    raw = m.payload if isinstance(m.payload, bytes) else str(m.payload).encode()
                    got.append((time.monotonic(), str(m.topic), raw))

            pumping = asyncio.create_task(pump())
            try:
                sim = await asyncio.to_thread(Sim, workdir, speed=1.0)
                cfg = _room_config(workdir, sim, broker.port)
                daemon = d = await asyncio.to_thread(Daemon, cfg, workdir)
                say("room started; opening the procedure")
                await asyncio.to_thread(d.call, "procedure_open", DEMO_OPEN)
                await asyncio.to_thread(d.call, "baseline_pain", DEMO_BASELINE_PAIN)
                await asyncio.to_thread(
                    d.call, "run", {"protocol": PROTOCOL, "probes": list(PROBES)}
                )
                steady_from = time.monotonic() + STEADY_AFTER_S
                stop_at = steady_from + seconds
                say(f"freezing {len(PROBES)} probes; recording {seconds:g} s of the freeze")
                while time.monotonic() < stop_at:  # real time is what is recorded
                    st = await asyncio.to_thread(d.status)
                    if st["engine"]["state"] != "freezing":
                        ended = f"the freeze ended early: {st['engine']}"
                        if "stale_data" in str(st["engine"].get("reason")):
                            raise MachineStalled(ended)
                        raise RecordingError(ended)
                    await asyncio.sleep(0.5)
            finally:
                pumping.cancel()
                await asyncio.gather(pumping, return_exceptions=True)
    finally:
        if daemon is not None:
            await asyncio.to_thread(daemon.stop)
        if sim is not None:
            await asyncio.to_thread(sim.stop)
        broker.stop()
    kept, seen = [], set()
    for g in got:  # QoS 1: a message can arrive twice; the first arrival is kept
        seq = json.loads(g[2])["entry"]["seq"]
        if g[0] <= stop_at and seq not in seen:
            seen.add(seq)
            kept.append(g)
    if not kept:
        raise RecordingError("no record message arrived")
    t0 = kept[0][0]
    messages = tuple(Message(t - t0, topic, raw) for t, topic, raw in kept)
    freeze_from = next((i for i, g in enumerate(kept) if g[0] >= steady_from), len(kept))
    validate(messages)
    rec = Recording(code_version(), ROOM_NODE, ROOM_SITE, freeze_from, messages)
    if not rec.freeze or not any(_kind(m) == "samples" for m in rec.freeze):
        raise RecordingError("the freeze part holds no sample batch")
    return rec


def _kind(m: Message) -> str:
    return str(json.loads(m.payload)["entry"]["kind"])


def record(seconds: float, out: Path, say: Any = print) -> Recording:
    """Run a real room, record ``seconds`` of its freeze, validate, write ``out``."""
    if not 0 < seconds <= MAX_SECONDS:
        raise RecordingError(f"seconds: {seconds:g} is not between 0 and {MAX_SECONDS:g}")
    attempt = 1
    while True:
        with tempfile.TemporaryDirectory(prefix="record-traffic-") as tmp:
            try:
                rec = asyncio.run(_record(seconds, Path(tmp), say))
                break
            except MachineStalled as exc:
                if attempt == ATTEMPTS:
                    raise MachineStalled(f"{exc} (in each of {ATTEMPTS} rooms)") from None
                say(f"{exc}; recording again in a fresh room")
        attempt += 1
    save(rec, out)
    return rec


def cached(seconds: float, say: Any = print) -> tuple[Recording, Path]:
    """This code version's recording of ``seconds`` of freeze: from the cache, or made now."""
    version = code_version()
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    path = CACHE_DIR / f"room-{version}-{seconds:g}s.jsonl"
    if path.exists():
        return load(path, version=version), path
    t0 = time.monotonic()
    say(f"recording {seconds:g} s of a real room's freeze into {path}")
    record(seconds, path, say)
    for old in CACHE_DIR.glob("room-*.jsonl"):  # other code versions' recordings
        if old != path and not old.name.startswith(f"room-{version}-"):
            old.unlink(missing_ok=True)
    say(f"recorded in {time.monotonic() - t0:.1f} s")
    return load(path, version=version), path


def summary(rec: Recording) -> dict[str, Any]:
    kinds: dict[str, int] = {}
    size = 0
    for m in rec.messages:
        kinds[_kind(m)] = kinds.get(_kind(m), 0) + 1
        size += len(m.payload)
    return {
        "code_version": rec.code_version,
        "messages": len(rec.messages),
        "freeze_messages": len(rec.freeze),
        "duration_s": round(rec.messages[-1].t_s, 3),
        "freeze_s": round(rec.messages[-1].t_s - rec.freeze[0].t_s, 3),
        "bytes": size,
        "kinds": kinds,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.hub.record_traffic", description=__doc__)
    p.add_argument("--seconds", type=float, default=30.0, help="seconds of the freeze recorded")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if not 0 < args.seconds <= MAX_SECONDS:
        print(f"record_traffic: --seconds: {args.seconds:g} is not between 0 and "
              f"{MAX_SECONDS:g} (the protocol's freeze is 150 s)", file=sys.stderr)  # fmt: skip
        return 2
    try:
        rec = record(args.seconds, args.out, lambda s: print(s, file=sys.stderr))
        rec = load(args.out)
    except RecordingError as exc:
        print(f"record_traffic: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary(rec)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
