"""``POST /ag-ui/{agentKey}`` (SPEC §17 "AG-UI") — a thin edge over the run service.

The body is an AG-UI ``RunAgentInput``; the answer is AG-UI events as SSE (``data:`` frames
of ``ag_ui.encoder.EventEncoder``), translated by ``app.adapters.agui``. ``threadId`` is the
chat id: a stored chat of the caller is continued, an unknown one is started under that id.
Every answer carries ``X-Run-Id`` (the gateway's run) and ``X-Chat-Id``.

* Last message ``user`` → a new run of ``agentKey``. A run of the thread still waiting for
  the client's tool calls is cancelled first: the client moved on without answering them.
* Last messages ``tool`` → the answers to the client tool calls the thread's run waits for
  (``runs.deliver_submit``); the continuation streams as a new AG-UI run. A call no run of the
  thread waits for is answered with ``RUN_STARTED`` + ``RUN_ERROR``. In a cluster (SPEC §16)
  the run may live on another instance: it is found, answered and watched through Redis like
  the native ``/api/ap/submit`` and ``/api/ap/chat/stream``; a client that leaves such a
  continuation early cancels the run there too (``RunService.abandon``), as it would here.

A frontend tool call ends the AG-UI run (``RUN_FINISHED`` with ``pendingToolCallIds``) while
the gateway run keeps waiting; a client that goes away in the middle of a stream cancels the
run. Refusals before the stream (bad input 400, unknown agent 404, another user's chat 403,
limits 429 with ``Retry-After``) use the JSON envelope.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, cast

from ag_ui.core import BaseEvent, RunAgentInput
from ag_ui.encoder import EventEncoder
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sse_starlette import ServerSentEvent

from app.adapters.agui import AguiTranslator, ToolAnswers, UserTurn, query_of, read_turn, resume_after
from app.api.auth import user_of
from app.api.body import read_json
from app.api.lane import direct
from app.api.envelope import fail
from app.api.sse import SSE_HEADERS, EventStream, StreamShutdown, json_line
from app.api.state import gateway_of, streams_of
from app.contract.events import Stamped
from app.errors import NotFoundError, RequestError, RunLimitExceeded
from app.gateway import Gateway
from app.paths import check_key
from app.runs import Run, RunService
from app.runs.log import LogEvent
from app.runs.remote import RemoteRun

router = APIRouter()


@router.post(
    "/ag-ui/{agentKey}",
    summary="Run an agent with the AG-UI protocol: RunAgentInput in, AG-UI events out (SSE)",
    openapi_extra={
        # on the direct lane the function takes only the request, so the path parameter is declared here
        "parameters": [{"name": "agentKey", "in": "path", "required": True, "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": RunAgentInput.model_json_schema(by_alias=True)}}}},
)
@direct
async def run_agent(request: Request) -> Response:
    user = user_of(request)
    gateway = gateway_of(request)
    agent_key = check_key(request.path_params["agentKey"], "agentKey")
    if agent_key not in gateway.catalog.snapshot.agents:
        raise NotFoundError(f"unknown agent: {agent_key}")
    body = await read_json(request, RunAgentInput, gateway.settings.server.max_body_bytes)
    thread_id = check_key(body.thread_id, "threadId")
    turn = read_turn(body)
    if isinstance(turn, ToolAnswers):
        return await _answer(gateway, streams_of(request), agent_key, thread_id, body.run_id, turn, user, body.state)
    try:
        run = await _start(gateway, agent_key, thread_id, turn, user, request.headers.get("traceparent"))
    except RunLimitExceeded as exc:
        refused = fail(exc.status, exc.code, exc.message)
        refused.headers["Retry-After"] = str(exc.retry_after_seconds)
        return refused
    return _stream(streams_of(request), gateway, run, AguiTranslator(thread_id, body.state), body.run_id, after=0)


async def _start(gateway: Gateway, agent_key: str, thread_id: str, turn: UserTurn, user: str,
                 traceparent: str | None) -> Run:
    """A new run on the thread; a W3C ``traceparent`` makes it part of the caller's trace (SPEC §19)."""
    if await asyncio.to_thread(gateway.chats.chat_meta, thread_id) is None:
        return await gateway.runs.start(query_of(agent_key, None, turn.text), user, new_chat_id=thread_id,
                                        history=turn.history or None, traceparent=traceparent)
    await _abandon_client_wait(gateway.runs, thread_id, user)
    return await gateway.runs.start(query_of(agent_key, thread_id, turn.text), user, traceparent=traceparent)


async def _abandon_client_wait(runs: RunService, thread_id: str, user: str) -> None:
    """A new user message on a thread whose run waits for client tool results cancels that run."""
    try:
        live = await runs.locate_active_in_chat(thread_id, user)
    except NotFoundError:
        return
    if (await runs.describe_any(live))["status"] == "waiting":
        await runs.interrupt(live.run_id, user)


