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
import orjson

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


#: the most bytes of a result kept (as the HTTP tools' 2 MiB, the process tools' 1 MiB): a result
#: goes into the event stream, the chat file and every later model request of the chat
MAX_RESULT_BYTES = 1024 * 1024
#: the most bytes of an error result's text kept
MAX_ERROR_BYTES = 4096


def _capped(text: str, limit: int) -> str:
    data = text.encode("utf-8", errors="surrogatepass")
    if len(data) <= limit:
        return text
    kept = data[:limit].decode("utf-8", errors="ignore")
    return f"{kept}\n[truncated: the result had {len(data)} bytes, the first {limit} are kept]"


def tool_result(server_key: str, tool: str, result: types.CallToolResult) -> Any:
    """The tool result the model sees, or ``ToolError`` for an ``isError`` result. A result larger
    than ``MAX_RESULT_BYTES`` is cut there, with a note (structured content then as its text)."""
    if result.is_error:
        text = _capped(joined_text(result).strip(), MAX_ERROR_BYTES)
        raise ToolError(f"MCP tool '{tool}' of server '{server_key}' failed: {text or 'it reported an error'}")
    if result.structured_content is not None:
        encoded = orjson.dumps(result.structured_content, option=orjson.OPT_NON_STR_KEYS)
        if len(encoded) <= MAX_RESULT_BYTES:
            return result.structured_content
        return _capped(encoded.decode(), MAX_RESULT_BYTES)
    return _capped(joined_text(result), MAX_RESULT_BYTES)
