"""``POST /api/ap/query`` (SSE or one JSON envelope), ``POST /api/ap/submit`` and
``POST /api/ap/interrupt`` (SPEC §4, §6, §15) — thin edges over the run service.

A query beyond ``agent.limits.*`` is answered 429 with the envelope and ``Retry-After``
before any stream starts. ``submit`` answers an existing run and is never capped. The
query's own stream cancels the run when the client goes away unless the query said
``onDisconnect: "continue"`` (default ``agent.runs.on-disconnect``); a client can then
re-attach with ``GET /api/ap/run/stream`` (``run_watch_routes``).
"""

from __future__ import annotations


from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import user_of
from app.api.body import read_json
from app.api.deferred import DeferredResponse
from app.api.envelope import EnvelopeResponse, fail, ok
from app.api.lane import direct
from app.api.sse import event_stream_response
from app.api.state import gateway_of, streams_of
from app.contract.bodies import QueryRequest, SubmitRequest
from app.contract.runs import RunOutcome
from app.errors import RunLimitExceeded, UpstreamError
from app.gateway import Gateway
from app.paths import check_key
from app.runs.service import Run

router = APIRouter()


@router.post(
    "/api/ap/query",
    summary="Run an agent; Server-Sent Events (or one JSON envelope with stream=false)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": QueryRequest.model_json_schema(by_alias=True)}}}},
)
@direct
async def query(request: Request) -> Response:
    user = user_of(request)
    gateway = gateway_of(request)
    body = await read_json(request, QueryRequest, gateway.settings.server.max_body_bytes)
    try:
        # SPEC §19: a W3C traceparent makes the run part of the caller's trace
        run = await gateway.runs.start(body, user, traceparent=request.headers.get("traceparent"))
    except RunLimitExceeded as exc:
        refused = fail(exc.status, exc.code, exc.message)
        refused.headers["Retry-After"] = str(exc.retry_after_seconds)
        return refused
    if body.stream:
        return event_stream_response(gateway.runs.query_batches(run), shutdown=streams_of(request),
                                     heartbeat_seconds=gateway.settings.server.sse_heartbeat_seconds,
                                     on_shutdown=run.cancel)
    return DeferredResponse(lambda: _answer(gateway, run), shutdown=streams_of(request), on_shutdown=run.cancel)


async def _answer(gateway: Gateway, run: Run) -> Response:
    """The ``stream: false`` answer: every event of the run and its outcome, once it ended."""
    events = [stamped.wire() async for stamped in gateway.runs.query_stream(run)]
    outcome = await run.finished()
    data = {
        "runId": run.run_id, "chatId": run.chat_id, "requestId": run.request_id,
        "finishReason": outcome.finish_reason, "status": outcome.status, "answer": run.final_text, "events": events,
    }
    if outcome.status == "completed":
        return ok(data)
    # SPEC §22: a failed run is a failure — non-2xx, code > 0, the reason in msg, the events still in data
    status, code, message = failure_of(outcome)
    return EnvelopeResponse({"code": code, "msg": message, "data": data}, status_code=status)


def failure_of(outcome: RunOutcome) -> tuple[int, int, str]:
    """HTTP status, envelope code and message of a run that did not complete."""
    if outcome.status == "cancelled":
        return 409, 4090, f"the run was cancelled: {outcome.reason or 'interrupted'}"
    error = outcome.error or {}
    kind = str(error.get("code") or "internal_error")
    message = f"the run failed ({kind}): {error.get('message') or 'no details'}"
    if kind == "upstream_timeout":
        return 504, 5024, message
    if kind.startswith("upstream_"):
        codes = {kind_.error_code: kind_.code for kind_ in UpstreamError.__subclasses__()}
        return 502, codes.get(kind, UpstreamError.code), message
    if kind.startswith("budget_"):
        return (504 if kind.endswith("timeout") else 422), 5030, message
    return 500, 5050, message


@router.post(
    "/api/ap/submit",
    summary="Answer a waiting frontend tool",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": SubmitRequest.model_json_schema()}}}},
)
@direct
async def submit(request: Request) -> Response:
    user = user_of(request)
    gateway = gateway_of(request)
    body = await read_json(request, SubmitRequest, gateway.settings.server.max_body_bytes)
    outcome = await gateway.runs.deliver_submit(check_key(body.runId, "runId"), body.toolId, body.params, user)
    return ok(outcome.as_dict())


class InterruptRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    runId: str = Field(min_length=1, max_length=128)


@router.post(
    "/api/ap/interrupt",
    summary="Cancel a run; every attached client receives run.cancel",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": InterruptRequest.model_json_schema()}}}},
)
@direct
async def interrupt(request: Request) -> Response:
    user = user_of(request)
    gateway = gateway_of(request)
    body = await read_json(request, InterruptRequest, gateway.settings.server.max_body_bytes)
    return ok({"cancelled": await gateway.runs.interrupt(check_key(body.runId, "runId"), user)})
