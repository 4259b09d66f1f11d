"""The direct lane (``app.api.lane``, issue 13): the run-starting endpoints are found first and run
by starlette's plain ``Route``, without FastAPI's per-request dependency solving; their FastAPI
routes still document them. Checked on the app's route table, in its OpenAPI document, and over
real HTTP by the scope the router leaves behind (FastAPI's route marks it, the lane does not).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Request
from starlette.responses import Response
from starlette.routing import Route

from app.api import agui_routes, openai_routes, run_routes
from app.api.app import create_app
from app.api.lane import direct
from app.config import load_settings
from app.devtools import FakeUpstream
from app.devtools.script import Finish, Text
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import stream_events

LANE = [("/api/ap/query", run_routes.query), ("/api/ap/submit", run_routes.submit),
        ("/api/ap/interrupt", run_routes.interrupt), ("/v1/chat/completions", openai_routes.chat_completions),
        ("/ag-ui/{agentKey}", agui_routes.run_agent)]


def test_a_direct_endpoint_must_take_the_request_and_nothing_else() -> None:
    async def with_user(request: Request, user: str) -> Response:
        raise AssertionError

    async def keyword_only(*, request: Request) -> Response:
        raise AssertionError

    async def nothing() -> Response:
        raise AssertionError

    for endpoint in (with_user, keyword_only, nothing):
        with pytest.raises(TypeError, match="takes only the request"):
            direct(endpoint)  # type: ignore[arg-type]


def test_the_run_starting_endpoints_come_first_and_the_docs_still_show_them(deploy: Path) -> None:
    settings = load_settings(deploy, files=(Path("application.yml"),), env={})
    app = create_app(settings)
    lane = app.router.routes[:len(LANE)]
    assert [type(route) for route in lane] == [Route] * len(LANE)  # starlette's, not FastAPI's APIRoute
    assert [(route.path, route.endpoint, route.methods) for route in lane] == [  # type: ignore[attr-defined]
        (path, endpoint, {"POST"}) for path, endpoint in LANE]
    paths = app.openapi()["paths"]
    for path, _ in LANE:
        assert paths[path]["post"]["requestBody"]["required"] is True, path
    assert paths["/ag-ui/{agentKey}"]["post"]["parameters"] == [
        {"name": "agentKey", "in": "path", "required": True, "schema": {"type": "string"}}]


class _Scopes:
    """Keeps each HTTP request's scope as the router left it (``endpoint``, FastAPI's ``route``)."""

    def __init__(self, app: Any, seen: list[dict[str, Any]]) -> None:
        self.app, self.seen = app, seen

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            if scope["type"] == "http":
                self.seen.append(scope)


async def test_a_query_is_served_by_the_lane_and_other_routes_by_fastapi(
    deploy: Path, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    upstream.enqueue([Text("lane"), Finish("stop")])
    seen: list[dict[str, Any]] = []
    server = GatewayServer(deploy)
    server.app.add_middleware(_Scopes, seen=seen)
    with server:
        events = [event async for event in stream_events(
            client, f"{server.url}/api/ap/query", {"agentKey": "plain", "message": "hi"})]
        assert events[-1]["type"] == "run.complete"
        assert "lane" in "".join(event.get("delta", "") for event in events if event["type"] == "content.delta")
        assert (await client.get(f"{server.url}/api/ap/agents")).status_code == 200
    query, agents = seen
    assert query["endpoint"] is run_routes.query
    assert "route" not in query  # FastAPI's APIRoute sets it when it serves a request…
    assert "route" in agents  # …as it does for a route outside the lane


async def test_another_method_on_a_lane_path_is_answered_405_with_the_envelope(
    start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    gw = start_gateway()
    for path, _ in LANE:
        response = await client.get(f"{gw.url}{path.replace('{agentKey}', 'plain')}")
        assert response.status_code == 405, path
        assert response.json()["code"] == 4050, path
        assert response.headers["allow"] == "POST", path
