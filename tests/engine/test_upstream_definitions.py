"""Every upstream agent definition runs unchanged, end to end, over real HTTP (SPEC intro, §3).

For each ``agents/*.json`` of the upstream definitions there is one scenario: the
scripted upstream answers the way the real model would, exercising the agent's tools,
and the run must reach ``run.complete``. The deployment is built by
``tests.engine.upstream_deployment``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import parallel_tool_calls_script, text_script
from tests.engine.helpers import call, deltas, first, of_type, tool_message, tool_names
from tests.engine.upstream_deployment import UPSTREAM_AGENTS, make_upstream_deployment
from tests.support.server import GatewayServer
from tests.support.sse import collect, stream_events, types

HANG = 60


@dataclass(frozen=True, slots=True)
class Env:
    """What a scenario works with: the gateway, its upstream, a client and the deployment folder."""

    gw: GatewayServer
    upstream: FakeUpstream
    client: httpx.AsyncClient
    root: Path

    async def run(self, agent_key: str, message: str) -> list[dict[str, Any]]:
        events = await asyncio.wait_for(
            collect(self.client, f"{self.gw.url}/api/ap/query", {"agentKey": agent_key, "message": message}),
            timeout=HANG,
        )
        assert events[-1]["type"] == "run.complete", events[-1]
        return events

    def bodies(self) -> list[dict[str, Any]]:
        return [request.body for request in self.upstream.requests]


Scenario = Callable[[Env], Awaitable[None]]
SCENARIOS: dict[str, Scenario] = {}


def scenario(agent_key: str) -> Callable[[Scenario], Scenario]:
    def register(fn: Scenario) -> Scenario:
        SCENARIOS[agent_key] = fn
        return fn
    return register


def results(events: list[dict[str, Any]]) -> dict[str, Any]:
    return {e["toolId"]: e["result"] for e in of_type(events, "tool.result")}


@scenario("demoModePlain")
async def _plain(env: Env) -> None:
    env.upstream.enqueue(text_script(["先做A，", "再做B。"]))
    events = await env.run("demoModePlain", "给我一个建议")
    assert deltas(events, "content.delta") == "先做A，再做B。"
    body = env.bodies()[0]
    # qwen3-max is not a reasoner and reasoning is off: no thinking switch is sent at all
    assert body["model"] == "qwen3-max" and "enable_thinking" not in body and "tools" not in body
    assert env.upstream.requests[0].path == "/v1/chat/completions"
    assert env.upstream.requests[0].headers["authorization"] == "Bearer sk-bailian-test-key"


@scenario("demoModeThinking")
async def _thinking(env: Env) -> None:
    env.upstream.enqueue(text_script(["结论。"], reasoning=["先", "推理"]))
    events = await env.run("demoModeThinking", "分析一下")
    assert deltas(events, "reasoning.delta") == "先推理" and deltas(events, "content.delta") == "结论。"
    body = env.bodies()[0]
    assert body["enable_thinking"] is True and body["reasoning_effort"] == "high"


@scenario("demoModePlainTooling")
async def _plain_tooling(env: Env) -> None:
    env.upstream.enqueue(
        parallel_tool_calls_script([
            ("c1", "city_datetime", ['{"city":"上海"}']),
            ("c2", "mock_city_weather", ['{"city":"上海","date":"2026-02-13"}']),
            ("c3", "mock_sensitive_data_detector", ['{"text":"我的手机号是13800138000"}']),
        ]),
        text_script(["上海今天晴。"]),
    )
    events = await env.run("demoModePlainTooling", "上海天气，顺便检查这段文字")
    found = results(events)
    assert found["c1"]["city"] == "上海" and found["c2"]["date"] == "2026-02-13"
    assert all(not (isinstance(r, dict) and r.get("ok") is False) for r in found.values()), found
    assert set(tool_names(env.bodies()[0])) == {"city_datetime", "mock_city_weather", "mock_sensitive_data_detector"}
    assert env.bodies()[1]["tool_choice"] == "none"


@scenario("demoDataViewer")
async def _data_viewer(env: Env) -> None:
    answer = "![示例照片](sample_photo.jpg)\n[下载](/api/ap/data?file=sample_report.pdf&download=true)"
    env.upstream.enqueue(text_script([answer[:20], answer[20:]]))
    events = await env.run("demoDataViewer", "看看示例照片")
    assert deltas(events, "content.delta") == answer
    system = env.bodies()[0]["messages"][0]["content"]
    assert system.startswith("你是文件展示助手。") and "| sample_photo.jpg | 图片 | 示例照片 |" in system
    assert "tools" not in env.bodies()[0]


@scenario("demoAction")
async def _action(env: Env) -> None:
    env.upstream.enqueue(
        parallel_tool_calls_script([
            ("c1", "switch_theme", ['{"theme":', '"dark"}']),
            ("c2", "launch_fireworks", ['{"durationMs":3000}']),
            ("c3", "show_modal", ['{"title":"完成","content":"已切换"}']),
        ]),
        text_script(["已切换暗色主题并放烟花。"]),
    )
    events = await env.run("demoAction", "切换暗色主题，放个烟花，再弹个框")
    assert [e["actionName"] for e in of_type(events, "action.start")] == ["switch_theme", "launch_fireworks", "show_modal"]
    assert [e["result"] for e in of_type(events, "action.result")] == ["OK", "OK", "OK"]
    assert not of_type(events, "tool.start")
    second = env.bodies()[1]
    assert [tool_message(second, c)["content"] for c in ("c1", "c2", "c3")] == ["OK", "OK", "OK"]


@scenario("demoMathSkill")
async def _math_skill(env: Env) -> None:
    args = {"skill": "math_basic", "script": "scripts/calc.py", "args": ["--op", "div", "--a", "22", "--b", "7",
                                                                          "--precision", "3"]}
    env.upstream.enqueue(call("c1", "_skill_run_script_", args), text_script(["22/7 ≈ 3.143"]))
    events = await env.run("demoMathSkill", "22 除以 7")
    result = first(events, "tool.result")["result"]
    assert result["exitCode"] == 0
    assert orjson.loads(result["stdout"])["result"] == pytest.approx(3.143)
    system = env.bodies()[0]["messages"][0]["content"]
    assert all(skill in system for skill in ("math_basic", "math_stats", "text_utils"))
    second = env.bodies()[1]["messages"]
    assert second[-1]["role"] == "user" and "math_basic" in second[-1]["content"]  # disclosed after first use


@scenario("demoViewport")
async def _viewport(env: Env) -> None:
    env.upstream.enqueue(call("c1", "mock_todo_tasks", {"owner": "张三"}), text_script(["placeholder"]))
    # the viewport answer must carry the tool's JSON: a first run learns it, a second one answers with it
    events = await env.run("demoViewport", "张三的待办")
    todo = first(events, "tool.result")["result"]
    assert not (isinstance(todo, dict) and todo.get("ok") is False)
    block = "这是待办：\n```viewport\ntype=html, key=show_todo_card\n" + orjson.dumps(todo).decode() + "\n```\n"
    env.upstream.enqueue(text_script([block[:25], block[25:60], block[60:]]))
    again = await asyncio.wait_for(collect(env.client, f"{env.gw.url}/api/ap/query",
                                           {"chatId": events[0]["chatId"], "message": "再来一次"}), timeout=HANG)
    assert deltas(again, "content.delta") == block  # passed through unchanged
    assert "show_todo_card" in env.bodies()[0]["messages"][0]["content"]  # the after-call hint is in the prompt
    history = (await env.client.get(f"{env.gw.url}/api/ap/chat", params={"chatId": events[0]["chatId"]})).json()
    assert of_type(history["data"]["events"], "content.snapshot")[-1]["text"] == block
    viewport = await env.client.get(f"{env.gw.url}/api/ap/viewport", params={"viewportKey": "show_todo_card"})
    assert viewport.status_code == 200 and "html" in viewport.json()["data"]


@scenario("demoModeReact")
async def _react(env: Env) -> None:
    env.upstream.enqueue(
        # tools run in the chat's sandbox workspace (SPEC §14): the deployment is reached by its path
        call("c1", "_bash_", {"command": f"ls {env.root}/agents"}, text=("先看看目录。",)),
        call("c2", "_bash_", {"command": f"rm -rf {env.root}/agents"}),
        call("c3", "mock_city_weather", {"city": "北京", "date": "2026-03-01"}),
        text_script(["完成。"]),
    )
    events = await env.run("demoModeReact", "列出 agents 目录，然后查北京天气")
    found = results(events)
    assert found["c1"]["exitCode"] == 0 and "demoModeReact.json" in found["c1"]["stdout"]
    assert found["c2"]["ok"] is False  # rm is not whitelisted: an error result, the run goes on
    assert (env.root / "agents" / "demoModeReact.json").exists()
    assert found["c3"]["city"] == "北京"
    assert env.bodies()[0]["enable_thinking"] is True and env.bodies()[0]["model"] == "qwen3.5-plus"


@scenario("demoConfirmDialog")
async def _confirm(env: Env) -> None:
    env.upstream.enqueue(
        call("c1", "confirm_dialog", {"question": "去哪个城市？", "options": ["上海", "北京"], "allowFreeText": False},
             text=("需要先确认城市。",)),
        call("c2", "mock_city_weather", {"city": "上海", "date": "2026-02-13"}),
        text_script(["您选择了上海，天气已查询。"]),
    )
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in stream_events(env.client, f"{env.gw.url}/api/ap/query",
                                         {"agentKey": "demoConfirmDialog", "message": "查天气"}):
            events.append(event)
            if event["type"] == "tool.start" and event.get("toolType"):
                response = await env.client.post(f"{env.gw.url}/api/ap/submit", json={
                    "runId": event["runId"], "toolId": event["toolId"], "params": {"selected": "上海"}})
                assert response.json()["data"]["status"] == "accepted"

    await asyncio.wait_for(consume(), timeout=HANG)
    assert events[-1]["type"] == "run.complete"
    start = first(events, "tool.start")
    assert start["toolKey"] == "confirm_dialog" and start["toolType"] == "html"
    assert first(events, "request.submit")["payload"] == {"selected": "上海"}
    assert orjson.loads(tool_message(env.bodies()[1], "c1")["content"]) == {"selected": "上海"}
    assert "把需求问清楚" in env.bodies()[0]["messages"][0]["content"]  # triple-quoted prompt loaded


@scenario("demoCreateGif")
async def _create_gif(env: Env) -> None:
    code = "import json\nprint(json.dumps({'frames': 12, 'size': [128, 128]}))\n"
    env.upstream.enqueue(
        call("c1", "_bash_", {"command": f"ls {env.root}/skills/slack-gif-creator"}),
        call("c2", "_skill_run_script_", {"skill": "slack-gif-creator", "pythonCode": code, "args": [],
                                          "timeoutMs": 20000}),
        text_script(["已确认信息：12 帧，128x128。"]),
    )
    events = await env.run("demoCreateGif", "做一个挥手的 GIF")
    found = results(events)
    assert found["c1"]["exitCode"] == 0 and "SKILL.md" in found["c1"]["stdout"]
    assert found["c2"]["exitCode"] == 0 and orjson.loads(found["c2"]["stdout"]) == {"frames": 12, "size": [128, 128]}
    third = env.bodies()[2]["messages"]
    assert third[-1]["role"] == "user" and "slack-gif-creator" in third[-1]["content"]


@scenario("demoAgentCreator")
async def _agent_creator(env: Env) -> None:
    new_agent = {"key": "demoCreatedByTest", "name": "测试创建", "mode": "ONESHOT",
                 "modelKey": "bailian-qwen3-max", "systemPrompt": "你是被创建的助手。"}
    env.upstream.enqueue(
        call("p1", "_plan_add_tasks_", {"tasks": [{"description": "写入 agent 配置"}]}),
        call("e1", "agent_file_create", new_agent, text=("写入配置。",)),
        call("e2", "_plan_update_task_", {"taskId": "task_1", "status": "completed"}),
        text_script(["已创建 demoCreatedByTest。"]),
    )
    events = await env.run("demoAgentCreator", "创建一个叫 demoCreatedByTest 的单轮助手")
    assert not (isinstance(r := first(events, "tool.result")["result"], dict) and r.get("ok") is False)
    created = results(events)["e1"]
    assert not (isinstance(created, dict) and created.get("ok") is False), created
    assert (env.root / "agents" / "demoCreatedByTest.json").is_file()
    assert [e["taskId"] for e in of_type(events, "task.complete")] == ["task_1"]
    plan_body, execute_body = env.bodies()[0], env.bodies()[1]
    assert tool_names(plan_body) == ["_plan_add_tasks_"] and plan_body["tool_choice"] == "required"
    assert set(tool_names(execute_body)) == {"agent_file_create", "_plan_update_task_"}

    async def live() -> None:  # hot reload: poll until it appears (the bound only turns a hang into a failure)
        while True:
            listed = (await env.client.get(f"{env.gw.url}/api/ap/agents")).json()["data"]
            if "demoCreatedByTest" in {a["key"] for a in listed}:
                return
            await asyncio.sleep(0.05)

    await asyncio.wait_for(live(), timeout=HANG)
    env.upstream.enqueue(text_script(["你好"]))
    hello = await env.run("demoCreatedByTest", "你好")
    assert deltas(hello, "content.delta") == "你好"
    assert env.bodies()[-1]["messages"][0]["content"].startswith("你是被创建的助手。")


@scenario("demoModePlanExecute")
async def _plan_execute(env: Env) -> None:
    env.upstream.enqueue(
        call("p1", "_plan_add_tasks_", {"tasks": [{"description": "查询运维手册"}, {"description": "检测敏感信息"}]}),
        call("e1", "mock_ops_runbook", {"message": "服务 502"}, text=("查手册。",)),
        call("e2", "_plan_update_task_", {"taskId": "task_1", "status": "completed"}),
        call("e3", "mock_sensitive_data_detector", {"text": "身份证 110101199003077777"}),
        call("e4", "_plan_update_task_", {"taskId": "task_2", "status": "completed"}),
        text_script(["最终结论\n- 已完成"], reasoning=["总结", "中"]),
    )
    events = await env.run("demoModePlanExecute", "服务 502 了怎么办")
    kinds = types(events)
    assert kinds.index("plan.create") < kinds.index("task.start") < kinds.index("reasoning.start")
    assert [e["taskId"] for e in of_type(events, "task.complete")] == ["task_1", "task_2"]
    found = results(events)
    assert not any(isinstance(found[c], dict) and found[c].get("ok") is False for c in ("e1", "e3")), found
    assert deltas(events, "reasoning.delta") == "总结中"
    bodies = env.bodies()
    assert bodies[0]["model"] == "qwen3.5-plus" and bodies[0]["enable_thinking"] is False
    assert bodies[0]["tool_choice"] == "required" and "_plan_add_tasks_" in tool_names(bodies[0])
    assert "_plan_update_task_" in tool_names(bodies[1]) and "_plan_add_tasks_" not in tool_names(bodies[1])
    assert bodies[-1]["enable_thinking"] is True and bodies[-1].get("reasoning_effort") == "low"
    assert "tools" not in bodies[-1]


@pytest.fixture
def upstream_gateway(tmp_path: Path, upstream: FakeUpstream,
                     start_gateway: Callable[..., GatewayServer]) -> Iterator[tuple[GatewayServer, Path]]:
    root = make_upstream_deployment(tmp_path / "upstream-deploy", upstream.url)
    yield start_gateway(root=root), root


def test_every_upstream_agent_has_a_scenario() -> None:
    assert len(UPSTREAM_AGENTS) == 12
    assert set(SCENARIOS) == set(UPSTREAM_AGENTS)


async def test_all_upstream_definitions_load_without_rejections(
    upstream_gateway: tuple[GatewayServer, Path], client: httpx.AsyncClient
) -> None:
    gw, _ = upstream_gateway
    listed = (await client.get(f"{gw.url}/api/ap/agents")).json()["data"]
    assert set(UPSTREAM_AGENTS) <= {a["key"] for a in listed}
    rejections = (await client.get(f"{gw.url}/api/ap/catalog/rejections")).json()["data"]
    assert rejections == []


@pytest.mark.parametrize("agent_key", UPSTREAM_AGENTS)
async def test_upstream_agent_runs_end_to_end(
    agent_key: str, upstream_gateway: tuple[GatewayServer, Path], upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    gw, root = upstream_gateway
    await SCENARIOS[agent_key](Env(gw=gw, upstream=upstream, client=client, root=root))
