"""``POST /api/ap/query`` (SSE or one JSON envelope) and ``POST /api/ap/submit`` (SPEC §4, §6).

A query beyond ``agent.limits.*`` is answered 429 with the envelope and ``Retry-After``
before any stream starts (SPEC §19). ``submit`` answers an existing run and is never capped.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import current_user
from app.api.body import read_json
from app.api.envelope import fail, ok
from app.api.sse import event_stream_response
from app.engine.runner import QueryRequest
from app.errors import RunLimitExceeded
from app.gateway import Gateway

router = APIRouter()


class SubmitRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    runId: str = Field(min_length=1, max_length=128)
    toolId: str = Field(min_length=1, max_length=128)
    params: Any = None


def gateway_of(request: Request) -> Gateway:
    gateway: Gateway = request.app.state.gateway
    return gateway


@router.post(
    "/api/ap/query",
    summary="Run an agent; Server-Sent Events (or one JSON envelope with stream=false)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": QueryRequest.model_json_schema(by_alias=True)}}}},
)
async def query(request: Request, user: str = Depends(current_user)) -> Response:
    gateway = gateway_of(request)
    body = await read_json(request, QueryRequest, gateway.settings.server.max_body_bytes)
    try:
        run = await gateway.runs.start(body, user)
    except RunLimitExceeded as exc:
        refused = fail(exc.status, exc.code, exc.message)
        refused.headers["Retry-After"] = str(exc.retry_after_seconds)
        return refused
    if body.stream:
        return event_stream_response(run.events(), gateway.settings.server.sse_heartbeat_seconds, run.cancel)
    events = [event async for event in run.events()]
    return ok({
        "runId": run.run_id, "chatId": run.chat_id, "requestId": run.request_id,
        "finishReason": run.finish_reason, "answer": run.final_text, "events": events,
    })


@router.post(
    "/api/ap/submit",
    summary="Answer a waiting frontend tool",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": SubmitRequest.model_json_schema()}}}},
)
async def submit(request: Request, user: str = Depends(current_user)) -> Response:
    gateway = gateway_of(request)
    body = await read_json(request, SubmitRequest, gateway.settings.server.max_body_bytes)
    outcome = gateway.submits.submit(body.runId, body.toolId, body.params, user)
    return ok(outcome.as_dict())
