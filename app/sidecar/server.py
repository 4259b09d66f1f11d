"""The sidecar loop (SPEC §10): JSON-RPC 2.0 over stdin/stdout around one ``Gateway``.

* stdin is read asynchronously (``loop.connect_read_pipe`` for a pipe or a socket; a
  reader thread for a terminal, ``/dev/null`` or a regular file: ``app.sidecar.stdio``),
  one request per line, up to ``MAX_LINE_BYTES``; a longer line is skipped with a -32600
  error and reading goes on.
* Each request runs in its own task, so several queries stream at once; replies
  carry the request's ``id``; ``agent.event`` notifications are written the moment
  each event happens.
* stdout carries protocol lines only: ``take_stdout`` moves everything else to
  stderr, and ``LineWriter`` is the single writer (from the event loop when stdout is a pipe
  or a socket of its own; the events already in a run's log go out in one write, one line each).
  The blocking mode the loop changes on stdin and stdout is put back when the sidecar stops.
* EOF (or SIGTERM/SIGINT/SIGHUP) shuts down cleanly: running runs are cancelled (their
  queries answer with ``status: "cancel"``; a query still starting its run is refused
  with -32000), the remaining requests finish within the shutdown grace, and any request
  still unanswered then is cancelled and answered with a -32000 error; the gateway closes
  (memory flushed), exit status 0. Every request with an ``id`` gets its reply.
* Every scheduled run's outcome is a ``scheduler.event`` notification ``{jobId, runId, chatId,
  status: "completed" | "failed", error?}`` (SPEC §10 "Desktop additions"); the listener is
  registered before the gateway starts, so jobs due at start-up are reported too.
* ``extra_services`` run beside the stdin loop around the *same* gateway: ``agw sidecar
  --http-port`` passes the HTTP API that way (composed in ``app.composition``, because the
  sidecar never imports ``app.api``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from typing import IO, Any

from pydantic import ValidationError

from app.config import Settings
from app.errors import GatewayError, ServiceUnavailable
from app.gateway import Gateway
from app.scheduler.service import OutcomeListener, ScheduledRunEvent
from app.sidecar import SHUTDOWN_GRACE_S
from app.sidecar.methods import SidecarMethods, map_error
from app.sidecar.protocol import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    Call,
    LineWriter,
    Reply,
    RpcError,
    error_message,
    notification,
    parse_line,
    result_message,
)
from app.sidecar.stdio import Stdin

logger = logging.getLogger(__name__)

#: the longest accepted request line (a query body is at most ~200 KB; be generous)
MAX_LINE_BYTES = 16 * 1024 * 1024
#: after the grace, how long the cancelled requests' error replies may wait for a full stdout pipe
_ABANDON_WRITE_S = 5.0


#: A service beside the stdin loop, around the same gateway: called with the gateway and the
#: sidecar's ``stop`` event, it returns an async context. Entering starts the service, or raises
#: (e.g. ``ConfigError``) so the sidecar does not start either; the service sets ``stop`` when it
#: ends on its own; exiting (after the runs are cancelled, before the gateway closes) sets ``stop``
#: and waits for the service to finish.
ExtraService = Callable[[Gateway, asyncio.Event], contextlib.AbstractAsyncContextManager[None]]


class _Oversize:
    """Marker: the line was longer than the limit and has been skipped."""


OVERSIZE = _Oversize()


async def next_line(reader: asyncio.StreamReader) -> bytes | _Oversize | None:
    """The next line (without size limit problems), ``OVERSIZE``, or ``None`` at EOF."""
    try:
        return await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as exc:
        return exc.partial or None  # EOF; a last line without a newline still counts
    except asyncio.LimitOverrunError as exc:
        consumed = exc.consumed
    while True:  # drop the rest of the oversize line
        await reader.readexactly(consumed)
        try:
            await reader.readuntil(b"\n")
            return OVERSIZE
        except asyncio.IncompleteReadError:
            return OVERSIZE
        except asyncio.LimitOverrunError as exc:
            consumed = exc.consumed


class SidecarServer:
    """Reads requests, runs each in a task, writes replies (SPEC §10)."""

    def __init__(self, gateway: Gateway, writer: LineWriter, *, shutdown_grace_s: float = SHUTDOWN_GRACE_S) -> None:
        self._gateway = gateway
        self._writer = writer
        self._methods = SidecarMethods(gateway, writer)
        self._tasks: set[asyncio.Task[None]] = set()
        self._grace_s = shutdown_grace_s
        #: set when the shutdown grace ended: a cancelled request then answers with an error
        self._abandoned = False

    async def serve(self, reader: asyncio.StreamReader, stop: asyncio.Event) -> None:
        """Serve until EOF or ``stop``; then cancel runs and let requests answer."""
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                reading = asyncio.create_task(next_line(reader))
                done, _ = await asyncio.wait({reading, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if reading not in done:
                    reading.cancel()
                    break
                line = reading.result()
                if line is None:
                    break
                if isinstance(line, _Oversize):
                    await self._writer.send(error_message(None, RpcError(
                        INVALID_REQUEST, f"invalid request: a line longer than {MAX_LINE_BYTES} bytes was skipped")))
                    continue
                self._dispatch(line)
        finally:
            stopping.cancel()
        logger.info("sidecar: input closed; cancelling %d running run(s)", self._gateway.runs.active)
        await self._shutdown()

    async def _shutdown(self) -> None:
        await self._gateway.runs.aclose()
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=self._grace_s)
        if not pending:
            return
        logger.warning("sidecar: %d request(s) still unanswered after the shutdown grace; cancelling them",
                       len(pending))
        self._abandoned = True
        for task in pending:
            task.cancel()  # each answers its calls with a -32000 error (``_answer``)
        _, stuck = await asyncio.wait(pending, timeout=_ABANDON_WRITE_S)
        for task in stuck:  # their error replies wait for a stdout nobody reads
            task.cancel()
        if stuck:
            await asyncio.wait(stuck)

    def _dispatch(self, line: bytes) -> None:
        parsed = parse_line(line)
        if parsed is None:
            return
        task = asyncio.create_task(self._answer(parsed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, parsed: Call | Reply | list[Call | Reply]) -> None:
        items = parsed if isinstance(parsed, list) else [parsed]
        try:
            if isinstance(parsed, list):
                replies = await asyncio.gather(*(self._reply_to(item) for item in parsed))
            else:
                replies = [await self._reply_to(parsed)]
        except asyncio.CancelledError:
            if not self._abandoned:
                raise
            replies = [_abandoned_reply(item) for item in items]  # shutdown: every call still gets its answer
        answers = [reply for reply in replies if reply is not None]
        if answers:
            await self._writer.send(answers if isinstance(parsed, list) else answers[0])

    async def _reply_to(self, item: Call | Reply) -> dict[str, Any] | None:
        if isinstance(item, Reply):
            return item.message
        try:
            result = await self._call(item)
        except RpcError as exc:
            reply = error_message(item.id, exc)
        else:
            reply = result_message(item.id, result)
        return None if item.is_notification else reply

    async def _call(self, call: Call) -> Any:
        handler = self._methods.handler(call.method, None if call.is_notification else call.id)
        if handler is None:
            raise RpcError(METHOD_NOT_FOUND, f"method not found: {call.method!r}",
                           {"methods": sorted(self._methods.names)})
        if isinstance(call.params, list):
            if call.params:
                raise RpcError(INVALID_PARAMS, "invalid params: pass params as an object (by name)")
            params: dict[str, Any] = {}
        else:
            params = call.params or {}
        try:
            return await handler(params)
        except GatewayError as exc:
            raise map_error(exc) from exc
        except ValidationError as exc:
            raise RpcError(INVALID_PARAMS, f"invalid params: {exc.error_count()} problem(s): {exc}") from exc
        except RpcError:
            raise
        except Exception as exc:  # a bug must answer this request, never kill the sidecar
            logger.exception("sidecar: %s failed", call.method)
            raise RpcError(INTERNAL_ERROR, f"internal error in {call.method}") from exc


def _abandoned_reply(item: Call | Reply) -> dict[str, Any] | None:
    if isinstance(item, Reply):
        return item.message
    if item.is_notification:
        return None
    return error_message(item.id, map_error(ServiceUnavailable(
        "the gateway is shutting down: the request did not finish within the shutdown grace")))


def scheduler_events(writer: LineWriter) -> OutcomeListener:
    """The listener that sends each scheduled run's outcome as a ``scheduler.event`` notification."""

    async def send(event: ScheduledRunEvent) -> None:
        await writer.send(notification("scheduler.event", event.to_json()))

    return send


