"""The lean network layer under httpx (``app/llm/network.py``, issue 13).

Through ``stream_chat`` against the real fake upstream, on both transports the gateway may
pick (``H1Transport`` with httptools, ``StreamingTransport`` without): deltas, the error
mapping (timeout, refused, broken stream, HTTP error), cancellation and connection reuse;
TLS against a local server with a self-signed certificate; read back-pressure on the protocol; and the linear
pool checked against httpcore's own pool on random pool states (same decisions, same order).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import random
import socket
import ssl
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpcore
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.devtools import FakeUpstream
from app.devtools.script import Disconnect, Finish, Stall, Text, Usage, http_error_script, text_script
from app.errors import UpstreamDisconnected, UpstreamError, UpstreamHTTPError, UpstreamTimeout
from app.llm.client import stream_chat
from app.llm.deltas import ContentDelta
from app.llm.network import (
    HIGH_WATER, LOW_WATER, LeanBackend, LeanStream, LinearPool, StreamingTransport, _Protocol,
)
from app.llm.h1 import H1Transport
from app.llm.upstream import MAX_PARSED_URLS, UpstreamClient, shared_client
from tests.llm.support import make_request

LIMITS = httpx.Limits(max_connections=20, max_keepalive_connections=10)


def _transport(kind: str, verify: ssl.SSLContext | bool = True) -> httpx.AsyncBaseTransport:
    fallback = StreamingTransport(LIMITS, verify=verify)
    return H1Transport(LIMITS, fallback, verify=verify) if kind == "h1" else fallback


@pytest.fixture(params=["h1", "httpcore"])
async def lean(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=_transport(request.param)) as client:
        yield client


async def _texts(client: httpx.AsyncClient, url: str, **overrides: Any) -> list[str]:
    return [d.text for d in [d async for d in stream_chat(client, make_request(url, **overrides))]
            if isinstance(d, ContentDelta)]


# -- through stream_chat ----------------------------------------------------------------------


async def test_deltas_stream_through_and_the_connection_is_reused(lean: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["a", "b", "c"]), text_script(["d"]), text_script(["e"]))
    assert await _texts(lean, fake.url) == ["a", "b", "c"]
    assert await _texts(lean, fake.url) == ["d"]
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    streams = []
    for _ in range(2):
        response = await lean.post(f"{fake.url}/v1/chat/completions", json=body)
        assert b"data:" in response.content
        streams.append(response.extensions["network_stream"])
        fake.enqueue(text_script(["f"]))
    assert isinstance(streams[0], LeanStream)
    assert streams[0] is streams[1]  # the second request went over the kept-alive connection


def _connections(client: httpx.AsyncClient) -> list[bool]:
    """Whether each open connection of the client's pool is idle."""
    transport = client._transport
    if isinstance(transport, H1Transport):
        pool = transport.pool
        return [True] * pool.idle_connections + [False] * (pool.open_connections - pool.idle_connections)
    assert isinstance(transport, StreamingTransport)
    return [connection.is_idle() for connection in transport._pool.connections]


@pytest.mark.parametrize("protocol", ["OPENAI", "ANTHROPIC"])
async def test_a_finished_stream_leaves_its_connection_to_the_next_call(lean: httpx.AsyncClient, fake: FakeUpstream,
                                                                       protocol: str) -> None:
    """The translators stop at the end marker; the body's terminator is read too, so the
    connection goes back to the pool (before, every call paid a new connection)."""
    path = "/v1/messages" if protocol == "ANTHROPIC" else "/v1/chat/completions"
    for expected in (["a", "b"], ["c"], ["d"]):
        fake.enqueue(text_script(expected))
        assert await _texts(lean, fake.url, protocol=protocol, new_api_path=path) == expected
        connections = _connections(lean)
        assert connections == [True]
    assert len(fake.requests) == 3


