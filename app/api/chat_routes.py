"""``GET /api/ap/chats`` and ``GET /api/ap/chat`` (SPEC §4, §8)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.api.auth import current_user
from app.api.envelope import ok
from app.errors import ForbiddenError, NotFoundError, RequestError
from app.gateway import Gateway
from app.memory.history import build_history
from app.paths import check_key

router = APIRouter()


@router.get("/api/ap/chats", summary="List the caller's chats, newest first")
async def list_chats(request: Request, user: str = Depends(current_user)) -> Response:
    gateway: Gateway = request.app.state.gateway
    metas = await asyncio.to_thread(gateway.chats.list_chats, user)
    return ok([
        {"chatId": m.chat_id, "chatName": m.chat_name, "firstAgentKey": m.first_agent_key,
         "createdAt": m.created_at, "updatedAt": m.updated_at}
        for m in metas
    ])


@router.get("/api/ap/chat", summary="One chat's history as snapshot events")
async def get_chat(
    request: Request,
    chatId: str = Query(..., max_length=256),
    includeRawMessages: bool = False,
    user: str = Depends(current_user),
) -> Response:
    if "includeEvents" in request.query_params:
        raise RequestError("the includeEvents parameter is retired: events are always included")
    gateway: Gateway = request.app.state.gateway
    chat_id = check_key(chatId, "chatId")
    meta = await asyncio.to_thread(gateway.chats.chat_meta, chat_id)
    if meta is None:
        raise NotFoundError(f"unknown chat: {chat_id}")
    if meta.owner not in (None, user):
        raise ForbiddenError(f"chat {chat_id} belongs to another user")
    lines = await asyncio.to_thread(gateway.chats.read_lines, chat_id)
    return ok(build_history(chat_id, lines, includeRawMessages, running=gateway.runs.active_run_ids()))


__all__ = ["router"]
