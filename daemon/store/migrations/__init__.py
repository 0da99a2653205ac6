"""Alembic environment for the procedure log (run programmatically by ``migrate``)."""
