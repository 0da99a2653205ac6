"""Every entry of a real room's chain, read from the store and encoded, is what the
collector's strict parser and ingest core accept, in order, with rows and blocks that
re-hash; what cannot travel says why."""

from __future__ import annotations

import base64
import datetime as dt
import json

import jsonschema
import pytest
from sqlalchemy import Engine

from cryod.daemon.store.writer import Writer
from cryod.hub.ingest import Accept, Registration, RoomView, decide
from cryod.hub.messages import parse_message
from cryod.integrity import Head, decode_row
from tests.mqtt import asyncapi

from .room import NODE, PATIENT_REF, SITE, doc, messages, record_procedure


def ingest_all(raws: list[bytes]) -> list[Accept]:
    head: Head | None = None
    out = []
    for raw in raws:
        msg = parse_message(raw)
        d = decide(
            msg,
            RoomView(Registration(NODE, SITE), head),
            received_at=msg.sent_at + dt.timedelta(seconds=0.1),
            profiles={},
        )
        assert isinstance(d, Accept), (msg.seq, d)
        head = Head(d.entry.seq, d.entry.hash)
        out.append(d)
    return out


async def test_a_whole_procedure_is_accepted_by_the_collector_entry_by_entry(
    writer: Writer, engine: Engine
) -> None:
    await record_procedure(writer)
    raws = list(messages(engine))
    accepted = ingest_all(raws)
    assert [a.entry.seq for a in accepted] == list(range(1, len(raws) + 1))
    kinds = {a.entry.kind for a in accepted}
    assert {"row", "samples", "procedure_opened", "procedure_closed"} <= kinds


async def test_rows_travel_as_they_stand_and_earlier_versions_say_superseded(
    writer: Writer, engine: Engine
) -> None:
    await record_procedure(writer, cycles=1)
    docs = [doc(r) for r in messages(engine)]
    cycle_entries = [d for d in docs if d["entry"]["kind"] == "row"
                     and d["entry"]["payload"]["table"] == "cycles"]  # fmt: skip
    first, *_, last = cycle_entries
    assert first["rows"] == []
    assert first["withheld"] == {"reason": "superseded", "by_seq": cycle_entries[1]["entry"]["seq"]}
    assert len(last["rows"]) == 1
    assert last["withheld"] is None
    row = decode_row(base64.b64decode(last["rows"][0]["canonical_b64"]))
    assert row.table == "cycles"
    assert row.columns["min_tip_c"][1] == -71.25
    # the closed procedure's row carries the pseudonym: the one personal field allowed
    procs = [d for d in docs if d["entry"]["kind"] == "row"
             and d["entry"]["payload"]["table"] == "procedures" and d["rows"]]  # fmt: skip
    assert len(procs) == 1
    prow = decode_row(base64.b64decode(procs[0]["rows"][0]["canonical_b64"]))
    assert prow.columns["patient_ref"][1] == PATIENT_REF


async def test_samples_outside_procedures_stay_in_the_room(writer: Writer, engine: Engine) -> None:
    await record_procedure(writer, cycles=1)
    batches = [doc(r) for r in messages(engine)]
    batches = [d for d in batches if d["entry"]["kind"] == "samples"]
    carried = [d for d in batches if d["block"] is not None]
    withheld = [d for d in batches if d["block"] is None]
    assert carried
    assert withheld
    assert all(d["withheld"] == {"reason": "not_procedure", "by_seq": None} for d in withheld)
    for d in carried:  # a carried block holds procedure samples only in this record
        assert d["withheld"] is None


async def test_no_message_carries_the_pseudonym_outside_the_procedure_row(
    writer: Writer, engine: Engine
) -> None:
    await record_procedure(writer, cycles=1)
    for raw in messages(engine):
        d = doc(raw)
        text = raw.decode()
        assert PATIENT_REF not in text  # the pseudonym is inside base64 row bytes only
        rows = [decode_row(base64.b64decode(r["canonical_b64"])) for r in d["rows"]]
        for row in rows:
            if row.table != "procedures":
                assert PATIENT_REF not in repr(row.columns)


async def test_every_message_validates_against_the_asyncapi_document(
    writer: Writer, engine: Engine
) -> None:
    await record_procedure(writer, cycles=1)
    topic = f"cryod-record/v1/{SITE}/{NODE}/chain"
    names = {asyncapi.validate(topic, doc(raw)) for raw in messages(engine)}
    assert names == {"recordChain"}
    one = doc(next(iter(messages(engine))))
    with pytest.raises(jsonschema.ValidationError):  # closed: the check can fail
        asyncapi.validate(topic, {**one, "undocumented": 1})


async def test_a_redacted_procedure_travels_as_redacted_and_the_collector_accepts_it(
    writer: Writer, engine: Engine
) -> None:
    from cryod.daemon.store.chain import ChainedSession
    from cryod.daemon.store.redaction import redact_procedure

    pid = await record_procedure(writer, cycles=1)
    await writer.aclose()  # redaction runs with cryod stopped
    with ChainedSession(engine) as session, session.begin():
        redact_procedure(session, pid, by="dpo", reason="consent withdrawn")
    docs = [doc(r) for r in messages(engine)]
    ingest_all([json.dumps(d).encode() for d in docs])
    batches = [d for d in docs if d["entry"]["kind"] == "samples"]
    erased = [d for d in batches if (d["withheld"] or {}).get("reason") == "redacted"]
    assert erased  # the procedure's batches: erased, and said so
    assert all(d["block"] is None for d in batches)
    rows = [d for d in docs if d["entry"]["kind"] == "row" and d["rows"]]
    assert rows == []  # every row of the procedure is gone: none travels
    assert PATIENT_REF not in json.dumps(docs)
