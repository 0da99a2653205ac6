"""Alembic environment for the collector, usable from the installed package.

``cryod.hub.store.migrate`` passes an open connection in
``config.attributes["connection"]`` (no alembic.ini). Batch mode is on for
SQLite, which cannot ALTER most things; PostgreSQL runs the same scripts
with plain ALTERs.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from cryod.hub.store.models import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=metadata,
        render_as_batch=True,
        literal_binds=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    given = config.attributes.get("connection")
    if given is None:
        raise RuntimeError("run migrations with cryohub migrate (cryod.hub.store.migrate)")
    _run(given)
