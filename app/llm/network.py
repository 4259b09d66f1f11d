"""A lean network layer under httpx for streaming upstream reads (issue 13).

httpx stays the client; only httpcore's network backend changes. The default one goes
through anyio, and for each ``read`` of a streaming body it (1) looks up the running
library and task through sniffio (``asyncio.current_task`` in Python), (2) opens a
cancel scope for the read timeout, and (3) calls ``resume_reading()`` then
``pause_reading()`` on the transport, i.e. an ``epoll_ctl`` register and unregister of
the upstream socket per read. For a stream of small paced deltas that is one read per
delta, so all of it is paid per token.

``LeanBackend`` keeps the socket registered while the connection lives: an
``asyncio.Protocol`` buffers what arrives and wakes the one waiting reader; reading is
paused only when more than ``HIGH_WATER`` bytes wait unread (back-pressure) and resumed
once the reader drained the buffer below ``LOW_WATER``. A read whose data is already
there returns without a timer or a future; otherwise it waits on one future with one
``call_later`` timer for its timeout. TLS is ``loop.start_tls`` on the same protocol, so
``https`` providers take the same path. Errors are httpcore's (``ConnectError``,
``ConnectTimeout``, ``ReadError``, ``ReadTimeout``, ``WriteError``, ``WriteTimeout``),
which httpx maps to its own as with the default backend.

``StreamingTransport`` is httpx's own transport (httpcore, h11) over this backend: the
gateway's transport without httptools, and the fallback of ``app.llm.h1.H1Transport``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import httpcore
import httpx
from httpcore._async.interfaces import AsyncConnectionInterface

#: pause reading from the socket when this many bytes wait unread …
HIGH_WATER = 256 * 1024
#: … and resume once the reader brought the buffer below this
LOW_WATER = 64 * 1024

_SocketOption = tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]


class _Protocol(asyncio.Protocol):
    """Receives for one connection; at most one reader waits at a time (httpcore reads in turn)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer: deque[bytes] = deque()
        self.buffered = 0
        self.eof = False
        self.lost = False
        self.error: BaseException | None = None
        self.reading_paused = False
        #: reading was paused once: bytes may have waited in the kernel since, so the connection
        #: can no longer tell that nothing follows a response (``LeanStream.stale``)
        self.paused_once = False
        self._reader: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        #: the waiting read's deadline (loop time), and the one timer that enforces it (see wait_readable)
        self._deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    # -- asyncio callbacks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are no subclasses

    def data_received(self, data: bytes) -> None:
        self.buffer.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and not self.reading_paused and self.transport is not None:
            self.reading_paused = self.paused_once = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return True  # half-closed: httpcore closes the connection itself

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.error = exc
        self._wake_reader()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None:
            self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        writable, self._writable = self._writable, None
        if writable is not None and not writable.done():
            writable.set_result(None)

    def _wake_reader(self) -> None:
        reader = self._reader
        if reader is not None and not reader.done():
            reader.set_result(None)

    # -- used by the stream ----------------------------------------------------------------

    def take(self, max_bytes: int) -> bytes:
        chunk = self.buffer.popleft()
        if len(chunk) > max_bytes:
            chunk, rest = chunk[:max_bytes], chunk[max_bytes:]
            self.buffer.appendleft(rest)
        self.buffered -= len(chunk)
        if self.reading_paused and self.buffered < LOW_WATER and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()
        return chunk

    async def wait_readable(self, timeout: float | None) -> None:
        """Wait until data, EOF or the end of the connection; ``ReadTimeout`` after ``timeout`` s.

        A paced stream waits once per delta, so the timeout is not a timer per wait (on uvloop a
        ``call_later`` and its ``cancel`` cost 2.7 µs; a delivered read went from 4.6–5.5 to
        3.1–4.1 µs of CPU measured): one timer per connection stays armed, and
        when it fires it either expires the waiting read, or finds the deadline moved on (data
        came, a later read waits) and re-arms for it. A wait with an earlier deadline re-arms at
        once; the timer goes with the connection."""
        loop = asyncio.get_running_loop()
        reader = self._reader = loop.create_future()
        if timeout is None:
            self._deadline = None
        else:
            deadline = self._deadline = loop.time() + timeout
            if self._timer is None or self._timer_at > deadline:
                self._arm(loop, deadline)
        try:
            await reader
        finally:
            self._reader = None
            self._deadline = None

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = loop.call_at(when, self._on_timer), when

    def _on_timer(self) -> None:
        self._timer = None
        reader, deadline = self._reader, self._deadline
        if reader is None or reader.done() or deadline is None:
            return  # nobody waits (or without a timeout): the next wait arms again
        loop = asyncio.get_running_loop()
        if loop.time() >= deadline:
            reader.set_exception(httpcore.ReadTimeout("timed out reading from the upstream"))
        else:
            self._arm(loop, deadline)

    async def wait_writable(self, timeout: float | None) -> None:
        writable = self._writable
        if writable is None:
            return
        try:
            await asyncio.wait_for(asyncio.shield(writable), timeout)
        except TimeoutError:
            raise httpcore.WriteTimeout("timed out waiting to write to the upstream") from None


