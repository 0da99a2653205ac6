"""The web app's read model on both databases: procedures, cycles, alarms and
tip samples decoded from the rows and blocks the rooms sent."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from cryod.hub.web.records import Filters, RecordIndex, tip_series

from .study import HOSTILE, OTHER_STUDY, STUDY, build_study


def test_the_index_and_the_samples_on_both_databases(migrated: Engine) -> None:
    build_study(migrated)
    index = RecordIndex()
    with Session(migrated) as s:
        index.refresh(s)
        index.refresh(s)  # nothing new: nothing folded twice
    everything = index.procedures(lambda study, site: True)
    assert [(p.node, p.id) for p in everything] == [
        ("leeds-th3", 1),
        ("york-th1", 1),
        ("leeds-th2", 2),
        ("york-th1", 2),  # opened at the same time as leeds-th2 1: by room, newest first
        ("leeds-th2", 1),
    ]
    assert index.undecodable == 0
    first = index.procedure("leeds-th2", 1)
    assert first is not None
    assert first.values["notes"] == HOSTILE[0]
    assert first.study == STUDY
    assert first.status == "closed"
    assert first.opened_at == dt.datetime(2026, 3, 1, 9, 15, 2, 123456, tzinfo=dt.UTC)
    assert [c["phase"] for c in index.children("leeds-th2", "cycles", 1)] == [
        "freeze",
        "thaw",
        "freeze",
        "thaw",
    ]
    assert [a["message"] for a in index.children("leeds-th2", "alarms", 1)] == [HOSTILE[2]]
    assert [p.id for p in everything if Filters(study=OTHER_STUDY).keep(p)] == [2]
    assert [p.node for p in everything if Filters(status="open").keep(p)] == [
        "leeds-th3",
        "york-th1",
    ]
    with Session(migrated) as s:
        newest, series, duration = tip_series(s, first, dt.datetime.now(dt.UTC))
    assert newest > 0
    assert duration == 200.0
    assert sorted(series) == [1, 2]
    assert len(series[1]) == 200
    assert series[1][0] == (0.0, 30.0)
    assert min(v for _t, v in series[1] if v is not None) == -81.0
    assert [t for t, v in series[2] if v is None] == [150.0]  # the invalid reading
    # another procedure's samples are not this one's
    other = index.procedure("leeds-th2", 2)
    assert other is not None
    with Session(migrated) as s:
        _n, series2, _d = tip_series(s, other, dt.datetime.now(dt.UTC))
    assert len(series2[1]) == 200


def test_sample_blocks_arriving_leave_the_sorted_procedures_alone(migrated: Engine) -> None:
    """A room streaming samples changes no procedure: the sorted list is not rebuilt (it
    was on every refresh, a page's p95 under ingest); a new procedure row rebuilds it."""
    from .study import send

    rooms = build_study(migrated)
    index = RecordIndex()
    with Session(migrated) as s:
        index.refresh(s)
    before = index.procedures(lambda study, site: True)
    built = index._sorted
    assert built is not None
    leeds = rooms["leeds1"]
    send(migrated, leeds, leeds.tips(2, leeds.now, [(300.0, 1, 20.0), (300.5, 1, 19.0)]))
    with Session(migrated) as s:
        index.refresh(s)
    assert index._sorted is built
    assert index.procedures(lambda study, site: True) == before
    send(migrated, leeds, leeds.procedure(3, study=STUDY, patient_ref="MN-0009", opened=leeds.now))
    with Session(migrated) as s:
        index.refresh(s)
    assert index._sorted is None
    now = [(p.node, p.id) for p in index.procedures(lambda study, site: True)]
    assert ("leeds-th2", 3) in now
    assert len(now) == len(before) + 1
