"""The reverse-proxy snippet of docs/reverse-proxy.md (deploy/haproxy.cfg), run for real.

A real gateway (uvicorn) behind a real haproxy started from the shipped configuration,
templated only for the listen/gateway addresses and, for a quick test, a 1 s
``timeout http-request``. Slow-header and slow-body clients (slowloris) are cut by the
proxy with 408 while a normal query streams through it, unbuffered, to ``run.complete``.
Ordering is proven with gates and events, never with clocks; socket timeouts are bounds
that only turn a hang into a failure.

haproxy is a system package (``apt-get install -y haproxy``); CI installs it. Without it
these tests fail, they do not skip.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse

from app.devtools import FakeUpstream
from app.devtools.script import gated_text_script, text_script
from tests.engine.helpers import call
from tests.support.deployment import REPO, agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect, stream_events, types

Start = Callable[..., GatewayServer]

CONFIG = REPO / "deploy" / "haproxy.cfg"
DOC = REPO / "docs" / "reverse-proxy.md"
FRONTEND = {"backends": [], "frontends": ["confirm_dialog"], "actions": []}
QUESTION = {"question": "Which city?", "options": ["Paris", "Rome"], "allowFreeText": False}
#: bounds that only turn a hang into a failure (the shipped client/server timeouts are 60 s)
HANG = 30


def haproxy_binary() -> str:
    found = shutil.which("haproxy") or next(
        (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if Path(p).is_file()), None)
    if found is None:
        pytest.fail("haproxy is not installed: `apt-get install -y haproxy` (Debian package; CI installs it). "
                    "These tests check the snippet of docs/reverse-proxy.md and must not be skipped.")
    return found


def _sub(pattern: str, replacement: str, text: str) -> str:
    result, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    assert count == 1, f"deploy/haproxy.cfg no longer has exactly one line matching {pattern!r}"
    return result


def templated(listen_port: int, gateway_port: int, **timeouts: str) -> str:
    """deploy/haproxy.cfg with test addresses; ``timeouts`` replace ``timeout <name>`` values."""
    text = CONFIG.read_text(encoding="utf-8")
    text = _sub(r"^(\s*bind )\S+$", rf"\g<1>127.0.0.1:{listen_port}", text)
    text = _sub(r"^(\s*server \S+ )127\.0\.0\.1:8080\b", rf"\g<1>127.0.0.1:{gateway_port}", text)
    for name, value in timeouts.items():
        text = _sub(rf"^(\s*timeout {name.replace('_', '-')} )\S+$", rf"\g<1>{value}", text)
        if name == "http_request":  # the body's deadline is the head's deadline
            text = _sub(r"^(\s*http-request wait-for-body time )\S+$", rf"\g<1>{value}", text)
    return text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Haproxy:
    """``haproxy -f <cfg> -db`` in the foreground; stopped (by its own pid) on exit."""

    def __init__(self, config: str, workdir: Path, port: int) -> None:
        self.port = port
        self._cfg = workdir / "haproxy.cfg"
        self._cfg.write_text(config, encoding="utf-8")
        self._log_path = workdir / "haproxy.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self._log_path.read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> Haproxy:
        with open(self._log_path, "wb") as log:
            self._proc = subprocess.Popen([haproxy_binary(), "-f", str(self._cfg), "-db"],
                                          stdout=log, stderr=subprocess.STDOUT)
        for _ in range(500):  # bounded: each attempt is a connect or a 20 ms wait
            if self._proc.poll() is not None:
                raise AssertionError(f"haproxy exited with {self._proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                try:
                    self._proc.wait(timeout=0.02)
                except subprocess.TimeoutExpired:
                    pass
        raise AssertionError(f"haproxy did not listen on {self.port}:\n{self.log()}")

    def __exit__(self, *exc: object) -> None:
        assert self._proc is not None
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@pytest.fixture
def proxied(start_gateway: Start, tmp_path: Path) -> Iterator[Callable[..., tuple[GatewayServer, Haproxy]]]:
    """Start a gateway and a haproxy in front of it (``timeout http-request 1s`` unless told)."""
    proxies: list[Haproxy] = []

    def start(gateway_overrides: dict[str, Any] | None = None, **timeouts: str) -> tuple[GatewayServer, Haproxy]:
        gw = start_gateway(gateway_overrides)
        port = _free_port()
        proxy = Haproxy(templated(port, gw.port, http_request="1s", **timeouts), tmp_path, port).__enter__()
        proxies.append(proxy)
        return gw, proxy

    yield start
    for proxy in proxies:
        proxy.__exit__(None, None, None)


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the peer sends until it closes; a socket timeout fails the test."""
    sock.settimeout(HANG)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass  # closed hard: as good as closed
    except TimeoutError:
        raise AssertionError(f"the proxy kept the slow client open; it sent {received!r}") from None
    return received


def test_the_doc_shows_the_tested_snippet_verbatim() -> None:
    config = CONFIG.read_text(encoding="utf-8")
    doc = DOC.read_text(encoding="utf-8")
    assert f"```haproxy\n{config}```" in doc, "docs/reverse-proxy.md must quote deploy/haproxy.cfg verbatim"


def test_the_snippet_is_a_valid_haproxy_configuration() -> None:
    result = subprocess.run([haproxy_binary(), "-c", "-f", str(CONFIG)], capture_output=True, text=True,
                            timeout=HANG)
    assert result.returncode == 0, result.stdout + result.stderr


