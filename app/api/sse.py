"""The SSE wire encoding of run events (SPEC §6, §7) and the response that streams them — the only module that knows SSE.

Each event is one message: ``event: message``, ``id: <seq>``, one ``data:`` line of
JSON. A ``: heartbeat`` comment flows every ``server.sse-heartbeat-seconds`` (15 s). The
response never buffers: no GZip, ``Cache-Control: no-cache``, ``X-Accel-Buffering: no``.
When the server shuts down, ``on_shutdown`` is called (the run is cancelled) and the stream
goes on for up to ``SHUTDOWN_GRACE_SECONDS`` so the client still receives ``run.cancel``.

Hot path (issue 13): each event is encoded once, straight to bytes (``event_frame``: the same
bytes as sse-starlette's ``ServerSentEvent.encode``, without its ``StringIO`` and regular
expressions). The run stream sends the events already in the run's log together, in one ASGI
``send`` (one write), and never waits for more: a paced delta is its own send. ``EventStream``
is the response for the run stream, the OpenAI and the AG-UI endpoints. It replaces
sse-starlette's ``EventSourceResponse``, which ran a task group of four anyio tasks per
response (data, ping, shutdown signal, disconnect listener). Here the frames are sent from the
request's own task and one listener task per response waits for the client's disconnect and
sends the heartbeat. Server shutdown is one poller per app (``StreamShutdown``), not one task
per stream. docs/DECISIONS.md ("Hot path") has the measurements.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from sse_starlette import ServerSentEvent
from sse_starlette.sse import AppStatus
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from app.runs.log import LogEvent

logger = logging.getLogger(__name__)

#: how long a stream may go on after shutdown began, to deliver its terminal event
SHUTDOWN_GRACE_SECONDS = 3.0
#: how long the body's last chunk may wait for a client that reads nothing, after the grace period
FINAL_SEND_SECONDS = 1.0
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def encode_event(event: LogEvent) -> ServerSentEvent:
    """One run event → one SSE message as sse-starlette builds it (the reference for ``event_frame``)."""
    return ServerSentEvent(
        data=event.wire_json().decode(),
        event="message",
        id=str(event.seq),
    )


#: characters JSON strings may hold raw at which ``str.splitlines`` (and so httpx's
#: ``aiter_lines`` and SSE clients built on it) ends a line, with their JSON escapes
_SPLITLINES_BREAKS = ((b"\xe2\x80\xa8", b"\\u2028"), (b"\xe2\x80\xa9", b"\\u2029"), (b"\xc2\x85", b"\\u0085"))


def json_line(data: bytes) -> bytes:
    """JSON from orjson made safe as one SSE ``data`` line for any client: U+2028, U+2029 and
    U+0085 escaped. orjson escapes CR and LF but writes those three raw; the grammar does not
    end a line there, but clients that split with ``str.splitlines`` do (httpx-sse before 0.4.3,
    httpx's ``aiter_lines``), and would get the JSON cut in two. The value is the same."""
    for raw, escaped in _SPLITLINES_BREAKS:
        if raw in data:  # in UTF-8 these bytes are only ever that character, inside a string
            data = data.replace(raw, escaped)
    return data


def event_frame(event: LogEvent) -> bytes:
    """One run event → the bytes of its SSE message (pure): ``id``, ``event: message``, one ``data`` line.

    orjson never writes a raw CR or LF (they are escaped inside JSON strings), so the data is
    one line, and ``seq`` is an int: nothing needs the line splitting of ``ServerSentEvent``.
    ``json_line`` escapes the characters other clients end a line at.
    """
    return b"".join((b"id: ", str(event.seq).encode(), b"\r\nevent: message\r\ndata: ",
                     json_line(event.wire_json()), b"\r\n\r\n"))


def heartbeat() -> ServerSentEvent:
    return ServerSentEvent(comment="heartbeat")


#: the heartbeat comment of the run stream and the OpenAI endpoint, encoded once
HEARTBEAT = heartbeat().encode()


def batch_frames(batch: Sequence[LogEvent]) -> bytes:
    """The frames of a batch of events (``RunService.watch_batches``) as one chunk: what is
    already in the log goes out in one write instead of one each (a run's first and last events,
    deltas that came in one upstream read); a single event, the paced case, is its own frame."""
    return event_frame(batch[0]) if len(batch) == 1 else b"".join(map(event_frame, batch))


def _uvicorn_exiting() -> bool:
    """True once the uvicorn server of this process is stopping: sse-starlette's ``AppStatus``
    flag (its patch of ``Server.handle_exit``), or the ``should_exit`` of the server whose
    SIGTERM handler is installed (the same two checks as sse-starlette's own watcher)."""
    if AppStatus.should_exit:
        return True
    handler = signal.getsignal(signal.SIGTERM)
    server = getattr(handler, "__self__", None)
    return bool(getattr(server, "should_exit", False))


class StreamShutdown:
    """Ends the app's open event streams when the server begins to stop.

    One poller task per app (started with the first stream, every 0.5 s) instead of a waiting
    task per stream. Each stream registers a callback; when the server stops, every callback
    runs once (the stream's grace period starts, then its ``on_shutdown`` runs), and a stream
    that registers later runs it at once.
    """

    POLL_SECONDS = 0.5

    def __init__(self, exiting: Callable[[], bool] = _uvicorn_exiting) -> None:
        #: polled every ``POLL_SECONDS`` while streams are open: True once the server stops
        self.exiting = exiting
        self._callbacks: set[Callable[[], None]] = set()
        self._poller: asyncio.Task[None] | None = None
        self.begun = False

    def register(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Run ``callback`` when the server stops; returns the function that unregisters it."""
        loop = asyncio.get_running_loop()
        if self.begun:
            loop.call_soon(callback)
            return lambda: None
        self._callbacks.add(callback)
        if self._poller is None or self._poller.done():
            self._poller = loop.create_task(self._poll(), name="sse-shutdown-poller")
        return lambda: self._callbacks.discard(callback)

    def begin(self) -> None:
        """The server is stopping: every open stream's callback, once."""
        self.begun = True
        callbacks, self._callbacks = self._callbacks, set()
        for callback in callbacks:
            try:
                callback()
            except Exception:
                logger.exception("ending an event stream at shutdown")

    async def _poll(self) -> None:
        while not self.exiting():
            await asyncio.sleep(self.POLL_SECONDS)
        self.begin()

    async def aclose(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller


class _Stop:
    """Why and whether ``EventStream`` ended its own task early."""

    __slots__ = ("task", "ended", "reason", "timer")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.ended = False  # the body is finished (or being finished): nothing more to send
        self.reason: str | None = None  # "client gone" / "shutdown grace over" once we cancelled
        self.timer: asyncio.TimerHandle | None = None

    def now(self, reason: str) -> None:
        if not self.ended and self.reason is None:
            self.reason = reason
            self.task.cancel()


class EventStream(Response):
    """A ``text/event-stream`` response whose body is frames, each sent as it comes.

    * the frames are sent from a task the request awaits: one ASGI ``send`` per frame, nothing buffered,
      no per-frame timeout scope; ``frames`` yields them encoded, or yields items that ``encode``
      turns into one frame each (the run stream: no generator layer of its own to encode);
    * one listener task waits for the client's disconnect (the body then stops at once: the
      frames' iterator is cancelled, so the run's stream clean-up runs, e.g. ``onDisconnect``)
      and sends ``heartbeat`` after every ``heartbeat_seconds`` (``0``: never);
    * when the server stops (``shutdown``), ``on_shutdown`` is called (the run is cancelled, so
      the client still receives its end) and the stream may go on for ``SHUTDOWN_GRACE_SECONDS``,
      then ends with the body's final chunk.

    (No ``HEAD`` branch: the streaming routes are FastAPI routes, which answer ``HEAD`` with 405.)
    """

    media_type = "text/event-stream"

    def __init__(self, frames: AsyncIterator[Any], *, shutdown: StreamShutdown, heartbeat: bytes,
                 heartbeat_seconds: float, headers: Mapping[str, str] | None = None,
                 on_shutdown: Callable[[], object] | None = None,
                 encode: Callable[[Any], bytes] | None = None) -> None:
        self.frames = frames
        self.encode = encode
        self.shutdown = shutdown
        self.heartbeat = heartbeat
        self.heartbeat_seconds = heartbeat_seconds
        self.on_shutdown = on_shutdown
        self.status_code = 200
        self.background = None
        self.init_headers({**SSE_HEADERS, **(headers or {})})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The frames go out from a task of their own, which the request's task awaits once. A
        # frame's wake-up then resumes only that task's few coroutines, not the request's whole
        # middleware chain (about twenty deep: uvicorn, the middlewares, the router, FastAPI).
        # Cancelling the request's task cancels this one too (asyncio cancels what it awaits).
        await asyncio.get_running_loop().create_task(self._run(send, receive))

    async def _run(self, send: Send, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        stop = _Stop(task)
        try:
            await self._stream(send, receive, stop)
        except asyncio.CancelledError:
            if stop.reason is None or task.uncancel() > 0:
                raise  # not (only) our own stop: the server cancels the request
            if stop.reason == _GRACE_OVER:  # the client is still there: end the body properly …
                # … unless it stopped reading: the send would wait for it forever, and so would the
                # server's exit; given up, the server closes the connection
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(FINAL_SEND_SECONDS):
                        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _stream(self, send: Send, receive: Receive, stop: _Stop) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        listener = asyncio.create_task(self._listen(receive, send, stop))
        unregister = self.shutdown.register(lambda: self._server_stopping(stop))
        try:
            encode = self.encode
            async for item in self.frames:
                await send({"type": "http.response.body", "body": item if encode is None else encode(item),
                            "more_body": True})
            stop.ended = True
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            stop.ended = True
            unregister()
            if stop.timer is not None:
                stop.timer.cancel()
            listener.cancel()
            await _close(self.frames)  # after a failed send, the stream's clean-up still runs now

    async def _listen(self, receive: Receive, send: Send, stop: _Stop) -> None:
        """The client's disconnect ends the stream; the heartbeat flows while it is open."""
        every = self.heartbeat_seconds if self.heartbeat_seconds > 0 else None
        try:
            while not stop.ended:
                try:
                    async with asyncio.timeout(every):
                        message = await receive()
                except TimeoutError:
                    if not stop.ended:
                        await send({"type": "http.response.body", "body": self.heartbeat, "more_body": True})
                    continue
                if message["type"] == "http.disconnect":
                    stop.now(_CLIENT_GONE)
                    return
        except Exception:
            logger.exception("the event stream's listener failed; ending the stream")
            stop.now(_CLIENT_GONE)

    def _server_stopping(self, stop: _Stop) -> None:
        # the grace timer first: the stream ends in time even if cancelling the run fails
        stop.timer = asyncio.get_running_loop().call_later(SHUTDOWN_GRACE_SECONDS, stop.now, _GRACE_OVER)
        if self.on_shutdown is not None:
            self.on_shutdown()


_CLIENT_GONE, _GRACE_OVER = "client gone", "shutdown grace over"


async def _close(frames: AsyncIterator[bytes]) -> None:
    aclose = getattr(frames, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        logger.exception("closing the event stream")


def event_stream_response(batches: AsyncIterator[Sequence[LogEvent]], *, shutdown: StreamShutdown,
                          heartbeat_seconds: float, on_shutdown: Callable[[], object]) -> EventStream:
    """The run stream of ``/api/ap/query`` and ``/api/ap/run/stream``: batches of events as
    ``RunService.watch_batches`` reads them, each batch sent with one ASGI ``send``."""
    return EventStream(batches, shutdown=shutdown, heartbeat=HEARTBEAT, heartbeat_seconds=heartbeat_seconds,
                       on_shutdown=on_shutdown, encode=batch_frames)
