"""Fixtures shared by every test that needs a real gateway.

Each test gets its own ``FakeUpstream`` (a real SSE server on a loopback port), its own
deployment folder whose providers point at it, and ``start_gateway`` to run the real
gateway (uvicorn + FastAPI) on a loopback port; everything is stopped after the test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devtools import FakeUpstream
from tests.support.deployment import make_deployment
from tests.support.server import GatewayServer


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def fake(upstream: FakeUpstream) -> FakeUpstream:
    """The same fake upstream, under the name the adapter and devtools tests use."""
    return upstream


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Path:
    return make_deployment(tmp_path / "deploy", upstream.url)


@pytest.fixture
def start_gateway(deploy: Path) -> Iterator[Callable[..., GatewayServer]]:
    """Start a gateway on ``deploy`` (or on ``root=`` another folder); stopped after the test."""
    servers: list[GatewayServer] = []

    def start(overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None,
              root: Path | None = None) -> GatewayServer:
        server = GatewayServer(root or deploy, overrides=overrides, env=env).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        yield http
