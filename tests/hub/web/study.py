"""A small study in a collector database, delivered as the rooms would deliver it.

Rooms are ``tests/hub/fake_room.FakeRoom`` chains carrying real procedure,
cycle and alarm rows (the daemon's columns) and tip-temperature sample
batches; they pass through the real ingest core and store
(``tests/hub/test_received.ingest``). Users are added through
``cryod.hub.admin`` with argon2 hashes (hashed once per test session).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import uuid
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cryod.hub import admin
from cryod.hub.access import Grant, Role
from cryod.hub.passwords import hash_password
from cryod.hub.store.db import writer
from cryod.integrity import (
    SAMPLES_V1,
    Kind,
    batch_digest,
    encode_row,
    encode_sample_batch,
    format_time,
    row_digest,
)
from tests.hub.conftest import NODE, T0
from tests.hub.fake_room import SALT, FakeRoom, raw
from tests.hub.followup_study import register
from tests.hub.test_received import ingest

STUDY = "MN-CRYO-EXAMPLE"
OTHER_STUDY = "OTHER-STUDY"
PASSWORD = "correct horse battery"  # every test user's (>= 12 characters)

#: hostile text, stored by a room and shown by the app as text
HOSTILE = (
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(2)>',
    "'; DROP TABLE users; --",
    "Ωμέγα 神経腫 نَص " + "x" * 3000,
)

INT, R, S, TM, B, J = Kind.INT, Kind.REAL, Kind.TEXT, Kind.TIME, Kind.BOOL, Kind.JSON


@functools.cache
def password_hash() -> str:
    return hash_password(PASSWORD)


class Room(FakeRoom):
    """A FakeRoom that sends whole research rows and tip samples."""

    def put(self, table: str, columns: dict[str, tuple[Kind, Any]]) -> dict[str, Any]:
        canonical = encode_row(table, ["id"], columns)
        key = {"id": columns["id"][1]}
        payload = {
            "table": table,
            "key": key,
            "op": "insert",
            "digest": row_digest(SALT, canonical),
            "encoding": "cryod.row/1",
        }
        rows = [
            {
                "table": table,
                "key": key,
                "canonical_b64": base64.b64encode(canonical).decode(),
                "salt_hex": SALT.hex(),
            }
        ]
        return self._entry("row", payload, rows=rows)

    def procedure(
        self,
        pid: int,
        *,
        study: str | None,
        patient_ref: str,
        opened: dt.datetime,
        closed: dt.datetime | None = None,
        notes: str | None = None,
        indication_other: str | None = None,
        events: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        cols: dict[str, tuple[Kind, Any]] = {
            "id": (INT, pid),
            "uuid": (S, str(uuid.uuid5(uuid.NAMESPACE_URL, f"cryod:{self.node}/{pid}"))),
            "console": (S, "c1"),
            "opened_at": (TM, format_time(opened)),
            "closed_at": (TM, None if closed is None else format_time(closed)),
            "patient_ref": (S, patient_ref),
            "indication": (S, "mortons_neuroma"),
            "indication_other": (S, indication_other),
            "site": (S, self.site),
            "side": (S, "left"),
            "imaging": (S, "ultrasound"),
            "anaesthesia": (S, "local"),
            "operator": (S, "op-7"),
            "study_id": (S, study),
            "probe_model": (S, "IceRod 1.5"),
            "probe_lot": (S, "L123"),
            "console_model": (S, None),
            "console_serial": (S, None),
            "console_firmware": (S, None),
            "software_version": (S, "0.1.0"),
            "host_only_limits": (B, False),
            "notes": (S, notes),
            "adverse_events": (J, events),
            "closed_by": (S, None if closed is None else "op-7"),
        }
        return self.put("procedures", cols)

    def cycle(
        self,
        cid: int,
        pid: int,
        *,
        probe: int,
        phase: str,
        start: dt.datetime,
        end: dt.datetime,
        min_tip_c: float | None,
        note: str | None = None,
    ) -> dict[str, Any]:
        return self.put(
            "cycles",
            {
                "id": (INT, cid),
                "procedure_id": (INT, pid),
                "probe": (INT, probe),
                "phase": (S, phase),
                "step_index": (INT, cid),
                "protocol": (S, "classic-90"),
                "planned_s": (R, 90.0),
                "target_tip_c": (R, -40.0),
                "started_at": (TM, format_time(start)),
                "ended_at": (TM, format_time(end)),
                "duration_s": (R, (end - start).total_seconds()),
                "outcome": (S, "completed"),
                "outcome_reason": (S, None),
                "min_tip_c": (R, min_tip_c),
                "time_below_m20_s": (R, 60.0),
                "time_below_m40_s": (R, 45.0),
                "figures_note": (S, note),
            },
        )

    def alarm(self, aid: int, pid: int, *, message: str, at: dt.datetime) -> dict[str, Any]:
        return self.put(
            "alarms",
            {
                "id": (INT, aid),
                "procedure_id": (INT, pid),
                "console": (S, "c1"),
                "code": (S, "TIP_STALE"),
                "priority": (S, "high"),
                "probe": (INT, 1),
                "message": (S, message),
                "raised_at": (TM, format_time(at)),
                "acked_at": (TM, None),
                "acked_by": (S, None),
                "cleared_at": (TM, None),
            },
        )

    def tips(
        self, pid: int, start: dt.datetime, values: list[tuple[float, int, float | None]]
    ) -> dict[str, Any]:
        """One sample batch: (seconds after ``start``, probe, tip °C or None: invalid)."""
        rows = []
        for offset, probe, value in values:
            self._sample_id += 1
            t = start.timestamp() + offset
            validity = "valid" if value is not None else "invalid"
            rows.append(
                (self._sample_id, pid, "c1", t, 1000.0 + offset, probe, "tip_c", value, validity)
            )
        data = encode_sample_batch(rows, SAMPLES_V1)
        payload = {
            "table": "samples",
            "first": rows[0][0],
            "last": rows[-1][0],
            "rows": len(rows),
            "digest": batch_digest(data),
            "encoding": SAMPLES_V1,
            "op": "insert",
        }
        block = {"encoding": SAMPLES_V1, "data_b64": base64.b64encode(data).decode()}
        return self._entry("samples", payload, block=block)


def send(engine: Engine, room: Room, *docs: dict[str, Any]) -> None:
    for doc in docs:
        for d in ingest(engine, raw(doc), room.now):
            assert type(d).__name__ == "Accept", d


def add_user(engine: Engine, name: str, *grants: Grant) -> None:
    with Session(writer(engine)) as s, s.begin():
        actor = admin.Actor("tester", (Grant(Role.ADMIN),))
        admin.add_user(
            s, actor, name=name, password_hash=password_hash(), grants=grants, now=T0, node=NODE
        )


def a_procedure(
    room: Room, pid: int, *, study: str | None, opened: dt.datetime, **kw: Any
) -> list[dict[str, Any]]:
    """A closed procedure: two probes frozen and thawed, samples every second."""
    closed = opened + dt.timedelta(seconds=200)
    docs = [room.procedure(pid, study=study, opened=opened, closed=closed, **kw)]
    for probe in (1, 2):
        docs.append(
            room.cycle(
                pid * 10 + probe * 2 - 1,
                pid,
                probe=probe,
                phase="freeze",
                start=opened + dt.timedelta(seconds=20),
                end=opened + dt.timedelta(seconds=110),
                min_tip_c=-80.0 - probe,
            )
        )
        docs.append(
            room.cycle(
                pid * 10 + probe * 2,
                pid,
                probe=probe,
                phase="thaw",
                start=opened + dt.timedelta(seconds=110),
                end=opened + dt.timedelta(seconds=140),
                min_tip_c=None,
            )
        )
    room.now = opened
    for chunk in range(0, 200, 50):
        values: list[tuple[float, int, float | None]] = []
        for s in range(chunk, chunk + 50):
            for probe in (1, 2):
                if 20 <= s < 110:
                    v: float | None = max(-80.0 - probe, 30.0 - 2.0 * (s - 20))
                elif 110 <= s < 140:
                    v = -80.0 + 3.0 * (s - 110)
                else:
                    v = 30.0
                if s == 150 and probe == 2:
                    v = None  # one invalid reading: a gap, not a number
                values.append((float(s), probe, v))
        room.now = opened + dt.timedelta(seconds=chunk + 49)
        docs.append(room.tips(pid, opened, values))
    room.now = closed
    return docs


def build_study(engine: Engine) -> dict[str, Room]:
    """Two sites (leeds with two rooms, york with one), procedures, users of each role."""
    leeds1 = Room("leeds-th2", "leeds", start=T0)
    leeds2 = Room("leeds-th3", "leeds", start=T0)
    york = Room("york-th1", "york", start=T0)
    for room in (leeds1, leeds2, york):
        register(engine, room)
    day = dt.timedelta(days=1)
    send(
        engine,
        leeds1,
        *a_procedure(
            leeds1,
            1,
            study=STUDY,
            opened=T0,
            patient_ref="MN-0001",
            notes=HOSTILE[0],
            indication_other=HOSTILE[1],
        ),
    )
    send(engine, leeds1, leeds1.alarm(1, 1, message=HOSTILE[2], at=T0 + dt.timedelta(seconds=60)))
    send(
        engine,
        leeds1,
        *a_procedure(
            leeds1,
            2,
            study=STUDY,
            opened=T0 + day,
            patient_ref="MN-0002",
            notes=HOSTILE[3],
            events=[{"code": "bruising", "text": HOSTILE[0]}],
        ),
    )
    send(
        engine, leeds2, leeds2.procedure(1, study=STUDY, patient_ref="MN-0003", opened=T0 + 2 * day)
    )
    send(engine, york, *a_procedure(york, 1, study=STUDY, opened=T0 + day, patient_ref="MN-0101"))
    send(engine, york, york.procedure(2, study=OTHER_STUDY, patient_ref="OT-0001", opened=T0))
    add_user(engine, "ada", Grant(Role.ADMIN))
    add_user(engine, "cora", Grant(Role.COORDINATOR, STUDY, "leeds"))
    add_user(engine, "ivan", Grant(Role.INVESTIGATOR, STUDY, None))
    add_user(engine, "mona", Grant(Role.MONITOR, STUDY, None))
    add_user(engine, "yves", Grant(Role.COORDINATOR, STUDY, "york"))
    return {"leeds1": leeds1, "leeds2": leeds2, "york": york}
