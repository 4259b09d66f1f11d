"""PLAN_EXECUTE over real HTTP (SPEC §5, §6, §8): plan stage, task-by-task execution, summary.

Every test drives a real gateway against the scripted fake upstream and asserts on the
SSE events the client received, on the request bodies the upstream recorded, and on the
chat file / history endpoint.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import Gate, Text, http_error_script, text_script, tool_call_script
from tests.engine.helpers import call, chat_lines, deltas, first, of_type, tool_message, tool_names
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect, stream_events, types

WEATHER = {"backends": ["mock_city_weather", "city_datetime"], "frontends": [], "actions": []}
TWO_TASKS = {"tasks": [{"description": "look up the time"}, {"description": "look up the weather"}]}


def _done(call_id: str, task_id: str, status: str = "completed") -> list[Any]:
    return call(call_id, "_plan_update_task_", {"taskId": task_id, "status": status})


def _happy_scripts(*, draft: bool) -> list[list[Any]]:
    """Draft (optional) → generate two tasks → task_1 (tool, update) → task_2 (tool, update) → summary."""
    scripts: list[list[Any]] = []
    if draft:
        scripts.append(text_script(["First the time, ", "then the weather."], reasoning=["Let me ", "plan."]))
    scripts += [
        call("p1", "_plan_add_tasks_", TWO_TASKS),
        call("e1", "city_datetime", {"city": "Paris"}, text=("Checking the time. ",)),
        _done("e2", "task_1"),
        call("e3", "mock_city_weather", {"city": "Paris", "date": "2026-01-01"}),
        _done("e4", "task_2"),
        text_script(["Summary: ", "all good."]),
    ]
    return scripts


async def _run(client: httpx.AsyncClient, gw: GatewayServer, key: str, message: str = "Paris?") -> list[dict[str, Any]]:
    return await collect(client, f"{gw.url}/api/ap/query", {"agentKey": key, "message": message})


async def test_deep_thinking_run_shows_draft_reasoning_plan_tasks_and_summary_in_order(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """The acceptance test of issue 5 (1): draft reasoning → plan.create → tasks → summary."""
    write_agent(deploy, "planner", agent("PLAN_EXECUTE", tools=WEATHER, deep_thinking=True, reasoning=True))
    gw = start_gateway()
    upstream.enqueue(*_happy_scripts(draft=True))
    events = await _run(client, gw, "planner")
    kinds = types(events)
    assert kinds[-1] == "run.complete" and events[-1]["finishReason"] == "stop"
    assert deltas(events, "reasoning.delta") == "Let me plan."
    order = [
        kinds.index("reasoning.start"),
        kinds.index("plan.create"),
        kinds.index("task.start"),
        [e["type"] == "tool.start" and e.get("toolName") == "_plan_update_task_" for e in events].index(True),
        kinds.index("task.complete"),
        max(i for i, kind in enumerate(kinds) if kind == "content.delta"),
    ]
    assert order == sorted(order)
    assert [e["taskId"] for e in of_type(events, "task.start")] == ["task_1", "task_2"]
    assert [e["taskId"] for e in of_type(events, "task.complete")] == ["task_1", "task_2"]
    # SPEC §5: plan.create is followed at once by plan.update (the upstream client's plan panel
    # reacts to plan.update only), then one plan.update per task status change
    assert kinds.count("plan.create") == 1 and kinds.count("plan.update") == 3
    assert kinds[kinds.index("plan.create") + 1] == "plan.update"
    created, first_update = first(events, "plan.create"), of_type(events, "plan.update")[0]
    assert first_update["plan"] == created["plan"] and first_update["planId"] == created["planId"]
    run_id, chat_id = events[2]["runId"], events[0]["chatId"]
    assert all(e["chatId"] == chat_id for e in of_type(events, "plan.create", "plan.update"))
    assert all(e["runId"] == run_id for e in of_type(events, "task.start", "task.complete"))
    assert of_type(events, "plan.update")[-1]["plan"] == [
        {"taskId": "task_1", "description": "look up the time", "status": "completed"},
        {"taskId": "task_2", "description": "look up the weather", "status": "completed"},
    ]
    # the summary answer is the last content, outside any task
    summary_start = of_type(events, "content.start")[-1]
    assert "taskId" not in summary_start
    assert events[-2]["type"] == "content.end"

    bodies = [r.body for r in upstream.requests]
    assert len(bodies) == 7
    draft, generate = bodies[0], bodies[1]
    assert draft["enable_thinking"] is True and draft["tool_choice"] == "none"
    assert generate["enable_thinking"] is False and generate["tool_choice"] == "required"
    assert tool_names(generate) == ["_plan_add_tasks_"]
    for body in bodies[2:6]:
        assert set(tool_names(body)) == {"mock_city_weather", "city_datetime", "_plan_update_task_"}
        assert body["tool_choice"] == "auto"
    assert "tools" not in bodies[6] or tool_names(bodies[6]) == []  # summary: toolConfig null


async def test_events_of_a_task_carry_its_task_id(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "planner", agent("PLAN_EXECUTE", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(*_happy_scripts(draft=False))
    events = await _run(client, gw, "planner")
    current: str | None = None
    checked = 0
    for event in events:
        if event["type"] == "task.start":
            current = event["taskId"]
        elif event["type"] in ("task.complete", "task.fail", "task.cancel"):
            assert event["taskId"] == current
            current = None
        elif event["type"] in ("tool.start", "content.start", "reasoning.start", "action.start"):
            assert event.get("taskId") == current, event
            checked += current is not None
    assert checked >= 5  # the lead-in text and four tool calls ran inside tasks


async def test_plan_without_deep_thinking_is_one_generate_call_with_reasoning_off(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "planner", agent("PLAN_EXECUTE", tools=WEATHER, reasoning=True))
    gw = start_gateway()
    upstream.enqueue(*_happy_scripts(draft=False))
    events = await _run(client, gw, "planner")
    assert events[-1]["type"] == "run.complete"
    assert "reasoning.start" not in types(events)
    generate = upstream.requests[0].body
    assert generate["enable_thinking"] is False and generate["tool_choice"] == "required"
    assert "_plan_add_tasks_" in tool_names(generate)
    # the execute stage keeps the agent's reasoning setting
    assert upstream.requests[1].body["enable_thinking"] is True
    assert len(upstream.requests) == 6


async def test_forced_plan_tools_ignore_null_tool_config_and_get_tasks_only_where_listed(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    body = agent("PLAN_EXECUTE", tools=WEATHER)
    body["planExecute"]["plan"]["toolConfig"] = None
    body["planExecute"]["execute"]["toolConfig"] = {"backends": ["_plan_get_tasks_"], "frontends": [], "actions": []}
    write_agent(deploy, "forced", body)
    gw = start_gateway()
    upstream.enqueue(
        call("p1", "_plan_add_tasks_", {"tasks": [{"taskId": "only", "description": "one thing"}]}),
        call("g1", "_plan_get_tasks_", {}),
        _done("u1", "only"),
        call("s1", "_plan_get_tasks_", {}),  # the summary stage does not list it
        text_script(["done"]),
    )
    events = await _run(client, gw, "forced")
    assert events[-1]["type"] == "run.complete"
    bodies = [r.body for r in upstream.requests]
    assert tool_names(bodies[0]) == ["_plan_add_tasks_"]
    assert set(tool_names(bodies[1])) == {"_plan_get_tasks_", "_plan_update_task_"}
    results = {e["toolId"]: e["result"] for e in of_type(events, "tool.result")}
    assert "only | init | one thing" in results["g1"] and "current taskId: only" in results["g1"]
    assert results["s1"]["ok"] is False  # not offered in the summary stage: an error result, not a plan dump
    assert "_plan_get_tasks_" not in tool_names(bodies[3])


async def test_task_prompt_template_fills_task_list_and_current_task(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    template = "TASKS:\n{{taskList}}\nNOW: {{taskId}} = {{taskDescription}}"
    write_agent(deploy, "templ", agent("PLAN_EXECUTE", tools=WEATHER, summary=False, runtimePrompts={
        "planExecute": {"taskExecutionPromptTemplate": template}}))
    gw = start_gateway()
    upstream.enqueue(call("p1", "_plan_add_tasks_", TWO_TASKS), _done("u1", "task_1"), _done("u2", "task_2"))
    events = await _run(client, gw, "templ")
    assert events[-1]["type"] == "run.complete" and events[-1]["finishReason"] == "stop"
    first_task = upstream.requests[1].body["messages"][-1]
    assert first_task["role"] == "user"
    assert first_task["content"] == (
        "TASKS:\n- task_1 | init | look up the time\n- task_2 | init | look up the weather\n"
        "NOW: task_1 = look up the time"
    )
    second_task = [m for m in upstream.requests[2].body["messages"] if m["role"] == "user"][-1]
    assert "- task_1 | completed | look up the time" in second_task["content"]
    assert second_task["content"].endswith("NOW: task_2 = look up the weather")


async def test_malformed_update_is_repaired_once(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "repair", agent("PLAN_EXECUTE", tools=WEATHER, summary=False))
    gw = start_gateway()
    upstream.enqueue(
        call("p1", "_plan_add_tasks_", {"tasks": [{"description": "one"}]}),
        call("u1", "_plan_update_task_", {"taskId": "task_1", "status": "finished"}),
        _done("u2", "task_1"),
    )
    events = await _run(client, gw, "repair")
    assert events[-1]["type"] == "run.complete" and events[-1]["finishReason"] == "stop"
    results = {e["toolId"]: e["result"] for e in of_type(events, "tool.result")}
    assert results["u1"].startswith("失败") and results["u2"] == "OK"
    assert tool_message(upstream.requests[2].body, "u1")["content"] == results["u1"]  # the model saw why
    assert types(events).count("task.complete") == 1 and "task.fail" not in types(events)


async def test_attack_a_model_adding_a_huge_plan_is_refused_instead_of_stalling_the_gateway(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """A model looping in ``_plan_add_tasks_`` (or told to by a prompt injection) grew the plan
    without end, and every change re-sends the whole list; 20,000 tasks with one repeated
    ``taskId`` held the event loop for 14 s (a quadratic id check). A plan holds at most 200
    tasks of at most 2,000 characters; past that the model is told so, and nothing is added."""
    write_agent(deploy, "planner", agent("PLAN_EXECUTE", tools=WEATHER, summary=False))
    gw = start_gateway()
    too_many = {"tasks": [{"taskId": "a", "description": "d"}] * 201}
    for tasks, refusal in ((too_many, "失败: a plan holds at most 200 tasks; it has 0, and 201 more were asked for"),
                           ({"tasks": [{"description": "x" * 2001}]}, "失败: a task description is at most 2000 characters")):
        upstream.enqueue(call("p1", "_plan_add_tasks_", tasks))
        events = await _run(client, gw, "planner")
        assert first(events, "tool.result")["result"] == refusal
        assert "plan.update" not in types(events) and events[-1]["error"]["code"] == "plan_not_created"
    upstream.enqueue(
        call("p1", "_plan_add_tasks_", {"tasks": [{"taskId": "a", "description": "d"}] * 200}),
        call("u1", "_plan_update_task_", {"taskId": "a", "status": "completed", "description": "y" * 2001}),
        _done("u2", "a", "failed"),
    )
    events = await _run(client, gw, "planner")
    results = {e["toolId"]: e["result"] for e in of_type(events, "tool.result")}
    assert results["u1"] == "失败: a task description is at most 2000 characters"
    plans = of_type(events, "plan.update")
    assert len({task["taskId"] for task in plans[0]["plan"]}) == 200  # at the limit, each id made unique
    assert all(len(plan["plan"]) == 200 and all(task["description"] == "d" for task in plan["plan"])
               for plan in plans)


async def test_second_malformed_update_fails_the_task_and_stops_execution(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "repair", agent("PLAN_EXECUTE", tools=WEATHER, summary=False))
    gw = start_gateway()
    upstream.enqueue(
        call("p1", "_plan_add_tasks_", TWO_TASKS),
        call("u1", "_plan_update_task_", {"taskId": "nope", "status": "completed"}),
        tool_call_script("u2", "_plan_update_task_", ['{"taskId": "task_1", "status": ']),  # not JSON
    )
    events = await _run(client, gw, "repair")
    assert events[-1]["type"] == "run.complete" and events[-1]["finishReason"] == "task_failed"
    assert [e["taskId"] for e in of_type(events, "task.fail")] == ["task_1"]
    assert [e["taskId"] for e in of_type(events, "task.start")] == ["task_1"]
    assert len(upstream.requests) == 3


async def test_failed_task_is_terminal_and_summary_explains(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """A task marked ``failed`` stops execution (docs/DECISIONS.md): no later task starts."""
    write_agent(deploy, "fails", agent("PLAN_EXECUTE", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(
        call("p1", "_plan_add_tasks_", TWO_TASKS),
        call("e1", "city_datetime", {"city": "Atlantis"}),
        _done("u1", "task_1", "failed"),
        text_script(["Could not ", "finish."]),
    )
    events = await _run(client, gw, "fails")
    kinds = types(events)
    assert kinds[-1] == "run.complete" and events[-1]["finishReason"] == "task_failed"
    assert [e["taskId"] for e in of_type(events, "task.start")] == ["task_1"]
    assert [e["taskId"] for e in of_type(events, "task.fail")] == ["task_1"]
    assert kinds.index("task.fail") < kinds.index("content.start", kinds.index("task.fail"))
    assert of_type(events, "plan.update")[-1]["plan"][1]["status"] == "init"  # task_2 never ran
    assert deltas(events, "content.delta") == "Could not finish."
    assert len(upstream.requests) == 4  # plan, two turns of task_1, summary — nothing for task_2


async def test_max_steps_cancels_the_current_task(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "short", agent("PLAN_EXECUTE", tools=WEATHER, max_steps=2))
    gw = start_gateway()
    upstream.enqueue(
        call("p1", "_plan_add_tasks_", TWO_TASKS),
        call("e1", "city_datetime", {"city": "Paris"}),
        call("e2", "city_datetime", {"city": "Rome"}),
        text_script(["never"]),
    )
    events = await _run(client, gw, "short")
    assert events[-1]["type"] == "run.complete" and events[-1]["finishReason"] == "max_steps"
    assert [e["taskId"] for e in of_type(events, "task.cancel")] == ["task_1"]
    assert len(upstream.requests) == 3
    assert upstream.pending_scripts == 1


async def test_plan_not_created_is_a_run_error(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "lazy", agent("PLAN_EXECUTE", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(text_script(["I will not plan."]))
    events = await _run(client, gw, "lazy")
    assert events[-1]["type"] == "run.error" and events[-1]["error"]["code"] == "plan_not_created"
    assert not any(kind.startswith("task.") for kind in types(events))


async def test_plan_persisted_in_memory_and_history(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "planner", agent("PLAN_EXECUTE", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(*_happy_scripts(draft=False))
    events = await _run(client, gw, "planner")
    chat_id = events[0]["chatId"]
    plan_id = first(events, "plan.create")["planId"]
    steps = [line for line in chat_lines(deploy, chat_id) if line["_type"] == "step"]
    assert {line["_stage"] for line in steps} == {"plan", "execute", "summary"}
    plans = [line["plan"] for line in steps if "plan" in line]
    assert plans[0]["planId"] == plan_id and [t["status"] for t in plans[0]["tasks"]] == ["init", "init"]
    assert [t["status"] for t in plans[-1]["tasks"]] == ["completed", "completed"]
    assert {line.get("taskId") for line in steps if line["_stage"] == "execute"} == {"task_1", "task_2"}
    # the summary step (written with the run line) carries the summary stage's own system prompt
    summary = [line for line in steps if line["_stage"] == "summary"]
    assert len(summary) == 1 and summary[0]["system"] == upstream.requests[-1].body["messages"][0]["content"]
    assert chat_lines(deploy, chat_id)[-1]["_type"] == "run"
    response = await client.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id})
    history = response.json()["data"]["events"]
    creates, updates = of_type(history, "plan.create"), of_type(history, "plan.update")
    assert len(creates) == 1 and creates[0]["planId"] == plan_id and creates[0]["chatId"] == chat_id
    assert updates and updates[-1]["plan"] == of_type(events, "plan.update")[-1]["plan"]
    snapshots = {e["toolId"]: e for e in of_type(history, "tool.snapshot")}
    assert snapshots["e1"]["taskId"] == "task_1" and snapshots["e3"]["taskId"] == "task_2"
    assert types(history)[-1] == "run.complete"


@pytest.mark.parametrize("status", ["canceled", "in_progress"])
async def test_other_statuses(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    status: str,
) -> None:
    """``canceled`` settles the task with ``task.cancel``; legacy ``in_progress`` reads as ``init``."""
    write_agent(deploy, "st", agent("PLAN_EXECUTE", tools=WEATHER, summary=False))
    gw = start_gateway()
    upstream.enqueue(
        call("p1", "_plan_add_tasks_", {"tasks": [{"description": "one"}]}),
        _done("u1", "task_1", status),
        _done("u2", "task_1"),
    )
    events = await _run(client, gw, "st")
    assert events[-1]["type"] == "run.complete"
    if status == "canceled":
        assert [e["taskId"] for e in of_type(events, "task.cancel")] == ["task_1"]
        assert upstream.pending_scripts == 1
    else:
        assert of_type(events, "plan.update")[0]["plan"][0]["status"] == "init"
        assert [e["taskId"] for e in of_type(events, "task.complete")] == ["task_1"]


async def test_an_upstream_error_inside_a_task_fails_that_task_before_run_error(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "fragile", agent("PLAN_EXECUTE", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(call("p1", "_plan_add_tasks_", TWO_TASKS), http_error_script(500, "boom"))
    events = await _run(client, gw, "fragile")
    kinds = types(events)
    assert kinds[-3:] == ["plan.update", "task.fail", "run.error"]
    fail = events[-2]
    assert fail["taskId"] == "task_1" and fail["error"]["code"] == "upstream_http_error"
    assert [t["status"] for t in events[-3]["plan"]] == ["failed", "init"]
    assert "task.start" in kinds and kinds.count("task.start") == 1


async def test_a_cancelled_run_cancels_its_open_task(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "slow", agent("PLAN_EXECUTE", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(call("p1", "_plan_add_tasks_", TWO_TASKS), [Text("working"), Gate("never")])
    chat_id = ""
    async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "slow", "message": "x"}):
        chat_id = chat_id or event.get("chatId", "")
        if event["type"] == "content.delta":
            break  # the client goes away while task_1 is open
    for _ in range(400):
        lines = chat_lines(deploy, chat_id)
        if any(line.get("_type") == "run" for line in lines):
            break
        await asyncio.sleep(0.025)
    plans = [line["plan"] for line in lines if line.get("plan")]
    assert [t["status"] for t in plans[-1]["tasks"]] == ["canceled", "init"]
    assert next(line for line in lines if line.get("_type") == "run")["status"] == "cancel"
