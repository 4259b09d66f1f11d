"""Model groups, circuit breakers and limits (SPEC §19) over real HTTP, with two fake upstreams:
fallback on every failure before the first delta (refused connection, timeout, 429, 5xx) and
never after one; round robin; weights; breaker open → half-open → closed; model and user
limits as a 429 before the stream and ``run.error rate_limited`` between calls."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import Disconnect, Stall, StreamError, Text, Usage, http_error_script, text_script
from tests.engine.helpers import call, chat_lines, step_messages
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect, stream_events

ONE = {"maxCalls": 6, "timeoutMs": 2000, "retryCount": 0}


@pytest.fixture
def second() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream, second: FakeUpstream) -> Path:
    root = make_deployment(tmp_path / "deploy", upstream.url, yaml_extra=(
        f"    second:\n      base-url: {second.url}\n      api-key: sk-second\n"
        "    dead:\n      base-url: http://127.0.0.1:9\n      api-key: sk-dead\n"
    ))
    models = {
        "m1": {"provider": "fake", "protocol": "OPENAI", "modelId": "one"},
        "m2": {"provider": "second", "protocol": "OPENAI", "modelId": "two"},
        "gone": {"provider": "dead", "protocol": "OPENAI", "modelId": "none"},
        "fallback": {"group": {"strategy": "fallback", "members": [{"modelKey": "m1"}, {"modelKey": "m2"}]}},
        "deadfirst": {"group": {"strategy": "fallback", "members": [{"modelKey": "gone"}, {"modelKey": "m2"}]}},
        "rr": {"group": {"strategy": "round-robin", "members": [{"modelKey": "m1"}, {"modelKey": "m2"}]}},
        "weighted": {"group": {"strategy": "weighted",
                               "members": [{"modelKey": "m1", "weight": 3}, {"modelKey": "m2", "weight": 1}]}},
        "limited": {"provider": "fake", "protocol": "OPENAI", "modelId": "one", "limits": {"rpm": 2}},
    }
    for key, body in models.items():
        (root / "models" / f"{key}.json").write_bytes(orjson.dumps({"key": key, **body}))
    for key in ("fallback", "deadfirst", "rr", "weighted", "limited", "m1"):
        write_agent(root, f"a_{key}", agent("ONESHOT", model=key, budget={"model": ONE}))
    write_agent(root, "react_m1", agent("REACT", model="m1", budget={"model": ONE},
                                        tools={"backends": ["city_datetime"], "frontends": [], "actions": []}))
    return root


async def ask(client: httpx.AsyncClient, gw: GatewayServer, agent_key: str) -> list[dict[str, Any]]:
    return await collect(client, f"{gw.url}/api/ap/query", {"agentKey": agent_key, "message": "hi"})


def answer(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "content.delta")


@pytest.mark.parametrize("failure", ["http_429", "http_503", "timeout"])
async def test_fallback_moves_on_when_a_member_fails_before_its_first_delta(
    deploy: Path, upstream: FakeUpstream, second: FakeUpstream, start_gateway: Callable[..., GatewayServer],
    client: httpx.AsyncClient, failure: str,
) -> None:
    gw = start_gateway()
    first: list[Any] = {"http_429": http_error_script(429, "slow down"), "http_503": http_error_script(503, "down"),
                        "timeout": [Stall()]}[failure]
    upstream.enqueue(first)
    second.enqueue(text_script(["from ", "two"]))
    events = await ask(client, gw, "a_fallback")
    assert events[-1]["type"] == "run.complete", events[-1]
    assert answer(events) == "from two"
    assert len(upstream.requests) == 1 and len(second.requests) == 1
    # the member that answered is named in the run's usage and in memory
    assert events[-1]["usage"]["modelKey"] == "m2"
    usage = [m["_usage"] for m in step_messages(chat_lines(deploy, events[0]["chatId"])) if "_usage" in m]
    assert usage[-1]["modelKey"] == "m2"


async def test_fallback_on_a_refused_connection(
    deploy: Path, second: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
) -> None:
    gw = start_gateway()
    second.enqueue(text_script(["alive"]))
    events = await ask(client, gw, "a_deadfirst")
    assert answer(events) == "alive" and events[-1]["usage"]["modelKey"] == "m2"


async def test_no_fallback_after_a_delta_was_forwarded(
    deploy: Path, upstream: FakeUpstream, second: FakeUpstream, start_gateway: Callable[..., GatewayServer],
    client: httpx.AsyncClient,
) -> None:
    gw = start_gateway()
    upstream.enqueue([Text("half an "), Disconnect()])
    second.enqueue(text_script(["never sent"]))
    events = await ask(client, gw, "a_fallback")
    assert answer(events) == "half an "  # what the client saw stays; nothing from another model is mixed in
    assert events[-1]["type"] == "run.error" and events[-1]["error"]["code"] == "upstream_disconnected"
    assert second.requests == []


async def test_round_robin_alternates_members(
    deploy: Path, upstream: FakeUpstream, second: FakeUpstream, start_gateway: Callable[..., GatewayServer],
    client: httpx.AsyncClient,
) -> None:
    gw = start_gateway()
    upstream.enqueue(text_script(["1"]), text_script(["3"]))
    second.enqueue(text_script(["2"]), text_script(["4"]))
    keys = [(await ask(client, gw, "a_rr"))[-1]["usage"]["modelKey"] for _ in range(4)]
    assert keys == ["m1", "m2", "m1", "m2"]


async def test_weighted_spreads_calls_by_weight(
    deploy: Path, upstream: FakeUpstream, second: FakeUpstream, start_gateway: Callable[..., GatewayServer],
    client: httpx.AsyncClient,
) -> None:
    gw = start_gateway()
    upstream.enqueue(*[text_script(["a"]) for _ in range(6)])
    second.enqueue(*[text_script(["b"]) for _ in range(2)])
    keys = [(await ask(client, gw, "a_weighted"))[-1]["usage"]["modelKey"] for _ in range(8)]
    assert keys.count("m1") == 6 and keys.count("m2") == 2
    assert keys[:4] == ["m1", "m1", "m2", "m1"]  # smooth: the light member is not starved to the end


async def test_breaker_opens_after_consecutive_failures_then_half_opens_and_closes(
    deploy: Path, upstream: FakeUpstream, second: FakeUpstream, start_gateway: Callable[..., GatewayServer],
    client: httpx.AsyncClient,
) -> None:
    gw = start_gateway(overrides={"agent": {"llm": {"breaker": {"failures": 2, "open-seconds": 0.3}}}})
    router = gw.gateway.services.router
    upstream.enqueue(http_error_script(503), http_error_script(503))
    second.enqueue(*[text_script(["ok"]) for _ in range(3)])
    for _ in range(2):
        assert (await ask(client, gw, "a_fallback"))[-1]["usage"]["modelKey"] == "m2"
    assert router.state("m1") == "open" and len(upstream.requests) == 2
    # open: m1 is skipped without a request
    assert (await ask(client, gw, "a_fallback"))[-1]["usage"]["modelKey"] == "m2"
    assert len(upstream.requests) == 2
    for _ in range(200):  # bounded wait for the open period to pass (no timing assertion)
        if router.state("m1") == "half-open":
            break
        await asyncio.sleep(0.01)
    assert router.state("m1") == "half-open"
    upstream.enqueue(text_script(["back"]))
    events = await ask(client, gw, "a_fallback")  # the trial call goes to m1 and succeeds
    assert answer(events) == "back" and events[-1]["usage"]["modelKey"] == "m1"
    assert router.state("m1") == "closed"


async def test_model_rpm_limit_is_a_429_with_retry_after_before_the_stream(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
) -> None:
    gw = start_gateway()
    upstream.enqueue(text_script(["1"]), text_script(["2"]))
    for _ in range(2):
        assert (await ask(client, gw, "a_limited"))[-1]["type"] == "run.complete"
    refused = await client.post(f"{gw.url}/api/ap/query", json={"agentKey": "a_limited", "message": "third"})
    assert refused.status_code == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.json()["code"] == 4291 and "limits.rpm" in refused.json()["msg"]
    assert len(upstream.requests) == 2


async def test_user_rpm_between_model_calls_ends_the_run_with_rate_limited(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
) -> None:
    gw = start_gateway(overrides={"agent": {"limits": {"user": {"rpm": 1}}}})
    upstream.enqueue(call("c1", "city_datetime", {"city": "Paris"}), text_script(["never"]))
    events = await ask(client, gw, "react_m1")  # the second model call of the run is over the limit
    assert events[-1]["type"] == "run.error" and events[-1]["error"]["code"] == "rate_limited"
    assert "agent.limits.user.rpm" in events[-1]["error"]["message"]
    assert len(upstream.requests) == 1


async def test_user_daily_tokens_limit(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
) -> None:
    gw = start_gateway(overrides={"agent": {"limits": {"user": {"daily-tokens": 10}}}})
    upstream.enqueue(text_script(["big"], usage=(8, 4)))
    assert (await ask(client, gw, "a_m1"))[-1]["type"] == "run.complete"
    refused = await client.post(f"{gw.url}/api/ap/query", json={"agentKey": "a_m1", "message": "more"})
    assert refused.status_code == 429 and "daily-tokens" in refused.json()["msg"]
    assert int(refused.headers["Retry-After"]) >= 1


@pytest.mark.parametrize("how", ["stream_error", "interrupt"])
async def test_attack_cancelling_a_run_after_the_prompt_was_paid_for_still_counts_its_tokens(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    how: str,
) -> None:
    """Anthropic reports the prompt's tokens first (``message_start``). A call that then failed or
    was interrupted had used them all the same: they were in the usage ledger, but not in the
    run's usage nor the user's token limits, so a user who interrupted each long-context run
    before its end was never held by ``daily-tokens``."""
    (deploy / "models" / "claude.json").write_bytes(orjson.dumps(
        {"key": "claude", "provider": "fake", "protocol": "ANTHROPIC", "modelId": "c"}))
    write_agent(deploy, "a_claude", agent("ONESHOT", model="claude", budget={"model": ONE}))
    gw = start_gateway(overrides={"agent": {"limits": {"user": {"daily-tokens": 10}}}})
    end = StreamError("the model fell over") if how == "stream_error" else Stall()
    upstream.enqueue([Usage(12, 0), Text("big"), end])
    events: list[dict[str, Any]] = []
    async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "a_claude", "message": "hi"}):
        events.append(event)
        if event["type"] == "content.delta" and how == "interrupt":
            await client.post(f"{gw.url}/api/ap/interrupt", json={"runId": events[0]["requestId"]})
    assert events[-1]["type"] == ("run.error" if how == "stream_error" else "run.cancel"), events[-1]
    refused = await client.post(f"{gw.url}/api/ap/query", json={"agentKey": "a_claude", "message": "more"})
    assert refused.status_code == 429 and "daily-tokens" in refused.json()["msg"]


@pytest.mark.parametrize(("body", "reason"), [
    ({"group": {"strategy": "fallback", "members": []}}, "members"),
    ({"group": {"strategy": "random", "members": [{"modelKey": "m1"}]}}, "strategy"),
    ({"group": {"members": [{"modelKey": "nope"}]}}, "unknown model 'nope'"),
    ({"group": {"members": [{"modelKey": "fallback"}]}}, "groups do not nest"),
    ({"group": {"members": [{"modelKey": "m1"}, {"modelKey": "m1"}]}}, "listed twice"),
    ({"group": {"members": [{"modelKey": "m1", "weight": 0}]}}, "weight"),
    ({"group": {"members": [{"modelKey": "m1"}]}, "provider": "fake"}, "provider"),
], ids=["empty", "bad_strategy", "unknown_member", "nested", "duplicate", "zero_weight", "mixed_fields"])
async def test_bad_group_files_are_rejected_with_a_reason(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    body: dict[str, Any], reason: str,
) -> None:
    (deploy / "models" / "broken.json").write_bytes(orjson.dumps({"key": "broken", **body}))
    gw = start_gateway()
    rejections = (await client.get(f"{gw.url}/api/ap/catalog/rejections")).json()["data"]
    found = [r for r in rejections if r["file"].endswith("broken.json")]
    assert found and reason in found[0]["reason"], rejections
    # the other models and the agents that use them still load
    listed = {a["key"] for a in (await client.get(f"{gw.url}/api/ap/agents")).json()["data"]}
    assert {"a_fallback", "a_rr", "a_weighted"} <= listed
