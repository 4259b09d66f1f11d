"""The SSE wire encoding of run events (SPEC §6, §7) — the only module that knows SSE.

Each event is one message: ``event: message``, ``id: <seq>``, one ``data:`` line of
JSON. A ``: heartbeat`` comment flows every ``server.sse-heartbeat-seconds`` (15 s). The
response never buffers: no GZip, ``Cache-Control: no-cache``, ``X-Accel-Buffering: no``.
When the server shuts down, ``on_shutdown`` is called (the run is cancelled) and the stream
goes on for up to ``SHUTDOWN_GRACE_SECONDS`` so the client still receives ``run.cancel``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import anyio
import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent

from app.runs.log import LogEvent

#: how long a stream may go on after shutdown began, to deliver its terminal event
SHUTDOWN_GRACE_SECONDS = 3.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def encode_event(event: LogEvent) -> ServerSentEvent:
    """One run event → one SSE message (pure; testable without a server)."""
    return ServerSentEvent(
        data=orjson.dumps(event.wire(), option=orjson.OPT_NON_STR_KEYS).decode(),
        event="message",
        id=str(event.seq),
    )


def heartbeat() -> ServerSentEvent:
    return ServerSentEvent(comment="heartbeat")


async def _call_on(event: anyio.Event, callback: Callable[[], object]) -> None:
    await event.wait()
    callback()


async def _encoded(
    events: AsyncIterator[LogEvent], shutdown: anyio.Event, on_shutdown: Callable[[], object]
) -> AsyncIterator[ServerSentEvent]:
    watcher = asyncio.create_task(_call_on(shutdown, on_shutdown))
    try:
        async for event in events:
            yield encode_event(event)
    finally:
        watcher.cancel()


def event_stream_response(
    events: AsyncIterator[LogEvent], heartbeat_seconds: float, on_shutdown: Callable[[], object]
) -> EventSourceResponse:
    shutdown = anyio.Event()
    return EventSourceResponse(
        _encoded(events, shutdown, on_shutdown),
        headers=SSE_HEADERS,
        ping=heartbeat_seconds,
        ping_message_factory=heartbeat,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
    )
