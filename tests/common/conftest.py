"""Fixtures the tests of the shared code have in common."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    """The HTTP client an outbox relay under test delivers with (generous timeout: a loaded
    machine must not turn a slow answer into a retry)."""
    async with httpx.AsyncClient(timeout=5) as client:
        yield client
