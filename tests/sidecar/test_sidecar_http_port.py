"""``agw sidecar --http-port N`` (SPEC §10): the HTTP API of the sidecar's *own* gateway on
127.0.0.1:N, composed in ``app.composition`` (the sidecar package never imports ``app.api``).
The sidecar is a real subprocess; readiness is awaited by connecting, never by sleeping."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.sidecar import SidecarProcess
from tests.support.sse import collect


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Path:
    root = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(root, "plain", agent("ONESHOT"))
    return root


@pytest.fixture
def port() -> int:
    return _free_port()


@pytest.fixture
async def sidecar(deploy: Path, tmp_path: Path, port: int) -> AsyncIterator[SidecarProcess]:
    process = await SidecarProcess(deploy, tmp_path / "sidecar.stderr",
                                   extra_args=("--http-port", str(port))).start()
    try:
        yield process
    finally:
        await process.stop()


async def _healthz(client: httpx.AsyncClient, sidecar: SidecarProcess, url: str) -> dict[str, Any]:
    """``GET /healthz`` once the HTTP server listens (it starts beside the stdin loop)."""
    while True:
        assert sidecar.proc is not None and sidecar.proc.returncode is None, sidecar.stderr_text()
        try:
            response = await client.get(f"{url}/healthz")
        except httpx.ConnectError:
            await asyncio.sleep(0.05)
            continue
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data


async def test_http_port_serves_the_same_gateway_and_stops_with_the_sidecar(
    sidecar: SidecarProcess, upstream: FakeUpstream, port: int
) -> None:
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(timeout=30) as client:
        health = await asyncio.wait_for(_healthz(client, sidecar, url), timeout=60)
        assert health["status"] == "UP"
        assert health["version"] == (await sidecar.result("gateway.health"))["version"]

        # a chat written through the sidecar is listed over HTTP, and the other way round
        upstream.enqueue(text_script(["via ", "sidecar"]))
        via_sidecar = (await sidecar.result("agent.query", {"agentKey": "plain", "message": "a"}))["chatId"]
        listed = (await client.get(f"{url}/api/ap/chats")).json()["data"]
        assert [chat["chatId"] for chat in listed] == [via_sidecar]
        upstream.enqueue(text_script(["via ", "http"]))
        events = await collect(client, f"{url}/api/ap/query", {"agentKey": "plain", "message": "b"})
        assert events[-1]["type"] == "run.complete"
        via_http = events[0]["chatId"]
        assert {chat["chatId"] for chat in await sidecar.result("chat.list")} == {via_sidecar, via_http}

        # EOF on stdin stops both front ends; the process exits 0
        assert await sidecar.close_stdin() == 0, sidecar.stderr_text()
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/healthz")
    assert "sidecar: HTTP API on http://127.0.0.1:" in sidecar.stderr_text()


async def test_http_port_with_auth_on_and_no_key_refuses_to_start(
    deploy: Path, tmp_path: Path, port: int
) -> None:
    """SPEC §9 fail closed: the HTTP API cannot verify tokens, so the sidecar does not start either."""
    process = await SidecarProcess(deploy, tmp_path / "sidecar.stderr", extra_args=("--http-port", str(port)),
                                   env={"AGENT_AUTH_ENABLED": "true"}).start()
    try:
        assert await process.close_stdin() == 2  # also waits until stdout is read to its end
        assert "configuration error" in process.stderr_text() and "agent.auth" in process.stderr_text()
        assert process.log == []  # nothing reached the protocol stream
    finally:
        await process.stop()


async def test_http_port_in_use_fails_cleanly_before_serving(deploy: Path, tmp_path: Path) -> None:
    """Another app (or a second sidecar) holds the port: uvicorn's ``sys.exit(3)`` escaped the
    event loop after the sidecar had started answering, with a traceback and no clean stop. Now
    the port is bound before the first request is read: one line, exit 2, nothing answered."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        process = await SidecarProcess(deploy, tmp_path / "sidecar.stderr",
                                       extra_args=("--http-port", str(port))).start()
        try:
            await process.send("gateway.health")
            assert await process.close_stdin() == 2
            stderr = process.stderr_text()
            assert f"cannot listen on 127.0.0.1:{port} (--http-port)" in stderr, stderr
            assert "Traceback" not in stderr, stderr
            assert process.log == []  # nothing reached the protocol stream
        finally:
            await process.stop()
