"""The embedded demo model's decisions (SPEC §5 modes driven by a scripted model), and how they
follow the question: the city, the date and the theme it names, the plan, the viewport card."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.catalog.definitions import RuntimePrompts
from app.devtools import FakeUpstream, Finish, Pause, Reasoning, Text, ToolArgs, ToolCall, Usage, demo_responder
from app.devtools.demo_model import find_task_id, sample_arguments
from app.devtools.script import Step
from app.tools import mocks
from app.tools.city_datetime import city_datetime

REPO = Path(__file__).resolve().parents[2]
UPSTREAM_TOOLS = REPO / "tests" / "fixtures" / "upstream-definitions" / "tools"
TODAY = "2026-02-13"


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
DATETIME = tool("city_datetime", {"city": {"type": "string"}})
THEME = tool("switch_theme", {"theme": {"type": "string", "enum": ["light", "dark"]}}, ["theme"])
CONFIRM = tool(
    "confirm_dialog",
    {"question": {"type": "string"}, "options": {"type": "array", "items": {"type": "string"}},
     "allowFreeText": {"type": "boolean"}},
    ["question"],
)

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


# ---- following the question ----------------------------------------------------------------------


def called(script: list[Step]) -> tuple[str, dict[str, Any]]:
    return tool_call(script)


def ask(question: str, tools: list[dict[str, Any]], **extra: Any) -> list[Step]:
    return demo_responder(body([{"role": "user", "content": question}], tools, **extra), pause_s=0, today=TODAY)


@pytest.mark.parametrize(
    ("question", "city"),
    [
        ("What is the weather in Tokyo?", "Tokyo"),
        ("weather in paris", "Paris"),
        ("London or Berlin, which is warmer?", "London"),  # the first city named
        ("Is it raining in New York today?", "New York"),
        ("Beijing?", "Beijing"),
        ("上海今天天气怎么样", "Shanghai"),
        ("东京的天气", "Tokyo"),
        ("What about the weather in Reykjavik?", "Reykjavik"),  # not in the table: the name after "in"
        ("how is the weather?", "Shanghai"),  # nothing named: the default
        ("weather on Monday", "Shanghai"),
    ],
)
def test_the_city_argument_is_the_city_the_question_names(question: str, city: str) -> None:
    assert called(ask(question, [WEATHER])) == ("mock_city_weather", {"city": city, "date": TODAY})


@pytest.mark.parametrize(
    ("question", "date"),
    [("weather in Paris tomorrow", "2026-02-14"), ("Paris yesterday", "2026-02-12"), ("Paris on 2026-03-01", "2026-03-01")],
)
def test_the_date_argument_follows_the_question(question: str, date: str) -> None:
    assert called(ask(question, [WEATHER]))[1]["date"] == date


@pytest.mark.parametrize(
    ("question", "theme"),
    [
        ("switch to dark", "dark"),
        ("Night mode, please", "dark"),
        ("make it light again", "light"),
        ("Dark? no, light!", "dark"),  # the first one named
        ("切换到深色主题", "dark"),
        ("hello", "light"),  # nothing named: the first enum value
    ],
)
def test_the_theme_follows_the_question(question: str, theme: str) -> None:
    assert called(ask(question, [THEME])) == ("switch_theme", {"theme": theme})


def test_confirm_dialog_asks_a_yes_no_question_about_the_request() -> None:
    name, arguments = called(ask("Book a table in Paris", [CONFIRM]))
    assert name == "confirm_dialog"
    assert arguments == {"question": 'Shall I go ahead with "Book a table in Paris"?', "options": ["Yes", "No"],
                         "allowFreeText": False}


def _tool_turn(call_id: str, name: str, arguments: dict[str, Any], result: Any) -> list[dict[str, Any]]:
    return [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function", "function": {"name": name, "arguments": orjson.dumps(arguments).decode()}}]},
        {"role": "tool", "tool_call_id": call_id, "content": orjson.dumps(result).decode()},
    ]


def _after_call_hint(folder: Path) -> str:
    return str(orjson.loads((folder / "mock_city_weather.backend").read_bytes())["tools"][0]["afterCallHint"])


@pytest.mark.parametrize("tools_folder", [REPO / "tools", UPSTREAM_TOOLS], ids=["ours", "upstream"])
def test_react_weather_calls_both_tools_for_the_city_then_answers_with_the_card(tools_folder: Path) -> None:
    """The weather demo: city_datetime, then mock_city_weather, for the city asked about; the answer
    quotes both results and ends with the viewport block the weather tool's after-call hint asks for."""
    system = {"role": "system", "content": "Answer.\n\n## After-call instructions\n"
                                           f"- mock_city_weather: {_after_call_hint(tools_folder)}"}
    messages: list[dict[str, Any]] = [system, {"role": "user", "content": "What's the weather in Tokyo?"}]
    tools = [DATETIME, WEATHER]

    def step() -> list[Step]:
        return demo_responder(body(messages, tools, tool_choice="auto"), pause_s=0, today=TODAY)

    assert called(step()) == ("city_datetime", {"city": "Tokyo"})
    clock = asyncio.run(city_datetime({"city": "Tokyo"}, None))  # type: ignore[arg-type]
    messages += _tool_turn("c1", "city_datetime", {"city": "Tokyo"}, clock)
    assert called(step()) == ("mock_city_weather", {"city": "Tokyo", "date": TODAY})
    weather = asyncio.run(mocks.mock_city_weather({"city": "Tokyo", "date": TODAY}, None))  # type: ignore[arg-type]
    messages += _tool_turn("c2", "mock_city_weather", {"city": "Tokyo", "date": TODAY}, weather)
    script = step()
    assert not any(isinstance(s, ToolCall) for s in script)
    assert_tail(script, "stop")
    answer = text(script)
    assert f"In Tokyo it is {clock['time'][:5]}" in answer
    assert f"Weather in Tokyo on {TODAY}: {weather['weatherEn']}, {weather['temperatureC']}°C" in answer
    block = f"```viewport\ntype=html, key=show_weather_card\n{orjson.dumps(weather).decode()}\n```"
    assert block in answer
    assert len([s for s in script if isinstance(s, Text) and "viewport" in s.delta]) == 1  # a few pieces, not 4-char bits


