"""``H1Transport`` (``app/llm/h1.py``, issue 13): httpx over httptools-parsed HTTP/1.1.

Against raw asyncio servers that write exactly the bytes each case needs: framing (chunked,
Content-Length, close-delimited, interim 1xx), zero buffering, keep-alive and when a
connection must not be reused, the pool's limits (waiting, ``PoolTimeout``, cancellation,
idle expiry), malformed, cut and hostile answers, header injection, and the fallback for
``HEAD``. Through ``stream_chat`` and the fake upstream the same transport is covered by
``tests/llm/test_network.py`` (parametrized over both transports) and by every gateway test,
since the gateway picks it whenever httptools is installed.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from app.llm.client import stream_chat
from app.llm.deltas import ContentDelta, FinishDelta
from app.llm.h1 import H1Transport
from app.llm.network import StreamingTransport
from app.llm.upstream import has_httptools, shared_client, streaming_transport
from tests.llm.support import make_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lower = head.lower()
    body = b""
    if b"transfer-encoding: chunked" in lower:
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
    elif b"content-length:" in lower:
        length = int(lower.split(b"content-length:")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
    return head, body


class RawServer:
    """A loopback server running ``handler`` per connection; counts connections and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.raw = bytearray()
        self.url = ""
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:  # handlers still waiting on a client end with the test
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            writer.close()
            self._handlers.discard(task)

    async def requests(self, reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
        """Each request on one connection (its body too), until the client hangs up."""
        while True:
            try:
                head, body = await read_request(reader)
            except asyncio.IncompleteReadError:
                return
            self.heads.append(head)
            self.raw += head + body
            yield body


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


OK_CHUNKED = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
LIMITS = httpx.Limits(max_connections=10, max_keepalive_connections=5)


def transport(limits: httpx.Limits = LIMITS) -> H1Transport:
    return H1Transport(limits, StreamingTransport(limits))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=transport(), timeout=5.0) as c:
        yield c


def pool_of(client: httpx.AsyncClient) -> Any:
    assert isinstance(client._transport, H1Transport)
    return client._transport.pool


def serve_forever(response: bytes) -> Callable[[RawServer], Handler]:
    """A keep-alive handler answering every request with ``response``."""
    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async for _ in server.requests(reader):
                writer.write(response)
                await writer.drain()
        return handle
    return make


async def serving(make: Callable[[RawServer], Handler]) -> RawServer:
    server = RawServer(lambda r, w: asyncio.sleep(0))
    server.handler = make(server)
    return server


# -- choice ------------------------------------------------------------------------------------


def test_the_gateway_client_picks_h1_when_httptools_is_installed() -> None:
    assert has_httptools(), "httptools is part of the test extra (the httpcore transport is tested in test_network.py)"
    assert isinstance(streaming_transport(LIMITS), H1Transport)
    assert isinstance(streaming_transport(LIMITS, lean_parser=False), StreamingTransport)


# -- framing and keep-alive --------------------------------------------------------------------


async def test_chunks_arrive_one_by_one_and_the_connection_is_kept(client: httpx.AsyncClient) -> None:
    """Zero buffering: the client holds chunk 1 before the server writes chunk 2."""
    got_first = asyncio.Event()

    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async for _ in server.requests(reader):
                writer.write(OK_CHUNKED + b"5\r\nfirst\r\n")
                await writer.drain()
                await got_first.wait()
                got_first.clear()
                writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
                await writer.drain()
        return handle

    async with await serving(make) as server:
        for _ in range(3):
            async with client.stream("POST", server.url + "/v1/x", json={"q": 1}) as response:
                assert response.status_code == 200 and response.headers["content-type"] == "text/plain"
                parts = []
                async for part in response.aiter_raw():
                    parts.append(part)
                    got_first.set()
                assert parts == [b"first", b"second"]
        assert server.connections == 1
        assert (pool_of(client).open_connections, pool_of(client).idle_connections) == (1, 1)
        assert server.heads[0].startswith(b"POST /v1/x HTTP/1.1\r\n")
        assert b"\r\nhost: 127.0.0.1:" in server.heads[0].lower()
        assert server.raw.endswith(b'{"q":1}')


