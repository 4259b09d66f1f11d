"""JSON-RPC 2.0 framing for the sidecar (SPEC §10): one JSON object per line.

Pure functions and one writer; nothing here knows the gateway.

* ``parse_line(bytes) -> Call | list[Call] | Reply`` — a request, a batch, or an
  error reply for a line that is not a valid request (-32700 / -32600).
* ``RpcError`` — raised by method handlers; ``code`` is the JSON-RPC error code.
* ``LineWriter`` — the *only* thing that writes to the protocol stream: one line per
  message, flushed at once, in call order: from the event loop when it may drive the
  stream (``app.sidecar.stdio``), else on one writer thread; the loop never blocks on a
  slow reader, and each caller awaits its own write (backpressure).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Final

import orjson

from app.sidecar.stdio import blocking_restorer, loop_may_drive, wait_ready
from app.writer import WriterThread

logger = logging.getLogger(__name__)

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
APPLICATION_ERROR: Final = -32000

RequestId = str | int | float | None


class RpcError(Exception):
    """A JSON-RPC error answer: ``{"code", "message", "data"?}``."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            body["data"] = self.data
        return body


@dataclass(frozen=True, slots=True)
class Call:
    """One request (``is_notification`` when it has no ``id``: no reply is sent)."""

    method: str
    params: Any
    id: RequestId
    is_notification: bool


@dataclass(frozen=True, slots=True)
class Reply:
    """A ready-made reply (for lines that never became a ``Call``)."""

    message: dict[str, Any]


def result_message(request_id: RequestId, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "result": result}


def error_message(request_id: RequestId, error: RpcError) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": error.as_json()}


