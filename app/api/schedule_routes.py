"""``GET/POST/DELETE /api/ap/schedules`` (SPEC §11), in the envelope of SPEC §4.

| route | data |
|---|---|
| ``GET /api/ap/schedules`` | the caller's jobs: ``[{jobId, agentKey, message, chatId, trigger, createdAt, nextRunAt, lastRunAt, lastStatus, lastError, lastChatId, lastRunId, runs}]`` |
| ``POST /api/ap/schedules`` | body ``{jobId?, agentKey, message, chatId?, trigger: {type: "date", runAt} \\| {type: "cron", expr}}`` → the job |
| ``DELETE /api/ap/schedules?jobId=`` | ``{jobId, removed: true}``; 404 for an unknown job |
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.api.auth import current_user
from app.api.body import read_json
from app.api.envelope import ok
from app.api.state import gateway_of
from app.errors import RequestError
from app.scheduler.jobs import ScheduleRequest

router = APIRouter()


@router.get("/api/ap/schedules", summary="List the caller's scheduled runs")
async def list_schedules(request: Request, user: str = Depends(current_user)) -> Response:
    return ok(gateway_of(request).scheduler.list(user))


@router.post(
    "/api/ap/schedules",
    summary="Schedule an agent run (date or cron trigger)",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": ScheduleRequest.model_json_schema()}}}},
)
async def create_schedule(request: Request, user: str = Depends(current_user)) -> Response:
    gateway = gateway_of(request)
    body = await read_json(request, ScheduleRequest, gateway.settings.server.max_body_bytes)
    return ok(await gateway.scheduler.add(body, user))


@router.delete("/api/ap/schedules", summary="Delete a scheduled run")
async def delete_schedule(
    request: Request, job_id: str | None = Query(None, alias="jobId", max_length=256),
    user: str = Depends(current_user),
) -> Response:
    if not job_id:
        raise RequestError("missing query parameter 'jobId'")
    return ok(await gateway_of(request).scheduler.remove(job_id, user))


__all__ = ["router"]
