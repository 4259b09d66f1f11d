"""``H1Transport``: httpx's transport for upstream calls, HTTP/1.1 parsed by httptools (issue 13).

httpx stays the client (its API, request building, timeouts, cookies policy, error types);
only the transport under it changes. With httpcore, every read of a streaming body goes
through h11's pure-Python state machine and httpcore's body generator, exception-mapping
context managers and pool stream: measured at 200 paced streams, h11, httpcore and their
context managers are about a third of the gateway's Python calls per delta. Here the
response is parsed by httptools (llhttp, the C parser uvicorn's fast server stack already
uses), straight from ``LeanBackend``'s protocol buffer: one read, one ``feed_data``, one
``on_body`` per chunk of a paced stream.

What it does, and what it leaves to httpcore:

* HTTP/1.1 only, over ``LeanBackend`` (plain TCP or TLS with the client's ``SSLContext``).
* Request bodies are sent as httpx framed them (``Content-Length``, or ``Transfer-Encoding:
  chunked`` for a streamed body, chunk-encoded here). Header names must be tokens and no
  name, value, method or target may hold a control character (a value may hold a tab):
  ``LocalProtocolError``, and
  nothing is sent.
* Responses: ``Content-Length``, chunked, or delimited by the connection's close; interim
  ``1xx`` answers are skipped; an answer to ``101``/upgrade is a ``RemoteProtocolError``, and
  so is a response head (interim answers included), or chunk framing without body (trailers,
  extensions), over ``MAX_HEAD_BYTES``: llhttp sets no limit of its own, h11 did.
  ``HEAD`` and ``CONNECT`` requests (whose answers llhttp cannot frame without being told)
  go to the ``fallback`` transport, httpcore's.
* Keep-alive: a connection whose response was read to its end, that the server lets live
  and that has nothing unread goes back to the pool; anything else is closed. Taking a
  connection back or closing it is synchronous, so a cancellation can never leave one
  counted as busy.
* The pool: at most ``max_connections`` open (an idle connection of another origin is closed
  to make room; otherwise the request waits, ``PoolTimeout`` after the pool timeout), at most
  ``max_keepalive_connections`` idle, each for ``keepalive_expiry`` seconds; the most
  recently used idle connection is taken first. An idle connection the server closed, or
  that received bytes nobody asked for, is dropped when next looked at (the protocol always
  reads, so this needs no poll); at most once a second a request also sweeps the idle
  connections of every origin.
* Errors are httpx's (``ConnectError``, ``ConnectTimeout``, ``ReadError``, ``ReadTimeout``,
  ``WriteError``, ``WriteTimeout``, ``PoolTimeout``, ``RemoteProtocolError``,
  ``LocalProtocolError``), as from httpx's own transport.
* ``response.extensions``: ``http_version``, ``reason_phrase``, ``network_stream`` (the
  ``LeanStream``; ``stream_chat`` caps its read timeout to finish a body, see ``client.py``)
  and ``RAW_BODY``, the body stream itself: ``stream_chat`` iterates it directly when the body
  has no content coding, instead of through httpx's three layers of wrapping generators.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httpcore
import httpx
from httptools import HttpParserError, HttpParserUpgrade, HttpResponseParser

from app.llm.network import LeanBackend, LeanStream
from app.paths import ascii_int

#: bytes asked of the stream per read (the protocol hands over what arrived, in one piece)
READ_SIZE = 1 << 20
#: a response's status line and headers (interim answers included) may take at most this many bytes
MAX_HEAD_BYTES = 64 * 1024
#: the response extension holding the body stream (an async iterable of bytes, read once)
RAW_BODY = "agw.raw_body"
#: at most this often (seconds) a request also closes the expired or dead idle connections of every origin
SWEEP_INTERVAL = 1.0

_Origin = tuple[str, str, int]

_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FIELD_VALUE = re.compile(rb"[^\x00-\x08\x0a-\x1f\x7f]*")  # HTAB allowed, no other control character
_TARGET = re.compile(rb"[^\x00-\x20\x7f]+")

_ERRORS: dict[type[Exception], type[httpx.TransportError]] = {
    httpcore.ConnectTimeout: httpx.ConnectTimeout,
    httpcore.ReadTimeout: httpx.ReadTimeout,
    httpcore.WriteTimeout: httpx.WriteTimeout,
    httpcore.ConnectError: httpx.ConnectError,
    httpcore.ReadError: httpx.ReadError,
    httpcore.WriteError: httpx.WriteError,
}
#: what ``LeanBackend`` and ``LeanStream`` raise
_BACKEND_ERRORS = (httpcore.NetworkError, httpcore.TimeoutException)


def _httpx_error(exc: Exception) -> httpx.TransportError:
    """The httpx error for one of ``LeanBackend``'s (httpcore) errors."""
    for source, target in _ERRORS.items():
        if isinstance(exc, source):
            return target(str(exc))
    return httpx.TransportError(str(exc))


