"""The AG-UI endpoint driven by the official ``@ag-ui/client`` ``HttpAgent`` under node (SPEC §17).

``tests/agui/run_agent.mjs`` runs the real client against a real gateway and prints every event
the client accepted (after its own schema validation and event-order checks) as JSON lines. The
client is pinned by ``tests/agui/package-lock.json``; install it with ``npm ci --prefix tests/agui``
(``.ci/run`` does). Without node or the installed client these tests FAIL, saying so.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.agui.support import kinds, parse_event
from tests.engine.helpers import call, tool_message
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer

HARNESS = Path(__file__).resolve().parent
CONFIRM = {"backends": ["city_datetime"], "frontends": ["confirm_dialog"], "actions": []}
WEATHER = {"backends": ["mock_city_weather"], "frontends": [], "actions": []}
QUESTION = {"question": "Which city?", "options": ["Paris", "Rome"], "allowFreeText": False}
OPENING = ["RUN_STARTED", "RAW", "RAW", "RAW"]
#: a generous bound that only turns a hang into a failure
HANG = 120


def _node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the AG-UI client tests run @ag-ui/client under node "
                    "(install Node.js 18+, then `npm ci --prefix tests/agui`)")
    if not (HARNESS / "node_modules" / "@ag-ui" / "client").is_dir():
        pytest.fail("tests/agui/node_modules is missing: run `npm ci --prefix tests/agui` "
                    "(installs the pinned @ag-ui/client from tests/agui/package-lock.json)")
    return node


async def _run_agent(url: str, agent_input: dict[str, Any], answers: dict[str, Any] | None = None) -> list[Any]:
    """Run ``run_agent.mjs``; every line it printed, validated as an ``ag_ui.core`` event."""
    argv = [_node(), str(HARNESS / "run_agent.mjs"), url, orjson.dumps(agent_input).decode()]
    if answers is not None:
        argv.append(orjson.dumps(answers).decode())
    process = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout=HANG)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"run_agent.mjs failed ({process.returncode}):\n{err.decode()}"
    return [parse_event(line) for line in out.decode().splitlines() if line.strip()]


def _input(thread_id: str, text: str) -> dict[str, Any]:
    return {"threadId": thread_id, "messages": [{"id": "u-1", "role": "user", "content": text}]}


async def test_http_agent_receives_reasoning_text_and_a_backend_tool_in_order(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer]
) -> None:
    write_agent(deploy, "weather", agent("REACT", tools=WEATHER, reasoning=True))
    gw = start_gateway()
    upstream.enqueue(
        call("c1", "mock_city_weather", {"city": "Paris", "date": "2026-01-01"}),
        text_script(["Cold ", "in ", "Paris."], reasoning=["It is ", "January."]),
    )
    events = await _run_agent(f"{gw.url}/ag-ui/weather", _input("node-thread", "Paris?"))
    assert kinds(events) == [
        *OPENING,
        "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT",
        "REASONING_START", "REASONING_MESSAGE_START", "REASONING_MESSAGE_CONTENT", "REASONING_MESSAGE_CONTENT",
        "REASONING_MESSAGE_END", "REASONING_END",
        "TEXT_MESSAGE_START", *["TEXT_MESSAGE_CONTENT"] * 3, "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    assert events[0].thread_id == events[-1].thread_id == "node-thread"
    assert events[0].run_id == events[-1].run_id
    assert [e.delta for e in events if e.type.value == "TEXT_MESSAGE_CONTENT"] == ["Cold ", "in ", "Paris."]


async def test_http_agent_follows_a_plan_with_steps_and_state(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer]
) -> None:
    """The client's own checks accept the step and state events of a PLAN_EXECUTE run."""
    write_agent(deploy, "planner", agent("PLAN_EXECUTE", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(
        call("p1", "_plan_add_tasks_", {"tasks": [{"description": "look up the weather"}]}),
        call("e1", "mock_city_weather", {"city": "Paris", "date": "2026-01-01"}),
        call("e2", "_plan_update_task_", {"taskId": "task_1", "status": "completed"}),
        text_script(["Done."]),
    )
    events = await _run_agent(f"{gw.url}/ag-ui/planner", _input("node-plan", "Paris?"))
    tool = ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_ARGS", "TOOL_CALL_END"]
    assert kinds(events) == [
        *OPENING, *tool, "STATE_SNAPSHOT", "STATE_SNAPSHOT", "TOOL_CALL_RESULT",
        "STEP_STARTED", *tool, "TOOL_CALL_RESULT", *tool, "STATE_SNAPSHOT", "STEP_FINISHED", "TOOL_CALL_RESULT",
        "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED",
    ]
    snapshots = [event.snapshot for event in events if event.type.value == "STATE_SNAPSHOT"]
    assert snapshots[-1] == {"plan": [{"taskId": "task_1", "description": "look up the weather",
                                       "status": "completed"}]}


async def test_http_agent_frontend_tool_round_trip_across_two_runs(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """Run 1 ends on the client tool call; run 2 sends the client's tool message; the gateway run completes."""
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION, text=("Let me ask. ",)), text_script(["You chose ", "Rome."]))
    answer = {"selected": "Rome", "freeText": ""}
    events = await _run_agent(f"{gw.url}/ag-ui/confirm", _input("node-confirm", "trip"), {"confirm_dialog": answer})
    assert kinds(events) == [
        # run 1: the question, then the client tool call; the AG-UI run finishes with it pending
        *OPENING, "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END",
        "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_ARGS", "TOOL_CALL_END", "RUN_FINISHED",
        # run 2: the client's tool message is the submit; the continuation streams the answer
        "RUN_STARTED", "RAW", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT",
        "TEXT_MESSAGE_END", "RUN_FINISHED",
    ]
    first_finish, second_start, second_finish = events[11], events[12], events[-1]
    start = events[7]
    assert start.tool_call_name == "confirm_dialog"
    assert first_finish.outcome.pending_tool_call_ids == [start.tool_call_id]
    assert second_start.run_id == second_finish.run_id != first_finish.run_id
    assert events[13].event["type"] == "request.submit" and events[13].event["payload"] == answer
    assert [e.delta for e in events[14:] if e.type.value == "TEXT_MESSAGE_CONTENT"] == ["You chose ", "Rome."]
    run_id = events[3].event["runId"]
    status = (await client.get(f"{gw.url}/api/ap/run", params={"runId": run_id})).json()["data"]
    assert status["status"] == "completed" and status["pendingTools"] == []
    assert orjson.loads(tool_message(upstream.requests[1].body, "c1")["content"]) == answer


async def test_http_agent_accepts_a_task_paused_on_a_client_tool_and_resumed(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer]
) -> None:
    """The client refuses RUN_FINISHED while a step is open: the pause finishes the task's step and
    the continuation starts it again."""
    write_agent(deploy, "planner", agent("PLAN_EXECUTE", tools={**CONFIRM, "backends": []}))
    gw = start_gateway()
    upstream.enqueue(
        call("p1", "_plan_add_tasks_", {"tasks": [{"description": "ask the user"}]}),
        call("e1", "confirm_dialog", QUESTION),
        call("e2", "_plan_update_task_", {"taskId": "task_1", "status": "completed"}),
        text_script(["Rome."]),
    )
    events = await _run_agent(f"{gw.url}/ag-ui/planner", _input("node-plan-confirm", "trip"),
                              {"confirm_dialog": {"selected": "Rome"}})
    tool = ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_ARGS", "TOOL_CALL_END"]
    assert kinds(events) == [
        *OPENING, *tool, "STATE_SNAPSHOT", "STATE_SNAPSHOT", "TOOL_CALL_RESULT",
        "STEP_STARTED", *tool, "STEP_FINISHED", "RUN_FINISHED",
        "RUN_STARTED", "STEP_STARTED", "RAW", *tool, "STATE_SNAPSHOT", "STEP_FINISHED", "TOOL_CALL_RESULT",
        "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED",
    ]
    steps = [(e.type.value, e.step_name, (e.metadata or {}).get("status")) for e in events
             if e.type.value.startswith("STEP_")]
    assert steps == [("STEP_STARTED", "task_1", None), ("STEP_FINISHED", "task_1", "paused"),
                     ("STEP_STARTED", "task_1", None), ("STEP_FINISHED", "task_1", "completed")]
