"""Watching and inspecting runs over HTTP (SPEC §15) — thin edges over the run service.

| endpoint | what |
|---|---|
| ``GET /api/ap/run/stream?runId=&after=`` | SSE: the run's events with ``seq > after`` (or ``Last-Event-ID``), then live |
| ``GET /api/ap/chat/stream?chatId=&after=`` | the same for the chat's active run (404 when it has none) |
| ``GET /api/ap/run?runId=`` | ``{runId, chatId, agentKey, status, lastSeq, startedAt, endedAt?, pendingTools[]}`` |
| ``GET /api/ap/runs?chatId=&status=`` | the caller's live and retained runs |

A watcher that goes away never cancels the run (only the query's own stream may, in
``cancel`` mode). Unknown or expired runs are 404, another user's 403, a malformed
``after`` / ``Last-Event-ID`` 400 — all before the stream starts.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.api.auth import current_user
from app.api.envelope import ok
from app.api.sse import event_stream_response
from app.api.state import gateway_of, streams_of
from app.contract.runs import RUN_STATUSES
from app.errors import RequestError
from app.gateway import Gateway
from app.paths import ascii_int, check_key
from app.runs import Run
from app.runs.remote import RemoteRun

router = APIRouter()

_MAX_SEQ = 2**53  # beyond any real run; a larger number is a client error, not an overflow


def resume_point(after: str | None, last_event_id: str | None) -> int:
    """``after`` (query) wins over ``Last-Event-ID`` (header); neither = 0 (from the start)."""
    raw, name = (after, "after") if after is not None else (last_event_id, "Last-Event-ID")
    if raw is None or raw.strip() == "":
        return 0
    seq = ascii_int(raw.strip(), 16)
    if seq is None or seq > _MAX_SEQ:
        raise RequestError(f"{name} must be a non-negative event seq number, got {raw[:32]!r}")
    return seq


def _stream(request: Request, gateway: Gateway, run: Run | RemoteRun, after: int) -> Response:
    return event_stream_response(gateway.runs.watch_batches(run, after), shutdown=streams_of(request),
                                 heartbeat_seconds=gateway.settings.server.sse_heartbeat_seconds,
                                 on_shutdown=run.cancel)


@router.get("/api/ap/run/stream", summary="Attach to a run: replay after a seq, then live (SSE)")
async def run_stream(
    request: Request,
    run_id: str = Query(alias="runId", min_length=1, max_length=128),
    after: str | None = Query(None, max_length=32),
    user: str = Depends(current_user),
) -> Response:
    gateway = gateway_of(request)
    start = resume_point(after, request.headers.get("last-event-id"))
    run = await gateway.runs.locate(check_key(run_id, "runId"), user)
    return _stream(request, gateway, run, start)


@router.get("/api/ap/chat/stream", summary="Attach to the chat's active run (SSE)")
async def chat_stream(
    request: Request,
    chat_id: str = Query(alias="chatId", min_length=1, max_length=128),
    after: str | None = Query(None, max_length=32),
    user: str = Depends(current_user),
) -> Response:
    gateway = gateway_of(request)
    start = resume_point(after, request.headers.get("last-event-id"))
    run = await gateway.runs.locate_active_in_chat(check_key(chat_id, "chatId"), user)
    return _stream(request, gateway, run, start)


@router.get("/api/ap/run", summary="A run's status, last seq and pending frontend tools")
async def run_status(
    request: Request,
    run_id: str = Query(alias="runId", min_length=1, max_length=128),
    user: str = Depends(current_user),
) -> Response:
    runs = gateway_of(request).runs
    return ok(await runs.describe_any(await runs.locate(check_key(run_id, "runId"), user)))


@router.get("/api/ap/runs", summary="The caller's live and retained runs")
async def run_list(
    request: Request,
    chat_id: str | None = Query(None, alias="chatId", max_length=128),
    status: str | None = Query(None, max_length=16),
    user: str = Depends(current_user),
) -> Response:
    if status is not None and status not in RUN_STATUSES:
        raise RequestError(f"status must be one of {', '.join(RUN_STATUSES)}")
    runs = gateway_of(request).runs
    chat = check_key(chat_id, "chatId") if chat_id else None
    return ok(await runs.list_all(user, chat_id=chat, status=status))
