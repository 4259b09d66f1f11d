"""What the upstream web client and operators rely on (SPEC §5, §6, §22): a failed
``stream: false`` run is a failure, and tool/action events carry their ``runId``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import Step, http_error_script, text_script
from tests.engine.helpers import call
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect

TOOLS = {"backends": ["mock_city_weather"], "frontends": [], "actions": ["switch_theme"]}


@pytest.fixture
def gw(deploy: Path, start_gateway: Callable[..., GatewayServer]) -> GatewayServer:
    write_agent(deploy, "plain", agent("ONESHOT"))
    write_agent(deploy, "tools", agent("REACT", tools=TOOLS))
    return start_gateway()


async def test_stream_false_success_is_200(gw: GatewayServer, upstream: FakeUpstream,
                                           client: httpx.AsyncClient) -> None:
    upstream.enqueue(text_script(["fine"]))
    reply = await client.post(f"{gw.url}/api/ap/query", json={"agentKey": "plain", "message": "x", "stream": False})
    body = reply.json()
    assert reply.status_code == 200 and body["code"] == 0 and body["data"]["answer"] == "fine"
    assert body["data"]["status"] == "completed"


@pytest.mark.parametrize(("script", "status", "code", "kind"), [
    (http_error_script(401, "bad key"), 502, 5021, "upstream_http_error"),
    (http_error_script(500, "boom"), 502, 5021, "upstream_http_error"),
], ids=["rejected_key", "upstream_500"])
async def test_stream_false_failure_is_a_failure_with_the_events_kept(
    gw: GatewayServer, upstream: FakeUpstream, client: httpx.AsyncClient,
    script: list[Step], status: int, code: int, kind: str,
) -> None:
    upstream.enqueue(script)
    reply = await client.post(f"{gw.url}/api/ap/query", json={"agentKey": "plain", "message": "x", "stream": False})
    body = reply.json()
    assert reply.status_code == status and body["code"] == code
    assert kind in body["msg"] and "the run failed" in body["msg"]
    assert body["data"]["status"] == "error" and body["data"]["events"][-1]["type"] == "run.error"
    assert body["data"]["events"][-1]["error"]["code"] == kind


async def test_stream_false_with_the_upstream_down_is_a_failure(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    # a provider on a port nothing listens on
    gw = start_gateway(overrides={"agent": {"providers": {"fake": {"base-url": "http://127.0.0.1:9",
                                                                   "api-key": "sk-x"}}}})
    reply = await client.post(f"{gw.url}/api/ap/query", json={"agentKey": "plain", "message": "x", "stream": False})
    assert reply.status_code in (502, 504) and reply.json()["code"] > 0
    assert reply.json()["data"]["events"][-1]["type"] == "run.error"


async def test_tool_and_action_events_carry_the_run_id(gw: GatewayServer, upstream: FakeUpstream,
                                                       client: httpx.AsyncClient) -> None:
    upstream.enqueue(call("w1", "mock_city_weather", {"city": "Paris", "date": "2026-12-01"}),
                     call("a1", "switch_theme", {"theme": "dark"}), text_script(["done"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "tools", "message": "go"})
    run_id = next(e["runId"] for e in events if e["type"] == "run.start")
    kinds = ("tool.start", "tool.args", "tool.end", "tool.result",
             "action.start", "action.args", "action.end", "action.param", "action.result")
    seen: dict[str, Any] = {}
    for event in events:
        if event["type"] in kinds:
            assert event.get("runId") == run_id, event
            seen[event["type"]] = event
    assert set(seen) == set(kinds)
