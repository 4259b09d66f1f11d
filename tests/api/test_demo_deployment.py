"""The README promise: `agw serve` in a fresh checkout serves the demo agents on the built-in local model.

Runs the real CLI (`python -m app serve`) as a subprocess on a copy of the repository's own
deployment files, with no API key, and drives every demo agent to `run.complete`; the embedded
demo model follows the question (the city, the theme, the plan) and shows the weather card.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tests.support.deployment import REPO
from tests.support.sse import collect, stream_events
from tests.support.server import wait_healthy

DEMO_AGENTS = ["demoPlain", "demoThinking", "demoReact", "demoPlanExecute", "demoConfirm", "demoAction",
               "demoGraphWeather", "demoGraphReview"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def demo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("checkout")
    for folder in ("agents", "tools", "skills", "viewports"):
        shutil.copytree(REPO / folder, root / folder)
    shutil.copy(REPO / "application.yml", root / "application.yml")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "SERVER_", "MEMORY_"))}
    env["SERVER_PORT"] = str(port)
    process = subprocess.Popen([sys.executable, "-m", "app", "serve"], cwd=root, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    if not wait_healthy(url, process):
        process.kill()
        _, err = process.communicate()
        raise RuntimeError(f"agw serve did not start: {err.decode()[-2000:]}")
    yield url
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_agents_lists_the_demo_agents(demo_server: str) -> None:
    envelope = httpx.get(f"{demo_server}/api/ap/agents").json()
    assert envelope["code"] == 0
    keys = {a["key"] for a in envelope["data"]}
    assert set(DEMO_AGENTS) <= keys
    modes = {a["mode"] for a in envelope["data"]}
    assert modes == {"ONESHOT", "REACT", "PLAN_EXECUTE", "GRAPH"}
    assert httpx.get(f"{demo_server}/api/ap/catalog/rejections").json()["data"] == []


@pytest.mark.parametrize("agent_key", DEMO_AGENTS)
async def test_demo_agent_streams_to_completion(demo_server: str, agent_key: str) -> None:
    seen: list[str] = []
    async with httpx.AsyncClient(timeout=60) as client:
        body = {"agentKey": agent_key, "message": "What is the weather in Shanghai today?"}
        async for event in stream_events(client, f"{demo_server}/api/ap/query", body):
            seen.append(event["type"])
            if event["type"] == "tool.start" and event.get("toolType"):
                # a frontend tool: answer it like the browser would
                answer = {"runId": event["runId"], "toolId": event["toolId"], "params": {"confirmed": True}}
                submitted = (await client.post(f"{demo_server}/api/ap/submit", json=answer)).json()["data"]
                assert submitted["status"] == "accepted"
    assert seen[-1] == "run.complete", seen
    assert "content.delta" in seen
    if agent_key == "demoPlanExecute":
        assert {"plan.create", "task.start", "task.complete"} <= set(seen)
    if agent_key == "demoThinking":
        assert "reasoning.delta" in seen
    if agent_key == "demoAction":
        assert "action.start" in seen
    if agent_key == "demoConfirm":
        assert "request.submit" in seen


async def _run(demo_server: str, agent_key: str, message: str) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(timeout=60) as client:
        events = await collect(client, f"{demo_server}/api/ap/query", {"agentKey": agent_key, "message": message})
    assert events[-1]["type"] == "run.complete", events[-1]
    return events


def _tool_calls(events: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], Any]]:
    """(tool name, arguments, result) of each backend tool call, in call order."""
    names = {e["toolId"]: e["toolName"] for e in events if e["type"] == "tool.start"}
    args: dict[str, str] = {}
    for event in events:
        if event["type"] == "tool.args":
            args[event["toolId"]] = args.get(event["toolId"], "") + event["delta"]
    results = {e["toolId"]: e["result"] for e in events if e["type"] == "tool.result"}
    return [(names[tid], orjson.loads(args.get(tid) or "{}"), results.get(tid)) for tid in names]


def _answer(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "content.delta")


async def test_weather_demo_follows_the_city_and_shows_the_card(demo_server: str) -> None:
    """No API key, no upstream: the demo asks both tools about Tokyo and answers with their results."""
    events = await _run(demo_server, "demoReact", "What's the weather in Tokyo?")
    calls = _tool_calls(events)
    assert [(name, args["city"]) for name, args, _ in calls] == [("city_datetime", "Tokyo"), ("mock_city_weather", "Tokyo")]
    weather = calls[1][2]
    assert weather["city"] == "Tokyo" and weather["mock"] is True
    answer = _answer(events)
    assert f"Weather in Tokyo on {weather['date']}: {weather['weatherEn']}, {weather['temperatureC']}°C" in answer
    assert "In Tokyo it is " in answer
    assert f"```viewport\ntype=html, key=show_weather_card\n{orjson.dumps(weather).decode()}\n```" in answer


async def test_action_demo_switches_to_the_theme_asked_for(demo_server: str) -> None:
    for message, theme in (("switch to dark", "dark"), ("back to the light theme please", "light")):
        events = await _run(demo_server, "demoAction", message)
        assert [e["param"] for e in events if e["type"] == "action.param"] == [{"theme": theme}]
        assert f"theme={theme}" in _answer(events)


async def test_plan_demo_plans_for_the_city_asked_about(demo_server: str) -> None:
    events = await _run(demo_server, "demoPlanExecute", "Plan an afternoon in Paris")
    plan = next(e["plan"] for e in events if e["type"] == "plan.create")
    assert [task["description"] for task in plan] == [
        "Look up the current date and time in Paris with city_datetime",
        "Check the weather in Paris with mock_city_weather",
    ]
    assert [(name, args["city"]) for name, args, _ in _tool_calls(events) if not name.startswith("_")] == [
        ("city_datetime", "Paris"), ("mock_city_weather", "Paris")]
    assert "Weather in Paris on " in _answer(events)


async def test_demo_tool_descriptions_are_english(demo_server: str) -> None:
    events = await _run(demo_server, "demoReact", "What's the weather in Berlin?")
    descriptions = [e["description"] for e in events if e["type"] == "tool.start"]
    assert descriptions and all(d.isascii() for d in descriptions), descriptions


# --------------------------------------------------------------------------- GRAPH demos (SPEC §21)


async def _run_confirming(demo_server: str, agent_key: str, message: str) -> list[dict[str, Any]]:
    """Stream a query; answer every frontend tool like the browser would (Publish)."""
    events: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=60) as client:
        async for event in stream_events(client, f"{demo_server}/api/ap/query", {"agentKey": agent_key, "message": message}):
            events.append(event)
            if event["type"] == "tool.start" and event.get("toolType"):
                answer = {"runId": event["runId"], "toolId": event["toolId"],
                          "params": {"confirmed": True, "answer": "Publish"}}
                assert (await client.post(f"{demo_server}/api/ap/submit", json=answer)).json()["data"]["accepted"]
    assert events[-1]["type"] == "run.complete", events[-1]
    return events


async def test_graph_weather_demo_finds_the_city_fetches_and_writes_with_the_card(demo_server: str) -> None:
    events = await _run(demo_server, "demoGraphWeather", "What's the weather in Tokyo?")
    assert [e["taskId"] for e in events if e["type"] == "task.start"] == ["find_place", "fetch_weather", "write_note"]
    assert [e["taskId"] for e in events if e["type"] == "task.complete"] == ["find_place", "fetch_weather", "write_note"]
    ((name, args, weather),) = _tool_calls(events)
    assert name == "mock_city_weather" and args["city"] == "Tokyo" and weather["city"] == "Tokyo"
    answer_id = [e for e in events if e["type"] == "content.start"][-1]
    assert "taskId" not in answer_id  # the workflow's answer streams outside its tasks
    answer = "".join(e["delta"] for e in events if e["type"] == "content.delta" and e["contentId"] == answer_id["contentId"])
    assert answer.startswith(f"Weather in Tokyo on {weather['date']}: {weather['weatherEn']}, {weather['temperatureC']}°C")
    assert answer.endswith(f"```viewport\ntype=html, key=show_weather_card\n{orjson.dumps(weather).decode()}\n```")


async def test_graph_review_demo_revises_until_the_review_passes_then_asks(demo_server: str) -> None:
    events = await _run_confirming(demo_server, "demoGraphReview", "the history of tea")
    assert [e["taskId"] for e in events if e["type"] == "task.start"] == [
        "write", "review", "write#2", "review#2", "approve"]
    verdicts = [orjson.loads("".join(e["delta"] for e in events if e["type"] == "content.delta"
                                     and e["contentId"] == start["contentId"]))
                for start in events if start["type"] == "content.start" and str(start.get("taskId")).startswith("review")]
    assert [v["passed"] for v in verdicts] == [False, True]
    assert "request.submit" in [e["type"] for e in events]
    answer_start = [e for e in events if e["type"] == "content.start"][-1]
    answer = "".join(e["delta"] for e in events if e["type"] == "content.delta"
                     and e["contentId"] == answer_start["contentId"])
    assert answer.startswith("The history of tea is worth a closer look")
    assert "For example" in answer and answer.endswith("(Reviewed in 2 round(s).)")
