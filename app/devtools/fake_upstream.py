"""A real, scripted model provider: OpenAI and Anthropic streaming over loopback HTTP.

``FakeUpstream`` is a small HTTP/1.1 server (raw asyncio, chunked transfer encoding)
on ``127.0.0.1`` with an ephemeral port, running its own event loop in its own thread,
so sync tests, async tests and the gateway process itself can all use it. Each chat
request pops the next queued ``Script`` (``app.devtools.script``) — or asks the
``responder`` callable when the queue is empty — and the script is rendered in the
dialect of the request path (SPEC §7), every frame written and flushed on its own.

Routes:

* ``POST …/chat/completions`` (any prefix, so NEWAPI paths work) — OpenAI chat-completions SSE
* ``POST /v1/messages``, ``POST /messages`` (any path ending in ``/messages``) — Anthropic messages SSE
* ``POST /_control/release/{gate}`` — release a ``Gate`` from another process
* ``POST /_control/enqueue`` — ``{"script": [step JSON…]}`` (see ``script_to_json``)

Non-streaming chat requests (``"stream"`` not true) answer 400: the gateway always
streams. Every chat request is recorded (``requests``) before it is answered, and the
server observes whether the client closed the connection before the script finished
(``disconnected`` / ``wait_disconnect``).
"""

from __future__ import annotations

import asyncio
import collections
import http
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import orjson

from app.devtools._render import AnthropicRenderer, OpenAIRenderer, Renderer
from app.devtools.script import (
    Disconnect,
    Gate,
    HttpError,
    Pause,
    Script,
    Stall,
    StreamError,
    script_from_json,
    validate_script,
)

logger = logging.getLogger(__name__)

Dialect = Literal["openai", "anthropic"]
Responder = Callable[[dict[str, Any]], Script]

_MAX_HEAD_BYTES = 64 * 1024
_MAX_BODY_BYTES = 16 * 1024 * 1024
_CONTROL_PREFIX = "/_control/"


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """One chat request as the fake upstream received it."""

    index: int
    method: str
    path: str
    dialect: Dialect
    #: header names lower-cased
    headers: Mapping[str, str]
    #: the parsed JSON body (``None`` when it was not JSON)
    body: Any


@dataclass(slots=True)
class _Exchange:
    """Cross-thread observation of one request's fate."""

    disconnected: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True, slots=True)
class _HttpRequest:
    method: str
    target: str
    version: str
    headers: Mapping[str, str]
    body: bytes


class _ClientGone(Exception):
    """The client closed the connection while we were answering."""


class _Connection:
    """Buffered reading plus EOF observation for one TCP connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffer = bytearray()
        self.closed = asyncio.Event()

    async def _fill(self) -> bool:
        try:
            data = await self.reader.read(65536)
        except ConnectionError:
            data = b""
        if not data:
            self.closed.set()
            return False
        self.buffer += data
        return True

    async def watch(self) -> None:
        """Read (and keep) whatever arrives until EOF; sets ``closed`` when the peer goes away."""
        while await self._fill():
            pass

    async def read_request(self) -> _HttpRequest | None:
        while b"\r\n\r\n" not in self.buffer:
            if len(self.buffer) > _MAX_HEAD_BYTES or not await self._fill():
                return None
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if length > _MAX_BODY_BYTES:
            return None
        while len(self.buffer) < length:
            if not await self._fill():
                return None
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return _HttpRequest(method.upper(), target, version, headers, body)

    async def send(self, data: bytes) -> None:
        if self.closed.is_set() or self.writer.is_closing():
            raise _ClientGone
        self.writer.write(data)
        try:
            await self.writer.drain()
        except ConnectionError as exc:
            self.closed.set()
            raise _ClientGone from exc

    async def send_chunk(self, data: bytes) -> None:
        await self.send(_chunk(data))

    def abort(self) -> None:
        self.writer.transport.abort()


def _chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk of the chunked transfer encoding."""
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _dialect_of(path: str) -> Dialect | None:
    if path.endswith("/chat/completions"):
        return "openai"
    if path.endswith("/messages"):
        return "anthropic"
    return None


