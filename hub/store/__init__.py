"""The collector's database: models, migrations, its audit chain, what it received.

``db`` (engines for PostgreSQL and SQLite), ``types`` (the column types that
differ between them), ``models``, ``migrate`` (Alembic, ``migrations/``),
``audit`` (the collector's own chain), ``received`` (what the ingest shell
writes and ``verify`` reads).
"""
