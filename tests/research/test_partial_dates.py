"""ISO 8601 partial dates: the forms accepted, their intervals, and interval-aware order."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from cryod.research.partial_dates import Precision, definitely_before, parse_partial

LONDON = ZoneInfo("Europe/London")


@pytest.mark.parametrize(
    ("text", "precision"),
    [
        ("2026", Precision.YEAR),
        ("2026-03", Precision.MONTH),
        ("2026-03-02", Precision.DAY),
        ("2026-03-02T09:25", Precision.TIME),
        ("2026-03-02T09:25:30", Precision.TIME),
        ("2026-03-02T09:25:30.5Z", Precision.TIME),
        ("2026-03-02T09:25+01:00", Precision.TIME),
    ],
)
def test_accepted_forms(text: str, precision: Precision) -> None:
    assert parse_partial(text).precision is precision


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("26-03-02", "not an ISO 8601 date"),
        ("2026-3", "not an ISO 8601 date"),
        ("2026-13", "not a calendar date"),
        ("2026-02-30", "not a calendar date"),
        ("2026-03-02T25:00", "not a time of day"),
        ("2026-03-02 09:25", "not an ISO 8601 date"),
        ("2026-03-02T09:25+24:00", "not a UTC offset"),
    ],
)
def test_refused_forms(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_partial(text)


def test_intervals_are_read_in_the_site_zone() -> None:
    # 1 July is in British Summer Time (UTC+1): the local day starts at 23:00 UTC the day before
    day = parse_partial("2026-07-01")
    assert day.earliest(LONDON) == dt.datetime(2026, 6, 30, 23, 0, tzinfo=dt.UTC)
    assert day.latest(LONDON) == dt.datetime(2026, 7, 1, 22, 59, 59, 999999, tzinfo=dt.UTC)
    month = parse_partial("2026-12")
    assert month.latest(LONDON) == dt.datetime(2026, 12, 31, 23, 59, 59, 999999, tzinfo=dt.UTC)
    year = parse_partial("2025")
    assert year.earliest(LONDON) == dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    # an explicit offset wins over the site zone
    assert parse_partial("2026-07-01T10:00Z").earliest(LONDON).hour == 10
    assert parse_partial("2026-07-01T10:00").earliest(LONDON).hour == 9


def test_definitely_before_only_when_every_instant_is_earlier() -> None:
    opened = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
    assert definitely_before(parse_partial("2026-03-01"), opened, LONDON)
    assert definitely_before(parse_partial("2026-02"), opened, LONDON)
    assert not definitely_before(parse_partial("2026-03-02"), opened, LONDON)
    assert not definitely_before(parse_partial("2026-03"), opened, LONDON)
    assert not definitely_before(parse_partial("2026"), opened, LONDON)
    assert definitely_before(parse_partial("2026-03-02T08:59"), opened, LONDON)
    assert not definitely_before(parse_partial("2026-03-02T09:00"), opened, LONDON)
    assert definitely_before(parse_partial("2026-03"), parse_partial("2026-04-01"), LONDON)
    assert not definitely_before(parse_partial("2026-03"), parse_partial("2026-03-15"), LONDON)


def test_fhir_form_keeps_partial_dates_and_adds_an_offset_to_times() -> None:
    assert parse_partial("2026-03").fhir(LONDON) == "2026-03"
    assert parse_partial("2026-07-01T10:00").fhir(LONDON) == "2026-07-01T10:00:00+01:00"
    assert parse_partial("2026-07-01T10:00Z").fhir(LONDON) == "2026-07-01T10:00:00+00:00"
