"""Hot reload seen through the API of a running gateway (SPEC §3)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect


async def _eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll until ``check`` returns a truthy value; the bound only turns a hang into a failure."""
    for _ in range(400):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.025)
    raise AssertionError(f"never happened: {what}")


async def test_agents_appear_break_and_disappear_live(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "stable", agent("ONESHOT"))
    gw = start_gateway()

    async def keys() -> set[str]:
        return {a["key"] for a in (await client.get(f"{gw.url}/api/ap/agents")).json()["data"]}

    path = write_agent(deploy, "fresh", agent("ONESHOT"))
    await _eventually(lambda: _has(keys, "fresh"), "new agent listed")

    path.write_text('{"name": "broken", "mode": "ONESHOT", "plain": {"systemPrompt": "x"}, "tools": []}')
    (deploy / "agents" / "garbage.json").write_text("{ not json at all")

    async def rejected() -> list[dict[str, Any]]:
        data = (await client.get(f"{gw.url}/api/ap/catalog/rejections")).json()["data"]
        files = {Path(r["file"]).name for r in data}
        return data if {"fresh.json", "garbage.json"} <= files else []

    rejections = await _eventually(rejected, "broken files rejected")
    by_file = {Path(r["file"]).name: r["reason"] for r in rejections}
    assert "tools" in by_file["fresh.json"]  # the legacy field is named
    assert "line 1" in by_file["garbage.json"]
    assert "fresh" not in await keys() and "stable" in await keys()
    upstream.enqueue(text_script(["still ", "working"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "stable", "message": "hi"})
    assert events[-1]["type"] == "run.complete"

    path.unlink()
    (deploy / "agents" / "garbage.json").unlink()

    async def clean() -> bool:
        return (await client.get(f"{gw.url}/api/ap/catalog/rejections")).json()["data"] == []

    await _eventually(clean, "rejections cleared after delete")
    assert await keys() == {"stable"}


async def test_model_change_reloads_its_agents(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "user", agent("ONESHOT"))
    gw = start_gateway()
    model_file = deploy / "models" / "fake-openai.json"
    model = orjson.loads(model_file.read_bytes())
    model["modelId"] = "fake-gpt-v2"
    model_file.write_bytes(orjson.dumps(model))

    async def reloaded() -> bool:
        detail = (await client.get(f"{gw.url}/api/ap/agent", params={"agentKey": "user"})).json()["data"]
        return "fake-gpt-v2" in orjson.dumps(detail).decode()

    await _eventually(reloaded, "agent picked up the new model id")
    upstream.enqueue(text_script(["ok"]))
    await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "user", "message": "hi"})
    assert upstream.requests[-1].body["model"] == "fake-gpt-v2"


async def _has(keys: Callable[[], Awaitable[set[str]]], key: str) -> bool:
    return key in await keys()


async def test_gateway_state_in_data_folder_is_never_served(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    state = deploy / "data" / ".agw"
    state.mkdir(parents=True)
    (state / "schedules.json").write_text('{"version": 1, "jobs": []}')
    (deploy / "data" / "ok.txt").write_text("public")
    gw = start_gateway()
    assert (await client.get(f"{gw.url}/api/ap/data", params={"file": "ok.txt"})).text == "public"
    for name in (".agw/schedules.json", ".agw/credentials.json", "sub/.hidden"):
        response = await client.get(f"{gw.url}/api/ap/data", params={"file": name})
        assert response.status_code == 404 and response.json()["code"] > 0
