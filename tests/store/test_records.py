"""What gets recorded: validation (no identifying patient data), the audit
entry in the same transaction, and the outbox the MQTT publisher reads."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from pathlib import Path

import jsonschema
import pytest
import yaml
from pydantic import ValidationError

from cryod.daemon.store import records
from cryod.daemon.store.audit import verify
from cryod.daemon.store.models import Outcome, Phase
from cryod.daemon.store.outbox import Outbox
from cryod.daemon.store.writer import Writer

from .conftest import cycle_open, procedure_meta


def rows(db: Path, sql: str, *args: object) -> list[tuple[object, ...]]:
    con = sqlite3.connect(db)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


@pytest.mark.parametrize("ref", ["MN-0042", "STUDY7-001", "p123", "A1B2C3", "X-9-Y"])
def test_pseudonyms_are_accepted(ref: str) -> None:
    assert records.check_patient_ref(ref) == ref


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("John Smith", "pseudonym"),  # a name with a space
        ("JohnSmith", "digit"),  # a name without one
        ("john.smith@nhs.net", "pseudonym"),  # e-mail
        ("9434765919", "NHS"),  # NHS number
        ("943-476-5919", "NHS"),  # NHS number, grouped with dashes
        ("P9434765919", "NHS"),  # embedded
        ("1980-02-29", "date"),  # date of birth
        ("AB-29-02-1980", "date"),
        ("ab", "pseudonym"),  # too short
        ("-MN1", "pseudonym"),
        ("MN_0042", "pseudonym"),
        ("X" * 33 + "1", "pseudonym"),
    ],
)
def test_identifying_refs_are_refused_without_echoing_them(ref: str, why: str) -> None:
    with pytest.raises(ValidationError) as info:
        procedure_meta(patient_ref=ref)
    text = str(info.value)
    assert why in text
    assert ref not in text  # a refused value never reaches a log via the error message


def test_unknown_keys_and_codes_are_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        procedure_meta(patient_name="x")
    with pytest.raises(ValidationError, match="indication"):
        procedure_meta(indication="tumour")
    with pytest.raises(ValidationError, match="indication_other"):
        procedure_meta(indication="other")
    with pytest.raises(ValidationError, match="needs a text"):
        records.ProcedureClose(procedure_id=1, closed_by="a", adverse_events=[{"code": "other"}])


async def test_study_id_can_be_required(writer: Writer) -> None:
    log = records.ProcedureLog(writer, study_id_required=True)
    with pytest.raises(records.RecordError, match="study_id"):
        await log.open_procedure(procedure_meta(study_id=None))
    assert await log.open_procedure(procedure_meta()) == 1


async def test_full_procedure_is_recorded_with_audit(
    writer: Writer, db_path: Path, heads: list
) -> None:
    log = records.ProcedureLog(writer)
    pid = await log.open_procedure(procedure_meta())
    await log.record_action(
        who="op-a",
        action="procedure_open",
        args={"patient_ref": "MN-0042", "site": "foot"},
        accepted=True,
        procedure_id=pid,
    )
    cid = await log.open_cycle(cycle_open(pid))
    with pytest.raises(records.RecordError, match="already has an open cycle"):
        await log.open_cycle(cycle_open(pid))
    with pytest.raises(records.RecordError, match="still running"):
        await log.close_procedure(
            records.ProcedureClose(procedure_id=pid, closed_by="op-a", adverse_events=[])
        )
    t_end = time.monotonic()
    summary = await log.close_cycle(
        records.CycleClose(
            cycle_id=cid,
            outcome=Outcome.COMPLETED,
            ended_at=dt.datetime.now(dt.UTC),
            ended_mono=t_end,
            min_tip_c=-72.5,
            time_below_m20_s=80.0,
            time_below_m40_s=61.0,
        )
    )
    assert summary["outcome"] == "completed"
    assert summary["time_below_c"] == {
        "-20": 80.0,
        "-40": 61.0,
    }
    with pytest.raises(records.RecordError, match="already closed"):
        await log.close_cycle(
            records.CycleClose(cid, Outcome.STOPPED, dt.datetime.now(dt.UTC), None)
        )
    aid = await log.raise_alarm(
        console="c1", code="supply_low", priority="high", message="Supply low", procedure_id=pid
    )
    await log.ack_alarm(aid, by="op-a")
    await log.clear_alarm(aid)
    await log.close_procedure(
        records.ProcedureClose(
            procedure_id=pid,
            closed_by="op-a",
            notes="uneventful",
            adverse_events=[{"code": "pain"}, {"code": "other", "text": "chilblain-type lesion"}],
        )
    )
    kinds = [r[0] for r in rows(db_path, "SELECT kind FROM audit ORDER BY seq")]
    events = [
        "procedure_opened",
        "operator_action",
        "cycle_opened",
        "cycle_closed",
        "alarm_raised",
        "alarm_acked",
        "alarm_cleared",
        "procedure_closed",
    ]
    # every insert and update of a research row is covered by a "row" entry in the
    # same transaction, just before the event that made it; at close, the two yes/no
    # codes given become adverse-event rows (one entry each) before the procedure's
    covered = [("row", e) for e in events[:-1]] + [("row", "row", "row", events[-1])]
    assert kinds == ["baseline", "database_created"] + [k for c in covered for k in c]
    # the writer reported every head after its COMMIT, and they verify
    assert [h.seq for h in heads] == [*range(4, 17, 2), 20]
    assert verify(db_path, expected_head=heads).ok
    # the patient reference is in procedures only: not in audit, actions or outbox
    everywhere = (
        json.dumps(rows(db_path, "SELECT payload FROM audit"))
        + json.dumps(rows(db_path, "SELECT args FROM operator_actions"))
        + json.dumps(rows(db_path, "SELECT payload FROM outbox"))
    )
    assert "MN-0042" not in everywhere
    assert rows(db_path, "SELECT patient_ref FROM procedures") == [("MN-0042",)]
    (duration,) = rows(db_path, "SELECT duration_s FROM cycles")[0]
    assert 0 <= duration < 5  # from the monotonic clock


async def test_outbox_in_order_and_marked_delivered(writer: Writer) -> None:
    log = records.ProcedureLog(writer)
    box = Outbox(writer)
    pid = await log.open_procedure(procedure_meta())
    cid = await log.open_cycle(cycle_open(pid, probe=2, phase=Phase.THAW))
    await log.close_cycle(
        records.CycleClose(cid, Outcome.ABORTED, dt.datetime.now(dt.UTC), time.monotonic())
    )
    aid = await log.raise_alarm(
        console="c1", code="lease_expired", priority="high", message="Lease expired"
    )
    await log.ack_alarm(aid, by="op-a")
    items = await box.pending()
    assert [(i.kind.value, i.payload.get("event")) for i in items] == [
        ("cycle", None),
        ("alarm", "raised"),
        ("alarm", "acknowledged"),
    ]
    assert [i.id for i in items] == sorted(i.id for i in items)
    assert items[0].payload["probe"] == 2
    assert items[0].payload["outcome"] == "aborted"
    assert items[0].payload["thaw_s"] is not None
    assert items[0].payload["freeze_s"] is None
    assert items[1].payload["latched"] is True  # high priority latches
    await box.mark_delivered([items[0].id, items[1].id])
    await box.mark_delivered([items[0].id])  # idempotent
    assert [i.id for i in await box.pending()] == [items[2].id]
    new_id = await box.add("alarm", {"event": "raised", "code": "x"})
    assert [i.id for i in await box.pending(limit=5)] == [items[2].id, new_id]
    with pytest.raises(ValueError, match="patient"):
        await box.add("cycle", {"meta": {"patient_ref": "MN-1"}})
    with pytest.raises(ValueError, match="telemetry"):
        await box.add("telemetry", {})


async def test_outbox_bodies_match_the_mqtt_contract(writer: Writer) -> None:
    """With the publisher's envelope added, bodies validate against docs/asyncapi.yaml."""
    spec_path = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
    components = yaml.safe_load(spec_path.read_text("utf-8"))["components"]
    log = records.ProcedureLog(writer)
    pid = await log.open_procedure(procedure_meta())
    for phase in (Phase.FREEZE, Phase.THAW):
        cid = await log.open_cycle(cycle_open(pid, phase=phase))
        await log.close_cycle(
            records.CycleClose(
                cid,
                Outcome.COMPLETED,
                dt.datetime.now(dt.UTC),
                time.monotonic(),
                min_tip_c=-70.0,
                time_below_m20_s=12.5,
                time_below_m40_s=float("nan"),
            )
        )
    aid = await log.raise_alarm(
        console="c1", code="SKIN_COLD", priority="medium", message="m", probe=1
    )
    await log.ack_alarm(aid, by="op-a")
    await log.clear_alarm(aid)
    items = await Outbox(writer).pending()
    assert len(items) == 5
    for seq, item in enumerate(items, start=1):
        message = {"schema": "cryod.mqtt/1", "session": 1, "seq": seq, "event_id": item.id}
        message.update(item.payload)
        name = "Cycle" if item.kind.value == "cycle" else "AlarmEvent"
        schema = {"$ref": f"#/components/schemas/{name}", "components": components}
        jsonschema.validate(message, schema)
    assert items[0].payload["time_below_m40c_s"] is None  # NaN never becomes a number
