"""MCP routes (SPEC §18).

| route | what |
|---|---|
| ``GET /api/ap/mcp-servers`` | ``[{serverKey, status: ready\\|unavailable\\|disabled, transport, tools[], error?}]`` |
| ``/mcp`` (``POST``, ``GET``, ``DELETE``) | the streamable-HTTP MCP endpoint: every agent as ``ask_<agentKey>`` |

Both are behind the auth middleware like ``/api/**``. ``/mcp`` is a plain ASGI route (the MCP
protocol is not an OpenAPI operation); it hands each request to the gateway's ``AgentsMcpServer``.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from app.api.envelope import EnvelopeResponse, ok
from app.gateway import Gateway

router = APIRouter()


@router.get("/api/ap/mcp-servers", summary="The MCP servers of mcp-servers/: status, tools and errors")
async def list_mcp_servers(request: Request) -> EnvelopeResponse:
    gateway: Gateway = request.app.state.gateway
    return ok(gateway.mcp.describe())


class _McpEndpoint:
    """ASGI: one request of ``/mcp``, served by the running gateway's MCP server."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        gateway: Gateway = scope["app"].state.gateway
        await gateway.agents_mcp.handle(scope, receive, send)


router.routes.append(Route("/mcp", endpoint=_McpEndpoint(), name="mcp", include_in_schema=False))
