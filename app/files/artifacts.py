"""Publishing workspace files as artifacts (SPEC §23, the ``_artifact_publish_`` tool).

``publish`` copies one file of the chat's workspace (read without following links, see
``workspace.read_into``) into the gateway's store under the chat's next artifact id (``a01``
…), so the link serves exactly the bytes published — later changes in the workspace do not
reach it. The artifact's name is the given ``name`` or the file's own, through ``safe_name``;
its type comes from its bytes (``kinds.classify``; a mislabelled image is just a file here).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from app.contract.events import now_ms
from app.errors import UnsupportedMediaType
from app.files.kinds import OCTET_STREAM, classify
from app.files.names import safe_name
from app.files.store import ARTIFACT, FileStore, StoredFile
from app.files.workspace import read_into

MAX_DESCRIPTION_CHARS = 1000


def publish(store: FileStore, workspace: Path, *, chat_id: str, run_id: str, path: str, name: str | None = None,
            description: str | None = None) -> StoredFile:
    """Publish the workspace file ``path`` of ``chat_id`` (blocking); ``ToolError`` when it cannot be."""
    with store.incoming() as incoming:
        relative = read_into(workspace, path, incoming)
        incoming.finish()
        label = safe_name(name if isinstance(name, str) and name.strip() else PurePosixPath(relative).name,
                          fallback="artifact")
        try:
            file_type, mime_type = classify(label, None, incoming.head)
        except UnsupportedMediaType:
            file_type, mime_type = "file", OCTET_STREAM
        file_id = store.claim(chat_id, ARTIFACT, incoming)
        stored = StoredFile(
            id=file_id, chat_id=chat_id, type=file_type, name=label, mime_type=mime_type, size_bytes=incoming.size,
            sha256=incoming.sha256, created_at=now_ms(), path=relative, run_id=run_id,
            description=description[:MAX_DESCRIPTION_CHARS] if isinstance(description, str) and description else None,
        )
        try:
            store.save(stored)
        except BaseException:
            store.release(chat_id, file_id)
            raise
    return stored


__all__ = ["publish"]
