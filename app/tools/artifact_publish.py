"""``_artifact_publish_``: hand files of the chat's workspace to the user (SPEC §23).

``{artifacts: [{path, name?, description?}]}`` — paths inside the chat's sandbox workspace
(relative, or absolute under it: tools see the workspace at its real path). Each file is
copied into the gateway's store as the chat's next artifact (``a01`` …, see
``app.files.artifacts``) and announced by one ``artifact.publish`` event ``{artifactId,
chatId, runId, artifact: {type, name, mimeType, sizeBytes, url, sha256, description?}}``;
``url`` downloads it (``GET /api/ap/artifact``: the chat's owner, or anyone holding the link
while signed links are on). The result lists the same artifacts; ``GET /api/ap/chat`` rebuilds
the events from it. A file that cannot be published (missing, a link, too big…) fails the
whole call with a tool error naming it; the ones before it stay published.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from app.contract.events import ArtifactPublish
from app.errors import ToolError
from app.files.artifacts import publish
from app.files.store import FileStore
from app.tools.base import ToolContext

logger = logging.getLogger(__name__)

TOOL_NAME = "_artifact_publish_"
#: most files one call may publish
MAX_ARTIFACTS = 20


def _items(args: dict[str, Any]) -> list[dict[str, Any]]:
    items = args.get("artifacts")
    if not isinstance(items, list) or not items:
        raise ToolError("'artifacts' must be a non-empty list of {path, name?, description?}")
    if len(items) > MAX_ARTIFACTS:
        raise ToolError(f"at most {MAX_ARTIFACTS} artifacts per call")
    for index, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("path"), str):
            raise ToolError(f"artifacts[{index}] must be an object with a string 'path'")
        for key in ("name", "description"):
            if item.get(key) is not None and not isinstance(item[key], str):
                raise ToolError(f"artifacts[{index}].{key} must be a string")
    return items


async def artifact_publish(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """The ``_artifact_publish_`` built-in (see the module docstring)."""
    items = _items(args)
    workspace = ctx.process_sandbox().workspace_for(ctx.chat_id)
    store = FileStore(ctx.settings)
    published: list[dict[str, Any]] = []
    for item in items:
        stored = await asyncio.to_thread(
            publish, store, workspace, chat_id=ctx.chat_id, run_id=ctx.run_id, path=item["path"],
            name=item.get("name"), description=item.get("description"),
        )
        artifact = stored.artifact(store.url(ctx.chat_id, stored.id))
        if ctx.emit is not None:
            ctx.emit(ArtifactPublish(artifact_id=stored.id, chat_id=ctx.chat_id, run_id=ctx.run_id, artifact=artifact))
        logger.info("run %s published %s of chat %s: %s (%d bytes)", ctx.run_id, stored.id, ctx.chat_id,
                    stored.name, stored.size_bytes)
        published.append({"artifactId": stored.id, "path": stored.path, "artifact": artifact})
    return {"ok": True, "artifacts": published}


__all__ = ["MAX_ARTIFACTS", "TOOL_NAME", "artifact_publish"]
