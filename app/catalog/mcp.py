"""MCP tools as the catalog sees them (SPEC §18).

An MCP server's tool ``t`` of ``mcp-servers/<serverKey>.json`` is the backend tool
``mcp__<serverKey>__t``; an agent lists it in ``toolConfig.backends``, or
``mcp__<serverKey>__*`` for every tool of that server. The MCP client (``app.mcp``) owns the
servers and hands the catalog one ``McpTools`` per server file at every build; the catalog only
resolves names against them:

* a server with no file is an unknown tool (the agent is rejected, naming it);
* a server that is down (or not yet up) keeps its last tool listing, and its calls get an error
  result; a tool it never listed is left out of the agent, which still loads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from app.catalog.definitions import ToolDefinition
from app.errors import DefinitionError

PREFIX = "mcp__"
SEPARATOR = "__"
WILDCARD = "*"


def mcp_tool_name(server_key: str, tool: str) -> str:
    """The backend tool name of ``tool`` of ``server_key``."""
    return f"{PREFIX}{server_key}{SEPARATOR}{tool}"


def split_mcp_name(name: str) -> tuple[str, str] | None:
    """``(serverKey, tool)`` of ``mcp__<serverKey>__<tool>`` (``tool`` may be ``*``); None when ``name``
    is not an MCP tool name."""
    if not name.startswith(PREFIX):
        return None
    server, separator, tool = name[len(PREFIX):].partition(SEPARATOR)
    if not separator or not server or not tool:
        return None
    return server, tool


@dataclass(frozen=True, slots=True)
class McpTools:
    """One MCP server file: its status and its tools by backend name (the last listing when down)."""

    server_key: str
    status: str
    tools: Mapping[str, ToolDefinition] = field(default_factory=dict)
    error: str | None = None


def resolve_mcp_tools(name: str, where: str, servers: Mapping[str, McpTools]) -> tuple[ToolDefinition, ...]:
    """The tools ``name`` (``mcp__<server>__<tool>`` or ``mcp__<server>__*``) stands for right now."""
    parts = split_mcp_name(name)
    if parts is None:
        raise DefinitionError(
            f"malformed MCP tool name '{name}' ({where}): expected mcp__<serverKey>__<tool> or mcp__<serverKey>__*"
        )
    server_key, tool = parts
    server = servers.get(server_key)
    if server is None:
        raise DefinitionError(f"unknown tool '{name}' ({where}): there is no MCP server '{server_key}' "
                              f"(mcp-servers/{server_key}.json)")
    if tool == WILDCARD:
        return tuple(server.tools.values())
    found = server.tools.get(name)
    return (found,) if found is not None else ()
