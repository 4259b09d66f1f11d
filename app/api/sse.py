"""The SSE wire encoding of run events (SPEC §6, §7) — the only module that knows SSE.

Each event is one message: ``event: message``, ``id: <seq>``, one ``data:`` line of
JSON. A ``: heartbeat`` comment flows every ``server.sse-heartbeat-seconds`` (15 s). The
response never buffers: no GZip, ``Cache-Control: no-cache``, ``X-Accel-Buffering: no``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def encode_event(event: dict[str, Any]) -> ServerSentEvent:
    """One run event → one SSE message (pure; testable without a server)."""
    return ServerSentEvent(
        data=orjson.dumps(event, option=orjson.OPT_NON_STR_KEYS).decode(),
        event="message",
        id=str(event["seq"]),
    )


def heartbeat() -> ServerSentEvent:
    return ServerSentEvent(comment="heartbeat")


async def _encoded(events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[ServerSentEvent]:
    async for event in events:
        yield encode_event(event)


def event_stream_response(events: AsyncIterator[dict[str, Any]], heartbeat_seconds: float) -> EventSourceResponse:
    return EventSourceResponse(
        _encoded(events),
        headers=SSE_HEADERS,
        ping=heartbeat_seconds,
        ping_message_factory=heartbeat,
    )
