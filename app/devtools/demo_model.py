"""The embedded demo model: a deterministic scripted "LLM" for a checkout with no API key.

``demo_responder(body)`` reads an OpenAI-format chat-completions request body and
returns a ``Script`` that makes the demo agents behave sensibly in every mode
(SPEC §5). Decisions, in order:

1. reasoning requested (``enable_thinking: true`` or ``reasoning_effort``) → a few
   reasoning deltas first (whatever follows);
2. ``tool_choice: "none"`` → answer (step 6);
3. ``tool_choice: "required"`` and ``_plan_add_tasks_`` offered → call it with two
   tasks derived from the user's message (the plan stage);
4. ``_plan_update_task_`` offered and the current task's work is done (the last
   message is a result of another tool, or no ordinary tool is offered) → call it
   with the current ``taskId`` and ``status: "completed"`` (the execute stage);
5. an ordinary (non-system) tool offered and the latest turn has no tool result yet
   (the last message is from the user/system) → call the first such tool with
   arguments built from its JSON schema;
6. otherwise stream a short answer word by word, with small pauses so streaming is
   visible, mentioning the question and any tool results of the latest turn.

Every script ends with ``Usage`` and ``Finish``.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from app.devtools.script import Finish, Pause, Reasoning, Step, Text, ToolArgs, ToolCall, Usage

PLAN_ADD_TASKS = "_plan_add_tasks_"
PLAN_UPDATE_TASK = "_plan_update_task_"

_TASK_ID_PATTERNS = (
    re.compile(r"""taskId["'\s]*[:=]?\s*["'`]?([A-Za-z0-9][\w-]*)"""),
    re.compile(r"""current task(?: id)?\s*[:：]\s*["'`]?([A-Za-z0-9][\w-]*)""", re.IGNORECASE),
    re.compile(r"""\b(task(?:[_-][\w-]+|\d[\w-]*))"""),
)
_WORD = re.compile(r"\S+\s*|\s+")
_MAX_DELTA_CHARS = 4


def _is_system_tool(name: str) -> bool:
    return len(name) > 1 and name.startswith("_") and name.endswith("_")


def _text_of(content: Any) -> str:
    """Plain text of an OpenAI message ``content`` (string or list of parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [part.get("text", "") for part in content if isinstance(part, Mapping)]
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def _offered_tools(body: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The ``function`` objects of the request's ``tools[]``."""
    tools: list[Mapping[str, Any]] = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            tools.append(function)
    return tools


def _reasoning_requested(body: Mapping[str, Any]) -> bool:
    return body.get("enable_thinking") is True or bool(body.get("reasoning_effort"))