async def _answer(gateway: Gateway, streams: StreamShutdown, agent_key: str, thread_id: str, client_run_id: str,
                  turn: ToolAnswers, user: str, state: Any) -> Response:
    runs = gateway.runs
    ids = ", ".join(turn.tool_call_ids)
    try:
        run = await runs.locate_active_in_chat(thread_id, user)
    except NotFoundError:
        return _refused(thread_id, client_run_id, f"no run of thread {thread_id} is waiting for tool call(s) {ids}: "
                        "the run ended, its wait timed out, or the thread is unknown")
    if run.agent_key != agent_key:
        raise RequestError(f"thread {thread_id} is running agent {run.agent_key}, not {agent_key}")
    found = resume_after(thread_id, await _logged(runs, run), turn.tool_call_ids, state)
    if found is None:
        return _refused(thread_id, client_run_id, f"run {run.run_id} of thread {thread_id} is not waiting for "
                        f"tool call(s) {ids}")
    translator, after = found
    waiting = set(translator.pending_tool_calls)
    outcomes = [(answer.tool_call_id, await runs.deliver_submit(run.run_id, answer.tool_call_id, answer.params, user))
                for answer in turn.answers if answer.tool_call_id in waiting]
    accepted = [tool_call_id for tool_call_id, outcome in outcomes if outcome.accepted]
    if not accepted:
        return _refused(thread_id, client_run_id, "; ".join(outcome.detail for _, outcome in outcomes))
    translator.answered(accepted)
    return _stream(streams, gateway, run, translator, client_run_id, after=after)


def _watching(runs: RunService, run: Run | RemoteRun,
              after: int) -> contextlib.aclosing[AsyncGenerator[Sequence[Stamped], None]]:
    """The run's events after ``after``, in batches (``RunService.watch_batches``: the events
    already in the log when the reader looks, never waiting for more); closed on exit. Leaving
    never cancels the run by itself. Another instance's run (SPEC §16) comes as wire dicts from
    Redis: typed again for the translator."""
    batches = runs.watch_batches(run, after)
    if isinstance(run, RemoteRun):
        return contextlib.aclosing(_typed(batches))
    return contextlib.aclosing(cast(AsyncGenerator[Sequence[Stamped], None], batches))


async def _typed(batches: AsyncIterator[Sequence[LogEvent]]) -> AsyncGenerator[Sequence[Stamped], None]:
    async with contextlib.aclosing(cast(AsyncGenerator[Sequence[LogEvent], None], batches)) as source:
        async for batch in source:
            yield [event if isinstance(event, Stamped) else Stamped.from_wire(event.wire()) for event in batch]


async def _logged(runs: RunService, run: Run | RemoteRun) -> list[Stamped]:
    """The events the run's log holds now (without waiting for more)."""
    # another instance's run: its record's lastSeq is written at the end, so ask its owner
    last = int((await runs.describe_any(run))["lastSeq"]) if isinstance(run, RemoteRun) else run.log.last_seq
    logged: list[Stamped] = []
    if last == 0:
        return logged
    async with _watching(runs, run, 0) as batches:
        async for batch in batches:
            for stamped in batch:
                logged.append(stamped)
                if stamped.seq >= last:
                    return logged
    return logged


def _refused(thread_id: str, client_run_id: str, message: str) -> Response:
    """An AG-UI run that fails at once (the client sees ``RUN_ERROR``, not an HTTP error)."""
    translator = AguiTranslator(thread_id)
    events = [*translator.begin(client_run_id), *translator.error(message, "tool_call_not_waiting")]
    encoder = EventEncoder()
    return Response("".join(encoder.encode(event) for event in events), media_type=encoder.get_content_type(),
                    headers=SSE_HEADERS)


# ---------------------------------------------------------------------------------- streaming


#: the heartbeat comment, with the ``\n`` line ends AG-UI clients split on
_HEARTBEAT = ServerSentEvent(comment="heartbeat", sep="\n").encode()


def _frame(encoder: EventEncoder, event: BaseEvent) -> bytes:
    return json_line(encoder.encode(event).encode())  # U+2028 and kin escaped, as in our other streams


async def _frames(gateway: Gateway, run: Run | RemoteRun, translator: AguiTranslator, client_run_id: str,
                  after: int) -> AsyncIterator[bytes]:
    encoder = EventEncoder()
    settled = False  # the AG-UI run ended properly: the gateway run ended, or it waits for the client
    try:
        yield b"".join(_frame(encoder, event) for event in translator.begin(client_run_id))
        # the events already in the log go out together, in one write, each its own message
        async with _watching(gateway.runs, run, after) as batches:
            async for batch in batches:
                frames: list[bytes] = []
                for stamped in batch:
                    frames.extend(_frame(encoder, event) for event in translator.translate(stamped))
                    if translator.paused:  # the run waits for the client: nothing after this goes out
                        frames.extend(_frame(encoder, event) for event in translator.pause())
                        break
                if frames:
                    yield frames[0] if len(frames) == 1 else b"".join(frames)
                if translator.paused:
                    settled = True
                    return
        settled = True
    finally:
        if not settled:  # the client went away in the middle of the stream (the run may be another instance's)
            gateway.runs.abandon(run)


def _stream(streams: StreamShutdown, gateway: Gateway, run: Run | RemoteRun, translator: AguiTranslator, client_run_id: str,
            *, after: int) -> Response:
    """One AG-UI run as SSE: ``data:`` frames only, ``\\n`` line ends (what AG-UI clients split on),
    heartbeat comments while nothing flows, no buffering (``app.api.sse``). Server shutdown
    cancels the run, so the client still gets its end within the grace period."""
    return EventStream(_frames(gateway, run, translator, client_run_id, after), shutdown=streams,
                       heartbeat=_HEARTBEAT, heartbeat_seconds=gateway.settings.server.sse_heartbeat_seconds,
                       headers={"X-Run-Id": run.run_id, "X-Chat-Id": run.chat_id}, on_shutdown=run.cancel)