def notification(method: str, params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


#: the largest number id answered (±2^53, exact in a double): a longer integer literal is parsed as
#: a float by orjson past 64 bits and would be echoed rounded, so the host could not match the reply
MAX_NUMBER_ID: Final = 2**53


def _valid_id(value: Any) -> bool:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return abs(value) <= MAX_NUMBER_ID
    return value is None or isinstance(value, str)


def to_call(item: Any) -> Call | Reply:
    """Validate one request object (SPEC §10: -32600 for anything that is not a request)."""
    if not isinstance(item, dict):
        return Reply(error_message(None, RpcError(INVALID_REQUEST, "invalid request: expected a JSON object")))
    request_id = item.get("id")
    reply_id = request_id if _valid_id(request_id) else None
    if item.get("jsonrpc") != "2.0":
        return Reply(error_message(reply_id, RpcError(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')))
    if not _valid_id(request_id):
        return Reply(error_message(None, RpcError(
            INVALID_REQUEST, 'invalid request: "id" must be a string, null or a number within ±2^53')))
    method = item.get("method")
    if not isinstance(method, str) or not method:
        return Reply(error_message(reply_id, RpcError(INVALID_REQUEST, 'invalid request: "method" must be a non-empty string')))
    params = item.get("params")
    if params is not None and not isinstance(params, (dict, list)):
        return Reply(error_message(reply_id, RpcError(INVALID_REQUEST, 'invalid request: "params" must be an object or an array')))
    return Call(method=method, params=params, id=request_id, is_notification="id" not in item)


def parse_line(line: bytes) -> Call | list[Call | Reply] | Reply | None:
    """A line of input → a call, a batch, an error reply, or ``None`` for a blank line."""
    if not line.strip():
        return None
    try:
        data = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Reply(error_message(None, RpcError(PARSE_ERROR, f"parse error: {exc}")))
    if isinstance(data, list):
        if not data:
            return Reply(error_message(None, RpcError(INVALID_REQUEST, "invalid request: empty batch")))
        return [to_call(item) for item in data]
    return to_call(data)


#: one JSON-RPC message per line
_LINE: Final = orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE


class _PipeProtocol(asyncio.Protocol):
    """The write side of the protocol pipe: flow control and the reader's going away."""

    def __init__(self) -> None:
        self.lost = False
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._paused: asyncio.Future[None] | None = None

    def pause_writing(self) -> None:
        if self._paused is None:
            self._paused = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True  # the reader went away (or we closed): later output is dropped
        self._wake()
        if not self.closed.done():
            self.closed.set_result(None)

    async def drain(self) -> None:
        """Returns at once unless the pipe is full; then when the reader has caught up."""
        if self._paused is not None:
            await asyncio.shield(self._paused)

    def _wake(self) -> None:
        paused, self._paused = self._paused, None
        if paused is not None and not paused.done():
            paused.set_result(None)


class LineWriter:
    """Writes protocol messages to ``stream``, one JSON line each, flushed, in call order.

    When the event loop may drive ``stream`` (a pipe or a socket of its own: a desktop app
    reading the sidecar; ``app.sidecar.stdio.loop_may_drive``), ``open`` makes every message one
    non-blocking write from the loop (``loop.connect_write_pipe``): no trip to a thread per
    message; ``send`` waits only while the pipe is full. Anything else (a terminal, a regular
    file, stderr merged into stdout, one socket for stdin and stdout, Windows) is written in
    blocking mode on one writer thread. A reader that goes away never stops the sidecar: its
    output is dropped. ``aclose`` waits at most ``CLOSE_TIMEOUT_S`` for a reader to take the
    rest, on either path.
    """

    #: how long ``aclose`` waits for a reader to take the last messages
    CLOSE_TIMEOUT_S = 10.0

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        try:
            self._fd: int | None = stream.fileno()
        except (OSError, ValueError, AttributeError):  # no descriptor (a test's buffer): its own write
            self._fd = None
        self._thread = WriterThread("sidecar-stdout")
        self._broken = False
        self._transport: asyncio.WriteTransport | None = None
        self._pipe: _PipeProtocol | None = None
        self._restore: Callable[[], None] | None = None

    @property
    def fileno(self) -> int | None:
        """The protocol stream's descriptor (``None`` for a stream without one)."""
        return self._fd

    async def open(self, *, stdin_fd: int = 0) -> None:
        """Write from the event loop when it may drive the stream (see the class); ``stdin_fd``
        is the requests' stream, which must not be the same pipe or socket."""
        fd = self._fd
        if fd is None or not loop_may_drive(fd, stdin_fd, 2):
            return
        self._stream.flush()  # nothing is buffered yet; the transport writes its descriptor itself
        restore = blocking_restorer(fd)
        # the transport owns and closes its own descriptor; ours stays open to put the mode back
        twin = os.fdopen(os.dup(fd), "wb", buffering=0)
        try:
            transport, pipe = await asyncio.get_running_loop().connect_write_pipe(_PipeProtocol, twin)
        except (NotImplementedError, OSError, ValueError) as exc:  # a loop without pipes: the thread
            twin.close()
            restore()
            logger.debug("sidecar stdout: writing on a thread (%s)", exc)
            return
        self._transport, self._pipe, self._restore = transport, pipe, restore

    def _write(self, data: bytes) -> None:
        """On the writer thread (blocking mode)."""
        if self._broken:
            return
        try:
            if self._fd is None:
                self._stream.write(data)
                self._stream.flush()
            else:
                _write_all(self._fd, data)
        except (BrokenPipeError, ValueError, OSError):
            self._broken = True  # the reader went away; keep running, drop output

    async def send(self, message: dict[str, Any] | list[dict[str, Any]]) -> None:
        await self._send(orjson.dumps(message, option=_LINE))

    async def send_lines(self, messages: Sequence[dict[str, Any]]) -> None:
        """Several messages, each its own line, in one write (what is already there goes out together)."""
        await self._send(b"".join(orjson.dumps(message, option=_LINE) for message in messages))

    async def _send(self, data: bytes) -> None:
        pipe = self._pipe
        if pipe is None:
            try:
                await self._thread.run(self._write, data)
            except RuntimeError:  # closed: the sidecar is stopping, nobody waits for this line
                pass
            return
        if pipe.lost:
            return
        assert self._transport is not None
        self._transport.write(data)
        await pipe.drain()

    async def aclose(self) -> None:
        """Let the reader take what is still buffered or queued (at most ``CLOSE_TIMEOUT_S``), then close."""
        transport, pipe = self._transport, self._pipe
        if transport is not None and pipe is not None:
            transport.close()  # the buffer is written first
            try:
                await asyncio.wait_for(asyncio.shield(pipe.closed), self.CLOSE_TIMEOUT_S)
            except TimeoutError:
                self._gave_up()
                transport.abort()
        elif self._thread.started:
            try:
                await asyncio.wait_for(self._thread.drain(), self.CLOSE_TIMEOUT_S)
            except TimeoutError:
                self._gave_up()
            except RuntimeError:  # closed already
                pass
        self.close()

    def _gave_up(self) -> None:
        logger.warning("sidecar stdout: the reader took nothing for %.0f s; dropping the rest", self.CLOSE_TIMEOUT_S)
        self._broken = True  # a write still queued on the thread is dropped

    def close(self) -> None:
        """Stop writing: the loop's transport and the stream are closed, stdout's blocking mode put
        back; the writer thread stops once its current write ends (not waited for: it may never end)."""
        if self._transport is not None:
            self._transport.close()
        if self._restore is not None:
            self._restore()
            self._restore = None
            self._stream.close()  # the app reads the end of the stream now, as it did from the transport
        self._thread.close(timeout=0)
        if self._fd is None:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` in blocking mode; a descriptor another holder made non-blocking is
    waited on rather than given up."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            wait_ready(fd, write=True)


__all__ = ["APPLICATION_ERROR", "INTERNAL_ERROR", "INVALID_PARAMS", "INVALID_REQUEST", "METHOD_NOT_FOUND",
           "PARSE_ERROR", "Call", "LineWriter", "Reply", "RpcError", "error_message", "notification",
           "parse_line", "result_message", "to_call"]