class LeanStream(httpcore.AsyncNetworkStream):
    """One connection (plain or TLS) as httpcore sees it."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._read_cap: float | None = None

    def cap_read_timeout(self, seconds: float | None) -> None:
        """Let no read wait longer than ``seconds`` (``None``: the request's own timeout again)."""
        self._read_cap = seconds

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if self._read_cap is not None:
            timeout = self._read_cap if timeout is None else min(timeout, self._read_cap)
        if not protocol.buffer and not protocol.eof and not protocol.lost:
            await protocol.wait_readable(timeout)
        if protocol.buffer:
            return protocol.take(max_bytes)
        if protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error) or type(protocol.error).__name__) from protocol.error
        return b""  # end of stream: h11 decides whether that was expected

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        protocol = self._protocol
        if protocol.lost or self._transport.is_closing():
            raise httpcore.WriteError("the upstream connection is closed")
        try:
            self._transport.write(buffer)
        except (OSError, RuntimeError) as exc:
            raise httpcore.WriteError(str(exc)) from exc
        await protocol.wait_writable(timeout)
        if protocol.lost and protocol.error is not None:
            raise httpcore.WriteError(str(protocol.error)) from protocol.error

    def stale(self) -> bool:
        """Bytes nobody asked for, or the end of the connection, arrived: not fit for another request.

        The protocol always reads, so what the kernel had by the loop's last poll is here already:
        no poll(2) per idle connection per pool operation. A connection whose reading was ever
        paused (back-pressure) cannot say so: bytes sent after a response may still wait in the
        kernel (or, over TLS, in the SSL transport) when its last byte is read, and the next
        request on it would read them as its own answer. Such a connection is never reused."""
        protocol = self._protocol
        return bool(protocol.buffer) or protocol.eof or protocol.lost or protocol.paused_once

    def closing(self) -> bool:
        return self._transport.is_closing()

    def close(self) -> None:
        self._transport.close()

    async def aclose(self) -> None:
        self.close()

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        protocol = self._protocol
        if protocol.buffer or protocol.eof or protocol.lost:
            # Bytes before the handshake are no part of the TLS session: read after it, they would
            # pass for the encrypted answer (uvloop delivers them to this protocol).
            self._transport.close()
            raise httpcore.ConnectError("the upstream sent data before the TLS handshake")
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(self._transport, protocol, ssl_context,
                                                 server_hostname=server_hostname)
        except TimeoutError:
            self._transport.close()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake with the upstream") from None
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc)) from exc
        except BaseException:
            self._transport.close()
            raise
        if transport is None:  # the connection closed during the handshake
            raise httpcore.ConnectError("the upstream closed the connection during the TLS handshake")
        self._protocol.transport = cast(asyncio.Transport, transport)
        return LeanStream(self._protocol.transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        transport = self._transport
        if info == "ssl_object":
            return transport.get_extra_info("ssl_object")
        if info == "client_addr":
            return transport.get_extra_info("sockname")
        if info == "server_addr":
            return transport.get_extra_info("peername")
        if info == "socket":
            return transport.get_extra_info("socket")
        if info == "is_readable":  # httpcore asks before reusing an idle connection
            return self.stale()
        return None


class LeanBackend(httpcore.AsyncNetworkBackend):
    """httpcore network backend on plain asyncio transports (asyncio's loop or uvloop)."""

    async def connect_tcp(
        self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
        socket_options: Iterable[_SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(_Protocol, host, port, local_addr=local)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out connecting to {host}:{port}") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return _stream(transport, protocol, socket_options)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[_SocketOption] | None = None
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_unix_connection(_Protocol, path)
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"timed out connecting to {path}") from None
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        return _stream(transport, protocol, socket_options)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


def _stream(transport: asyncio.BaseTransport, protocol: asyncio.BaseProtocol,
            socket_options: Iterable[_SocketOption] | None) -> LeanStream:
    sock: socket.socket | None = transport.get_extra_info("socket")
    if sock is not None:
        for option in socket_options or ():
            sock.setsockopt(*option)
    return LeanStream(cast(asyncio.Transport, transport), cast(_Protocol, protocol))


class LinearPool(httpcore.AsyncConnectionPool):
    """httpcore's pool with its bookkeeping made linear in the number of connections.

    httpcore 1.0 re-assigns requests to connections whenever a request starts or a response
    closes. Its clean-up pass builds, for every idle connection, a list over all connections
    (``len([c.is_idle() for c in connections])``, which is just ``len(connections)``), so with
    n connections open each start and end of a stream costs O(n²) Python calls: measured
    ≈ 8 ms of CPU per stream at 200 concurrent streams. This is the same algorithm, the same
    decisions in the same order, in O(n).
    """

    def _assign_requests_to_connections(self) -> list[AsyncConnectionInterface]:
        closing: list[AsyncConnectionInterface] = []
        connections = self._connections
        total, kept = len(connections), list[AsyncConnectionInterface]()
        for index, connection in enumerate(connections):
            current = len(kept) + total - index  # len(self._connections) at this step of httpcore's loop
            if connection.is_closed():
                continue
            if connection.has_expired() or (connection.is_idle() and current > self._max_keepalive_connections):
                closing.append(connection)
                continue
            kept.append(connection)
        connections[:] = kept
        for pool_request in [request for request in self._requests if request.is_queued()]:
            origin = pool_request.request.url.origin
            available = next((c for c in connections if c.can_handle_request(origin) and c.is_available()), None)
            if available is not None:
                pool_request.assign_to_connection(available)
                continue
            if len(connections) >= self._max_connections:
                idle = next((c for c in connections if c.is_idle()), None)
                if idle is None:
                    continue  # stays queued until a connection frees up
                connections.remove(idle)
                closing.append(idle)
            connection = self.create_connection(origin)
            connections.append(connection)
            pool_request.assign_to_connection(connection)
        return closing


class StreamingTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` (HTTP/1.1, certificate checks on) over ``LeanBackend``."""

    def __init__(self, limits: httpx.Limits, *, verify: ssl.SSLContext | bool = True, trust_env: bool = True) -> None:
        context = verify if isinstance(verify, ssl.SSLContext) else httpx.create_ssl_context(verify, trust_env=trust_env)
        super().__init__(limits=limits, verify=context, trust_env=trust_env)
        # the one change: httpx builds its pool without a backend argument; same settings, our backend
        self._pool = LinearPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=True,
            http2=False,
            network_backend=LeanBackend(),
        )


__all__ = ["HIGH_WATER", "LOW_WATER", "LeanBackend", "LeanStream", "LinearPool", "StreamingTransport"]
