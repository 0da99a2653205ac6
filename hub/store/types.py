"""Column types that differ between PostgreSQL and SQLite, mapped once.

- ``UtcDateTime``: an aware UTC ``datetime`` in Python on both; ``TIMESTAMP
  WITH TIME ZONE`` on PostgreSQL, fixed-width ISO 8601 text
  (``2026-03-01T09:15:02.123456Z``, 27 characters, sorts as time) on SQLite.
  Microseconds survive both, so a chain entry's time re-renders to the exact
  text its hash covers. A naive datetime is refused, never guessed.
- ``Json``: ``JSONB`` on PostgreSQL (queryable, indexable), JSON text on
  SQLite. JSONB reorders keys and drops duplicates, which the canonical
  encoding does anyway (maps sorted by key), and keeps numbers exact; it
  refuses the NUL character in strings (docs/collector.md).
- ``Bytes``: ``BYTEA`` / ``BLOB``.

tests/hub/test_types.py round-trips each on both backends.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Dialect, LargeBinary, String
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["TIME_FORMAT", "Bytes", "Json", "UtcDateTime"]

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

Json = JSON().with_variant(postgresql.JSONB(), "postgresql")
Bytes = LargeBinary()


class UtcDateTime(TypeDecorator[dt.datetime]):
    impl = String(27)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(String(27))

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, dt.datetime) or value.tzinfo is None:
            raise ValueError(f"a record time is an aware UTC datetime, not {value!r}")
        value = value.astimezone(dt.UTC)
        if dialect.name == "postgresql":
            return value
        return value.strftime(TIME_FORMAT)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if isinstance(value, str):
            return dt.datetime.strptime(value, TIME_FORMAT).replace(tzinfo=dt.UTC)
        if isinstance(value, dt.datetime):
            return value.astimezone(dt.UTC)
        raise ValueError(f"not a stored time: {value!r}")
