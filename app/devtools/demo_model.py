"""The embedded demo model: a deterministic scripted "LLM" for a checkout with no API key.

``demo_responder(body)`` reads an OpenAI-format chat-completions request body and
returns a ``Script`` that makes the demo agents behave sensibly in every mode
(SPEC §5), following the person's question (``app.devtools.demo_text`` reads it: the
city it names, the date, "dark"/"light" for an enum, which tools it concerns).
Decisions, in order:

1. reasoning requested (``enable_thinking: true`` or ``reasoning_effort``) → a few
   reasoning deltas first (whatever follows);
2. ``tool_choice: "none"`` or no tools → text: the plan draft when ``_plan_add_tasks_``
   is offered (one numbered task per relevant tool); a JSON object when the system prompt
   asks for one JSON value (a GRAPH ``outputFormat: "json"`` node, SPEC §21: a review verdict
   when the prompt names ``"passed"``, the city and date when it names ``"city"``); a short
   text when the request starts with "Write " (a workflow's writing step: the weather it is
   given, else a paragraph about the topic after "about:", with an example once feedback
   asks for one); else the answer (step 6);
3. ``tool_choice: "required"`` and ``_plan_add_tasks_`` offered → call it: the tasks of
   the draft above (from the offered tools, else the numbered lines of the draft the
   model wrote before, else two generic tasks about the question);
4. ``_plan_update_task_`` offered (the execute stage) → call the tool the current task
   names (else the relevant tools) unless it was already called for this task; then call
   ``_plan_update_task_`` with the current ``taskId`` and ``status: "completed"``;
5. ordinary (non-system) tools offered → call, one per turn, each relevant tool not yet
   called since the question, with arguments built from its JSON schema and the question;
6. otherwise stream the answer word by word, with small pauses so streaming is visible:
   the question, one sentence per tool result since the question, and the ``viewport``
   block a tool's after-call hint asks for (SPEC §3.5), so the console renders the card.

No randomness: the same body (and ``today``) always gives the same script.
Every script ends with ``Usage`` and ``Finish``.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from app.devtools.demo_text import (
    city_of,
    date_of,
    describe_result,
    pick_enum,
    relevant_tools,
    task_description,
    viewport_block,
)
from app.devtools.script import Finish, Pause, Reasoning, Step, Text, ToolArgs, ToolCall, Usage

PLAN_ADD_TASKS = "_plan_add_tasks_"
PLAN_UPDATE_TASK = "_plan_update_task_"

_TASK_ID_PATTERNS = (
    re.compile(r"""taskId["'\s]*[:=]?\s*["'`]?([A-Za-z0-9][\w-]*)"""),
    re.compile(r"""current task(?: id)?\s*[:：]\s*["'`]?([A-Za-z0-9][\w-]*)""", re.IGNORECASE),
    re.compile(r"""\b(task(?:[_-][\w-]+|\d[\w-]*))"""),
)
_DRAFT_LINE = re.compile(r"^\s*\d+\.\s+(.+?)\s*$", re.MULTILINE)
_WORD = re.compile(r"\S+\s*|\s+")
_MAX_DELTA_CHARS = 4
_MAX_TASKS = 4
_DEMO_NOTE = "(This answer comes from the built-in demo model; configure a provider API key for real answers.)"


@dataclass(frozen=True, slots=True)
class _Call:
    """The decision to call one tool."""

    name: str
    arguments: Mapping[str, Any]
    lead: str = ""  # answer text streamed before the call


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


#: prefixes of the user messages the engine writes itself (task prompts, nudges, skill disclosures)
_ENGINE_USER_MARKERS = ("Task list:", "Current task:", "Skill instructions disclosed")


def _is_engine_prompt(text: str) -> bool:
    return text.startswith(_ENGINE_USER_MARKERS) or " is still open." in text