class FakeUpstream:
    """A scripted OpenAI + Anthropic streaming server for tests, benchmarks and the demo model.

    Use as a context manager (``with FakeUpstream() as fake: …``) or call ``start()`` /
    ``stop()``. Thread-safe: every public method may be called from any thread.
    """

    def __init__(
        self, responder: Responder | None = None, *, host: str = "127.0.0.1", port: int = 0, backlog: int = 1024
    ) -> None:
        self._responder = responder
        self._backlog = backlog
        self._host = host
        self._requested_port = port
        self._port: int | None = None
        self._lock = threading.Lock()
        self._requests_changed = threading.Condition(self._lock)
        self._queue: collections.deque[Script] = collections.deque()
        self._requests: list[RecordedRequest] = []
        self._exchanges: list[_Exchange] = []
        self._released: set[str] = set()
        self._ids = itertools.count(1)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._gates: dict[str, asyncio.Event] = {}
        self._connections: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._startup_error: BaseException | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> FakeUpstream:
        """Start the server thread; returns once the port is bound."""
        if self._thread is not None:
            raise RuntimeError("FakeUpstream already started")
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="fake-upstream", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("FakeUpstream did not start within 10 s")
        if self._startup_error is not None:
            raise RuntimeError(f"FakeUpstream failed to start: {self._startup_error}") from self._startup_error
        logger.debug("fake upstream listening on %s", self.url)
        return self

    def stop(self) -> None:
        """Close every connection and stop the server thread. Idempotent."""
        loop, stopping, thread = self._loop, self._stopping, self._thread
        if thread is None:
            return
        if loop is not None and stopping is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(stopping.set)
            except RuntimeError:  # the loop already closed
                pass
        thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("FakeUpstream is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        return f"http://{self._host}:{self.port}"

    # -- scripting ----------------------------------------------------------------------

    def enqueue(self, *scripts: Script) -> None:
        """Queue scripts (FIFO); each chat request pops one."""
        for script in scripts:
            validate_script(script)
        with self._lock:
            self._queue.extend(list(script) for script in scripts)

    def release(self, gate: str) -> None:
        """Open ``gate``: streams waiting on it continue, later ones pass straight through."""
        with self._lock:
            self._released.add(gate)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(self._open_gate, gate)
            except RuntimeError:
                pass

    @property
    def pending_scripts(self) -> int:
        with self._lock:
            return len(self._queue)

    # -- observation --------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of every chat request received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def wait_requests(self, count: int, timeout: float = 5.0) -> bool:
        """Block until at least ``count`` chat requests arrived; ``False`` on timeout."""
        with self._requests_changed:
            return self._requests_changed.wait_for(lambda: len(self._requests) >= count, timeout)

    def disconnected(self, request_index: int) -> bool:
        """Whether the client closed request ``request_index``'s connection before its script ended."""
        return self._exchange(request_index).disconnected.is_set()

    def finished(self, request_index: int) -> bool:
        """Whether request ``request_index`` was answered to the end of its script."""
        return self._exchange(request_index).finished.is_set()

    def wait_disconnect(self, request_index: int, timeout: float = 5.0) -> bool:
        """Block until the client closed request ``request_index`` early; ``False`` on timeout."""
        if not self.wait_requests(request_index + 1, timeout):
            return False
        return self._exchange(request_index).disconnected.wait(timeout)

    def _exchange(self, request_index: int) -> _Exchange:
        with self._lock:
            return self._exchanges[request_index]

    # -- server thread ------------------------------------------------------------------

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._main(ready))
        except BaseException as exc:  # reported to start(); the thread must not die silently
            self._startup_error = exc
            ready.set()

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(
            self._on_connect, self._host, self._requested_port, backlog=self._backlog
        )
        self._port = server.sockets[0].getsockname()[1]
        with self._lock:
            released = set(self._released)
        for gate in released:
            self._open_gate(gate)
        ready.set()
        try:
            await self._stopping.wait()
        finally:
            await asyncio.sleep(0.01)  # let accepts already in flight reach _on_connect
            server.close()
            for task in list(self._connections):
                task.cancel()
            await asyncio.gather(*self._connections, return_exceptions=True)
            for writer in list(self._writers):  # accepted but never served
                writer.transport.abort()
            await server.wait_closed()
            await asyncio.sleep(0)  # let the transports' close callbacks run

    def _open_gate(self, gate: str) -> None:
        self._gates.setdefault(gate, asyncio.Event()).set()

    def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Called synchronously on accept, so ``stop`` can close even a connection never served."""
        self._writers.add(writer)
        task = asyncio.get_running_loop().create_task(self._serve_connection(reader, writer))
        self._connections.add(task)
        task.add_done_callback(self._connections.discard)

    async def _serve_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Connection(reader, writer)
        try:
            while True:
                request = await conn.read_request()
                if request is None:
                    break
                keep_alive = await self._dispatch(conn, request)
                if not keep_alive:
                    break
        except _ClientGone:
            pass
        except Exception:
            logger.exception("fake upstream: connection handler failed")
        finally:
            self._writers.discard(writer)
            if not writer.is_closing():
                writer.close()

    async def _dispatch(self, conn: _Connection, request: _HttpRequest) -> bool:
        keep_alive = request.version == "HTTP/1.1" and request.headers.get("connection", "").lower() != "close"
        path = urlsplit(request.target).path
        if path.startswith(_CONTROL_PREFIX):
            status, payload = self._control(request.method, path, request.body)
            await self._send_json(conn, status, orjson.dumps(payload), keep_alive)
            return keep_alive
        dialect = _dialect_of(path)
        if dialect is None:
            await self._send_json(conn, 404, _error_json(f"no such endpoint: {path}"), keep_alive)
            return keep_alive
        if request.method != "POST":
            await self._send_json(conn, 405, _error_json(f"{request.method} not allowed on {path}"), keep_alive)
            return keep_alive
        try:
            body: Any = orjson.loads(request.body) if request.body else None
        except orjson.JSONDecodeError:
            body = None
        exchange = _Exchange()
        with self._requests_changed:
            index = len(self._requests)
            self._requests.append(RecordedRequest(index, request.method, path, dialect, request.headers, body))
            self._exchanges.append(exchange)
            self._requests_changed.notify_all()
        logger.debug("fake upstream: request %d %s %s", index, request.method, path)
        if not isinstance(body, dict):
            await self._send_json(conn, 400, _error_json("the request body must be a JSON object"), keep_alive)
            return keep_alive
        if body.get("stream") is not True:
            await self._send_json(conn, 400, _error_json("the fake upstream only streams (stream: true)"), keep_alive)
            return keep_alive
        script = self._next_script(body)
        if isinstance(script, bytes):
            await self._send_json(conn, 500, script, keep_alive)
            return keep_alive
        renderer = self._renderer(dialect, body, script, index)
        if script and isinstance(script[0], HttpError):
            first = script[0]
            await self._send_json(conn, first.status, renderer.error_body(first.status, first.body), keep_alive)
            exchange.finished.set()
            return keep_alive
        return await self._stream(conn, script, renderer, exchange, keep_alive)

    def _next_script(self, body: dict[str, Any]) -> Script | bytes:
        with self._lock:
            script = self._queue.popleft() if self._queue else None
        if script is not None:
            return script
        if self._responder is None:
            return _error_json("fake upstream: no script queued and no responder configured")
        try:
            script = list(self._responder(body))
            validate_script(script)
        except Exception as exc:
            logger.exception("fake upstream: responder failed")
            return _error_json(f"fake upstream: responder failed: {exc}")
        return script

    def _renderer(self, dialect: Dialect, body: dict[str, Any], script: Script, index: int) -> Renderer:
        model = str(body.get("model") or "fake-model")
        serial = next(self._ids)
        if dialect == "openai":
            options = body.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            return OpenAIRenderer(completion_id=f"chatcmpl-fake-{serial}", model=model, include_usage=include_usage)
        return AnthropicRenderer(message_id=f"msg_fake_{serial}", model=model, script=script)

    async def _stream(
        self, conn: _Connection, script: Script, renderer: Renderer, exchange: _Exchange, keep_alive: bool
    ) -> bool:
        head = (
            "HTTP/1.1 200 OK\r\n"
            "content-type: text/event-stream; charset=utf-8\r\n"
            "cache-control: no-cache\r\n"
            "transfer-encoding: chunked\r\n"
            f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        watcher = asyncio.create_task(conn.watch())
        try:
            await conn.send(head.encode())
            for frame in renderer.start():
                await conn.send_chunk(frame)
            final_frames: list[bytes] | None = None
            for step in script:
                match step:
                    case Pause(seconds=seconds):
                        await self._unless_closed(conn, asyncio.sleep(seconds))
                    case Gate(name=name):
                        await self._unless_closed(conn, self._wait_gate(name))
                    case Stall():
                        await conn.closed.wait()
                        raise _ClientGone
                    case Disconnect():
                        conn.abort()
                        exchange.finished.set()
                        return False
                    case StreamError():
                        final_frames = renderer.step(step)
                        break
                    case _:
                        for frame in renderer.step(step):
                            await conn.send_chunk(frame)
            frames = renderer.end() if final_frames is None else final_frames
            for frame in frames[:-1]:
                await conn.send_chunk(frame)
            # the last frame and the terminating chunk in one write: a client that stops
            # reading at [DONE] / message_stop still sees a complete, reusable response
            last = _chunk(frames[-1]) if frames else b""
            await conn.send(last + b"0\r\n\r\n")
            exchange.finished.set()
            return keep_alive
        except _ClientGone:
            exchange.disconnected.set()
            logger.debug("fake upstream: client closed the connection mid-stream")
            return False
        finally:
            watcher.cancel()
            # let the watcher finish before the connection reads the next keep-alive request
            await asyncio.gather(watcher, return_exceptions=True)

    async def _unless_closed(self, conn: _Connection, awaitable: Awaitable[Any]) -> None:
        """Await ``awaitable`` unless the client goes away first (then raise ``_ClientGone``)."""
        work = asyncio.ensure_future(awaitable)
        gone = asyncio.create_task(conn.closed.wait())
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            work.cancel()
            gone.cancel()
        if conn.closed.is_set():
            raise _ClientGone

    async def _wait_gate(self, gate: str) -> None:
        event = self._gates.setdefault(gate, asyncio.Event())
        with self._lock:
            if gate in self._released:
                event.set()
        await event.wait()

    def _control(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        if method != "POST":
            return 405, {"error": {"message": "control endpoints take POST"}}
        action = path[len(_CONTROL_PREFIX) :]
        if action.startswith("release/") and len(action) > len("release/"):
            gate = unquote(action[len("release/") :])
            self.release(gate)
            return 200, {"released": gate}
        if action == "enqueue":
            try:
                data = orjson.loads(body)
                script = script_from_json(data["script"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
                return 400, {"error": {"message": f"bad script: {exc}"}}
            self.enqueue(script)
            return 200, {"queued": len(script)}
        return 404, {"error": {"message": f"no such control endpoint: {path}"}}

    async def _send_json(self, conn: _Connection, status: int, body: bytes, keep_alive: bool) -> None:
        try:
            reason = http.HTTPStatus(status).phrase
        except ValueError:
            reason = "Error"
        head = (
            f"HTTP/1.1 {status} {reason}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            f"connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
        )
        await conn.send(head.encode() + body)


def _error_json(message: str) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": "fake_upstream_error"}})


__all__ = ["Dialect", "FakeUpstream", "RecordedRequest", "Responder"]
