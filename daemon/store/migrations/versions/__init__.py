"""Alembic revisions of the procedure log schema."""