def _question_index(messages: Sequence[Mapping[str, Any]]) -> int:
    """Index of the person's latest question: the last user message that is not one the
    engine adds in PLAN_EXECUTE (task prompts, nudges) or for skills (disclosures); else
    the last user message; -1 when there is none."""
    last_user = -1
    for index in range(len(messages) - 1, -1, -1):
        if messages[index].get("role") != "user":
            continue
        if last_user < 0:
            last_user = index
        if not _is_engine_prompt(_text_of(messages[index].get("content")).strip()):
            return index
    return last_user


def _question_text(messages: Sequence[Mapping[str, Any]]) -> str:
    index = _question_index(messages)
    return _text_of(messages[index].get("content")).strip() if index >= 0 else ""


def _last_user_index(messages: Sequence[Mapping[str, Any]]) -> int:
    return next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "user"), -1)


def _calls_after(messages: Sequence[Mapping[str, Any]], start: int) -> dict[str, tuple[str, Mapping[str, Any]]]:
    """Tool calls of assistant messages after index ``start``: call id → (name, arguments)."""
    calls: dict[str, tuple[str, Mapping[str, Any]]] = {}
    for message in messages[start + 1 :]:
        for call in message.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, Mapping) else None
            if not isinstance(function, Mapping):
                continue
            try:
                arguments = orjson.loads(function.get("arguments") or "{}")
            except orjson.JSONDecodeError:
                arguments = {}
            calls[str(call.get("id"))] = (str(function.get("name") or ""), arguments if isinstance(arguments, dict) else {})
    return calls


def _tool_name_of_result(messages: Sequence[Mapping[str, Any]], result: Mapping[str, Any]) -> str:
    """The tool name of a tool message (its ``name``, or the matching assistant call)."""
    name = result.get("name")
    if isinstance(name, str) and name:
        return name
    return _calls_after(messages, -1).get(str(result.get("tool_call_id")), ("", {}))[0]


def _results_after(messages: Sequence[Mapping[str, Any]], start: int) -> list[tuple[str, Mapping[str, Any], str]]:
    """(tool name, arguments, content) of the ordinary tools' results after index ``start``."""
    calls = _calls_after(messages, -1)
    results: list[tuple[str, Mapping[str, Any], str]] = []
    for message in messages[start + 1 :]:
        if message.get("role") != "tool":
            continue
        name, arguments = calls.get(str(message.get("tool_call_id")), ("", {}))
        name = str(message.get("name") or name or "a tool")
        if not _is_system_tool(name):
            content = message.get("content")
            results.append((name, arguments, _text_of(content) or str(content or "")))
    return results


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


def _current_task_description(messages: Sequence[Mapping[str, Any]], task_id: str) -> str:
    """The description of ``task_id`` in the task list of the latest task prompt
    (lines ``- taskId | status | description``), else ``""``."""
    for message in reversed(messages):
        if message.get("role") != "user":
            continue
        found = re.search(rf"{re.escape(task_id)}\s*\|\s*\w+\s*\|\s*(.+)", _text_of(message.get("content")))
        if found:
            return found.group(1).strip()
    return ""


def _sample_value(name: str, schema: Mapping[str, Any], question: str, today: str) -> Any:
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return pick_enum(enum, question)
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
        if lowered == "options":
            return ["Yes", "No"]
        if isinstance(items, Mapping):
            return [_sample_value(name, items, question, today)]
        return []
    if kind == "object":
        return sample_arguments(schema, question, today=today)
    if "city" in lowered:
        return city_of(question)
    if "date" in lowered:
        return date_of(question, today)
    if lowered == "question":
        return f'Shall I go ahead with "{question[:120]}"?' if question else "Shall I go ahead?"
    return question or "demo"


