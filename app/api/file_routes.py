"""Files in and out of chats (SPEC §23): ``POST /api/ap/upload`` and ``GET /api/ap/artifact``.

| route | what |
|---|---|
| ``POST /api/ap/upload`` | multipart ``file`` (+ ``chatId?``, ``requestId?``) → ``{chatId, reference}``; a new chat of the caller without ``chatId`` |
| ``GET /api/ap/artifact?chatId=&artifactId=&token=`` | the bytes of an artifact (``a01`` …) or upload (``r01`` …): the chat's owner, or a valid signed link |

The upload body is streamed to disk (``app.files.multipart``), never buffered: a declared
``Content-Length`` over the limit is refused before reading, anything larger on the way is
cut off at the limit (413); an upload the client abandons ends as a ``RequestError`` nobody
receives. Whatever goes wrong, nothing of it stays on disk (``Incoming``).

Downloads are always attachments, with ``nosniff`` and a sandboxing CSP, so an uploaded or
published HTML/SVG file never runs as a page of the gateway.
"""

from __future__ import annotations

import asyncio
import logging

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.requests import ClientDisconnect

from app.api.auth import current_user
from app.api.envelope import ok
from app.api.state import gateway_of
from app.errors import NotFoundError, PayloadTooLarge, RequestError, RequestTimeout
from app.files.multipart import FORM_OVERHEAD_BYTES, boundary_of, read_upload_form
from app.files.store import FILE_ID, FileStore
from app.files.uploads import Uploads, check_chat_owner
from app.paths import ascii_int, check_key

logger = logging.getLogger(__name__)

router = APIRouter()

#: the OpenAPI body of ``POST /api/ap/upload``
UPLOAD_BODY = {
    "required": True,
    "content": {"multipart/form-data": {"schema": {
        "type": "object",
        "properties": {
            "file": {"type": "string", "format": "binary", "description": "the file (its name is sanitised)"},
            "chatId": {"type": "string", "maxLength": 128, "description": "an existing chat of the caller; "
                                                                            "absent = a new chat"},
            "requestId": {"type": "string", "maxLength": 128},
        },
        "required": ["file"],
    }}},
}
#: headers of every download
DOWNLOAD_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "sandbox; default-src 'none'",
    "Cache-Control": "private, no-cache",
}


@router.post("/api/ap/upload", summary="Upload a file into a chat's workspace (multipart)",
             openapi_extra={"requestBody": UPLOAD_BODY})
async def upload(request: Request, user: str = Depends(current_user)) -> Response:
    gateway = gateway_of(request)
    uploads = Uploads(gateway.settings, gateway.chats, gateway.services.sandbox.workspace_for)
    limit = gateway.settings.agent.upload.max_bytes
    declared = ascii_int(request.headers.get("content-length", ""))
    if declared is not None and declared > limit + FORM_OVERHEAD_BYTES:
        raise PayloadTooLarge(f"the upload is larger than the limit of {limit} bytes (agent.upload.max-bytes)")
    content_type = request.headers.get("content-type")
    boundary_of(content_type)  # 415 / 400 before reading the body
    timeout_s = gateway.settings.agent.upload.timeout_seconds
    with uploads.incoming() as incoming:
        try:
            # a body that trickles in (a byte every few seconds) would hold its file open for ever
            async with asyncio.timeout(timeout_s):
                form = await read_upload_form(request.stream(), content_type, incoming)
        except TimeoutError:
            raise RequestTimeout(f"the upload did not arrive within {timeout_s:g} s "
                                 "(agent.upload.timeout-seconds); nothing was kept") from None
        except ClientDisconnect:
            client = request.client.host if request.client else "?"
            logger.info("client %s abandoned an upload after %d file bytes; nothing kept", client, incoming.size)
            raise RequestError("the client disconnected before the upload was complete") from None
        data = await uploads.commit(
            incoming, owner=user, chat_id=form.fields.get("chatId") or None, filename=form.filename,
            declared_type=form.content_type, request_id=form.fields.get("requestId") or None,
        )
    return ok(data)


@router.get("/api/ap/artifact", summary="Download a chat's artifact or upload (owner, or a signed link)")
async def download(
    request: Request,
    chat_id: str = Query(..., alias="chatId", max_length=128),
    artifact_id: str = Query(..., alias="artifactId", max_length=16),
    token: str | None = Query(None, max_length=256),
    user: str = Depends(current_user),
) -> FileResponse:
    gateway = gateway_of(request)
    store = FileStore(gateway.settings)
    chat_id = check_key(chat_id, "chatId")
    if not FILE_ID.fullmatch(artifact_id):
        raise RequestError(f"invalid artifactId: {artifact_id!r} (expected e.g. a01 or r01)")
    if token is not None and gateway.settings.agent.chat_image_token.secret:
        store.verify_link(chat_id, artifact_id, token)  # the signed link is the credential
    else:
        await check_chat_owner(gateway.chats, chat_id, user)
    stored = await asyncio.to_thread(store.get, chat_id, artifact_id)
    path = store.blob(chat_id, artifact_id)
    if stored is None or not await asyncio.to_thread(path.is_file):
        raise NotFoundError(f"chat {chat_id} has no file {artifact_id}")
    return FileResponse(path, media_type=stored.mime_type, filename=stored.name,
                        content_disposition_type="attachment", headers=DOWNLOAD_HEADERS)


__all__ = ["router"]
