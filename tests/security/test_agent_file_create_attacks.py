"""``agent_file_create`` attacks through the real gateway over HTTP (SPEC §14 last paragraph).

A model that may call ``agent_file_create`` must not be able to replace an agent other
people use, nor mint an agent with more power (tools, skills) than its own agent has.
Each test scripts the model's tool call on the fake upstream, runs the calling agent
with a real query, and reads the ``tool.result`` the gateway streamed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.engine.helpers import call, first, tool_names
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect

#: the calling agent: it may create agents, tell the time, and use one skill
CREATOR_TOOLS = {"backends": ["agent_file_create", "city_datetime"], "frontends": [], "actions": []}
CREATOR_SKILLS = ["math_basic"]


def _deploy_creator(deploy: Path) -> None:
    write_agent(deploy, "creator", agent("REACT", tools=CREATOR_TOOLS, skills=CREATOR_SKILLS))


async def _create(gw: GatewayServer, upstream: FakeUpstream, client: httpx.AsyncClient,
                  args: dict[str, Any]) -> Any:
    """Have the model of ``creator`` call ``agent_file_create(args)``; the tool's result."""
    upstream.enqueue(call("c1", "agent_file_create", args), text_script(["done"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "creator", "message": "make an agent"})
    assert events[-1]["type"] == "run.complete", events[-1]
    return first(events, "tool.result")["result"]


def _refused(result: Any, *fragments: str) -> str:
    assert isinstance(result, dict) and result.get("ok") is False, result
    error = str(result["error"])
    for fragment in fragments:
        assert fragment in error, error
    return error


async def _agent_keys(gw: GatewayServer, client: httpx.AsyncClient) -> set[str]:
    listed = (await client.get(f"{gw.url}/api/ap/agents")).json()["data"]
    return {item["key"] for item in listed}


def _agent_files(deploy: Path) -> list[str]:
    return sorted(path.name for path in (deploy / "agents").iterdir())


async def test_attack_agent_file_create_overwrites_existing_agent(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    _deploy_creator(deploy)
    victim = write_agent(deploy, "victim", agent("ONESHOT", name="the real victim"))
    original = victim.read_bytes()
    gw = start_gateway()
    result = await _create(gw, upstream, client, {
        "key": "victim", "name": "hijacked", "systemPrompt": "Leak everything.",
    })
    _refused(result, "'victim' already exists", "creates only new agents")
    assert victim.read_bytes() == original
    assert _agent_files(deploy) == ["creator.json", "victim.json"]  # no temp file left behind
    listed = (await client.get(f"{gw.url}/api/ap/agents")).json()["data"]
    assert {item["key"]: item["name"] for item in listed}["victim"] == "the real victim"


async def test_attack_agent_file_create_overwrites_case_variant_key(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """``Victim`` is ``victim.json`` on a case-insensitive file system: refused everywhere."""
    _deploy_creator(deploy)
    victim = write_agent(deploy, "victim", agent("ONESHOT"))
    original = victim.read_bytes()
    gw = start_gateway()
    result = await _create(gw, upstream, client, {"key": "Victim", "systemPrompt": "Leak everything."})
    _refused(result, "'Victim' already exists", "'victim'")
    assert victim.read_bytes() == original
    assert _agent_files(deploy) == ["creator.json", "victim.json"]


@pytest.mark.parametrize(
    "tool_config",
    [
        {"toolConfig": {"backends": ["_bash_"]}},
        {"toolConfig": {"backends": ["city_datetime", "_bash_", "_skill_run_script_"]}},
        {"mode": "PLAN_EXECUTE", "planExecute": {"plan": {"systemPrompt": "Plan."},
                                                 "execute": {"systemPrompt": "Run.",
                                                             "toolConfig": {"backends": ["_bash_"]}}}},
    ],
    ids=["top-level", "among-allowed", "execute-stage"],
)
async def test_attack_agent_file_create_mints_bash_agent(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    tool_config: dict[str, Any],
) -> None:
    _deploy_creator(deploy)
    gw = start_gateway()
    result = await _create(gw, upstream, client, {"key": "basher", "mode": "REACT", "systemPrompt": "x",
                                                  **tool_config})
    error = _refused(result, "the calling agent 'creator' does not have", "_bash_")
    assert "city_datetime" not in error  # only the tools the caller lacks are named
    assert _agent_files(deploy) == ["creator.json"]


async def test_attack_agent_file_create_grants_skill_caller_lacks(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    _deploy_creator(deploy)
    gw = start_gateway()
    result = await _create(gw, upstream, client, {
        "key": "skilled", "skills": ["math_basic", "slack-gif-creator"], "systemPrompt": "x",
    })
    _refused(result, "skills the calling agent 'creator' does not have: slack-gif-creator")
    assert _agent_files(deploy) == ["creator.json"]


@pytest.mark.parametrize("key", ["../x", "..", "agents/../../x", "x/../../x", "/ABSOLUTE/x", "..\\x", ".x"])
async def test_attack_agent_file_create_path_trick_key(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    tmp_path: Path, key: str,
) -> None:
    _deploy_creator(deploy)
    gw = start_gateway()
    key = key.replace("/ABSOLUTE", str(tmp_path))
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.json") if "chats" not in p.parts)
    result = await _create(gw, upstream, client, {"key": key, "systemPrompt": "x"})
    _refused(result, "invalid agent key")
    after = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.json") if "chats" not in p.parts)
    assert after == before
    assert _agent_files(deploy) == ["creator.json"]


async def test_agent_file_create_with_a_subset_of_the_callers_tools_goes_live(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    _deploy_creator(deploy)
    gw = start_gateway()
    result = await _create(gw, upstream, client, {
        "key": "minted", "mode": "REACT", "systemPrompt": "You are minted.", "modelKey": "fake-openai",
        "toolConfig": {"backends": ["city_datetime"]}, "skills": CREATOR_SKILLS,
    })
    assert result == {"ok": True, "key": "minted", "path": "agents/minted.json", "created": True}

    async def live() -> None:  # hot reload: poll until it is listed (the bound only turns a hang into a failure)
        while "minted" not in await _agent_keys(gw, client):
            await asyncio.sleep(0.025)

    await asyncio.wait_for(live(), timeout=20)
    listed = {item["key"]: item for item in (await client.get(f"{gw.url}/api/ap/agents")).json()["data"]}
    assert listed["minted"]["tools"] == ["city_datetime"] and listed["minted"]["mode"] == "REACT"

    upstream.enqueue(text_script(["hello from minted"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "minted", "message": "hi"})
    assert events[-1]["type"] == "run.complete"
    body = upstream.requests[-1].body
    assert body["messages"][0]["content"].startswith("You are minted.")
    assert tool_names(body) == ["city_datetime"]

    again = await _create(gw, upstream, client, {"key": "minted", "systemPrompt": "Replaced."})
    _refused(again, "'minted' already exists")


async def test_agent_over_the_catalogs_file_limit_is_refused_and_its_key_stays_free(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """A prompt past the 1 MiB the catalog reads from a definition file was written all the same:
    the tool answered ``created``, the catalog rejected the file, and the key was taken for good."""
    _deploy_creator(deploy)
    gw = start_gateway()
    result = await _create(gw, upstream, client, {"key": "huge", "systemPrompt": "p" * (1100 * 1024)})
    _refused(result, "over the 1048576 bytes (1 MiB) the catalog reads", "shorten the prompts")
    assert _agent_files(deploy) == ["creator.json"]

    again = await _create(gw, upstream, client, {"key": "huge", "systemPrompt": "Short now."})
    assert again == {"ok": True, "key": "huge", "path": "agents/huge.json", "created": True}

    async def live() -> None:  # hot reload: poll until it is listed (the bound only turns a hang into a failure)
        while "huge" not in await _agent_keys(gw, client):
            await asyncio.sleep(0.025)

    await asyncio.wait_for(live(), timeout=20)


@pytest.mark.parametrize(
    ("budget", "named"),
    [
        ({"tool": {"maxCalls": 1_000_000_000}}, "budget.tool.maxCalls 1000000000 > 40"),
        ({"runTimeoutMs": 86_400_000, "model": {"maxCalls": 31, "retryCount": 9}},
         "budget.runTimeoutMs 86400000 > 300000, budget.model.maxCalls 31 > 30, budget.model.retryCount 9 > 0"),
    ],
    ids=["tool-calls", "time-and-model-calls"],
)
async def test_attack_agent_file_create_mints_agent_with_a_larger_budget(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    budget: dict[str, Any], named: str,
) -> None:
    """The creator runs under the default budget; the agent it makes may not run, and spend, more."""
    _deploy_creator(deploy)
    gw = start_gateway()
    result = await _create(gw, upstream, client, {"key": "spender", "systemPrompt": "x", "budget": budget})
    _refused(result, "larger budget than the calling agent 'creator'", named)
    assert _agent_files(deploy) == ["creator.json"]

    within = await _create(gw, upstream, client, {"key": "thrifty", "systemPrompt": "x",
                                                  "budget": {"runTimeoutMs": 300_000, "tool": {"maxCalls": 5}}})
    assert within == {"ok": True, "key": "thrifty", "path": "agents/thrifty.json", "created": True}
