"""The SSE wire encoding of run events (SPEC §6, §7) — the only module that knows SSE.

Each event is one message: ``event: message``, ``id: <seq>``, one ``data:`` line of
JSON. A ``: heartbeat`` comment flows every ``server.sse-heartbeat-seconds`` (15 s). The
response never buffers: no GZip, ``Cache-Control: no-cache``, ``X-Accel-Buffering: no``.
When the server shuts down, ``on_shutdown`` is called (the run is cancelled) and the stream
goes on for up to ``SHUTDOWN_GRACE_SECONDS`` so the client still receives ``run.cancel``.

Hot path (issue 13): each event is encoded once, straight to bytes (``event_frame``: the same
bytes as sse-starlette's ``ServerSentEvent.encode``, without its ``StringIO`` and regular
expressions), and sent with one ASGI ``send`` and no per-event timeout scope. The response
is still sse-starlette's ``EventSourceResponse`` — ping, client disconnect, server shutdown
with a grace period — with only its data loop replaced (``FrameResponse``). The OpenAI and AG-UI endpoints send
their own frames through the same ``FrameResponse``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

import anyio
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.types import Send

from app.runs.log import LogEvent

logger = logging.getLogger(__name__)

#: how long a stream may go on after shutdown began, to deliver its terminal event
SHUTDOWN_GRACE_SECONDS = 3.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def encode_event(event: LogEvent) -> ServerSentEvent:
    """One run event → one SSE message as sse-starlette builds it (the reference for ``event_frame``)."""
    return ServerSentEvent(
        data=event.wire_json().decode(),
        event="message",
        id=str(event.seq),
    )


def event_frame(event: LogEvent) -> bytes:
    """One run event → the bytes of its SSE message (pure): ``id``, ``event: message``, one ``data`` line.

    orjson never writes a raw CR or LF (they are escaped inside JSON strings), so the data is
    one line, and ``seq`` is an int: nothing needs the line splitting of ``ServerSentEvent``.
    """
    return b"".join((b"id: ", str(event.seq).encode(), b"\r\nevent: message\r\ndata: ",
                     event.wire_json(), b"\r\n\r\n"))


def heartbeat() -> ServerSentEvent:
    return ServerSentEvent(comment="heartbeat")


async def _call_on(event: anyio.Event, callback: Callable[[], object]) -> None:
    await event.wait()
    callback()


async def _encoded(
    events: AsyncIterator[LogEvent], shutdown: anyio.Event, on_shutdown: Callable[[], object]
) -> AsyncIterator[bytes]:
    watcher = asyncio.create_task(_call_on(shutdown, on_shutdown))
    try:
        async for event in events:
            yield event_frame(event)
    finally:
        watcher.cancel()


class FrameResponse(EventSourceResponse):
    """``EventSourceResponse`` whose body is already-encoded frames, each sent as it is.

    sse-starlette's data loop wraps every send in ``anyio.move_on_after(send_timeout)`` — a
    cancel scope (and two task look-ups) per event even with no timeout set — and re-checks
    each chunk's type. Here the body yields ``bytes`` only and no send timeout is set, so the
    loop sends directly. Everything else (ping task, disconnect listener, shutdown watcher and
    its grace period, HEAD) is the parent's ``__call__``; on a failed send the body iterator is
    closed first, as in the parent, so the run's stream clean-up runs before the error leaves.
    """

    async def _stream_response(self, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        body = self.body_iterator
        try:
            async for frame in body:
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        except BaseException:
            aclose = getattr(body, "aclose", None)
            if aclose is not None:
                with anyio.move_on_after(getattr(self, "_cleanup_timeout", None), shield=True):
                    try:
                        await aclose()
                    except Exception:
                        logger.exception("closing the event stream after a failed send")
            raise
        async with self._send_lock:
            self.active = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def event_stream_response(
    events: AsyncIterator[LogEvent], heartbeat_seconds: float, on_shutdown: Callable[[], object]
) -> EventSourceResponse:
    shutdown = anyio.Event()
    return FrameResponse(
        _encoded(events, shutdown, on_shutdown),
        headers=SSE_HEADERS,
        ping=heartbeat_seconds,
        ping_message_factory=heartbeat,
        shutdown_event=shutdown,
        shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
    )
