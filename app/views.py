"""Payloads shared by the HTTP routes (SPEC §4) and the sidecar (SPEC §10).

Both front ends answer the same data for the same question; the shaping lives here
(and in ``app.api.catalog_routes.agent_summary`` / ``agent_detail`` for agents) so
neither copies the other. Functions take the ``Gateway`` and the caller (``owner``) and
raise the gateway's typed errors.
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.errors import ForbiddenError, NotFoundError
from app.gateway import Gateway
from app.memory.history import build_history
from app.paths import check_key


async def chat_list(gateway: Gateway, owner: str) -> list[dict[str, Any]]:
    """``GET /api/ap/chats`` / ``chat.list``: the owner's chats, newest first."""
    metas = await asyncio.to_thread(gateway.chats.list_chats, owner)
    return [meta.payload() for meta in metas]


async def chat_history(gateway: Gateway, chat_id: str, owner: str, include_raw: bool) -> dict[str, Any]:
    """``GET /api/ap/chat`` / ``chat.get``: one chat rebuilt as snapshot events (SPEC §8)."""
    chat_id = check_key(chat_id, "chatId")
    meta = await asyncio.to_thread(gateway.chats.chat_meta, chat_id)
    if meta is None:
        raise NotFoundError(f"unknown chat: {chat_id}")
    if meta.owner not in (None, owner):
        raise ForbiddenError(f"chat {chat_id} belongs to another user")
    lines = await asyncio.to_thread(gateway.chats.read_lines, chat_id)
    return build_history(chat_id, lines, include_raw, running=gateway.runs.active_run_ids())


def viewport_data(gateway: Gateway, viewport_key: str) -> dict[str, Any]:
    """``GET /api/ap/viewport`` / ``viewport.get`` (SPEC §3.5)."""
    key = check_key(viewport_key, "viewportKey")
    viewport = gateway.catalog.snapshot.viewports.get(key)
    if viewport is None:
        raise NotFoundError(f"unknown viewport: {key}")
    return dict(viewport.data)