def sample_arguments(schema: Mapping[str, Any], question: str, *, today: str | None = None) -> dict[str, Any]:
    """Plausible arguments for a JSON-schema ``object`` that follow the question: required
    fields always, other scalar fields too; city-ish strings → the city the question names
    (else Shanghai), date-ish → the date it names (else today), enums → the value it names
    (else the first), ``options`` → Yes/No, ``question`` → a confirmation question."""
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
        offered_choices = name == "options" and prop.get("type") == "array"
        if name in required or scalar or offered_choices:
            arguments[name] = _sample_value(name, prop, question, day)
    return arguments


def _plan_tasks(question: str, ordinary: Sequence[Mapping[str, Any]]) -> list[str]:
    """One task per relevant tool (it names the tool), padded with a summary task; two
    generic tasks about the question when there are no tools."""
    topic = question[:80] or "the request"
    if not ordinary:
        return [f"Gather the information needed for: {topic}", f"Summarise the answer to: {topic}"]
    tasks = [task_description(str(tool["name"]), question) for tool in relevant_tools(ordinary, question)]
    tasks = tasks[: _MAX_TASKS - 1]
    if len(tasks) < 2:
        tasks.append(f"Summarise the answer to: {topic}")
    return tasks


def _drafted_tasks(messages: Sequence[Mapping[str, Any]], after: int) -> list[str]:
    """The numbered lines of the latest plan draft the model wrote after the question."""
    for message in reversed(messages[after + 1 :]):
        if message.get("role") == "assistant":
            lines = _DRAFT_LINE.findall(_text_of(message.get("content")))
            if lines:
                return lines[:_MAX_TASKS]
    return []


def _call_of(tool: Mapping[str, Any], question: str, today: str) -> _Call:
    parameters = tool.get("parameters")
    schema: Mapping[str, Any] = parameters if isinstance(parameters, Mapping) else {}
    return _Call(str(tool["name"]), sample_arguments(schema, question, today=today))


def _execute_step(
    messages: Sequence[Mapping[str, Any]], ordinary: Sequence[Mapping[str, Any]], question: str, today: str
) -> _Call:
    """The execute stage: the current task's tool if not yet called for it, else settle the task."""
    task_id = find_task_id(messages) or "task_1"
    description = _current_task_description(messages, task_id)
    named = [tool for tool in ordinary if str(tool["name"]) in description]
    if named:
        candidates = named
    elif re.match(r"summari[sz]e", description, re.IGNORECASE):
        candidates = []
    else:
        candidates = relevant_tools(ordinary, question) if ordinary else []
    since_prompt = _last_user_index(messages)
    called = {name for name, _ in _calls_after(messages, since_prompt).values()}
    pending = [tool for tool in candidates if str(tool["name"]) not in called]
    if pending:
        return _call_of(pending[0], question, today)
    found = " ".join(describe_result(*result) for result in _results_after(messages, since_prompt))
    lead = f"Task {task_id} is done: {found}\n" if found else f"Task {task_id} is done.\n"
    return _Call(PLAN_UPDATE_TASK, {"taskId": task_id, "status": "completed"}, lead)


def _decide(body: Mapping[str, Any], messages: Sequence[Mapping[str, Any]], today: str) -> _Call | str:
    """The call to make, or the text to answer with."""
    tools = _offered_tools(body)
    names = [str(tool["name"]) for tool in tools]
    ordinary = [tool for tool in tools if not _is_system_tool(str(tool["name"]))]
    tool_choice = body.get("tool_choice")
    question = _question_text(messages)
    asked_at = _question_index(messages)
    last_role = messages[-1].get("role") if messages else "user"
    last_result = _tool_name_of_result(messages, messages[-1]) if last_role == "tool" else None

    if tool_choice == "none" or not tools:
        if PLAN_ADD_TASKS in names:
            lines = [f"{n}. {task}" for n, task in enumerate(_plan_tasks(question, ordinary), start=1)]
            return f'Plan for "{question}":\n' + "\n".join(lines) + "\n\n"
        if _JSON_REQUEST in _system_text(messages):
            return orjson.dumps(_workflow_json(question, today)).decode()
        if question.startswith("Write "):
            return _written(question)
        return _answer(question, messages, asked_at)
    if tool_choice == "required" and PLAN_ADD_TASKS in names:
        tasks = (_plan_tasks(question, ordinary) if ordinary else _drafted_tasks(messages, asked_at)) or _plan_tasks(
            question, []
        )
        return _Call(PLAN_ADD_TASKS, {"tasks": [{"description": task} for task in tasks]})
    if PLAN_UPDATE_TASK in names:
        if last_result in (PLAN_UPDATE_TASK, PLAN_ADD_TASKS):
            return _answer(question, messages, asked_at)
        return _execute_step(messages, ordinary, question, today)
    if ordinary:
        relevant = relevant_tools(ordinary, question)
        called = {name for name, _ in _calls_after(messages, asked_at).values()}
        pending = [tool for tool in relevant if str(tool["name"]) not in called]
        if pending:
            return _call_of(pending[0], question, today)
        if tool_choice == "required":
            return _call_of(relevant[0], question, today)
    return _answer(question, messages, asked_at)


