"""``POST /api/ap/chat/fork`` (SPEC §20): a new chat of the caller from a point of one of theirs.

Body: ``{chatId, runId, position?: "before" | "after", node?, state?}``. ``position``
(default ``before``) copies the runs before ``runId`` or up to and including it
(``app.memory.fork``); the stored files those lines name (uploads, references, published
artifacts) are copied too, uploads also into the new chat's workspace, so a re-run sends the
same references. With ``node`` (a GRAPH run, SPEC §21; ``name`` or the task id ``name#n`` of
the n-th visit) the new chat holds the runs before ``runId`` and the checkpoint taken before
that node, ``state`` merged over it; the chat's next GRAPH run restarts there.

Answers ``data: {chatId, forkedFrom, runs}``. 404 for an unknown chat or run or a node the run
never reached, 403 for another user's chat, 409 while a copied run is still running, 400 for a
malformed body and for a node no run of the agent can restart at (``START``/``END``, a node its
graph does not have, a node inside a parallel branch: ``app.engine.graph.fork_refusal``).
The source chat is never written to.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.api.auth import current_user
from app.api.body import read_json
from app.api.envelope import ok
from app.config import Settings
from app.contract.events import now_ms
from app.engine.graph import fork_refusal, resume_point
from app.engine.graph.checkpoints import graph_lines
from app.engine.ids import new_chat_id
from app.errors import ConflictError, ForbiddenError, NotFoundError, RequestError
from app.files.store import FileStore
from app.files.workspace import place_upload
from app.gateway import Gateway
from app.memory.fork import ForkPointError, cut, fork_header, forked_lines
from app.memory.lines import LINE_QUERY
from app.memory.store import ChatStore
from app.paths import check_key

logger = logging.getLogger(__name__)

router = APIRouter()

#: a node as its task id: ``review`` or ``review#2`` (SPEC §21)
_NODE = re.compile(r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127})(?:#(?P<visit>[1-9][0-9]{0,5}))?$")


class ForkRequest(BaseModel):
    """The body of ``POST /api/ap/chat/fork`` (SPEC §20)."""

    model_config = ConfigDict(extra="ignore")

    chatId: str = Field(min_length=1, max_length=128)
    runId: str = Field(min_length=1, max_length=128)
    position: Literal["before", "after"] | None = None
    node: str | None = Field(None, min_length=1, max_length=140)
    state: dict[str, Any] | None = None


@router.post(
    "/api/ap/chat/fork",
    summary="Fork a chat before/after one of its runs (or from a GRAPH node checkpoint) into a new chat",
    openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
        "schema": ForkRequest.model_json_schema()}}}},
)
async def fork_chat(request: Request, user: str = Depends(current_user)) -> Response:
    gateway: Gateway = request.app.state.gateway
    body = await read_json(request, ForkRequest, gateway.settings.server.max_body_bytes)
    return ok(await fork(gateway, body, user))


async def fork(gateway: Gateway, body: ForkRequest, owner: str) -> dict[str, Any]:
    """Check the fork point, write the new chat, copy its files; ``{chatId, forkedFrom, runs}``."""
    chat_id, run_id = check_key(body.chatId, "chatId"), check_key(body.runId, "runId")
    node, visit = _node(body)
    chats = gateway.chats
    meta = await asyncio.to_thread(chats.chat_meta, chat_id)
    if meta is None:
        raise NotFoundError(f"unknown chat: {chat_id}")
    if meta.owner != owner:
        raise ForbiddenError(f"chat {chat_id} belongs to another user")
    lines = await asyncio.to_thread(chats.read_lines, chat_id)
    position = body.position or "before"
    try:
        copied = cut(lines, run_id, position)
    except ForkPointError as exc:
        raise NotFoundError(f"{exc} ({chat_id})") from None
    source: dict[str, Any] = {"chatId": chat_id, "runId": run_id, "position": position}
    resume: dict[str, Any] | None = None
    if node is not None:
        if not graph_lines(lines, run_id):
            raise NotFoundError(f"cannot fork from node '{body.node}': run {run_id} has no graph checkpoints")
        agent_key = _graph_agent_of(gateway, lines, run_id, body.node or node)
        try:
            point = resume_point(lines, run_id, node, visit=visit, state=body.state)
        except LookupError as exc:
            raise NotFoundError(f"cannot fork from node '{body.node}': {exc}") from None
        source["node"] = body.node
        resume = {"runId": run_id, "agentKey": agent_key, "node": point.node, "visit": visit,
                  "state": dict(point.state), "inputs": dict(point.inputs), "message": point.message}
    live = {d["runId"] for d in await gateway.runs.list_all(owner, chat_id=chat_id)  # cluster-wide (SPEC §16)
            if d["status"] in ("running", "waiting")}
    running = (live | gateway.runs.active_run_ids()).intersection(copied.run_ids)
    if running:
        raise ConflictError(f"run {sorted(running)[0]} of chat {chat_id} is still running; fork after it ends")
    new_id = new_chat_id()
    header = fork_header(new_chat_id=new_id, owner=owner, now=now_ms(), source=source, resume=resume)
    new_lines = forked_lines(copied, new_chat_id=new_id, owner=owner, header=header)
    await _write(chats, new_id, new_lines)
    file_ids = copied.file_ids()
    if file_ids:
        await asyncio.to_thread(_copy_files, gateway.settings, gateway.services.sandbox.workspace_for,
                                chat_id, new_id, file_ids)
    logger.info("chat %s forked %s run %s%s into %s by %s (%d runs, %d files)", chat_id, position, run_id,
                f" at node {body.node}" if body.node else "", new_id, owner, len(copied.run_ids), len(file_ids))
    return {"chatId": new_id, "forkedFrom": source, "runs": list(copied.run_ids)}


def _graph_agent_of(gateway: Gateway, lines: list[dict[str, Any]], run_id: str, node: str) -> str:
    """The key of the GRAPH agent that ran ``run_id``, after checking that a run of it can restart at
    ``node`` (a node of its graph as loaded now, not inside a parallel branch). 400 otherwise."""
    name = node.split("#", 1)[0]
    key = next((line["query"].get("agentKey") for line in lines if line.get("_type") == LINE_QUERY
                and line.get("runId") == run_id and isinstance(line.get("query"), dict)), None)
    agent = gateway.catalog.snapshot.agents.get(key) if isinstance(key, str) else None
    if agent is None or agent.graph is None:
        raise RequestError(f"cannot fork from node '{node}': run {run_id} is not a run of a loaded GRAPH agent")
    refusal = fork_refusal(agent.graph, name)
    if refusal is not None:
        raise RequestError(f"cannot fork from node '{node}' of agent '{agent.key}': {refusal}")
    return agent.key


def _node(body: ForkRequest) -> tuple[str | None, int]:
    if body.node is None:
        if body.state is not None:
            raise RequestError("state is only accepted with node (a fork from a GRAPH node checkpoint)")
        return None, 1
    if body.position == "after":
        raise RequestError("a fork from a node restarts inside the run: position must be before (or absent)")
    match = _NODE.fullmatch(body.node)
    if match is None:
        raise RequestError(f"invalid node: {body.node[:64]!r} (a node name, or name#n for its n-th visit)")
    return match["name"], int(match["visit"] or 1)


#: lines of a forked chat handed to the writer thread at once (one ``write(2)`` each batch)
_WRITE_BATCH = 256


async def _write(chats: ChatStore, chat_id: str, lines: list[dict[str, Any]]) -> None:
    """Append the new chat's lines while holding its lock (one open file), ``_WRITE_BATCH`` lines a
    trip to the writer thread (a line a trip took 6 s for a chat of 20,000 runs); nothing is left
    half-written."""
    try:
        async with chats.lock(chat_id):
            for start in range(0, len(lines), _WRITE_BATCH):
                await chats.append(chat_id, *lines[start:start + _WRITE_BATCH])
    except BaseException:
        await asyncio.shield(chats.remove(chat_id))  # after the lines already handed over
        raise


def _copy_files(settings: Settings, workspace_for: Callable[[str], Path], source: str, target: str,
                file_ids: set[str]) -> None:
    """Copy the named stored files of ``source`` to ``target`` (uploads into its workspace too). Blocking."""
    store = FileStore(settings)
    for file_id in sorted(file_ids):
        stored = store.get(source, file_id)
        if stored is None:
            continue  # a name that is no stored file of the chat (e.g. a reference that was refused)
        folder = store.chat_dir(target)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        blob = store.blob(target, stored.id)
        try:
            os.link(store.blob(source, stored.id), blob)  # the bytes never change: one copy on disk
        except FileExistsError:
            continue
        except OSError:
            shutil.copyfile(store.blob(source, stored.id), blob)
        copy = dataclasses.replace(stored, chat_id=target)
        if stored.is_upload and stored.path is not None:
            copy = dataclasses.replace(copy, path=place_upload(workspace_for(target), blob, stored.name))
        store.save(copy)


__all__ = ["ForkRequest", "fork", "router"]