def _content_length(value: str | None) -> int | None:
    """A request's ``Content-Length`` (``None`` when absent); a malformed one is refused."""
    if value is None:
        return None
    length = ascii_int(value.strip())
    if length is None:
        raise httpx.LocalProtocolError(f"illegal Content-Length {value[:40]!r}")
    return length


def _request_head(request: httpx.Request) -> bytes:
    """Request line and headers; ``LocalProtocolError`` for anything that could split them."""
    method = request.method.encode("ascii", "replace")
    target = request.url.raw_path
    if not _TOKEN.fullmatch(method):
        raise httpx.LocalProtocolError(f"illegal request method {request.method!r}")
    if not _TARGET.fullmatch(target):
        raise httpx.LocalProtocolError("illegal character in the request target")
    parts = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in request.headers.raw:
        if not _TOKEN.fullmatch(name):
            raise httpx.LocalProtocolError(f"illegal header name {name!r}")
        if not _FIELD_VALUE.fullmatch(value):
            raise httpx.LocalProtocolError(f"illegal character in the value of header {name.decode('latin-1')!r}")
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


class _Connection:
    """One upstream connection, and the parser callbacks of the response being read on it."""

    __slots__ = ("origin", "stream", "expires_at", "_parser", "status", "reason", "headers",
                 "headers_done", "complete", "keep_alive", "extra", "chunks", "close_delimited", "framing",
                 "last_use")

    def __init__(self, origin: _Origin, stream: LeanStream) -> None:
        self.origin = origin
        self.stream = stream
        self.expires_at = 0.0
        self._parser: HttpResponseParser | None = None
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.complete = False
        self.keep_alive = False
        self.extra = False
        self.chunks: list[bytes] = []
        self.close_delimited = False
        self.framing = 0  # bytes received since the body last grew (chunk lines, trailers)
        self.last_use = False  # the request said ``Connection: close``, or its body could not be sent

    # -- state -----------------------------------------------------------------------------

    def usable(self) -> bool:
        """Open, with nothing unread and no end seen: fit for the next request."""
        return not (self.stream.stale() or self.stream.closing())

    def reusable(self) -> bool:
        """The response was read to its end, and the server lets the connection live."""
        return (self.complete and self.keep_alive and not self.extra and not self.close_delimited
                and not self.last_use and self.usable())

    def close(self) -> None:
        self._parser = None  # the parser holds this object as its callbacks: no cycle left behind
        self.stream.close()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            self.extra = True  # a second answer to one request: nothing more is read from here

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        if self.complete:
            return
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers, self.reason = [], b""  # interim answer (100 Continue, 103 Early Hints): skipped
            return
        self.status = status
        self.headers_done = True
        # the body runs until the close: no Content-Length and no chunked coding last (RFC 9112 §6.3)
        chunked = length = False
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"transfer-encoding":
                chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
            elif lowered == b"content-length":
                length = True
        self.close_delimited = status not in (204, 304) and not chunked and not length

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.headers_done and not self.complete:
            self.complete = True
            assert self._parser is not None
            self.keep_alive = self._parser.should_keep_alive()  # llhttp forgets it once the message is over

    # -- one exchange ------------------------------------------------------------------------

    async def send(self, request: httpx.Request, timeouts: dict[str, Any]) -> None:
        """Write ``request`` and read until its response's headers are in."""
        self._reset()
        self._parser = HttpResponseParser(self)
        head = _request_head(request)
        chunked = request.headers.get("transfer-encoding", "").lower().endswith("chunked")
        # the body's length as declared, held to (as h11 does): a body longer than it would put a
        # second request on the wire, a shorter one would leave the server waiting
        declared = None if chunked else _content_length(request.headers.get("content-length"))
        self.last_use = "close" in request.headers.get("connection", "").lower()
        write_timeout = timeouts.get("write")
        read_timeout = timeouts.get("read")
        sent = 0
        try:
            await self.stream.write(head, write_timeout)
            async for part in request.stream:  # type: ignore[union-attr]  # a Request's stream is async-iterable
                if part:
                    sent += len(part)
                    if declared is not None and sent > declared:
                        self.last_use = True
                        raise httpx.LocalProtocolError("Too much data for declared Content-Length")
                    await self.stream.write(b"%x\r\n%s\r\n" % (len(part), part) if chunked else part, write_timeout)
            if chunked:
                await self.stream.write(b"0\r\n\r\n", write_timeout)
            elif declared is not None and sent < declared:
                self.last_use = True
                raise httpx.LocalProtocolError("Too little data for declared Content-Length")
        except httpcore.WriteError as exc:
            # the server may have answered early and closed (a 413 for a body too large): that answer,
            # as httpcore gives it, rather than the broken write
            self.last_use = True
            if not await self._early_answer(read_timeout):
                raise _httpx_error(exc) from exc
            return
        except _BACKEND_ERRORS as exc:
            raise _httpx_error(exc) from exc
        await self._read_head(read_timeout)

    async def _early_answer(self, timeout: float | None) -> bool:
        """After a failed write: whether a whole response head came (it is then the answer)."""
        try:
            await self._read_head(timeout)
        except httpx.HTTPError:
            return False
        return True

    async def _read_head(self, timeout: float | None) -> None:
        parser = self._parser
        assert parser is not None
        head_bytes = 0
        while not self.headers_done:
            if head_bytes > MAX_HEAD_BYTES:  # llhttp sets no limit: a hostile server could send headers forever
                raise httpx.RemoteProtocolError(f"the response head is larger than {MAX_HEAD_BYTES} bytes")
            received = await self.receive(timeout)
            if not received:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            head_bytes += received
        if parser.should_upgrade() or self.status == 101:
            raise httpx.RemoteProtocolError(f"the server switched protocols (HTTP {self.status}), which was not asked")

    async def receive(self, timeout: float | None) -> int:
        """Wait for bytes and parse them: how many came, ``0`` once the server closed its side."""
        try:
            data = await self.stream.read(READ_SIZE, timeout)
        except _BACKEND_ERRORS as exc:
            raise _httpx_error(exc) from exc
        if not data:
            return 0
        parser = self._parser
        assert parser is not None
        chunks = len(self.chunks)
        try:
            parser.feed_data(data)
        except HttpParserUpgrade:
            raise httpx.RemoteProtocolError("the server switched protocols, which was not asked") from None
        except HttpParserError as exc:
            if not self.complete:
                raise httpx.RemoteProtocolError(f"malformed HTTP response: {exc}") from exc
            self.extra = True  # bytes after the end of the response: the connection is not reused
        if self.headers_done and not self.complete:
            # body bytes reset the count; framing alone (an endless chunk extension or trailer, which
            # llhttp and httptools would buffer) may not exceed what a response head may take
            self.framing = 0 if len(self.chunks) > chunks else self.framing + len(data)
            if self.framing > MAX_HEAD_BYTES:
                raise httpx.RemoteProtocolError(f"more than {MAX_HEAD_BYTES} bytes of chunk framing without body")
        return len(data)


