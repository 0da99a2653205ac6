"""A small study as the rooms would send it: procedures and cycles under real chains.

Rooms are ``FakeRoom`` chains; each procedure is a ``procedures`` row in the
daemon's column set (``cryod.row/1`` bytes, salted digest), each cycle a
``cycles`` row. ``feed`` drives the messages through the pure ingest core and
the store (no broker), as the ingest shell does.
"""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cryod.hub import admin
from cryod.hub.ingest import Accept, decide
from cryod.hub.messages import parse_message
from cryod.hub.store import received
from cryod.hub.store.db import writer
from cryod.integrity import Kind, encode_row, format_time, row_digest

from .conftest import NODE, T0
from .fake_room import SALT, FakeRoom, raw

STUDY = "MN-CRYO-EXAMPLE"
ZONE = "Europe/London"


def procedure_uuid(subject: str, n: int = 1) -> uuid.UUID:
    return uuid.uuid5(uuid.NAMESPACE_URL, f"test/{subject}/{n}")


def _row_doc(room: FakeRoom, table: str, row_id: int, columns: dict[str, Any]) -> dict[str, Any]:
    canonical = encode_row(table, ["id"], columns)
    payload = {
        "table": table,
        "key": {"id": row_id},
        "op": "insert",
        "digest": row_digest(SALT, canonical),
        "encoding": "cryod.row/1",
    }
    rows = [
        {
            "table": table,
            "key": {"id": row_id},
            "canonical_b64": base64.b64encode(canonical).decode(),
            "salt_hex": SALT.hex(),
        }
    ]
    return room._entry("row", payload, rows=rows)


def procedure_doc(
    room: FakeRoom,
    *,
    row_id: int,
    subject: str,
    opened_at: dt.datetime,
    study: str | None = STUDY,
    n: int = 1,
) -> dict[str, Any]:
    closed = opened_at + dt.timedelta(hours=1)
    columns: dict[str, tuple[Kind, Any]] = {
        "id": (Kind.INT, row_id),
        "uuid": (Kind.TEXT, str(procedure_uuid(subject, n))),
        "console": (Kind.TEXT, "c1"),
        "opened_at": (Kind.TIME, format_time(opened_at)),
        "closed_at": (Kind.TIME, format_time(closed)),
        "patient_ref": (Kind.TEXT, subject),
        "indication": (Kind.TEXT, "mortons_neuroma"),
        "indication_other": (Kind.TEXT, None),
        "site": (Kind.TEXT, "third intermetatarsal space"),
        "side": (Kind.TEXT, "left"),
        "imaging": (Kind.TEXT, "ultrasound"),
        "anaesthesia": (Kind.TEXT, "local"),
        "operator": (Kind.TEXT, "dr-a"),
        "study_id": (Kind.TEXT, study),
        "probe_model": (Kind.TEXT, "IceRod"),
        "probe_lot": (Kind.TEXT, "L123"),
        "console_model": (Kind.TEXT, "cryosim-8"),
        "console_serial": (Kind.TEXT, "SIM-0001"),
        "console_firmware": (Kind.TEXT, "1.0"),
        "software_version": (Kind.TEXT, "0.9"),
        "host_only_limits": (Kind.BOOL, False),
        "notes": (Kind.TEXT, None),
        "adverse_events": (Kind.JSON, []),
        "closed_by": (Kind.TEXT, "dr-a"),
    }
    return _row_doc(room, "procedures", row_id, columns)


