"""Uploads into a chat (SPEC §23): ``POST /api/ap/upload`` and the sidecar's ``chat.upload``.

``Uploads.commit`` takes a finished ``Incoming`` and:

1. names and types it: the client's name through ``safe_name``, the type from the bytes
   (``kinds.classify``), ``agent.upload.allowed-types`` applied (415);
2. finds the chat: the given ``chatId`` must exist and belong to the caller (404 / 403);
   without one a new chat of the caller is created;
3. claims the chat's next reference id (``r01`` …) in the gateway's store, copies the file to
   the chat's sandbox workspace as ``uploads/<name>`` (so tools see it), writes the metadata;
4. appends an ``upload`` line ``{_type, chatId, updatedAt, owner, requestId, reference}`` to
   the chat's memory: it is what makes a chat created by an upload the caller's, and what
   ``GET /api/ap/chat`` lists under ``references`` (and replays as ``request.upload``).

Anything failing half-way takes back what was done; the incoming file itself is removed by
its ``with`` in every case, so an oversize, refused or interrupted upload leaves nothing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.config import Settings
from app.contract.events import now_ms
from app.engine.ids import new_chat_id
from app.errors import ForbiddenError, NotFoundError, RequestError
from app.files.kinds import check_allowed, classify
from app.files.names import safe_name
from app.files.store import UPLOAD, FileStore, Incoming, StoredFile
from app.files.workspace import place_upload, remove_upload
from app.memory.lines import LINE_UPLOAD
from app.memory.store import ChatStore
from app.paths import check_key

logger = logging.getLogger(__name__)

_CHUNK = 1024 * 1024


async def check_chat_owner(chats: ChatStore, chat_id: str, owner: str) -> None:
    """404 for an unknown chat, 403 for another user's (SPEC §9)."""
    meta = await asyncio.to_thread(chats.chat_meta, check_key(chat_id, "chatId"))
    if meta is None:
        raise NotFoundError(f"unknown chat: {chat_id}")
    if meta.owner != owner:
        raise ForbiddenError(f"chat {chat_id} belongs to another user")


class Uploads:
    """Receives files into chats (see the module docstring). Cheap: build one per use."""

    def __init__(self, settings: Settings, chats: ChatStore, workspace_for: Callable[[str], Path]) -> None:
        self.settings = settings
        self.store = FileStore(settings)
        self.chats = chats
        self.workspace_for = workspace_for

    def incoming(self) -> Incoming:
        return self.store.incoming(self.settings.agent.upload.max_bytes)

    async def commit(self, incoming: Incoming, *, owner: str, chat_id: str | None, filename: str | None,
                     declared_type: str | None, request_id: str | None) -> dict[str, Any]:
        """Store the finished ``incoming`` file; ``{chatId, reference}`` (see the module docstring)."""
        incoming.finish()
        if request_id is not None and (not request_id or len(request_id) > 128):
            raise RequestError("requestId must be 1 to 128 characters")
        name = safe_name(filename or "", fallback="upload")
        file_type, mime_type = classify(name, declared_type, incoming.head)
        check_allowed(name, mime_type, self.settings.agent.upload.allowed_types)
        if chat_id:
            await check_chat_owner(self.chats, chat_id, owner)
        else:
            chat_id = new_chat_id()
        workspace = self.workspace_for(chat_id)
        store = self.store
        file_id = await asyncio.to_thread(store.claim, chat_id, UPLOAD, incoming)
        path: str | None = None
        try:
            path = await asyncio.to_thread(place_upload, workspace, store.blob(chat_id, file_id), name)
            stored = StoredFile(
                id=file_id, chat_id=chat_id, type=file_type, name=name, mime_type=mime_type,
                size_bytes=incoming.size, sha256=incoming.sha256, created_at=now_ms(), path=path,
            )
            await asyncio.to_thread(store.save, stored)
            await self.chats.append(chat_id, {
                "_type": LINE_UPLOAD, "chatId": chat_id, "updatedAt": stored.created_at, "owner": owner,
                "requestId": request_id or file_id,
                "reference": stored.reference(store.url(chat_id, file_id, signed=False)),
            })
        except BaseException:
            await asyncio.shield(asyncio.to_thread(_take_back, store, chat_id, file_id, workspace, path))
            raise
        logger.info("upload %s of chat %s: %s (%s, %d bytes) by %s", file_id, chat_id, name, mime_type,
                    stored.size_bytes, owner)
        return {"chatId": chat_id, "reference": stored.reference(store.url(chat_id, file_id))}

    async def from_path(self, path: str, *, owner: str, chat_id: str | None, request_id: str | None) -> dict[str, Any]:
        """Upload a file of the local disk (the desktop sidecar's ``chat.upload``)."""
        if "\x00" in path:  # SPEC §9: os.open would raise ValueError, a bug's answer
            raise RequestError("invalid path: it contains a NUL byte")
        source = Path(path).expanduser()
        with self.incoming() as incoming:
            await asyncio.to_thread(_copy_local, source, incoming)
            return await self.commit(incoming, owner=owner, chat_id=chat_id, filename=source.name,
                                     declared_type=None, request_id=request_id)


def _take_back(store: FileStore, chat_id: str, file_id: str, workspace: Path, path: str | None) -> None:
    store.release(chat_id, file_id)
    if path is not None:
        remove_upload(workspace, path)


def _copy_local(source: Path, incoming: Incoming) -> None:
    try:
        fd = os.open(source, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise NotFoundError(f"no such file: {source}") from None
    except OSError as exc:
        raise RequestError(f"cannot read {source}: {os.strerror(exc.errno or 0)}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # before fdopen, which refuses a folder with an OSError
        os.close(fd)
        raise RequestError(f"not a regular file: {source}")
    with os.fdopen(fd, "rb") as data:
        while chunk := data.read(_CHUNK):
            incoming.write(chunk)


__all__ = ["Uploads", "check_chat_owner"]
