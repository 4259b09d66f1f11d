"""Server-sent-events reading shared by the adapters: body bytes → text lines → ``(event, data)``.

Each ``data:`` line is handed over the moment it is read (both vendors send one
``data:`` line per message), so nothing waits for the blank line that ends the message.
``sse_lines`` splits the body where the event-stream grammar does, and only there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from app.errors import UpstreamHTTPError, UpstreamProtocolError

MAX_ERROR_BODY_BYTES = 4096


#: the longest line an upstream event stream may send (a delta is a few hundred bytes; a whole
#: image as base64 in one chunk still fits): beyond it the stream is a protocol error, not memory
MAX_LINE_BYTES = 16 * 1024 * 1024


async def sse_lines(chunks: AsyncIterator[bytes], max_line_bytes: int = MAX_LINE_BYTES) -> AsyncIterator[str]:
    """The lines of an event-stream body as text, each the moment its end is read.

    Lines end at CRLF, LF or CR and nowhere else (the HTML event-stream grammar). httpx's
    ``aiter_lines`` splits like ``str.splitlines``, also at U+0085, U+2028 and U+2029, which
    JSON strings may carry unescaped: a delta holding one arrived cut in two and the run failed
    on a chunk that is "not JSON". Each line is decoded alone, as UTF-8 (SSE's only encoding;
    line ends are ASCII, so no character is cut), malformed bytes replaced as httpx does. A CR
    at the end of a chunk ends its line at once; a LF opening the next chunk is then its pair.
    A last line without its end is still yielded. A line longer than ``max_line_bytes`` raises
    ``UpstreamProtocolError`` (its parts are kept in a list meanwhile: no quadratic copying).
    """
    parts: list[bytes] = []  # the start of a line whose end has not come yet
    size = 0
    after_cr = False
    async for chunk in chunks:
        if after_cr and chunk:
            after_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            after_cr = chunk[-1:] == b"\r"
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            if chunk:
                parts.append(chunk)
                size += len(chunk)
                if size > max_line_bytes:
                    raise UpstreamProtocolError(f"upstream sent a line longer than {max_line_bytes} bytes")
            continue
        if parts:
            parts.append(chunk)
            chunk = b"".join(parts)
            parts, size = [], 0
        lines = chunk.split(b"\n")
        rest = lines.pop()
        if rest:
            parts.append(rest)
            size = len(rest)
        for line in lines:
            yield line.decode("utf-8", "replace")
    if parts:
        yield b"".join(parts).decode("utf-8", "replace")


async def iter_sse_data(lines: AsyncIterator[str]) -> AsyncIterator[tuple[str | None, str]]:
    """``(event name or None, data)`` for every ``data:`` line; comments and ids are skipped."""
    event: str | None = None
    async for line in lines:
        if not line:
            event = None
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            yield event, value
        elif name == "event":
            event = value.strip() or None


def parse_json(data: str) -> Any:
    """Decode one ``data:`` payload; anything that is not JSON is a protocol error."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        preview = data if len(data) <= 200 else data[:200] + "…"
        raise UpstreamProtocolError(f"upstream sent a chunk that is not JSON: {preview!r}") from exc


def json_object(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (for optional nested objects)."""
    return value if isinstance(value, dict) else {}


def vendor_message(body: str) -> str:
    """The human message of a vendor error body (OpenAI or Anthropic shape), else the text."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return body.strip()[:500]
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            message = error.get("message") or error.get("msg") or error.get("detail")
            if isinstance(message, str) and message:
                return message
        elif isinstance(error, str) and error:
            return error
        message = data.get("message") or data.get("msg")
        if isinstance(message, str) and message:
            return message
    return body.strip()[:500]


def in_stream_error(error: Any, default_status: int = 502) -> UpstreamHTTPError:
    """An error object the vendor sent inside an otherwise successful stream."""
    if isinstance(error, dict):
        message = str(error.get("message") or error.get("type") or "unknown error")
        code = error.get("code")
        status = code if isinstance(code, int) and 400 <= code <= 599 else default_status
    else:
        message, status = str(error), default_status
    return UpstreamHTTPError(f"upstream error in stream: {message}", http_status=status, body=message)


__all__ = ["MAX_ERROR_BODY_BYTES", "MAX_LINE_BYTES", "in_stream_error", "iter_sse_data", "json_object", "parse_json",
           "sse_lines", "vendor_message"]
