"""CORS from agent.cors.* (SPEC §2), over real HTTP: preflight and simple requests."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx

from app.security.cors import origin_regex, path_regex
from tests.support.server import GatewayServer

CORS = {"agent": {"cors": {
    "enabled": True,
    "allowed-origin-patterns": ["http://localhost:8081", "https://*.example.com", "http://127.0.0.1:*"],
    "allowed-methods": ["GET", "POST"],
    "exposed-headers": ["Content-Type", "X-Trace"],
    "max-age-seconds": 600,
}}}


def test_pattern_translation() -> None:
    regex = re.compile(origin_regex(["https://*.example.com", "http://localhost:*", "http://exact"]) or "")
    assert regex.fullmatch("https://app.example.com")
    assert regex.fullmatch("http://localhost:3000")
    assert not regex.fullmatch("https://example.com.evil.test")
    assert not regex.fullmatch("https://evil.test/.example.com")
    assert not regex.fullmatch("http://exact")  # exact origins go to allow_origins
    assert origin_regex(["http://exact"]) is None
    assert re.compile(origin_regex(["*"]) or "").fullmatch("https://anything.test")
    api = path_regex("/api/**")
    assert api.fullmatch("/api/ap/agents") and api.fullmatch("/api") and not api.fullmatch("/healthz")
    assert path_regex("/api/*").fullmatch("/api/x") and not path_regex("/api/*").fullmatch("/api/x/y")


async def test_preflight_and_simple_requests(
    start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    gw = start_gateway(CORS)
    url = f"{gw.url}/api/ap/agents"
    for origin in ("http://localhost:8081", "https://app.example.com", "http://127.0.0.1:5173"):
        pre = await client.options(url, headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                                 "Access-Control-Request-Headers": "content-type, authorization"})
        assert pre.status_code == 200, (origin, pre.text)
        assert pre.headers["access-control-allow-origin"] == origin
        assert "POST" in pre.headers["access-control-allow-methods"]
        assert pre.headers["access-control-max-age"] == "600"
        simple = await client.get(url, headers={"Origin": origin})
        assert simple.status_code == 200 and simple.headers["access-control-allow-origin"] == origin
        assert simple.headers["access-control-expose-headers"] == "Content-Type, X-Trace"
    denied = await client.options(url, headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "GET"})
    assert denied.status_code == 400 and "access-control-allow-origin" not in denied.headers
    simple_denied = await client.get(url, headers={"Origin": "https://evil.test"})
    assert "access-control-allow-origin" not in simple_denied.headers
    bad_method = await client.options(url, headers={"Origin": "http://localhost:8081",
                                                    "Access-Control-Request-Method": "DELETE"})
    assert bad_method.status_code == 400
    outside = await client.get(f"{gw.url}/healthz", headers={"Origin": "http://localhost:8081"})
    assert "access-control-allow-origin" not in outside.headers  # path-pattern is /api/**


async def test_cors_off_by_default(start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient) -> None:
    gw = start_gateway()
    response = await client.get(f"{gw.url}/api/ap/agents", headers={"Origin": "http://localhost:8081"})
    assert response.status_code == 200 and "access-control-allow-origin" not in response.headers
