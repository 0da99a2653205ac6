"""MQTT test fixtures.

aiomqtt runs paho's blocking connect() in the loop's default executor, whose
idle worker threads live as long as the loop; shut the executor down at the
end of each test so the suite's leak check sees only real leaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest


@pytest.fixture(autouse=True)
async def _shutdown_default_executor() -> AsyncIterator[None]:
    yield
    await asyncio.get_running_loop().shutdown_default_executor()
