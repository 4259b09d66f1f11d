"""Query ``references`` into what the model sees (SPEC §23).

* ``attach_references`` resolves a query's ``references: [{id}]`` against the chat's uploads:
  ``request.query.references`` and the memory's query line then carry the full reference
  objects. An id that is not an upload of the chat is the run's error (``run.error`` with
  code ``invalid_reference``), raised by ``Attachments.check()`` inside the run.
* ``Attachments.user_message`` is the run's user message in memory: the question as its
  first text part, the reference listing (name, type, size, path in the sandbox) as a
  second, and the references themselves in ``_references``. Replay keeps ``_references`` on
  the replayed user message (adapters drop ``_`` fields), so a later run still knows them.
* ``ReferenceImages.for_model(model)`` gives the messages of one model call: unchanged for
  most models; for a model file with ``"isVision": true`` every user message with image
  references gets the images as OpenAI ``image_url`` parts (data URLs of the stored bytes),
  which the Anthropic adapter turns into ``image`` blocks.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.catalog.definitions import ModelDefinition
from app.config import Settings
from app.contract.bodies import QueryRequest
from app.errors import RunFailed
from app.files.kinds import RASTER_TYPES
from app.files.store import FileStore, StoredFile
from app.memory.lines import text_of

logger = logging.getLogger(__name__)

#: most references one query may attach
MAX_REFERENCES = 32
#: largest image sent to a vision model (providers refuse bigger ones); larger ones stay text-only
MAX_VISION_IMAGE_BYTES = 5 * 1024 * 1024
REFERENCES_KEY = "_references"


def reference_listing(references: Sequence[Mapping[str, Any]]) -> str:
    """The text part that tells the model what is attached and where tools find it."""
    lines = ["Attached files (your tools read them at these paths in the workspace):"]
    for ref in references:
        where = f", path: {ref['path']}" if ref.get("path") else ""
        lines.append(f"- [{ref.get('id')}] {ref.get('name')} ({ref.get('type')}, {ref.get('mimeType')}, "
                     f"{ref.get('sizeBytes')} bytes{where})")
    return "\n".join(lines)


def _reference_id(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, Mapping) and isinstance(item.get("id"), str):
        return str(item["id"])
    return None


def _resolve(store: FileStore, chat_id: str, raw: Sequence[Any]) -> list[dict[str, Any]]:
    if len(raw) > MAX_REFERENCES:
        raise RunFailed(f"too many references: {len(raw)} (at most {MAX_REFERENCES})", error_code="invalid_reference")
    resolved: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        ref_id = _reference_id(item)
        stored = store.get(chat_id, ref_id) if ref_id is not None else None
        if stored is None or not stored.is_upload:
            shown = repr(ref_id) if ref_id is not None else "an object without an 'id'"
            raise RunFailed(f"references[{index}]: {shown[:80]} is not an upload of chat {chat_id} "
                            "(upload with POST /api/ap/upload, then pass its id)", error_code="invalid_reference")
        if stored.id not in seen:
            seen.add(stored.id)
            resolved.append(stored.reference(store.url(chat_id, stored.id, signed=False)))
    return resolved


@dataclass(slots=True)
class Attachments:
    """A query's resolved references (see the module docstring)."""

    references: list[dict[str, Any]] = field(default_factory=list)
    error: RunFailed | None = None

    def check(self) -> None:
        """Raise the resolution error, if any (inside the run: it becomes its ``run.error``)."""
        if self.error is not None:
            raise self.error

    def user_message(self, role: str, message: str, ts: int) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": message}]
        stored: dict[str, Any] = {"role": role, "content": content, "ts": ts}
        if self.references:
            content.append({"type": "text", "text": "\n\n" + reference_listing(self.references)})
            stored[REFERENCES_KEY] = self.references
        return stored


async def attach_references(settings: Settings, chat_id: str, query: QueryRequest) -> tuple[QueryRequest, Attachments]:
    """The query with full reference objects, and its ``Attachments`` (see the module docstring)."""
    raw = query.references
    if not raw:
        return query, Attachments()
    try:
        resolved = await asyncio.to_thread(_resolve, FileStore(settings), chat_id, raw)
    except RunFailed as exc:
        return query, Attachments(error=exc)
    return query.model_copy(update={"references": resolved}), Attachments(resolved)


class ReferenceImages:
    """The messages of one model call, with image parts for vision models (module docstring)."""

    def __init__(self, settings: Settings, chat_id: str, messages: list[dict[str, Any]]) -> None:
        self._settings = settings  # the store is built only for a vision model (it resolves paths on disk)
        self.chat_id = chat_id
        self.messages = messages
        self._with_images: list[dict[str, Any]] | None = None

    async def for_model(self, model: ModelDefinition) -> list[dict[str, Any]]:
        if not model.is_vision:
            return self.messages
        if self._with_images is None:
            self._with_images = await asyncio.to_thread(self._attach)
        return self._with_images

    def _image_part(self, store: FileStore, ref: Mapping[str, Any]) -> dict[str, Any] | None:
        stored = store.get(self.chat_id, str(ref.get("id")))
        if stored is None or stored.type != "image" or stored.mime_type not in RASTER_TYPES:
            return None
        if stored.size_bytes > MAX_VISION_IMAGE_BYTES:
            logger.info("reference %s of chat %s (%d bytes) is too large to send as an image", stored.id,
                        self.chat_id, stored.size_bytes)
            return None
        return _data_part(store, stored)

    def _attach(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        store = FileStore(self._settings)
        for message in self.messages:
            refs = message.get(REFERENCES_KEY)
            images = [ref for ref in refs if isinstance(ref, Mapping) and ref.get("type") == "image"] \
                if message.get("role") == "user" and isinstance(refs, list) else []
            parts = [part for part in (self._image_part(store, ref) for ref in images) if part is not None]
            if not parts:
                out.append(message)
                continue
            text = text_of(message.get("content")) or ""
            out.append({**message, "content": [{"type": "text", "text": text}, *parts]})
        return out


def _data_part(store: FileStore, stored: StoredFile) -> dict[str, Any] | None:
    try:
        data = store.blob(stored.chat_id, stored.id).read_bytes()
    except FileNotFoundError:
        return None
    url = f"data:{stored.mime_type};base64,{base64.b64encode(data).decode('ascii')}"
    return {"type": "image_url", "image_url": {"url": url}}


__all__ = [
    "MAX_VISION_IMAGE_BYTES", "REFERENCES_KEY", "Attachments", "ReferenceImages", "attach_references",
    "reference_listing",
]