async def _open_ended_server(bodies_sent: list[int]) -> asyncio.Server:
    """Streams one chat-completions answer with ``[DONE]`` and then never ends the chunked body."""
    done = b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n'

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + b"%x\r\n" % len(done) + done + b"\r\n")
        await writer.drain()
        bodies_sent.append(1)
        await reader.read()  # until the client hangs up; the terminator never comes
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


async def test_a_body_left_open_after_done_costs_only_its_connection(lean: httpx.AsyncClient) -> None:
    """An upstream that sends ``[DONE]`` but keeps the body open: the call still ends (the rest
    of the body is waited for only briefly), and that connection is dropped, not pooled."""
    bodies_sent: list[int] = []
    server = await _open_ended_server(bodies_sent)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        for round_ in (1, 2):
            assert await _texts(lean, url, timeout_s=600.0) == ["hi"]
            assert bodies_sent == [1] * round_
            assert _connections(lean) == []
    finally:
        server.close()


async def test_stall_past_the_read_timeout(lean: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Stall()])
    with pytest.raises(UpstreamTimeout):
        await _texts(lean, fake.url, timeout_s=0.5)
    assert await asyncio.to_thread(fake.wait_disconnect, 0, 5)


async def test_connection_refused(lean: httpx.AsyncClient) -> None:
    with pytest.raises(UpstreamError, match="cannot connect"):
        await _texts(lean, "http://127.0.0.1:9")


async def test_stream_cut_mid_body(lean: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Disconnect()])
    with pytest.raises(UpstreamDisconnected):
        await _texts(lean, fake.url)


async def test_http_error_body(lean: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(http_error_script(429, {"error": {"message": "slow down"}}))
    with pytest.raises(UpstreamHTTPError, match="slow down"):
        await _texts(lean, fake.url)


async def test_cancelling_the_consumer_closes_the_upstream(lean: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Stall()])
    first = asyncio.Event()

    async def consume() -> None:
        async for _ in stream_chat(lean, make_request(fake.url)):
            first.set()

    task = asyncio.create_task(consume())
    await first.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(fake.wait_disconnect, 0, 5)
    fake.enqueue([Text("again"), Usage(1, 1), Finish()])
    assert await _texts(lean, fake.url) == ["again"]  # the pool is still usable


# -- TLS --------------------------------------------------------------------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def _tls_server(cert: Path, key: Path, body: bytes) -> asyncio.Server:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
            for line in body.splitlines(keepends=True):
                writer.write(b"%x\r\n%s\r\n" % (len(line), line))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, "127.0.0.1", 0, ssl=context)


@pytest.mark.parametrize("kind", ["h1", "httpcore"])
async def test_tls_stream_and_certificate_check(tmp_path: Path, kind: str) -> None:
    cert, key = _self_signed(tmp_path)
    server = await _tls_server(cert, key, b"data: one\n\ndata: two\n\n")
    port = server.sockets[0].getsockname()[1]
    try:
        trusting = ssl.create_default_context(cafile=str(cert))
        async with httpx.AsyncClient(transport=_transport(kind, verify=trusting)) as client:
            async with client.stream("GET", f"https://127.0.0.1:{port}/") as response:
                assert response.extensions["network_stream"].get_extra_info("ssl_object") is not None
                lines = [line async for line in response.aiter_lines()]
        assert [line for line in lines if line] == ["data: one", "data: two"]
        async with httpx.AsyncClient(transport=_transport(kind)) as client:  # system CAs only
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://127.0.0.1:{port}/")
    finally:
        server.close()
        await server.wait_closed()


async def _connected_with_buffered_plaintext(port: int) -> LeanStream:
    """A plain connection to ``port`` whose protocol has already received the server's first bytes."""
    stream = await LeanBackend().connect_tcp("127.0.0.1", port, timeout=5)
    assert isinstance(stream, LeanStream)
    for _ in range(500):
        if stream._protocol.buffer:
            return stream
        await asyncio.sleep(0.01)
    raise AssertionError("the plaintext never arrived")


