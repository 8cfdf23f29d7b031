"""Fixtures the tests of the shared code have in common."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """The HTTP session an outbox relay under test delivers with (generous timeout: a loaded
    machine must not turn a slow answer into a retry)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session
