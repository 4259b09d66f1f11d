"""JSON-RPC 2.0 framing for the sidecar (SPEC §10): one JSON object per line.

Pure functions and one writer; nothing here knows the gateway.

* ``parse_line(bytes) -> Call | list[Call] | Reply`` — a request, a batch, or an
  error reply for a line that is not a valid request (-32700 / -32600).
* ``RpcError`` — raised by method handlers; ``code`` is the JSON-RPC error code.
* ``LineWriter`` — the *only* thing that writes to the protocol stream: one line per
  message, flushed at once, in call order, on one writer thread (the event loop
  never blocks on a slow reader; each caller awaits its own write = backpressure).
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, Any, Final

import orjson

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


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


def to_call(item: Any) -> Call | Reply:
    """Validate one request object (SPEC §10: -32600 for anything that is not a request)."""
    if not isinstance(item, dict):
        return Reply(error_message(None, RpcError(INVALID_REQUEST, "invalid request: expected a JSON object")))
    request_id = item.get("id")
    reply_id = request_id if _valid_id(request_id) else None
    if item.get("jsonrpc") != "2.0":
        return Reply(error_message(reply_id, RpcError(INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')))
    if not _valid_id(request_id):
        return Reply(error_message(None, RpcError(INVALID_REQUEST, 'invalid request: "id" must be a string, a number or null')))
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


class LineWriter:
    """Writes protocol messages to ``stream``, one JSON line each, flushed, in call order."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sidecar-stdout")
        self._lock = threading.Lock()
        self._broken = False

    def _write(self, data: bytes) -> None:
        with self._lock:
            if self._broken:
                return
            try:
                self._stream.write(data)
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._broken = True  # the reader went away; keep running, drop output

    async def send(self, message: dict[str, Any] | list[dict[str, Any]]) -> None:
        data = orjson.dumps(message, option=orjson.OPT_NON_STR_KEYS | orjson.OPT_APPEND_NEWLINE)
        await asyncio.get_running_loop().run_in_executor(self._executor, self._write, data)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        with self._lock:
            try:
                self._stream.flush()
            except (BrokenPipeError, ValueError, OSError):
                pass


def take_stdout() -> IO[bytes]:
    """Reserve the real stdout for the protocol and point fd 1 (and ``sys.stdout``) at stderr.

    After this nothing else — a stray ``print``, a library, a child process inheriting
    fd 1 — can put a byte on the protocol stream.
    """
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(protocol_fd, "wb", buffering=65536)
