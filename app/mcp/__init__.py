"""MCP in both directions (SPEC §18), with the official ``mcp`` SDK.

* ``specs`` — ``mcp-servers/<serverKey>.json``: stdio or streamable-HTTP servers, validated with reasons.
* ``client.McpManager`` — MCP servers as tool sources: one session per server file, hot reload,
  status, reconnect with backoff, the stdio servers in the tool sandbox (SPEC §14), and
  ``call_tool`` for the backend tools ``mcp__<serverKey>__<tool>``.
* ``results`` — an MCP tool result as the gateway's tool result.
* ``server.AgentsMcpServer`` — ``/mcp``: every agent as the MCP tool ``ask_<agentKey>``.
"""

from app.mcp.client import McpManager
from app.mcp.server import AgentsMcpServer

__all__ = ["AgentsMcpServer", "McpManager"]