def test_no_card_without_an_after_call_hint() -> None:
    weather = {"city": "Tokyo", "date": TODAY, "weatherEn": "sunny", "temperatureC": 20}
    messages = [{"role": "user", "content": "Tokyo weather"}, *_tool_turn("c1", "mock_city_weather", {}, weather)]
    answer = text(run(body(messages, [WEATHER])))
    assert "Weather in Tokyo" in answer and "```viewport" not in answer


def test_a_failed_tool_is_reported_and_the_next_relevant_tool_still_runs() -> None:
    messages = [{"role": "user", "content": "weather in Atlantis City"},
                *_tool_turn("c1", "city_datetime", {"city": "Atlantis City"}, {"ok": False, "error": "unknown city"})]
    assert called(run(body(messages, [DATETIME, WEATHER]))) == ("mock_city_weather", {
        "city": "Atlantis City", "date": dt.date.today().isoformat()})
    messages += _tool_turn("c2", "mock_city_weather", {}, {"city": "Atlantis City", "date": TODAY, "temperatureC": 9})
    assert "The tool city_datetime failed: unknown city." in text(run(body(messages, [DATETIME, WEATHER])))


def test_action_answer_says_what_it_did() -> None:
    messages = [{"role": "user", "content": "switch to dark"}, *_tool_turn("c1", "switch_theme", {"theme": "dark"}, "OK")]
    messages[-1]["content"] = "OK"
    assert "Done: switch_theme(theme=dark)." in text(run(body(messages, [THEME], tool_choice="none")))