def cycle_doc(
    room: FakeRoom, *, row_id: int, procedure_id: int, started_at: dt.datetime, phase: str
) -> dict[str, Any]:
    columns: dict[str, tuple[Kind, Any]] = {
        "id": (Kind.INT, row_id),
        "procedure_id": (Kind.INT, procedure_id),
        "probe": (Kind.INT, 1),
        "phase": (Kind.TEXT, phase),
        "step_index": (Kind.INT, 0 if phase == "freeze" else 1),
        "protocol": (Kind.TEXT, "morton-neuroma-cazzato2016"),
        "planned_s": (Kind.REAL, 150.0),
        "target_tip_c": (Kind.REAL, -40.0 if phase == "freeze" else None),
        "started_at": (Kind.TIME, format_time(started_at)),
        "ended_at": (Kind.TIME, format_time(started_at + dt.timedelta(seconds=150))),
        "started_mono": (Kind.REAL, 100.0),
        "ended_mono": (Kind.REAL, 250.0),
        "duration_s": (Kind.REAL, 150.0),
        "outcome": (Kind.TEXT, "completed"),
        "outcome_reason": (Kind.TEXT, None),
        "min_tip_c": (Kind.REAL, -62.5 if phase == "freeze" else None),
        "time_to_target_s": (Kind.REAL, 31.0 if phase == "freeze" else None),
        "time_below_m20_s": (Kind.REAL, None),
        "time_below_m40_s": (Kind.REAL, None),
        "thaw_to_0_s": (Kind.REAL, 40.0 if phase == "thaw" else None),
        "supply_start_kpa": (Kind.REAL, None),
        "supply_end_kpa": (Kind.REAL, None),
        "gas_used_est_l": (Kind.REAL, None),
        "host_only_limits": (Kind.BOOL, False),
        "figures_note": (Kind.TEXT, None),
    }
    return _row_doc(room, "cycles", row_id, columns)


def register(
    engine: Engine,
    room: FakeRoom,
    node: str = NODE,
    *,
    first_seq: int = 1,
    first_hash: str | None = None,
) -> None:
    """Register ``room`` at the collector ``node``, from ``first_seq`` (its hash given
    when the room is registered from its head)."""
    with Session(writer(engine)) as s, s.begin():
        actor = admin.Actor("tester", (admin.Grant(admin.Role.ADMIN),))
        admin.add_room(
            s,
            actor,
            room=room.node,
            site=room.site,
            credential=room.node,
            cert_sha256=None,
            first_seq=first_seq,
            first_hash=first_hash,
            now=T0,
            node=node,
        )


def feed(engine: Engine, docs: list[dict[str, Any]]) -> None:
    """Each message through the pure core and the store; every one must be accepted."""
    for doc in docs:
        with Session(writer(engine)) as s, s.begin():
            msg = parse_message(raw(doc))
            d = decide(msg, received.room_view(s, msg.node), received_at=T0, profiles={})
            assert isinstance(d, Accept), d
            received.save(s, d)


#: subject -> (room, procedure opened at (UTC)); 2026-03-29 is the spring DST change in London
SUBJECTS = {
    "MN-0001": ("room-a", dt.datetime(2026, 3, 20, 10, 0, tzinfo=dt.UTC)),
    "MN-0002": ("room-a", dt.datetime(2026, 3, 21, 10, 0, tzinfo=dt.UTC)),
    "MN-0003": ("room-a", dt.datetime(2026, 3, 22, 10, 0, tzinfo=dt.UTC)),
    "MN-0004": ("room-b", dt.datetime(2026, 3, 23, 10, 0, tzinfo=dt.UTC)),
}


def build_study(engine: Engine, node: str = NODE) -> dict[str, FakeRoom]:
    """Two rooms at two sites, four subjects, one procedure each (two cycles each)."""
    rooms = {
        "room-a": FakeRoom("room-a", "site-a"),
        "room-b": FakeRoom("room-b", "site-b"),
    }
    for room in rooms.values():
        register(engine, room, node)
    ids: dict[str, int] = {}
    docs = []
    cycle_id = 0
    for subject, (node, opened) in SUBJECTS.items():
        room = rooms[node]
        ids[node] = ids.get(node, 0) + 1
        docs.append(procedure_doc(room, row_id=ids[node], subject=subject, opened_at=opened))
        for phase, offset in (("freeze", 10), ("thaw", 13)):
            cycle_id += 1
            docs.append(
                cycle_doc(
                    room,
                    row_id=cycle_id,
                    procedure_id=ids[node],
                    started_at=opened + dt.timedelta(minutes=offset),
                    phase=phase,
                )
            )
    feed(engine, docs)
    return rooms