async def test_attack_slowloris_headers_and_body_are_cut_by_the_proxy(
    deploy: Path, upstream: FakeUpstream, proxied: Callable[..., tuple[GatewayServer, Haproxy]],
    client: httpx.AsyncClient,
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    _, proxy = proxied()
    head = f"POST /api/ap/query HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\nContent-Type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", proxy.port)) as slow_head, \
            socket.create_connection(("127.0.0.1", proxy.port)) as slow_body:
        slow_head.sendall(head.encode() + b"X-Slow: aaaa")  # a header line that never ends
        body = b'{"agentKey": "plain", "message": "never finished"}'
        slow_body.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        # meanwhile a normal query streams through the same proxy to the end
        upstream.enqueue(text_script(["fine ", "here"]))
        events = await asyncio.wait_for(
            collect(client, f"{proxy.url}/api/ap/query", {"agentKey": "plain", "message": "hi"}), timeout=HANG)
        assert types(events)[-1] == "run.complete"
        assert "".join(e["delta"] for e in events if e["type"] == "content.delta") == "fine here"
        # ...and both slow clients are answered 408 and closed by the proxy (1 s in this test)
        for sock in (slow_head, slow_body):
            answer = await asyncio.to_thread(_read_until_closed, sock)
            assert answer.startswith(b"HTTP/1.1 408"), answer
    assert len(upstream.requests) == 1  # the slow requests never reached the gateway's engine


async def test_oversized_body_is_refused_at_the_proxy(
    deploy: Path, upstream: FakeUpstream, proxied: Callable[..., tuple[GatewayServer, Haproxy]],
) -> None:
    """A declared 1 MiB + 1 body is answered 413 from the headers alone, before any of it is read.

    A raw socket, not httpx: the proxy refuses and closes while an eager client would still be
    uploading, and a client that is mid-upload may see the close as a reset before it reads the
    answer (the CI flake this replaced). Sending only the head shows the stronger property: the
    proxy never waits for the body.
    """
    write_agent(deploy, "plain", agent("ONESHOT"))
    _, proxy = proxied()
    head = (f"POST /api/ap/query HTTP/1.1\r\nHost: 127.0.0.1:{proxy.port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {1_048_576 + 1}\r\n\r\n")
    with socket.create_connection(("127.0.0.1", proxy.port)) as sock:
        sock.sendall(head.encode() + b'{"agentKey": "plain", "message": "')
        answer = await asyncio.to_thread(_read_until_closed, sock)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert not upstream.requests


async def test_zero_buffering_through_the_proxy(
    deploy: Path, upstream: FakeUpstream, proxied: Callable[..., tuple[GatewayServer, Haproxy]],
    client: httpx.AsyncClient,
) -> None:
    """The upstream withholds delta k+1 until the client, behind haproxy, has received delta k."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    _, proxy = proxied()
    n = 6
    upstream.enqueue(gated_text_script(n))
    received: list[str] = []
    last = ""

    async def consume() -> None:
        nonlocal last
        async for event in stream_events(client, f"{proxy.url}/api/ap/query", {"agentKey": "plain", "message": "go"}):
            last = event["type"]
            if event["type"] == "content.delta":
                received.append(event["delta"])
                upstream.release(f"g{len(received) - 1}")  # only now may delta k+1 leave the upstream

    # a buffering proxy deadlocks here; the bound only turns a hang into a failure
    await asyncio.wait_for(consume(), timeout=HANG)
    assert received == [f"d{k} " for k in range(n)] and last == "run.complete"


async def test_parked_stream_outlives_the_proxy_idle_timeouts_thanks_to_heartbeats(
    deploy: Path, upstream: FakeUpstream, proxied: Callable[..., tuple[GatewayServer, Haproxy]],
    client: httpx.AsyncClient,
) -> None:
    """A run waiting for a frontend tool sends nothing but heartbeats: with heartbeats more
    frequent than ``timeout client/server``, the proxy keeps the stream (here: 1 s timeouts,
    0.1 s heartbeats, and more heartbeats than fit in one timeout before the answer)."""
    write_agent(deploy, "asker", agent("ONESHOT", tools=FRONTEND))
    _, proxy = proxied({"server": {"sse-heartbeat-seconds": 0.1}}, client="1s", server="1s")
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["Rome it is."]))
    events: list[dict[str, Any]] = []
    #: heartbeats received while the run was parked, before it was answered
    idle_heartbeats = 0

    async def consume() -> None:
        nonlocal idle_heartbeats
        async with aconnect_sse(client, "POST", f"{proxy.url}/api/ap/query",
                                json={"agentKey": "asker", "message": "pick"}) as source:
            assert source.response.status_code == 200
            async for sse in source.aiter_sse():
                if sse.data:
                    events.append(orjson.loads(sse.data))
                    continue
                parked = [e for e in events if e["type"] == "tool.start"]
                if not parked or idle_heartbeats == 30:
                    continue
                idle_heartbeats += 1
                if idle_heartbeats == 30:  # 30 x 0.1 s: three times the proxy's idle timeouts
                    answer = await client.post(f"{proxy.url}/api/ap/submit", json={
                        "runId": parked[0]["runId"], "toolId": parked[0]["toolId"], "params": {"selected": "Rome"}})
                    assert answer.json()["data"]["accepted"] is True

    await asyncio.wait_for(consume(), timeout=HANG)
    assert idle_heartbeats == 30 and types(events)[-1] == "run.complete", (idle_heartbeats, types(events))