async def run_sidecar(settings: Settings, protocol_out: IO[bytes], *, extra_services: Sequence[ExtraService] = (),
                      stdin: IO[bytes] | None = None, shutdown_grace_s: float = SHUTDOWN_GRACE_S) -> int:
    """Run the sidecar (and ``extra_services``) until EOF on stdin; returns the exit status (0)."""
    source = stdin if stdin is not None else (sys.stdin.buffer if sys.stdin is not None else None)
    if source is None:
        raise OSError("stdin is closed: the sidecar reads its JSON-RPC requests from stdin")
    try:
        stdin_fd = source.fileno()
    except (OSError, ValueError, AttributeError):
        stdin_fd = -1
    writer = LineWriter(protocol_out)
    await writer.open(stdin_fd=stdin_fd)
    requests: Stdin | None = None
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # SIGHUP: the launcher's terminal or session went away; a clean stop, as SIGTERM (POSIX only)
    hangup = getattr(signal, "SIGHUP", None)
    for sig in (signal.SIGTERM, signal.SIGINT, *([hangup] if hangup is not None else [])):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
    try:
        gateway = Gateway(settings)
        # before the gateway starts: a job due at start-up fires as soon as the scheduler runs
        gateway.scheduler.on_outcome(scheduler_events(writer))
        async with gateway, contextlib.AsyncExitStack() as services:
            for service in extra_services:
                await services.enter_async_context(service(gateway, stop))
            others = (writer.fileno,) if writer.fileno is not None else ()
            requests = await Stdin.open(source, MAX_LINE_BYTES, others=(*others, 2))
            logger.info("sidecar ready (gateway %s)", gateway.version)
            await SidecarServer(gateway, writer, shutdown_grace_s=shutdown_grace_s).serve(requests.reader, stop)
    finally:
        if requests is not None:
            requests.close()
        await writer.aclose()
    logger.info("sidecar: stopped")
    return 0