async def test_attack_plaintext_sent_before_the_tls_handshake_is_not_read_as_the_https_answer(tmp_path: Path) -> None:
    """An on-path attacker writes an HTTP answer in the clear as soon as the TCP connection is up,
    then lets the genuine server's TLS go on. On uvloop those bytes reached our protocol before
    ``start_tls`` and, after a valid handshake, were read first: a forged model answer on an https
    call whose certificate checks out. Bytes before the handshake now fail the connection."""
    cert, key = _self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    forged = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nFORGED"
    handshakes: list[str] = []

    async def attacker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(forged)  # in the clear, before any TLS
        await writer.drain()
        try:
            await writer.start_tls(server_tls)  # then the genuine server's handshake
            handshakes.append("done")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\nConnection: close\r\n\r\ngenuine")
            await writer.drain()
        except (ConnectionError, ssl.SSLError, OSError):
            handshakes.append("failed")
        finally:
            writer.close()

    server = await asyncio.start_server(attacker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        stream = await _connected_with_buffered_plaintext(port)  # the forged bytes wait in our protocol
        with pytest.raises(httpcore.ConnectError, match="before the TLS handshake"):
            await stream.start_tls(ssl.create_default_context(cafile=str(cert)), server_hostname="127.0.0.1",
                                   timeout=5)
        assert stream.closing()
    finally:
        server.close()
        await server.wait_closed()


# -- the protocol: back-pressure and end of stream ---------------------------------------------


class _RecordingTransport:
    """Just enough of an asyncio transport to record what the protocol asks of it."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.calls.append("resume")

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


async def test_reading_pauses_above_the_high_water_mark_and_resumes_below_the_low_one() -> None:
    protocol, transport = _Protocol(), _RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    chunk = b"x" * 16384
    sent = 0
    while sent <= HIGH_WATER:
        protocol.data_received(chunk)
        sent += len(chunk)
    assert transport.calls == ["pause"]  # once, however much more arrives
    protocol.data_received(chunk)
    assert transport.calls == ["pause"]
    stream = LeanStream(transport, protocol)  # type: ignore[arg-type]
    received = 0
    while protocol.buffered >= LOW_WATER:
        received += len(await stream.read(65536))
    assert transport.calls == ["pause", "resume"]
    while protocol.buffer:
        received += len(await stream.read(65536))
    assert received == sent + len(chunk)


def test_a_connection_whose_reading_was_paused_is_never_reused() -> None:
    """While reading is paused the kernel keeps what the server sends: once the reader drained the
    buffer, an empty buffer no longer means that nothing follows the response."""
    protocol, transport = _Protocol(), _RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    stream = LeanStream(transport, protocol)  # type: ignore[arg-type]
    protocol.data_received(b"x" * (HIGH_WATER + 1))
    while protocol.buffer:
        protocol.take(65536)
    assert transport.calls == ["pause", "resume"]
    assert stream.stale() and stream.get_extra_info("is_readable") is True


@pytest.mark.parametrize("kind", ["h1", "httpcore"])
async def test_attack_bytes_left_in_the_kernel_after_a_paused_response_never_reach_the_next_request(kind: str) -> None:
    """A large answer fills the protocol's buffer, so reading pauses with the answer's last byte
    already read from the socket; the server then sends more (a broken or hostile upstream, or the
    rest of another exchange). Read to its end, the answer left an empty buffer, and the connection
    went back to the pool: the next request on it, maybe another user's, read those bytes as its
    own answer. A connection that paused is now closed after its response.

    The steps are in lockstep with the client so the pause comes with the whole body buffered: the
    head alone, then ``HIGH_WATER`` bytes of body (the buffer is full, not over), then the body's
    last bytes in one small write (over: reading pauses), then the extra answer."""
    tail = b"z" * 100
    body_length = HIGH_WATER + len(tail)
    leftover = b"HTTP/1.1 200 OK\r\nContent-Length: 14\r\n\r\nUSER-A-PRIVATE"
    steps = [asyncio.Event() for _ in range(3)]  # head read, buffer full, pause seen
    requests = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal requests
        while await reader.readuntil(b"\r\n\r\n"):
            requests += 1
            if requests > 1:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfor-user-B")
                await writer.drain()
                continue
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % body_length)
            await writer.drain()
            await steps[0].wait()
            writer.write(b"a" * HIGH_WATER)
            await writer.drain()
            await steps[1].wait()
            writer.write(tail)
            await writer.drain()
            await steps[2].wait()
            writer.write(leftover)
            await writer.drain()

    async def until(condition: Callable[[], bool]) -> None:
        for _ in range(2000):
            if condition():
                return
            await asyncio.sleep(0.005)
        raise AssertionError("the exchange did not get there")

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    try:
        async with httpx.AsyncClient(transport=_transport(kind), timeout=10) as client:
            async with client.stream("GET", url) as first:
                network = first.extensions["network_stream"]
                protocol = network._protocol
                steps[0].set()
                await until(lambda: protocol.buffered >= HIGH_WATER)
                assert not protocol.reading_paused
                steps[1].set()
                await until(lambda: protocol.reading_paused)
                assert protocol.buffered == body_length  # the body's last byte is read from the socket
                steps[2].set()  # the server's extra bytes can only wait in the kernel now
                peek = socket.socket(fileno=os.dup(network.get_extra_info("socket").fileno()))
                try:
                    def arrived() -> bool:
                        try:
                            return len(peek.recv(1024, socket.MSG_PEEK | socket.MSG_DONTWAIT)) == len(leftover)
                        except BlockingIOError:
                            return False
                    await until(arrived)
                finally:
                    peek.close()
                assert len(await first.aread()) == body_length
            second = await client.get(url)
        assert second.content == b"for-user-B"
    finally:
        server.close()
        await server.wait_closed()


async def test_a_read_waits_for_data_then_sees_the_end() -> None:
    protocol, transport = _Protocol(), _RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    stream = LeanStream(transport, protocol)  # type: ignore[arg-type]
    reading = asyncio.create_task(stream.read(10))
    await asyncio.sleep(0)
    assert not reading.done()
    assert stream.get_extra_info("is_readable") is False
    protocol.data_received(b"0123456789abc")
    assert await reading == b"0123456789"  # at most max_bytes; the rest stays
    assert await stream.read(10) == b"abc"
    protocol.eof_received()
    assert stream.get_extra_info("is_readable") is True  # an idle connection the server closed: not reused
    assert await stream.read(10) == b""
    with pytest.raises(httpcore.ReadTimeout):
        await LeanStream(transport, _Protocol()).read(10, timeout=0.01)  # type: ignore[arg-type]


async def test_a_read_timeout_counts_from_its_own_wait_with_one_timer_per_connection() -> None:
    """One timer per connection enforces the waiting read's deadline: a timer armed for an earlier
    read must not expire a later one, and a later read with a shorter timeout must not wait for
    the earlier, longer one. No durations are asserted: only which outcome each read gets."""
    protocol, transport = _Protocol(), _RecordingTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    stream = LeanStream(transport, protocol)  # type: ignore[arg-type]

    async def feed_later(seconds: float, data: bytes) -> None:
        await asyncio.sleep(seconds)
        protocol.data_received(data)

    # the first read arms the timer for +0.1 s and is answered at once
    feeding = asyncio.create_task(feed_later(0, b"a"))
    assert await stream.read(10, timeout=0.1) == b"a"
    await feeding
    # the second waits up to 2 s: the timer fires at +0.1 s for a deadline that has moved on, re-arms
    feeding = asyncio.create_task(feed_later(0.3, b"b"))
    assert await stream.read(10, timeout=2.0) == b"b"
    await feeding
    # a shorter timeout than the armed one is enforced by re-arming earlier (else this waits 2 s)
    with pytest.raises(httpcore.ReadTimeout):
        await asyncio.wait_for(stream.read(10, timeout=0.05), timeout=1.5)
    protocol.connection_lost(None)
    assert protocol._timer is None  # the timer goes with the connection (it would hold the protocol)


# -- the linear pool decides as httpcore's does -----------------------------------------------


class _Connection:
    def __init__(self, rng: random.Random, origin: str, fresh: bool = False) -> None:
        self.origin = origin
        state = "new" if fresh else rng.choice(["idle", "active", "closed", "expired", "idle-expired"])
        self.closed = state == "closed"
        self.expired = state in ("expired", "idle-expired")
        self.idle = state in ("idle", "idle-expired")
        self.available = state in ("idle", "new") or (state == "active" and rng.random() < 0.2)

    def is_closed(self) -> bool:
        return self.closed

    def has_expired(self) -> bool:
        return self.expired

    def is_idle(self) -> bool:
        return self.idle

    def is_available(self) -> bool:
        return self.available

    def can_handle_request(self, origin: str) -> bool:
        return origin == self.origin


class _Url:
    def __init__(self, origin: str) -> None:
        self.origin = origin


class _Request:
    def __init__(self, origin: str, queued: bool) -> None:
        self.request = type("R", (), {"url": _Url(origin)})()
        self.connection: object = None if queued else "assigned before"

    def is_queued(self) -> bool:
        return self.connection is None

    def assign_to_connection(self, connection: object) -> None:
        self.connection = connection


def _decide(cls: type[httpcore.AsyncConnectionPool], seed: int) -> Any:
    """Build a random pool state from ``seed``, let ``cls`` re-assign it, and name what it decided."""
    rng = random.Random(seed)
    max_connections, keepalive = rng.randint(1, 12), rng.randint(0, 12)
    origins = ["a", "b", "c"][: rng.randint(1, 3)]
    connections = [_Connection(rng, rng.choice(origins)) for _ in range(rng.randint(0, 15))]
    requests = [_Request(rng.choice(origins), rng.random() < 0.6) for _ in range(rng.randint(0, 8))]

    class Pool(cls):  # type: ignore[valid-type, misc]
        def create_connection(self, origin: Any) -> Any:
            return _Connection(rng, origin, fresh=True)

    pool = Pool(max_connections=max_connections, max_keepalive_connections=keepalive)
    pool._connections = list(connections)
    pool._requests = list(requests)
    closing = pool._assign_requests_to_connections()
    index = {id(c): n for n, c in enumerate(connections)}

    def name(c: Any) -> Any:
        return c if isinstance(c, str) else index.get(id(c), ("new", c.origin))

    return ([name(c) for c in pool._connections], [name(c) for c in closing],
            [name(r.connection) if r.connection is not None else None for r in requests])


@pytest.mark.parametrize("seed", range(300))
def test_linear_pool_decides_exactly_as_httpcore(seed: int) -> None:
    assert _decide(LinearPool, seed) == _decide(httpcore.AsyncConnectionPool, seed)


async def _cookie_server(seen: list[str | None]) -> asyncio.Server:
    """Answers every request with ``Set-Cookie: session=alice`` and records its ``Cookie`` header."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while head := await reader.readuntil(b"\r\n\r\n"):
            lines = head.decode().split("\r\n")
            seen.append(next((line.split(":", 1)[1].strip() for line in lines if line.lower().startswith("cookie:")),
                             None))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: session=alice; Path=/\r\n\r\nok")
            await writer.drain()
            if reader.at_eof():
                break
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


@pytest.mark.parametrize("shared", [True, False], ids=["gateway-client", "plain-httpx-control"])
async def test_attack_a_cookie_set_during_one_users_call_rides_on_the_next_users_call(shared: bool) -> None:
    """The shared client must not carry cookies between calls (the control shows httpx would)."""
    seen: list[str | None] = []
    server = await _cookie_server(seen)
    port = server.sockets[0].getsockname()[1]
    client = shared_client(LIMITS, httpx.Timeout(10.0)) if shared else httpx.AsyncClient()
    try:
        for _ in range(2):  # alice's call, then bob's
            response = await client.get(f"http://127.0.0.1:{port}/v1/chat/completions")
            assert response.status_code == 200 and response.headers["set-cookie"].startswith("session=alice")
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    assert seen == ([None, None] if shared else [None, "session=alice"])


@pytest.mark.parametrize("lean_parser", [None, False], ids=["h1", "httpcore"])
async def test_a_proxy_set_in_the_environment_carries_the_upstream_calls(monkeypatch: pytest.MonkeyPatch,
                                                                          lean_parser: bool | None) -> None:
    """httpx honours ``HTTP_PROXY`` only when it builds its own transport, and the gateway passes
    one: behind an egress proxy every provider call failed or bypassed it. ``NO_PROXY`` hosts keep
    the lean transport."""
    request_lines: list[bytes] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        request_lines.append(head.split(b"\r\n", 1)[0])
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\nConnection: close\r\n\r\nvia-proxy")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(proxy, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = shared_client(LIMITS, httpx.Timeout(10.0), lean_parser=lean_parser)
    try:
        proxied = await client.get("http://provider.invalid/v1/models")
        assert proxied.text == "via-proxy"
        direct = await client.get(f"{url}/direct")  # NO_PROXY: straight to the host, on the lean transport
        assert direct.text == "via-proxy" and isinstance(direct.extensions["network_stream"], LeanStream)
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()
    assert request_lines == [b"GET http://provider.invalid/v1/models HTTP/1.1", b"GET /direct HTTP/1.1"]


async def test_the_shared_client_cannot_be_given_cookies_to_keep() -> None:
    client = shared_client(LIMITS, httpx.Timeout(10.0))
    try:
        with pytest.raises(TypeError, match="no cookies"):
            client.cookies = {"session": "alice"}
        assert len(client.cookies) == 0
        client.cookies.set("session", "alice")  # even its own jar keeps nothing
        assert len(client.cookies) == 0
    finally:
        await client.aclose()
    with pytest.raises(TypeError, match="no cookies"):
        UpstreamClient(cookies={"session": "alice"})


async def test_an_endpoint_url_is_parsed_once_and_the_cache_stays_small() -> None:
    client = shared_client(LIMITS, httpx.Timeout(10.0))
    try:
        url = "https://api.example.com/v1/chat/completions"
        assert client.url(url) is client.url(url)
        assert client.url(url) == httpx.URL(url)
        for n in range(MAX_PARSED_URLS + 10):
            client.url(f"https://h{n}.example.com/v1")
        assert len(client._urls) <= MAX_PARSED_URLS
        assert client.url(url) == httpx.URL(url)
    finally:
        await client.aclose()


async def test_stream_chat_on_the_shared_client_streams_and_reuses_the_connection(fake: FakeUpstream) -> None:
    client = shared_client(LIMITS, httpx.Timeout(10.0))
    fake.enqueue(text_script(["a", "b"]), text_script(["c"]))
    try:
        assert await _texts(client, fake.url) == ["a", "b"]
        assert _connections(client) == [True]  # the finished stream left its connection idle in the pool
        assert await _texts(client, fake.url) == ["c"]
        assert _connections(client) == [True]  # and the second call reused it
    finally:
        await client.aclose()


async def test_an_event_stream_is_read_as_utf8_whatever_charset_it_declares(lean: httpx.AsyncClient) -> None:
    """SSE is UTF-8 by definition: a wrong ``charset`` on the Content-Type must not garble text."""
    chunk = '{"choices":[{"index":0,"delta":{"content":"héllo ✓"},"finish_reason":"stop"}]}'
    body = f"data: {chunk}\n\ndata: [DONE]\n\n".encode()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the request's body is not needed
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=iso-8859-1\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        assert await _texts(lean, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}") == ["héllo ✓"]
    finally:
        server.close()
