"""Fixtures for the adapter tests: a fake upstream and an httpx client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest



@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client
