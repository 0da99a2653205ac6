"""Alembic environment, usable from the installed package without alembic.ini.

``cryod.daemon.store.migrate`` passes an open connection in
``config.attributes["connection"]``; the standalone fallback opens the URL in
``sqlalchemy.url``. Batch mode is on because SQLite cannot ALTER most things.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from cryod.daemon.store.models import metadata

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
    if given is not None:
        _run(given)
    else:
        from cryod.daemon.store.db import make_engine

        url = config.get_main_option("sqlalchemy.url") or ""
        engine = make_engine(url.removeprefix("sqlite:///"))
        try:
            with engine.begin() as conn:
                _run(conn)
        finally:
            engine.dispose()
