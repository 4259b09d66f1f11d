"""``GET /api/ap/chats`` and ``GET /api/ap/chat`` (SPEC §4, §8)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response

from app.api.auth import current_user
from app.api.envelope import ok
from app.errors import RequestError
from app.gateway import Gateway
from app.views import chat_history, chat_list

router = APIRouter()


@router.get("/api/ap/chats", summary="List the caller's chats, newest first")
async def list_chats(request: Request, user: str = Depends(current_user)) -> Response:
    gateway: Gateway = request.app.state.gateway
    return ok(await chat_list(gateway, user))


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
    return ok(await chat_history(gateway, chatId, user, includeRawMessages))


__all__ = ["router"]
