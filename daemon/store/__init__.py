"""The procedure log: SQLite (WAL, synchronous=FULL) through one batched writer.

Modules: ``models`` (tables), ``db`` (engines and PRAGMAs), ``migrate``
(Alembic on start, with a backup), ``writer`` (the one writer task),
``records`` (what gets recorded, with its audit entry), ``audit`` (hash
chain), ``recovery`` (interrupted cycles), ``outbox`` (MQTT events),
``queries`` and ``export`` (offline, read-only), ``samples`` (snapshot rows and
their compact stored form), ``retention`` (samples outside procedures),
``convert`` (``cryod migrate``: samples of the old form to the compact one).
"""

from .audit import AuditHead, VerifyResult, verify
from .db import make_engine, open_readonly
from .errors import StoreError
from .writer import SampleRow, Writer, WriterStatus

__all__ = [
    "AuditHead",
    "SampleRow",
    "StoreError",
    "VerifyResult",
    "Writer",
    "WriterStatus",
    "make_engine",
    "open_readonly",
    "verify",
]