def _latest_user_text(messages: Sequence[Mapping[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text_of(message.get("content")).strip()
    return ""


#: prefixes of the user messages the engine writes itself (task prompts, nudges, skill disclosures)
_ENGINE_USER_MARKERS = ("Task list:", "Current task:", "Skill instructions disclosed")


def _question_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """The person's latest question, skipping the user messages the engine adds in PLAN_EXECUTE
    (task prompts, nudges) and for skills (disclosures)."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        text = _text_of(message.get("content")).strip()
        if not text.startswith(_ENGINE_USER_MARKERS) and " is still open." not in text:
            return text
    return _latest_user_text(messages)


def _latest_turn_tool_results(messages: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Tool messages after the last user message."""
    results: list[Mapping[str, Any]] = []
    for message in reversed(messages):
        role = message.get("role")
        if role == "user":
            break
        if role == "tool":
            results.append(message)
    return list(reversed(results))


def _tool_name_of_result(messages: Sequence[Mapping[str, Any]], result: Mapping[str, Any]) -> str:
    """The tool name of a tool message (its ``name``, or the matching assistant call)."""
    name = result.get("name")
    if isinstance(name, str) and name:
        return name
    call_id = result.get("tool_call_id")
    for message in messages:
        for call in message.get("tool_calls") or []:
            if isinstance(call, Mapping) and call.get("id") == call_id:
                function = call.get("function") or {}
                return str(function.get("name") or "")
    return ""


def find_task_id(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The current task id from the latest user (else system) message text.

    Tries, in order: the last ``taskId "…"``-style mention, a ``Current task: …`` line,
    the first ``task_…``-looking word.
    """
    text = ""
    for role in ("user", "system"):
        text = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == role), "")
        if text:
            break
    for index, pattern in enumerate(_TASK_ID_PATTERNS):
        found = pattern.findall(text)
        if found:
            return found[-1] if index == 0 else found[0]
    return None


def _sample_value(name: str, schema: Mapping[str, Any], question: str, today: str) -> Any:
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    lowered = name.lower()
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.0
    if kind == "boolean":
        return False
    if kind == "array":
        items = schema.get("items")
        if isinstance(items, Mapping):
            return [_sample_value(name, items, question, today)]
        return []
    if kind == "object":
        return sample_arguments(schema, question, today=today)
    if "city" in lowered:
        return "Shanghai"
    if "date" in lowered:
        return today
    return question or "demo"


def sample_arguments(schema: Mapping[str, Any], question: str, *, today: str | None = None) -> dict[str, Any]:
    """Plausible arguments for a JSON-schema ``object``: required fields always, other
    scalar fields too; city-ish strings → ``"Shanghai"``, date-ish → today, enums → first."""
    day = today or _dt.date.today().isoformat()
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    required = set(schema.get("required") or [])
    arguments: dict[str, Any] = {}
    for name, prop in properties.items():
        if not isinstance(prop, Mapping):
            continue
        scalar = prop.get("type") in ("string", "integer", "number", "boolean") or "enum" in prop
        if name in required or scalar:
            arguments[name] = _sample_value(name, prop, question, day)
    return arguments


def _split_small(text: str) -> list[str]:
    """Word-ish deltas: whitespace-separated words, long runs (e.g. CJK) cut into 4 chars."""
    deltas: list[str] = []
    for word in _WORD.findall(text):
        deltas.extend(word[i : i + _MAX_DELTA_CHARS] for i in range(0, len(word), _MAX_DELTA_CHARS))
    return deltas


def _fragments(arguments: Mapping[str, Any]) -> list[str]:
    """Serialise arguments and cut them in three, like a model streaming them."""
    raw = orjson.dumps(arguments).decode()
    third = max(1, len(raw) // 3)
    return [raw[:third], raw[third : 2 * third], raw[2 * third :]] if len(raw) >= 3 else [raw]


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    chars = sum(len(_text_of(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, Mapping))
    return max(1, chars // 4)


def _tool_call_steps(call_id: str, name: str, arguments: Mapping[str, Any]) -> list[Step]:
    steps: list[Step] = [ToolCall(0, call_id, name)]
    steps.extend(ToolArgs(0, fragment) for fragment in _fragments(arguments))
    return steps


def _answer(question: str, messages: Sequence[Mapping[str, Any]]) -> str:
    results = _latest_turn_tool_results(messages)
    lines = [f'You asked: "{question}".' if question else "Hello!"]
    for result in results:
        name = _tool_name_of_result(messages, result) or "a tool"
        content = _text_of(result.get("content")) or str(result.get("content") or "")
        if len(content) > 200:
            content = content[:200] + "…"
        lines.append(f"The tool {name} returned: {content}")
    lines.append("This answer comes from the built-in demo model; configure a provider API key for real answers.")
    return " ".join(lines)


def demo_responder(body: dict[str, Any], *, pause_s: float = 0.03, today: str | None = None) -> list[Step]:
    """A deterministic script for one OpenAI-format request body (see the module docstring)."""
    messages: list[Mapping[str, Any]] = [m for m in body.get("messages") or [] if isinstance(m, Mapping)]
    tools = _offered_tools(body)
    names = [str(tool["name"]) for tool in tools]
    ordinary = [tool for tool in tools if not _is_system_tool(str(tool["name"]))]
    tool_choice = body.get("tool_choice")
    question = _latest_user_text(messages)
    last_role = messages[-1].get("role") if messages else "user"
    last_result = _tool_name_of_result(messages, messages[-1]) if last_role == "tool" else None
    call_serial = sum(len(m.get("tool_calls") or []) for m in messages) + 1

    steps: list[Step] = []
    if _reasoning_requested(body):
        for delta in _split_small(f"Let me think about: {question[:60]}"):
            steps.append(Reasoning(delta))
            steps.append(Pause(pause_s))

    finish = "tool_calls"
    if tool_choice == "none" or not tools:
        finish = "stop"
    elif tool_choice == "required" and PLAN_ADD_TASKS in names:
        topic = question[:80] or "the request"
        tasks = [
            {"description": f"Gather the information needed for: {topic}"},
            {"description": f"Summarise the answer to: {topic}"},
        ]
        steps += _tool_call_steps(f"call_demo_{call_serial}", PLAN_ADD_TASKS, {"tasks": tasks})
    elif PLAN_UPDATE_TASK in names and last_result not in (PLAN_UPDATE_TASK, PLAN_ADD_TASKS) and (
        not ordinary or last_role == "tool"
    ):
        task_id = find_task_id(messages) or "task_1"
        steps.append(Text(f"Task {task_id} is done. "))
        arguments = {"taskId": task_id, "status": "completed"}
        steps += _tool_call_steps(f"call_demo_{call_serial}", PLAN_UPDATE_TASK, arguments)
    elif ordinary and (last_role in ("user", "system") or tool_choice == "required"):
        tool = ordinary[0]
        parameters = tool.get("parameters")
        schema: Mapping[str, Any] = parameters if isinstance(parameters, Mapping) else {}
        arguments = sample_arguments(schema, question, today=today)
        steps += _tool_call_steps(f"call_demo_{call_serial}", str(tool["name"]), arguments)
    else:
        finish = "stop"

    if finish == "stop":
        for index, delta in enumerate(_split_small(_answer(_question_text(messages), messages))):
            if index:
                steps.append(Pause(pause_s))
            steps.append(Text(delta))
    completion = sum(1 for step in steps if isinstance(step, (Text, Reasoning, ToolArgs)))
    steps.append(Usage(_prompt_tokens(body), max(1, completion)))
    steps.append(Finish("tool_calls" if finish == "tool_calls" else "stop"))
    return steps


__all__ = ["demo_responder", "find_task_id", "sample_arguments"]
