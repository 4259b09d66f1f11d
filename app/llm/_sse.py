"""Server-sent-events reading shared by the adapters: text lines → ``(event, data)``.

Each ``data:`` line is handed over the moment it is read (both vendors send one
``data:`` line per message), so nothing waits for the blank line that ends the message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from app.errors import UpstreamHTTPError, UpstreamProtocolError

MAX_ERROR_BODY_BYTES = 4096


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


__all__ = ["MAX_ERROR_BODY_BYTES", "in_stream_error", "iter_sse_data", "json_object", "parse_json", "vendor_message"]
