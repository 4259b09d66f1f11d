"""``agw serve`` on both server stacks (issue 13): uvloop + httptools when installed (extra ``fast``),
asyncio's loop + h11 (pure Python) when forced with ``--loop asyncio --http h11``. The gateway's
upstream client parses with the same implementation (``H1Transport`` or httpcore's h11).

Each stack runs as a real ``python -m app serve`` process and must pass the zero-buffer handshake:
the upstream withholds delta k+1 until the client has received delta k (order, no clocks).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.cli.serve import server_stack, uvicorn_config
from app.config import load_settings
from app.devtools import FakeUpstream
from app.devtools.script import gated_text_script
from tests.support.deployment import REPO, agent, write_agent
from tests.support.sse import stream_events
from tests.support.server import wait_healthy

STACKS = [("asyncio", "h11"), ("uvloop", "httptools")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def serve(deploy: Path, tmp_path: Path) -> Iterator:
    started: list[subprocess.Popen[bytes]] = []

    def start(*options: str) -> tuple[str, Path]:
        port, log = _free_port(), tmp_path / f"serve-{len(started)}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "app", "--dir", str(deploy), "--log-level", "INFO", "serve",
                 "--host", "127.0.0.1", "--port", str(port), *options],
                cwd=deploy, env=env, stdout=out, stderr=subprocess.STDOUT,
            )
        started.append(process)
        url = f"http://127.0.0.1:{port}"
        assert wait_healthy(url, process), (f"agw serve exited: {log.read_text(errors='replace')[-2000:]}"
                                            if process.poll() is not None else "agw serve did not come up")
        return url, log

    yield start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)


@pytest.mark.parametrize(("loop", "http"), STACKS)
async def test_zero_buffering_on_each_server_stack(
    deploy: Path, upstream: FakeUpstream, serve, loop: str, http: str
) -> None:
    if loop == "uvloop":  # the extra [fast] (part of [test]); without it only the pure-Python stack runs
        pytest.importorskip("uvloop")
        pytest.importorskip("httptools")
    write_agent(deploy, "plain", agent("ONESHOT"))
    url, log = serve("--loop", loop, "--http", http)
    assert f"with the {loop} event loop and {http}" in log.read_text(errors="replace")
    assert f"upstream answers are parsed by {http}" in log.read_text(errors="replace")  # the client follows suit
    n = 6
    upstream.enqueue(gated_text_script(n))
    received: list[str] = []
    last: dict = {}

    async def consume() -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            async for event in stream_events(client, f"{url}/api/ap/query", {"agentKey": "plain", "message": "go"}):
                last.update(event)
                if event["type"] == "content.delta":
                    received.append(event["delta"])
                    upstream.release(f"g{len(received) - 1}")  # only now may delta k+1 leave the upstream

    await asyncio.wait_for(consume(), timeout=60)  # a buffering stack deadlocks; the bound turns it into a failure
    assert received == [f"d{k} " for k in range(n)]
    assert last["type"] == "run.complete"


def test_auto_takes_the_fast_stack_when_installed_and_a_forced_one_is_kept() -> None:
    pytest.importorskip("uvloop")
    pytest.importorskip("httptools")
    assert server_stack() == ("uvloop", "httptools")
    assert server_stack("asyncio", "h11") == ("asyncio", "h11")
    assert server_stack("auto", "h11") == ("uvloop", "h11")


@pytest.mark.parametrize(("loop", "http"), [("trio", "auto"), ("auto", "h2")])
def test_an_unknown_stack_is_refused(loop: str, http: str) -> None:
    with pytest.raises(ValueError, match="unknown"):
        server_stack(loop, http)


def test_an_unknown_stack_stops_serve_with_a_clear_error(deploy: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "app", "--dir", str(deploy), "serve", "--port", str(_free_port()), "--loop", "trio"],
        cwd=deploy, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, timeout=120,
    )
    assert done.returncode == 2
    assert b"unknown event loop 'trio'" in done.stderr


def _idle_connection_closed_by_server(url: str, wait_s: float) -> bool:
    """One keep-alive request, then wait (at most ``wait_s``) for the server to close the idle connection."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=wait_s) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\n\r\n")
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            received += sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 200"), received[:100]
        try:
            return sock.recv(65536) == b""  # EOF: the server closed the idle connection
        except TimeoutError:
            return False


def test_an_idle_keep_alive_connection_lives_server_keep_alive_seconds(deploy: Path, serve) -> None:
    """``server.keep-alive-seconds`` reaches uvicorn. Its default (75 s) must stay above the idle
    timeout of the proxies in front (nginx's upstream pool and AWS load balancers: 60 s): a
    request a proxy sends on a connection the gateway is just closing is reset, which showed in the
    load bench's soak as about one stream in 2,000 failing before its first event."""
    with (deploy / "application.yml").open("a", encoding="utf-8") as config:
        config.write("server:\n  keep-alive-seconds: 1\n")
    url, _ = serve()
    assert _idle_connection_closed_by_server(url, wait_s=30)  # after about 1 s; 75 s would fail here


def test_the_keep_alive_setting_reaches_uvicorn_and_its_default_outlives_the_usual_proxy_idle_timeouts(
    tmp_path: Path,
) -> None:
    default = uvicorn_config(None, load_settings(tmp_path), "INFO", "asyncio", "h11")
    assert default.timeout_keep_alive == 75 > 60  # nginx's upstream keepalive_timeout, ALB's idle timeout
    (tmp_path / "application.yml").write_text("server:\n  keep-alive-seconds: 120\n", encoding="utf-8")
    assert uvicorn_config(None, load_settings(tmp_path), "INFO", "asyncio", "h11").timeout_keep_alive == 120
