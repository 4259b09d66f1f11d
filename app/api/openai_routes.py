"""The OpenAI-compatible endpoints (SPEC §17 "OpenAI") — thin edges over the run service.

| endpoint | what |
|---|---|
| ``GET /v1/models`` | every agent as a model (``id`` = agentKey) |
| ``GET /v1/models/{model}`` | one agent as a model; 404 ``model_not_found`` |
| ``POST /v1/chat/completions`` | run the agent ``model``: ``chat.completion`` or, with ``stream``, SSE chunks |

The translation (request → run, events → chunks, errors → OpenAI's error shape) is
``app.adapters.openai_chat``. Header ``X-Chat-Id`` continues a stored chat (ownership as on
``/api/**``); every answer carries ``X-Chat-Id`` and ``X-Run-Id``. A client disconnect
cancels the run, streaming or not. Errors raised here answer OpenAI's error shape; the 401
of the auth middleware (before any route) is still the JSON envelope — the SDK raises
``AuthenticationError`` on its status all the same. A run that fails after it started is
answered (non-streaming) with ``x-should-retry: false``: the SDK must not re-run an agent
whose tools may already have acted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import cast

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from app.adapters.openai_chat import (
    ChatCompletionRequest,
    ChunkStream,
    CompletionFold,
    Frame,
    error_of,
    model_entry,
    to_run_request,
)
from app.api.auth import user_of
from app.api.body import read_json
from app.api.lane import direct
from app.api.deferred import DeferredResponse
from app.api.sse import HEARTBEAT, EventStream, StreamShutdown, json_line
from app.api.state import gateway_of, streams_of
from app.catalog.definitions import AgentDefinition
from app.contract.events import Stamped
from app.errors import GatewayError, NotFoundError, RequestError, RunLimitExceeded, describe_validation_error
from app.gateway import Gateway
from app.runs import Run

router = APIRouter()


class OpenAIJSON(Response):
    media_type = "application/json"

    def render(self, content: object) -> bytes:
        return orjson.dumps(content)


def _refusal(exc: GatewayError, *, param: str | None = None, code: str | None = None) -> Response:
    status, body = error_of(exc, param=param, code=code)
    response = OpenAIJSON(body, status_code=status)
    if isinstance(exc, RunLimitExceeded):
        response.headers["Retry-After"] = str(exc.retry_after_seconds)
    return response


def _unknown_model(model: str) -> Response:
    return _refusal(NotFoundError(f"The model '{model}' does not exist: no agent has that key"),
                    param="model", code="model_not_found")


def _created(agents: list[AgentDefinition]) -> list[int]:
    """Each agent's ``created``: its definition file's modification time (0 when it has none)."""
    stamps = []
    for agent in agents:
        try:
            stamps.append(int(agent.source.stat().st_mtime) if agent.source is not None else 0)
        except OSError:  # removed since it was loaded
            stamps.append(0)
    return stamps


@router.get("/v1/models", summary="Every agent as an OpenAI model (id = agentKey)")
async def list_models(request: Request) -> Response:
    agents = list(gateway_of(request).catalog.snapshot.agents.values())
    stamps = await asyncio.to_thread(_created, agents)
    return OpenAIJSON({"object": "list", "data": [model_entry(a.key, t) for a, t in zip(agents, stamps, strict=True)]})


@router.get("/v1/models/{model}", summary="One agent as an OpenAI model")
async def retrieve_model(request: Request, model: str) -> Response:
    agent = gateway_of(request).catalog.snapshot.agents.get(model)
    if agent is None:
        return _unknown_model(model)
    (stamp,) = await asyncio.to_thread(_created, [agent])
    return OpenAIJSON(model_entry(agent.key, stamp))


@router.post(
    "/v1/chat/completions",
    summary="Run the agent `model`: one chat.completion, or chat.completion.chunk SSE with stream=true",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": ChatCompletionRequest.model_json_schema()}}}},
)
@direct
async def chat_completions(request: Request) -> Response:
    user = user_of(request)
    gateway = gateway_of(request)
    try:
        body = await read_json(request, ChatCompletionRequest, gateway.settings.server.max_body_bytes)
        if body.model not in gateway.catalog.snapshot.agents:
            return _unknown_model(body.model)
        try:
            turn = to_run_request(body, request.headers.get("x-chat-id", "").strip() or None)
        except ValidationError as exc:
            raise RequestError(f"invalid request: {describe_validation_error(exc, 'body')}") from exc
        # SPEC §19: a W3C traceparent makes the run part of the caller's trace, as on /api/ap/query
        run = await gateway.runs.start(turn.query, user, history=turn.history,
                                       traceparent=request.headers.get("traceparent"))
    except GatewayError as exc:
        return _refusal(exc)
    headers = {"X-Chat-Id": run.chat_id, "X-Run-Id": run.run_id}
    chunks = ChunkStream(run.run_id, run.started_at // 1000, body.model, body.include_usage)
    if body.stream:
        return _chunk_stream(request, gateway, run, chunks, headers)
    return CompletionResponse(gateway, run, chunks, headers, streams_of(request))


def _watching(gateway: Gateway, run: Run) -> contextlib.aclosing[AsyncGenerator[Sequence[Stamped], None]]:
    """The run's events from the start, in batches (``RunService.watch_batches``: the events
    already in the log when the reader looks, never waiting for more); leaving early (disconnect,
    close) cancels the run. Closed on exit, so the cancellation happens now even when the consumer
    is closed between events."""
    batches = gateway.runs.watch_batches(run, 0, cancel_on_leave=True)
    return contextlib.aclosing(cast(AsyncGenerator[Sequence[Stamped], None], batches))


# ----------------------------------------------------------------------------- streaming


def _encode(frame: Frame) -> bytes:
    """One ``data:`` message (no ``event:`` line, as OpenAI sends them), the bytes sse-starlette's
    ``ServerSentEvent(data=...)`` would write: orjson writes no raw CR/LF, so the data is one line
    (and ``json_line`` escapes U+2028, U+2029 and U+0085, which some clients end a line at)."""
    data = frame.encode() if isinstance(frame, str) else json_line(orjson.dumps(frame))
    return b"data: " + data + b"\r\n\r\n"


async def _frames(gateway: Gateway, run: Run, chunks: ChunkStream) -> AsyncIterator[bytes]:
    """The chunks as they come: the events of a batch go out together, in one write, each still
    its own ``data:`` message; a paced delta is its own write. The opening chunk goes out with
    the run's first batch: its reader is then running, so a client that is gone by the first
    write cancels the run too (a reader closed before its first step runs no clean-up)."""
    translate = chunks.translate
    opening: list[bytes] = [_encode(chunks.opening())]
    async with _watching(gateway, run) as batches:
        async for batch in batches:
            frames = opening
            opening = []
            for stamped in batch:
                frames += [_encode(frame) for frame in translate(stamped.event)]
                if chunks.refused:  # a frontend tool: its error ends the stream, leaving cancels the run
                    break
            if frames:
                yield frames[0] if len(frames) == 1 else b"".join(frames)
            if chunks.refused:
                return


def _chunk_stream(request: Request, gateway: Gateway, run: Run, chunks: ChunkStream,
                  headers: dict[str, str]) -> Response:
    """SSE ``data:`` frames without ``event:`` lines, as OpenAI sends them; heartbeat comments
    (which the SDK skips) while nothing flows; no buffering (``app.api.sse``). Server shutdown
    cancels the run, so the client still gets its end within the grace period."""
    return EventStream(_frames(gateway, run, chunks), shutdown=streams_of(request), heartbeat=HEARTBEAT,
                       heartbeat_seconds=gateway.settings.server.sse_heartbeat_seconds, headers=headers,
                       on_shutdown=run.cancel)


# ------------------------------------------------------------------------- non-streaming


class CompletionResponse(DeferredResponse):
    """One ``chat.completion`` once the run ended (``DeferredResponse``: a client that went away
    cancels the run, and the server stopping cancels it too, so its answer comes at once)."""

    def __init__(self, gateway: Gateway, run: Run, chunks: ChunkStream, headers: dict[str, str],
                 shutdown: StreamShutdown) -> None:
        super().__init__(self._response, shutdown=shutdown, on_shutdown=run.cancel)
        self._gateway, self._run, self._chunks, self._extra_headers = gateway, run, chunks, headers

    async def _fold(self) -> CompletionFold:
        fold = CompletionFold()
        async with _watching(self._gateway, self._run) as batches:
            async for batch in batches:
                for stamped in batch:
                    fold.add(stamped.event, self._chunks.model)
                    if fold.refused is not None:  # leaving cancels the run
                        return fold
        return fold

    async def _response(self) -> Response:
        fold = await self._fold()
        failure = fold.failure()
        if failure is not None:
            status, body = failure
            return OpenAIJSON(body, status_code=status, headers={**self._extra_headers, "x-should-retry": "false"})
        chunks = self._chunks
        return OpenAIJSON(fold.completion(run_id=chunks.run_id, created=chunks.created, model=chunks.model),
                          headers=self._extra_headers)
