"""An MCP ``CallToolResult`` as a gateway tool result (SPEC §18).

* ``isError`` → ``ToolError`` with the result's text: the model gets an error result;
* ``structuredContent`` present → that JSON object is the result (the text parts of such a result
  are, by the MCP spec's recommendation, its serialised copy);
* otherwise the text parts joined with a newline. A part that is not text is named, not inlined
  (``[image image/png omitted]``); an embedded text resource contributes its text.
"""

from __future__ import annotations

from typing import Any

import mcp_types as types

from app.errors import ToolError


def _part_text(part: Any) -> str:
    if isinstance(part, types.TextContent):
        return part.text
    if isinstance(part, types.EmbeddedResource):
        resource = part.resource
        if isinstance(resource, types.TextResourceContents):
            return resource.text
        return f"[resource {resource.uri} ({resource.mime_type or 'binary'}) omitted]"
    if isinstance(part, types.ResourceLink):
        return f"[resource link {part.uri}]"
    mime = getattr(part, "mime_type", None)
    kind = getattr(part, "type", type(part).__name__)
    return f"[{kind} {mime} omitted]" if mime else f"[{kind} omitted]"


def joined_text(result: types.CallToolResult) -> str:
    return "\n".join(_part_text(part) for part in result.content)


def tool_result(server_key: str, tool: str, result: types.CallToolResult) -> Any:
    """The tool result the model sees, or ``ToolError`` for an ``isError`` result."""
    if result.is_error:
        text = joined_text(result).strip()
        raise ToolError(f"MCP tool '{tool}' of server '{server_key}' failed: {text or 'it reported an error'}")
    if result.structured_content is not None:
        return result.structured_content
    return joined_text(result)
