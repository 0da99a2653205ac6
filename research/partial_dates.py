"""ISO 8601 dates as clinicians know them: sometimes only the year, or the month.

An adverse event's onset may be known to the day, to the month (``2026-03``)
or only to the year (``2026``); a time (``2026-03-01T14:30``, with or without
an offset) is allowed too. A value stands for an interval of instants: its
earliest and latest. A date without an offset is a calendar date at the
site, so the interval is taken in the study's IANA time zone. Comparisons
are interval-aware: ``definitely_before(a, b)`` holds only when every instant
``a`` may mean is before every instant ``b`` may mean, so a partial date is
never refused for what it might be.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

__all__ = ["PartialDateTime", "Precision", "definitely_before", "parse_partial"]

_PATTERN = re.compile(
    r"(?P<year>\d{4})"
    r"(?:-(?P<month>\d{2})"
    r"(?:-(?P<day>\d{2})"
    r"(?:T(?P<hour>\d{2}):(?P<minute>\d{2})(?::(?P<second>\d{2})(?:\.(?P<fraction>\d{1,6}))?)?"
    r"(?P<offset>Z|[+-]\d{2}:\d{2})?)?)?)?"
)


class Precision(StrEnum):
    YEAR = "year"
    MONTH = "month"
    DAY = "day"
    TIME = "time"


@dataclass(frozen=True, slots=True)
class PartialDateTime:
    """A parsed partial date; ``text`` is the value as given."""

    text: str
    precision: Precision
    year: int
    month: int = 1
    day: int = 1
    time: dt.time | None = None
    offset: dt.timezone | None = None

    def earliest(self, tz: dt.tzinfo) -> dt.datetime:
        """First instant the value may mean (UTC), dates read in ``tz``."""
        zone = self.offset or tz
        if self.time is not None:
            start = dt.datetime.combine(dt.date(self.year, self.month, self.day), self.time)
        else:
            start = dt.datetime(self.year, self.month, self.day)
        return start.replace(tzinfo=zone).astimezone(dt.UTC)

    def latest(self, tz: dt.tzinfo) -> dt.datetime:
        """Last instant the value may mean (UTC; exclusive end minus one microsecond)."""
        zone = self.offset or tz
        if self.precision is Precision.TIME:
            return self.earliest(tz)
        if self.precision is Precision.DAY:
            end = dt.datetime(self.year, self.month, self.day) + dt.timedelta(days=1)
        elif self.precision is Precision.MONTH:
            nxt = (self.year + 1, 1) if self.month == 12 else (self.year, self.month + 1)
            end = dt.datetime(nxt[0], nxt[1], 1)
        else:
            end = dt.datetime(self.year + 1, 1, 1)
        return (end.replace(tzinfo=zone) - dt.timedelta(microseconds=1)).astimezone(dt.UTC)

    def fhir(self, tz: ZoneInfo) -> str:
        """As a FHIR ``dateTime``: partial dates as they are; a time gets its offset."""
        if self.precision is not Precision.TIME:
            return self.text
        local = self.earliest(tz).astimezone(self.offset or tz)
        return local.isoformat(timespec="seconds")


def parse_partial(text: str) -> PartialDateTime:
    """Parse ``YYYY``, ``YYYY-MM``, ``YYYY-MM-DD`` or ``YYYY-MM-DDThh:mm[:ss[.f]][offset]``.

    Raises ``ValueError`` with a message naming the accepted forms.
    """
    m = _PATTERN.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(
            "not an ISO 8601 date: use YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss][offset]"
        )
    g = m.groupdict()
    year = int(g["year"])
    month = int(g["month"] or 1)
    day = int(g["day"] or 1)
    try:
        dt.date(year, month, day)
    except ValueError as exc:
        raise ValueError(f"not a calendar date ({exc})") from None
    if g["hour"] is None:
        precision = Precision.DAY if g["day"] else Precision.MONTH if g["month"] else Precision.YEAR
        return PartialDateTime(text, precision, year, month, day)
    fraction = (g["fraction"] or "").ljust(6, "0")
    try:
        time = dt.time(int(g["hour"]), int(g["minute"]), int(g["second"] or 0), int(fraction or 0))
    except ValueError as exc:
        raise ValueError(f"not a time of day ({exc})") from None
    offset = None
    if g["offset"] == "Z":
        offset = dt.UTC
    elif g["offset"]:
        sign = 1 if g["offset"][0] == "+" else -1
        hours, minutes = int(g["offset"][1:3]), int(g["offset"][4:6])
        if hours > 23 or minutes > 59:
            raise ValueError("not a UTC offset")
        offset = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    return PartialDateTime(text, Precision.TIME, year, month, day, time, offset)


def definitely_before(a: PartialDateTime, b: PartialDateTime | dt.datetime, tz: dt.tzinfo) -> bool:
    """True when every instant ``a`` may mean is before every instant ``b`` may mean."""
    b_start = b if isinstance(b, dt.datetime) else b.earliest(tz)
    return a.latest(tz) < b_start
