"""The embedded demo model's decisions (SPEC §5 modes driven by a scripted model)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import orjson
import pytest

from app.catalog.definitions import RuntimePrompts
from app.devtools import FakeUpstream, Finish, Pause, Reasoning, Text, ToolArgs, ToolCall, Usage, demo_responder
from app.devtools.demo_model import find_task_id, sample_arguments
from app.devtools.script import Step


def tool(name: str, properties: dict[str, Any] | None = None, required: list[str] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties or {}}
    if required:
        schema["required"] = required
    return {"type": "function", "function": {"name": name, "description": name, "parameters": schema}}


PLAN_ADD = tool("_plan_add_tasks_", {"tasks": {"type": "array", "items": {"type": "object"}}})
PLAN_UPDATE = tool(
    "_plan_update_task_",
    {"taskId": {"type": "string"}, "status": {"type": "string", "enum": ["init", "completed"]}},
    ["taskId", "status"],
)
WEATHER = tool("mock_city_weather", {"city": {"type": "string"}, "date": {"type": "string"}}, ["city", "date"])
BASH = tool("_bash_", {"command": {"type": "string"}}, ["command"])

TASK_PROMPT = RuntimePrompts().task_execution_prompt_template.format(
    task_list="task_1 | init | look\ntask_2 | init | sum up", task_id="task_2", task_description="sum up"
)


def body(messages: list[dict[str, Any]], tools: list[dict[str, Any]] = (), **extra: Any) -> dict[str, Any]:  # type: ignore[assignment]
    result: dict[str, Any] = {"model": "demo", "messages": messages, "stream": True, **extra}
    if tools:
        result["tools"] = list(tools)
    return result


def run(request: dict[str, Any]) -> list[Step]:
    return demo_responder(request, pause_s=0)


def tool_call(script: list[Step]) -> tuple[str, dict[str, Any]]:
    calls = [step for step in script if isinstance(step, ToolCall)]
    assert len(calls) == 1
    arguments = "".join(step.fragment for step in script if isinstance(step, ToolArgs))
    return calls[0].name, orjson.loads(arguments)


def text(script: list[Step]) -> str:
    return "".join(step.delta for step in script if isinstance(step, Text))


def assert_tail(script: list[Step], reason: str) -> None:
    assert isinstance(script[-2], Usage) and script[-1] == Finish(reason)  # type: ignore[arg-type]


USER = {"role": "user", "content": "What's the weather in Shanghai?"}


def test_plain_answer_streams_word_by_word() -> None:
    script = demo_responder(body([USER]))
    texts = [step for step in script if isinstance(step, Text)]
    assert len(texts) > 5 and all(len(step.delta.strip()) <= 4 or " " not in step.delta.strip() for step in texts)
    assert "What's the weather in Shanghai?" in text(script)
    assert any(isinstance(step, Pause) and step.seconds == pytest.approx(0.03) for step in script)
    assert_tail(script, "stop")


def test_reasoning_first_when_requested() -> None:
    for request in (body([USER], enable_thinking=True), body([USER], reasoning_effort="low")):
        script = run(request)
        assert isinstance(script[0], Reasoning)
        first_text = next(i for i, s in enumerate(script) if isinstance(s, Text))
        assert all(not isinstance(s, Reasoning) for s in script[first_text:])
    assert not any(isinstance(s, Reasoning) for s in run(body([USER], enable_thinking=False)))


def test_plan_stage_adds_two_tasks() -> None:
    script = run(body([{"role": "system", "content": "plan"}, USER], [PLAN_ADD], tool_choice="required"))
    name, arguments = tool_call(script)
    assert name == "_plan_add_tasks_"
    assert len(arguments["tasks"]) == 2
    assert all("weather in Shanghai" in task["description"] for task in arguments["tasks"])
    assert len([s for s in script if isinstance(s, ToolArgs)]) == 3
    assert_tail(script, "tool_calls")


def test_execute_calls_the_ordinary_tool_first() -> None:
    today = dt.date.today().isoformat()
    script = run(body([{"role": "system", "content": "exec"}, {"role": "user", "content": TASK_PROMPT}], [PLAN_UPDATE, WEATHER]))
    assert tool_call(script) == ("mock_city_weather", {"city": "Shanghai", "date": today})


def test_execute_completes_the_task_after_a_tool_result() -> None:
    messages = [
        {"role": "user", "content": TASK_PROMPT},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "mock_city_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": '{"temp": 22}'},
    ]
    script = run(body(messages, [PLAN_UPDATE, WEATHER]))
    assert tool_call(script) == ("_plan_update_task_", {"taskId": "task_2", "status": "completed"})
    assert_tail(script, "tool_calls")


def test_execute_without_ordinary_tools_completes_at_once() -> None:
    script = run(body([{"role": "user", "content": TASK_PROMPT}], [PLAN_UPDATE, BASH]))
    assert tool_call(script) == ("_plan_update_task_", {"taskId": "task_2", "status": "completed"})


def test_after_the_update_result_it_answers() -> None:
    messages = [
        {"role": "user", "content": TASK_PROMPT},
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "_plan_update_task_", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "name": "_plan_update_task_", "content": "OK"},
    ]
    script = run(body(messages, [PLAN_UPDATE]))
    assert not any(isinstance(s, ToolCall) for s in script)
    assert_tail(script, "stop")


def test_react_answers_with_the_tool_result() -> None:
    messages = [
        USER,
        {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "mock_city_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": [{"type": "text", "text": "sunny 22C"}]},
    ]
    script = run(body(messages, [WEATHER], tool_choice="auto"))
    answer = text(script)
    assert "mock_city_weather" in answer and "sunny 22C" in answer
    assert_tail(script, "stop")


def test_tool_choice_none_never_calls() -> None:
    script = run(body([USER], [WEATHER], tool_choice="none"))
    assert not any(isinstance(s, ToolCall) for s in script)


def test_system_tools_alone_are_not_called() -> None:
    assert not any(isinstance(s, ToolCall) for s in run(body([USER], [BASH])))


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (TASK_PROMPT, "task_2"),
        ('Execute taskId: "t-7f3a" now', "t-7f3a"),
        ("Current task: abc123 — do it", "abc123"),
        ("tasks: task-9 and task-10", "task-9"),
        ("nothing here", None),
    ],
)
def test_find_task_id(content: str, expected: str | None) -> None:
    assert find_task_id([{"role": "system", "content": "sys"}, {"role": "user", "content": content}]) == expected


def test_sample_arguments() -> None:
    schema = {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "date": {"type": "string"},
            "mode": {"type": "string", "enum": ["fast", "slow"]},
            "count": {"type": "integer"},
            "query": {"type": "string"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "options": {"type": "object", "properties": {"deep": {"type": "boolean"}}},
        },
        "required": ["tags"],
    }
    assert sample_arguments(schema, "hello", today="2026-02-13") == {
        "city": "Shanghai",
        "date": "2026-02-13",
        "mode": "fast",
        "count": 1,
        "query": "hello",
        "tags": ["hello"],
    }


def test_deterministic() -> None:
    request = body([USER], [WEATHER], enable_thinking=True)
    assert demo_responder(request) == demo_responder(request)


def test_served_by_the_fake_upstream_as_valid_openai_sse() -> None:
    with FakeUpstream(lambda b: demo_responder(b, pause_s=0)) as fake:
        response = httpx.post(f"{fake.url}/v1/chat/completions", json=body([USER], [WEATHER]))
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    fragments = [
        call["function"].get("arguments", "")
        for line in lines[:-1]
        for choice in orjson.loads(line)["choices"]
        for call in choice["delta"].get("tool_calls", [])
    ]
    assert orjson.loads("".join(fragments))["city"] == "Shanghai"


def test_summary_quotes_the_persons_question_not_the_engines_task_prompt() -> None:
    messages = [
        USER,
        {"role": "user", "content": TASK_PROMPT},
        {"role": "user", "content": "Task task_2 is still open. If it is done, call _plan_update_task_"},
    ]
    answer = text(run(body(messages)))
    assert '"What\'s the weather in Shanghai?"' in answer
    assert "Task list" not in answer and "still open" not in answer