#: what the engine's JSON instruction says (``app.engine.graph.nodes.JSON_INSTRUCTION``)
_JSON_REQUEST = "JSON value only"
_FEEDBACK = re.compile(r"feedback to address:\s*(.+)", re.IGNORECASE)
_NO_FEEDBACK = ("", "none", "none yet", "null")
_EXAMPLE = "for example"


def _system_text(messages: Sequence[Mapping[str, Any]]) -> str:
    return "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "system")


def _workflow_json(prompt: str, today: str) -> dict[str, Any]:
    """A workflow step's JSON answer: a review verdict (passed once the text gives an example),
    the city and date a request is about, else the request itself."""
    if '"passed"' in prompt:
        passed = _EXAMPLE in prompt.casefold()
        feedback = "Clear, and the example makes it concrete." if passed else "Add a concrete example."
        return {"passed": passed, "feedback": feedback}
    if '"city"' in prompt:
        return {"city": city_of(prompt), "date": date_of(prompt, today)}
    return {"answer": prompt[:200]}


def _written(prompt: str) -> str:
    """A workflow's writing step: a note about the weather data it is given, else a paragraph
    about the topic after "about:" (with an example when reviewer feedback asks for changes)."""
    weather = next((data for data in _json_objects(prompt) if "temperatureC" in data), None)
    if weather is not None:
        sentence = describe_result("mock_city_weather", {}, orjson.dumps(weather).decode())
        temperature = weather.get("temperatureC")
        if isinstance(temperature, (int, float)) and temperature < 10:
            advice = "Dress warmly if you go out."
        elif isinstance(temperature, (int, float)) and temperature > 28:
            advice = "Stay in the shade and drink plenty of water."
        else:
            advice = "A pleasant day to spend some time outside."
        return f"{sentence} {advice}"
    first_line = prompt.split("\n", 1)[0]
    topic = (first_line.split("about:", 1)[1] if "about:" in first_line else first_line[len("Write "):]).strip()
    topic = topic.rstrip(".?!") or "the topic"
    text = (f"{topic[:1].upper()}{topic[1:]} is worth a closer look: it shapes how people plan, decide and work "
            "every day, and knowing its basics makes those choices easier.")
    feedback = _FEEDBACK.search(prompt)
    if feedback and feedback.group(1).strip().strip(".").casefold() not in _NO_FEEDBACK:
        text += f" For example, a small team that looked into {topic} for one afternoon saved hours the next week."
    return text