async def test_content_length_body_and_reuse(client: httpx.AsyncClient) -> None:
    async with await serving(serve_forever(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")) as server:
        for _ in range(3):
            response = await client.get(server.url)
            assert response.content == b"hello"
            assert response.extensions["reason_phrase"] == b"OK"
            assert response.extensions["http_version"] == b"HTTP/1.1"
        assert server.connections == 1


@pytest.mark.parametrize("head", [b"HTTP/1.1 200 OK\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"],
                         ids=["no-length", "coding-not-chunked"])
async def test_a_body_delimited_by_the_close_is_read_to_the_end_and_not_reused(client: httpx.AsyncClient,
                                                                               head: bytes) -> None:
    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async for _ in server.requests(reader):
                writer.write(head + b"until the ")
                await writer.drain()
                writer.write(b"end")
                await writer.drain()
                return
        return handle

    async with await serving(make) as server:
        assert (await client.get(server.url)).content == b"until the end"
        assert (await client.get(server.url)).content == b"until the end"
        assert server.connections == 2
        assert pool_of(client).open_connections == 0


async def test_interim_answers_are_skipped(client: httpx.AsyncClient) -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"
    async with await serving(serve_forever(interim + b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")) as server:
        response = await client.post(server.url, content=b"x")
        assert (response.status_code, response.content) == (201, b"ok")
        assert "link" not in response.headers


async def test_no_body_statuses(client: httpx.AsyncClient) -> None:
    async with await serving(serve_forever(b"HTTP/1.1 204 No Content\r\n\r\n")) as server:
        for _ in range(2):
            response = await client.delete(server.url)
            assert (response.status_code, response.content) == (204, b"")
        assert server.connections == 1


@pytest.mark.parametrize("answer", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
])
async def test_a_connection_the_server_does_not_keep_is_not_reused(client: httpx.AsyncClient, answer: bytes) -> None:
    async with await serving(serve_forever(answer)) as server:
        for _ in range(2):
            assert (await client.get(server.url)).content == b"ok"
        assert server.connections == 2
        assert pool_of(client).open_connections == 0


async def test_a_response_closed_before_its_end_closes_its_connection(client: httpx.AsyncClient) -> None:
    async with await serving(serve_forever(OK_CHUNKED + b"3\r\nabc\r\n")) as server:  # never ends
        async with client.stream("GET", server.url) as response:
            async for part in response.aiter_raw():
                assert part == b"abc"
                break
        assert pool_of(client).open_connections == 0
        async with client.stream("GET", server.url) as response:
            assert response.status_code == 200
        assert server.connections == 2


async def test_bytes_after_the_response_forbid_reuse(client: httpx.AsyncClient) -> None:
    async with await serving(serve_forever(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokGARBAGE")) as server:
        for _ in range(2):
            assert (await client.get(server.url)).content == b"ok"
        assert server.connections == 2


async def test_an_idle_connection_the_server_closed_is_replaced(client: httpx.AsyncClient) -> None:
    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async for _ in server.requests(reader):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
                return  # closes while the client keeps the connection idle
        return handle

    async with await serving(make) as server:
        assert (await client.get(server.url)).content == b"ok"
        await asyncio.sleep(0.05)  # the close reaches the client's protocol
        assert (await client.get(server.url)).content == b"ok"
        assert server.connections == 2


async def test_idle_connections_expire_and_the_keepalive_limit_holds() -> None:
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=1, keepalive_expiry=0.2)
    async with await serving(serve_forever(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) as server:
        async with httpx.AsyncClient(transport=transport(limits)) as client:
            await asyncio.gather(*[client.get(server.url) for _ in range(3)])
            assert (pool_of(client).open_connections, pool_of(client).idle_connections) == (1, 1)
            connections = server.connections
            await asyncio.sleep(0.3)
            await client.get(server.url)
            assert server.connections == connections + 1  # the idle one had expired


async def test_expired_idle_connections_of_other_origins_are_swept(monkeypatch: pytest.MonkeyPatch) -> None:
    """An origin used once must not keep its socket until it is used again."""
    monkeypatch.setattr("app.llm.h1.SWEEP_INTERVAL", 0.0)
    limits = httpx.Limits(max_connections=10, max_keepalive_connections=5, keepalive_expiry=0.2)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with await serving(serve_forever(answer)) as once, await serving(serve_forever(answer)) as other, \
            httpx.AsyncClient(transport=transport(limits)) as client:
        await client.get(once.url)
        await asyncio.sleep(0.3)  # its idle connection expires
        await client.get(other.url)
        assert (pool_of(client).open_connections, pool_of(client).idle_connections) == (1, 1)


async def test_a_streamed_request_body_is_chunk_encoded(client: httpx.AsyncClient) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield b"part one, "
        yield b""
        yield b"part two"

    received: list[bytes] = []

    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async for request_body in server.requests(reader):
                received.append(request_body)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        return handle

    async with await serving(make) as server:
        assert (await client.post(server.url, content=body())).status_code == 200
        assert received == [b"part one, part two"]
        assert b"transfer-encoding: chunked" in server.heads[0].lower()


async def test_head_goes_to_the_fallback_transport(client: httpx.AsyncClient) -> None:
    async with await serving(serve_forever(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")) as server:
        response = await client.head(server.url)
        assert (response.status_code, response.headers["content-length"], response.content) == (200, "1000", b"")
        assert pool_of(client).open_connections == 0  # the H1 pool was not used


# -- failures ----------------------------------------------------------------------------------


@pytest.mark.parametrize("answer", [b"HTTP/1.1 two hundred OK\r\n\r\n", b"NOT HTTP AT ALL\r\n\r\n",
                                    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"])
async def test_malformed_answers_are_protocol_errors(client: httpx.AsyncClient, answer: bytes) -> None:
    async with await serving(serve_forever(answer)) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
            await client.get(server.url)
        assert pool_of(client).open_connections == 0


@pytest.mark.parametrize("flood", ["one endless header", "endless interim answers", "one endless trailer"])
async def test_attack_an_endless_response_head_is_cut_off(client: httpx.AsyncClient, flood: str) -> None:
    """A hostile server (a tool's target) must not make the gateway buffer headers without end."""
    sent: list[int] = []
    piece = b"HTTP/1.1 100 Continue\r\n\r\n" * 200 if flood == "endless interim answers" else b"a" * 8192

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write({"one endless header": b"HTTP/1.1 200 OK\r\nX-Flood: ",
                      "one endless trailer": OK_CHUNKED + b"3\r\nabc\r\n0\r\nX-Trailer: "}.get(flood, b""))
        for _ in range(10_000):
            writer.write(piece)
            await writer.drain()
            sent.append(len(piece))

    async with RawServer(handle) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="larger than|of chunk framing without body"):
            await client.get(server.url)
        assert pool_of(client).open_connections == 0
    assert sum(sent) < 10_000 * len(piece)  # the client hung up long before the server was done


async def test_an_upgrade_answer_is_refused(client: httpx.AsyncClient) -> None:
    answer = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    async with await serving(serve_forever(answer)) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="switched protocols"):
            await client.get(server.url)
        assert pool_of(client).open_connections == 0


async def test_the_server_hangs_up_before_answering(client: httpx.AsyncClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async with RawServer(handle) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            await client.get(server.url)


@pytest.mark.parametrize("answer", [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                                    OK_CHUNKED + b"3\r\nabc\r\n"])
async def test_a_body_cut_short(client: httpx.AsyncClient, answer: bytes) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async with RawServer(handle) as server:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending complete message body"):
            await client.get(server.url)
        assert pool_of(client).open_connections == 0


async def test_read_timeout_frees_the_connection(client: httpx.AsyncClient) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK_CHUNKED + b"1\r\na\r\n")
        await writer.drain()
        await reader.read()

    async with RawServer(handle) as server:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(server.url, timeout=httpx.Timeout(5.0, read=0.2))
        assert pool_of(client).open_connections == 0


async def test_connection_refused(client: httpx.AsyncClient) -> None:
    with pytest.raises(httpx.ConnectError):
        await client.get("http://127.0.0.1:9/")
    assert pool_of(client).open_connections == 0


async def test_attack_header_injection_sends_nothing(client: httpx.AsyncClient) -> None:
    """A header value (say, an API key from a definition file) carrying a line break must not
    split the request: the transport refuses before a byte is written."""
    async with await serving(serve_forever(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")) as server:
        for headers in ({"Authorization": "Bearer k\r\nX-Admin: 1"}, {"X-A": "v\nHost: evil"}, {"X-A": "v\x00"}):
            with pytest.raises(httpx.LocalProtocolError):
                await client.get(server.url, headers=headers)
        with pytest.raises(httpx.LocalProtocolError):
            await client.request("GET\r\nX", server.url)
        await asyncio.sleep(0.05)
        assert server.raw == b"" and server.heads == []
        assert pool_of(client).open_connections == 0


# -- the pool ----------------------------------------------------------------------------------


def hold_until(release: asyncio.Event) -> Callable[[RawServer], Handler]:
    """Answer headers at once, then hold the body open until ``release``."""
    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async for _ in server.requests(reader):
                writer.write(OK_CHUNKED)
                await writer.drain()
                await release.wait()
                writer.write(chunked(b"done"))
                await writer.drain()
        return handle
    return make


async def test_a_full_pool_waits_then_times_out() -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    release = asyncio.Event()
    async with await serving(hold_until(release)) as server, \
            httpx.AsyncClient(transport=transport(limits), timeout=5.0) as client:
        async with client.stream("GET", server.url) as first:
            assert first.status_code == 200
            with pytest.raises(httpx.PoolTimeout):
                await client.get(server.url, timeout=httpx.Timeout(5.0, pool=0.1))
            waiting = asyncio.create_task(client.get(server.url))
            await asyncio.sleep(0.05)
            assert not waiting.done()
            release.set()
            assert await first.aread() == b"done"
        assert (await waiting).content == b"done"
        assert server.connections == 1
        assert pool_of(client).open_connections == 1


async def test_another_origins_idle_connection_makes_room() -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
    async with await serving(serve_forever(answer)) as one, await serving(serve_forever(answer)) as two, \
            httpx.AsyncClient(transport=transport(limits), timeout=5.0) as client:
        assert (await client.get(one.url)).content == b"ok"
        assert (await client.get(two.url, timeout=httpx.Timeout(5.0, pool=0.5))).content == b"ok"
        assert pool_of(client).open_connections == 1


@pytest.mark.parametrize("where", ["waiting for a slot", "waiting for headers", "reading the body"])
async def test_cancellation_never_leaks_a_slot(where: str) -> None:
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    release, stalled = asyncio.Event(), asyncio.Event()

    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            async for _ in server.requests(reader):
                if where == "waiting for headers" and len(server.heads) == 1:
                    stalled.set()
                    await reader.read()
                    return
                writer.write(OK_CHUNKED + b"1\r\na\r\n")
                await writer.drain()
                await release.wait()
                writer.write(chunked(b"b"))
                await writer.drain()
        return handle

    async with await serving(make) as server, httpx.AsyncClient(transport=transport(limits), timeout=5.0) as client:
        pool = pool_of(client)
        held = None
        task: asyncio.Task[Any]
        if where == "waiting for a slot":
            held = await client.send(client.build_request("GET", server.url), stream=True)
            task = asyncio.create_task(client.get(server.url))
            await asyncio.sleep(0.05)
        elif where == "waiting for headers":
            task = asyncio.create_task(client.get(server.url))
            await stalled.wait()
        else:
            async def read_body() -> None:
                async with client.stream("GET", server.url) as response:
                    async for _ in response.aiter_raw():
                        stalled.set()
            task = asyncio.create_task(read_body())
            await stalled.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        if held is not None:
            release.set()
            await held.aread()
            await held.aclose()
        release.set()
        assert pool.open_connections <= 1
        assert (await client.get(server.url, timeout=httpx.Timeout(5.0, pool=1.0))).content == b"ab"


async def test_the_gateway_client_keeps_no_cookies_on_h1() -> None:
    answer = b"HTTP/1.1 200 OK\r\nSet-Cookie: session=alice; Path=/\r\nContent-Length: 2\r\n\r\nok"
    async with await serving(serve_forever(answer)) as server:
        client = shared_client(LIMITS, httpx.Timeout(5.0))
        try:
            assert isinstance(client._transport, H1Transport)
            await client.get(server.url)
            await client.get(server.url)
            assert b"cookie:" not in server.heads[1].lower()
        finally:
            await client.aclose()


@pytest.mark.parametrize("coding", ["gzip", "identity"])
async def test_a_model_stream_with_a_content_coding_is_decoded(client: httpx.AsyncClient, coding: str) -> None:
    """``stream_chat`` reads a plain body straight from this transport (``RAW_BODY``); a coded one
    goes through httpx, which decodes it: the deltas are the same either way."""
    events = (b'data: {"choices":[{"index":0,"delta":{"content":"h\xc3\xa9"}}]}\n\n'
              b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n')
    body = gzip.compress(events) if coding == "gzip" else events
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Encoding: %s\r\n"
              b"Content-Length: %d\r\n\r\n%s" % (coding.encode(), len(body), body))
    async with await serving(serve_forever(answer)) as server:
        deltas = [d async for d in stream_chat(client, make_request(server.url))]
    assert deltas == [ContentDelta("hé"), FinishDelta("stop")]
    assert pool_of(client).open_connections == 1  # the whole body was read: the connection went back


async def test_a_model_stream_whose_last_line_has_no_end_still_gives_that_line(client: httpx.AsyncClient) -> None:
    """The body may end right after a ``data:`` line with no line end: the line is still read
    (``EventReader.end``), so its finish reason counts and the stream is complete, not cut short."""
    body = (b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
            b'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}')
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    async with await serving(serve_forever(answer)) as server:
        deltas = [d async for d in stream_chat(client, make_request(server.url))]
    assert deltas == [ContentDelta("a"), FinishDelta("stop")]


# -- what the request declares ------------------------------------------------------------------------


@pytest.mark.parametrize("streamed", [False, True], ids=["bytes", "stream"])
async def test_attack_a_body_longer_than_its_content_length_smuggles_no_request(client: httpx.AsyncClient,
                                                                               streamed: bool) -> None:
    """The body was written as it came, whatever ``Content-Length`` said: the bytes past the
    declared length reached the server as a second request of their own (request smuggling).
    Both too much and too little are now refused before they are sent, as h11 does."""
    smuggled = b"abc" + b"GET /smuggled-admin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"

    async def body() -> AsyncIterator[bytes]:
        yield smuggled

    async with await serving(serve_forever(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) as server:
        with pytest.raises(httpx.LocalProtocolError, match="Too much data"):
            await client.post(f"{server.url}/p", headers={"Content-Length": "3"},
                              content=body() if streamed else smuggled)
        with pytest.raises(httpx.LocalProtocolError, match="Too little data"):
            await client.post(f"{server.url}/p", headers={"Content-Length": "300"}, content=b"abc")
        assert (await client.get(f"{server.url}/after")).content == b"ok"
    assert not any(b"smuggled" in head for head in server.heads)
    assert [head.split(b" ")[1] for head in server.heads] == [b"/after"]


async def test_a_request_that_says_connection_close_is_not_reused(client: httpx.AsyncClient) -> None:
    """The request's own ``Connection: close`` ends the connection after its answer (the server
    may close it); only the response's keep-alive was looked at."""
    async with await serving(serve_forever(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) as server:
        assert (await client.get(server.url, headers={"Connection": "close"})).content == b"ok"
        assert (await client.get(server.url)).content == b"ok"
        assert server.connections == 2


async def test_an_early_answer_to_a_body_the_server_will_not_read_is_the_response(client: httpx.AsyncClient) -> None:
    """A provider refusing an oversized prompt answers 413 and closes without reading the body; our
    write then fails. The 413 and its message are the answer (as with httpcore), not a write
    error that ``stream_chat`` would report as a connection broken mid-stream."""
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")  # the head only
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 16\r\nConnection: close\r\n\r\n"
                     b'{"error":"long"}')
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()  # closed with the body unread: the client's writes fail

    async with RawServer(refuse) as server:
        response = await client.post(server.url, content=b"x" * (8 << 20))
    assert response.status_code == 413 and response.content == b'{"error":"long"}'
    assert pool_of(client).open_connections == 0  # never reused after a failed write


async def test_a_waiter_woken_without_a_slot_still_times_out_on_its_first_deadline() -> None:
    """A queued request is woken when a connection comes back, but a request that did not queue may
    take it first. The woken one waited again with its whole pool timeout anew: while others kept
    arriving it got neither a connection nor ``PoolTimeout``. The timeout now counts from the start."""
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    release = asyncio.Event()
    async with await serving(hold_until(release)) as server, \
            httpx.AsyncClient(transport=transport(limits), timeout=5.0) as client:
        async with client.stream("GET", server.url) as first:  # holds the only slot
            pool = pool_of(client)
            queued = asyncio.create_task(client.get(server.url, timeout=httpx.Timeout(5.0, pool=0.3)))
            wakes = 0
            while not queued.done() and wakes < 100:  # slots that others take first: up to 10 s of them
                await asyncio.sleep(0.1)
                pool._wake_one()
                wakes += 1
            assert queued.done(), "the queued request waited on through every wake-up"
            with pytest.raises(httpx.PoolTimeout):
                await queued
            release.set()
            await first.aread()