def test_plan_follows_the_question_one_task_per_tool() -> None:
    question = {"role": "user", "content": "Plan my afternoon in Paris"}
    draft = run(body([{"role": "system", "content": "plan"}, question], [DATETIME, WEATHER, PLAN_ADD], tool_choice="none"))
    assert text(draft).startswith('Plan for "Plan my afternoon in Paris":\n'
                                  "1. Look up the current date and time in Paris with city_datetime\n"
                                  "2. Check the weather in Paris with mock_city_weather\n")
    expected = [{"description": "Look up the current date and time in Paris with city_datetime"},
                {"description": "Check the weather in Paris with mock_city_weather"}]
    # the generate turn offers only _plan_add_tasks_ (deep thinking): the tasks come from the draft
    generate = body([{"role": "system", "content": "plan"}, question, {"role": "assistant", "content": text(draft)}],
                    [PLAN_ADD], tool_choice="required")
    assert called(run(generate)) == ("_plan_add_tasks_", {"tasks": expected})
    # without a draft, from the tools offered
    direct = body([question], [DATETIME, WEATHER, PLAN_ADD], tool_choice="required")
    assert called(run(direct)) == ("_plan_add_tasks_", {"tasks": expected})


def test_plan_with_one_relevant_tool_adds_a_summary_task() -> None:
    script = run(body([{"role": "user", "content": "switch to dark"}], [THEME, PLAN_ADD], tool_choice="required"))
    assert called(script)[1]["tasks"] == [{"description": "Use switch_theme for: switch to dark"},
                                          {"description": "Summarise the answer to: switch to dark"}]


def test_execute_calls_the_tool_its_task_names_then_completes_it() -> None:
    prompt = RuntimePrompts().task_execution_prompt_template.format(
        task_list="- task_1 | completed | Look up the current date and time in Tokyo with city_datetime\n"
                  "- task_2 | init | Check the weather in Tokyo with mock_city_weather",
        task_id="task_2", task_description="Check the weather in Tokyo with mock_city_weather",
    )
    messages: list[dict[str, Any]] = [{"role": "user", "content": "weather in Tokyo"},
                                      *_tool_turn("c1", "city_datetime", {"city": "Tokyo"}, {"city": "Tokyo"}),
                                      {"role": "user", "content": prompt}]
    tools = [DATETIME, WEATHER, PLAN_UPDATE]
    script = demo_responder(body(messages, tools), pause_s=0, today=TODAY)
    assert called(script) == ("mock_city_weather", {"city": "Tokyo", "date": TODAY})
    weather = {"city": "Tokyo", "date": TODAY, "weatherEn": "sunny", "temperatureC": 20}
    messages += _tool_turn("c2", "mock_city_weather", {"city": "Tokyo", "date": TODAY}, weather)
    script = demo_responder(body(messages, tools), pause_s=0, today=TODAY)
    assert called(script) == ("_plan_update_task_", {"taskId": "task_2", "status": "completed"})
    assert text(script) == f"Task task_2 is done: Weather in Tokyo on {TODAY}: sunny, 20°C.\n"


def test_summary_reports_every_task_result_but_not_the_plan_tools() -> None:
    messages = [
        {"role": "user", "content": "weather in Tokyo"},
        *_tool_turn("c1", "_plan_add_tasks_", {}, "task_1 | init | x"),
        {"role": "user", "content": TASK_PROMPT},
        *_tool_turn("c2", "mock_city_weather", {}, {"city": "Tokyo", "date": TODAY, "weatherEn": "fog", "temperatureC": 3}),
        *_tool_turn("c3", "_plan_update_task_", {}, "OK"),
    ]
    answer = text(run(body(messages)))
    assert answer.startswith('You asked: "weather in Tokyo". Weather in Tokyo on 2026-02-13: fog, 3°C.')
    assert "_plan_" not in answer