def _json_objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects written on lines of their own in ``text``."""
    found: list[dict[str, Any]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(value, dict):
                found.append(value)
    return found


def _answer(question: str, messages: Sequence[Mapping[str, Any]], asked_at: int) -> str:
    """The question, one sentence per ordinary tool result since it, the viewport blocks
    the after-call hints ask for, and the demo note."""
    system = "\n".join(_text_of(m.get("content")) for m in messages if m.get("role") == "system")
    results = _results_after(messages, asked_at)
    lines = [f'You asked: "{question}".' if question else "Hello!"]
    lines += [describe_result(name, arguments, content) for name, arguments, content in results]
    text = " ".join(lines)
    blocks: list[str] = []
    for name, _, content in results:
        block = viewport_block(system, name, content)
        if block and block not in blocks:
            blocks.append(block)
    if blocks:
        text += "\n\n" + "\n\n".join(blocks) + "\n\n"
    else:
        text += " "
    return text + _DEMO_NOTE


def _split_small(text: str) -> list[str]:
    """Word-ish deltas: whitespace-separated words, long runs (e.g. CJK) cut into 4 chars."""
    deltas: list[str] = []
    for word in _WORD.findall(text):
        deltas.extend(word[i : i + _MAX_DELTA_CHARS] for i in range(0, len(word), _MAX_DELTA_CHARS))
    return deltas


def _answer_deltas(text: str) -> list[str]:
    """Word-ish deltas for prose; a viewport block streams in three pieces."""
    deltas: list[str] = []
    for index, part in enumerate(re.split(r"(```viewport\n.*?```)", text, flags=re.DOTALL)):
        if index % 2:
            third = max(1, len(part) // 3)
            deltas += [part[:third], part[third : 2 * third], part[2 * third :]]
        else:
            deltas += _split_small(part)
    return [delta for delta in deltas if delta]


def _fragments(arguments: Mapping[str, Any]) -> list[str]:
    """Serialise arguments and cut them in three, like a model streaming them."""
    raw = orjson.dumps(arguments).decode()
    third = max(1, len(raw) // 3)
    return [raw[:third], raw[third : 2 * third], raw[2 * third :]] if len(raw) >= 3 else [raw]


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    chars = sum(len(_text_of(m.get("content"))) for m in body.get("messages") or [] if isinstance(m, Mapping))
    return max(1, chars // 4)


def _reasoning(question: str, decision: _Call | str) -> str:
    thought = f'The question is "{question[:60]}". ' if question else "There is no question yet. "
    if isinstance(decision, _Call) and decision.name == PLAN_ADD_TASKS:
        return thought + "I will write the plan."
    if isinstance(decision, _Call) and decision.name == PLAN_UPDATE_TASK:
        return thought + "The current task is done."
    if isinstance(decision, _Call):
        return thought + f"I will call {decision.name} first."
    return thought + "I can answer now."


def demo_responder(body: dict[str, Any], *, pause_s: float = 0.03, today: str | None = None) -> list[Step]:
    """A deterministic script for one OpenAI-format request body (see the module docstring)."""
    messages: list[Mapping[str, Any]] = [m for m in body.get("messages") or [] if isinstance(m, Mapping)]
    decision = _decide(body, messages, today or _dt.date.today().isoformat())

    steps: list[Step] = []
    if _reasoning_requested(body):
        for delta in _split_small(_reasoning(_question_text(messages), decision)):
            steps.append(Reasoning(delta))
            steps.append(Pause(pause_s))
    if isinstance(decision, _Call):
        if decision.lead:
            steps.append(Text(decision.lead))
        call_serial = sum(len(m.get("tool_calls") or []) for m in messages) + 1
        steps.append(ToolCall(0, f"call_demo_{call_serial}", decision.name))
        steps.extend(ToolArgs(0, fragment) for fragment in _fragments(decision.arguments))
    else:
        for index, delta in enumerate(_answer_deltas(decision)):
            if index:
                steps.append(Pause(pause_s))
            steps.append(Text(delta))
    completion = sum(1 for step in steps if isinstance(step, (Text, Reasoning, ToolArgs)))
    steps.append(Usage(_prompt_tokens(body), max(1, completion)))
    steps.append(Finish("tool_calls" if isinstance(decision, _Call) else "stop"))
    return steps


__all__ = ["demo_responder", "find_task_id", "sample_arguments"]
