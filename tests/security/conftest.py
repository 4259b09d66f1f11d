from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devtools import FakeUpstream
from tests.security.support import KeyPair, rsa_pair
from tests.support.deployment import make_deployment
from tests.support.server import GatewayServer


@pytest.fixture(scope="session")
def rsa_key() -> KeyPair:
    return rsa_pair("rsa-1")


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Path:
    return make_deployment(tmp_path / "deploy", upstream.url)


@pytest.fixture
def start_gateway(deploy: Path) -> Iterator[Callable[..., GatewayServer]]:
    servers: list[GatewayServer] = []

    def start(overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> GatewayServer:
        server = GatewayServer(deploy, overrides=overrides, env=env).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0)) as http:
        yield http
