"""Record-channel fixtures: a migrated store with a running writer (tests/store's), and
the default executor shut down after each test (aiomqtt's connect runs there)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.store.conftest import db_path, engine, heads, writer

__all__ = ["db_path", "engine", "heads", "writer"]


@pytest.fixture(autouse=True)
async def _shutdown_default_executor() -> AsyncIterator[None]:
    yield
    await asyncio.get_running_loop().shutdown_default_executor()