class _Body(httpx.AsyncByteStream):
    """The response body, read as it arrives; closing it gives the connection back (or closes it)."""

    def __init__(self, pool: _Pool, connection: _Connection, timeout: float | None) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self._timeout = timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        connection = self._connection
        if connection is None:
            raise httpx.StreamClosed()
        timeout = self._timeout
        while True:
            if connection.chunks:
                chunks, connection.chunks = connection.chunks, []
                for chunk in chunks:
                    yield chunk
            elif connection.complete:
                return
            elif not await connection.receive(timeout):
                if connection.close_delimited:
                    connection.complete = True  # the body was everything until the close
                    continue
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message body")

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool.release(connection, connection.reusable())


class _Pool:
    """Connections by origin: limits, keep-alive, waiting for a free slot."""

    def __init__(self, limits: httpx.Limits, ssl_context: ssl.SSLContext) -> None:
        self._ssl_context = ssl_context
        self._max = limits.max_connections if limits.max_connections is not None else 1 << 30
        self._max_idle = limits.max_keepalive_connections if limits.max_keepalive_connections is not None else self._max
        self._expiry = limits.keepalive_expiry
        self._backend = LeanBackend()
        self._idle: dict[_Origin, deque[_Connection]] = {}
        self._idle_count = 0
        self._open = 0  # counted against max_connections: idle, busy and being connected
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._closed = False
        self._next_sweep = 0.0

    @property
    def open_connections(self) -> int:
        return self._open

    @property
    def idle_connections(self) -> int:
        return self._idle_count

    async def acquire(self, origin: _Origin, timeouts: dict[str, Any]) -> _Connection:
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL
            self._sweep(now)
        pool_timeout = timeouts.get("pool")
        deadline = None if pool_timeout is None else now + pool_timeout  # one wait in all, however often woken
        while True:
            if self._closed:
                raise RuntimeError("the transport is closed")
            connection = self._take_idle(origin)
            if connection is not None:
                return connection
            if self._open < self._max or self._close_one_idle():
                break
            await self._wait_for_slot(None if deadline is None else max(deadline - time.monotonic(), 0.0))
        self._open += 1
        try:
            return await self._connect(origin, timeouts.get("connect"))
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    def release(self, connection: _Connection, reusable: bool) -> None:
        if reusable and not self._closed and self._idle_count < self._max_idle and self._expiry != 0:
            connection.expires_at = time.monotonic() + self._expiry if self._expiry is not None else float("inf")
            self._idle.setdefault(connection.origin, deque()).append(connection)
            self._idle_count += 1
        else:
            connection.close()
            self._open -= 1
        self._wake_one()

    def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
                self._open -= 1
        self._idle.clear()
        self._idle_count = 0
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)

    # -- internals ---------------------------------------------------------------------------

    def _take_idle(self, origin: _Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = time.monotonic()
        while idle and idle[0].expires_at <= now:  # the oldest first: expired ones go
            self._drop_idle(idle.popleft())
        while idle:
            connection = idle.pop()  # the most recently used: its socket is the warmest
            if connection.usable():
                self._idle_count -= 1
                return connection
            self._drop_idle(connection)
        return None

    def _sweep(self, now: float) -> None:
        """Close the idle connections, of any origin, that expired or that the server closed: an
        origin used once (a tool's fetch) must not hold its socket until it is used again."""
        for origin, idle in list(self._idle.items()):
            kept: deque[_Connection] = deque()
            for connection in idle:
                if connection.expires_at > now and connection.usable():
                    kept.append(connection)
                else:
                    self._drop_idle(connection)
            if kept:
                self._idle[origin] = kept
            else:
                del self._idle[origin]

    def _drop_idle(self, connection: _Connection) -> None:
        self._idle_count -= 1
        connection.close()
        self._open -= 1

    def _close_one_idle(self) -> bool:
        """Make room under ``max_connections`` by closing the least recently used idle connection."""
        oldest: deque[_Connection] | None = None
        for idle in self._idle.values():
            if idle and (oldest is None or idle[0].expires_at < oldest[0].expires_at):
                oldest = idle
        if oldest is None:
            return False
        self._drop_idle(oldest.popleft())
        return True

    async def _wait_for_slot(self, timeout: float | None) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled():
                self._wake_one()  # woken, but leaving anyway: the slot goes to the next in line
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout("timed out waiting for a free upstream connection") from None
            raise

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _connect(self, origin: _Origin, timeout: float | None) -> _Connection:
        scheme, host, port = origin
        try:
            stream = await self._backend.connect_tcp(host, port, timeout=timeout)
            if scheme == "https":
                stream = await stream.start_tls(self._ssl_context, server_hostname=host, timeout=timeout)
        except _BACKEND_ERRORS as exc:
            raise _httpx_error(exc) from exc
        assert isinstance(stream, LeanStream)
        return _Connection(origin, stream)


class H1Transport(httpx.AsyncBaseTransport):
    """httpx transport: HTTP/1.1 on httptools over ``LeanBackend`` (see the module docstring)."""

    def __init__(self, limits: httpx.Limits, fallback: httpx.AsyncBaseTransport, *,
                 verify: ssl.SSLContext | bool = True, trust_env: bool = True) -> None:
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify, trust_env=trust_env)
        self._pool = _Pool(limits, context)
        self._fallback = fallback

    @property
    def pool(self) -> _Pool:
        return self._pool

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if request.method in ("HEAD", "CONNECT") or url.scheme not in ("http", "https"):
            return await self._fallback.handle_async_request(request)
        timeouts: dict[str, Any] = request.extensions.get("timeout", {})
        origin = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        connection = await self._pool.acquire(origin, timeouts)
        try:
            await connection.send(request, timeouts)
        except BaseException:
            self._pool.release(connection, False)
            raise
        body = _Body(self._pool, connection, timeouts.get("read"))
        return httpx.Response(
            connection.status,
            headers=connection.headers,
            stream=body,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": connection.reason,
                        "network_stream": connection.stream, RAW_BODY: body},
        )

    async def aclose(self) -> None:
        self._pool.close()
        await self._fallback.aclose()


__all__ = ["RAW_BODY", "H1Transport", "READ_SIZE"]
