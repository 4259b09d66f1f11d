"""Bad input to POST /api/ap/query and /api/ap/submit: a clear 4xx envelope, nothing started."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from app.devtools import FakeUpstream
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"{not json", 400, "malformed JSON"),
        (b"", 400, "empty"),
        (b"[1,2]", 400, "JSON object"),
        (b'{"agentKey":"plain"}', 400, "message"),
        (b'{"agentKey":"plain","message":"   "}', 400, "message must not be empty"),
        (b'{"agentKey":"nope","message":"hi"}', 404, "unknown agent"),
        (b'{"message":"hi"}', 400, "agentKey is required"),
        (b'{"chatId":"chat_missing","message":"hi"}', 404, "unknown chat"),
        (b'{"chatId":"../../etc/passwd","message":"hi"}', 400, "invalid chatId"),
        (b'{"agentKey":"../agents/plain","message":"hi"}', 400, "invalid agentKey"),
        (b'{"agentKey":"plain","message":"hi","role":"tool"}', 400, "role"),
    ],
    ids=["malformed", "empty", "array", "no-message", "blank-message", "unknown-agent", "no-agent",
         "unknown-chat", "traversal-chat", "traversal-agent", "bad-role"],
)
async def test_query_rejects_bad_input(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    body: bytes, status: int, fragment: str,
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    response = await client.post(f"{gw.url}/api/ap/query", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status
    envelope = response.json()
    assert envelope["code"] > 0 and fragment in envelope["msg"]
    assert "Traceback" not in response.text
    assert upstream.requests == []  # nothing reached the model


#: deeper than orjson writes (254 levels) though it reads it (1024)
TOO_DEEP = 300


@pytest.mark.parametrize("field", ["params", "scene", "references"])
async def test_attack_a_query_nested_too_deep_to_encode_is_refused_before_any_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    field: str,
) -> None:
    """Free-form JSON nested deeper than orjson can write used to be accepted: ``request.query``
    carrying it cut the SSE stream mid-run (no terminal event) and the query line never reached
    the chat file. It is refused at the edge, before any run starts."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    inner = b"[" * TOO_DEEP + b"]" * TOO_DEEP
    value = b'{"a":' + inner + b"}" if field == "params" else inner
    body = b'{"agentKey":"plain","message":"hi","' + field.encode() + b'":' + value + b"}"
    response = await client.post(f"{gw.url}/api/ap/query", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    envelope = response.json()
    assert envelope["code"] > 0 and field in envelope["msg"] and "nested deeper" in envelope["msg"]
    assert upstream.requests == []
    assert (await client.get(f"{gw.url}/api/ap/chats")).json()["data"] == []


async def test_query_rejects_oversize_body(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway(overrides={"server": {"max-body-bytes": 1000}})
    big = {"agentKey": "plain", "message": "x" * 5000}
    response = await client.post(f"{gw.url}/api/ap/query", json=big)
    assert response.status_code == 413 and response.json()["code"] == 4013


async def test_submit_unmatched_and_bad_input(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    gw = start_gateway()
    unmatched = await client.post(f"{gw.url}/api/ap/submit", json={"runId": "run_x", "toolId": "t_1", "params": {}})
    assert unmatched.status_code == 200
    data = unmatched.json()["data"]
    assert data["accepted"] is False and data["status"] == "unmatched" and data["detail"]
    bad = await client.post(f"{gw.url}/api/ap/submit", json={"toolId": "t_1"})
    assert bad.status_code == 400 and "runId" in bad.json()["msg"]


async def test_a_wrong_method_is_405_with_the_envelope_and_allow(
    start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    gw = start_gateway()
    response = await client.delete(f"{gw.url}/api/ap/agents")
    assert response.status_code == 405
    assert response.json()["code"] == 4050
    assert response.headers["allow"] == "GET"  # RFC 9110: a 405 says which methods the resource has
