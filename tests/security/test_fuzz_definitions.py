"""Hypothesis fuzzing of the definition loaders (SPEC §3: a bad file is rejected with a reason).

``jsonc.preprocess``/``loads``, ``parse_model``, ``parse_tool_file``, ``parse_agent`` and
``parse_skill`` must either return a definition or raise ``DefinitionError`` — never
anything else — whatever text or JSON they are given, including near-valid mutations.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.catalog import jsonc
from app.catalog.agents import AgentRefs, parse_agent
from app.catalog.definitions import ToolKind
from app.catalog.models import parse_model
from app.catalog.skills import parse_skill
from app.catalog.tools import parse_tool_file, tool_kind
from app.errors import DefinitionError
from app.tools.registry import builtin_tool_names
from tests.support.deployment import REPO

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                database=None)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=15,
)
#: fragments that exercise comments, triple-quoted prompts, strings and trailing commas
_TOKENS = st.sampled_from([
    "{", "}", "[", "]", ",", ":", '"', '"""', "//", "/*", "*/", "\n", " ", "\\", '"systemPrompt"', '"key"',
    "true", "null", "1", "-", "e", "é", "\x00", "\t", '"a"', "\\u12", "\\ud800",
])
relaxed_text = st.one_of(st.text(max_size=200), st.lists(_TOKENS, max_size=60).map("".join))

MODEL = {"key": "m", "provider": "p", "protocol": "OPENAI", "modelId": "x",
         "pricing": {"promptPointsPer1k": 1, "tiers": [{"minInputTokens": 0, "maxInputTokens": 10}]}}
AGENT = {
    "key": "a", "name": "n", "mode": "PLAN_EXECUTE", "modelConfig": {"modelKey": "m", "reasoning": {"enabled": True}},
    "toolConfig": {"backends": ["mock_city_weather"], "frontends": [], "actions": []},
    "skills": ["math_basic"],
    "planExecute": {"plan": {"systemPrompt": "p", "deepThinking": True}, "execute": {"systemPrompt": "e"},
                    "summary": {"systemPrompt": "s", "toolConfig": None}, "maxSteps": 3},
    "budget": {"runTimeoutMs": 1000, "model": {"maxCalls": 2}, "tool": {"maxCalls": 2}},
}


def _refs() -> AgentRefs:
    model = parse_model(MODEL, "m", ["p"])
    tools = {}
    for path in sorted((REPO / "tools").iterdir()):
        kind = tool_kind(path)
        if kind is not None:
            tools.update({t.name: t for t in parse_tool_file(jsonc.loads(path.read_text()), kind).tools})
    skill = parse_skill((REPO / "skills" / "math_basic" / "SKILL.md").read_text(), REPO / "skills" / "math_basic")
    return AgentRefs(models={"m": model}, tools=tools, skills={skill.id: skill}, builtin_tools=builtin_tool_names())


REFS = _refs()


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> Any:
    """``base`` with a few paths replaced by random JSON (or deleted)."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        node: Any = doc
        while isinstance(node, dict) and node and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(node)))
            if not isinstance(node[key], dict):
                break
            node = node[key]
        if isinstance(node, dict):
            key = draw(st.one_of(st.sampled_from(sorted(node) or ["x"]), st.text(max_size=10)))
            if draw(st.integers(0, 4)) == 0:
                node.pop(key, None)
            else:
                node[key] = draw(json_values)
    return doc


def test_the_unmutated_definitions_are_valid() -> None:
    assert parse_agent(AGENT, "a", REFS).key == "a"


@FUZZ
@given(text=relaxed_text)
def test_jsonc_only_raises_definition_error(text: str) -> None:
    try:
        strict = jsonc.preprocess(text)
    except DefinitionError:
        return
    assert isinstance(strict, str)
    try:
        jsonc.loads(text)
    except DefinitionError as exc:
        assert exc.message.startswith("line ")


@FUZZ
@given(data=st.one_of(json_values, mutated(MODEL)), stem=st.sampled_from(["m", "other", "../m", ""]))
def test_parse_model(data: Any, stem: str) -> None:
    try:
        parse_model(data, stem, ["p"])
    except DefinitionError:
        pass


@FUZZ
@given(data=st.one_of(json_values, st.fixed_dictionaries({"tools": st.lists(json_values, max_size=4)}),
                      st.builds(lambda item: {"tools": [item]}, mutated({
                          "type": "function", "name": "t", "description": "d",
                          "parameters": {"type": "object"}, "toolApi": "http://x.test", "afterCallHint": "h"}))),
       kind=st.sampled_from(list(ToolKind)))
def test_parse_tool_file(data: Any, kind: ToolKind) -> None:
    try:
        result = parse_tool_file(data, kind)
    except DefinitionError:
        return
    assert all(isinstance(problem, str) for problem in result.problems)


@FUZZ
@given(data=st.one_of(json_values, mutated(AGENT)), stem=st.sampled_from(["a", "b", "../a", "a/b", "a\x00"]))
def test_parse_agent(data: Any, stem: str) -> None:
    try:
        parse_agent(data, stem, REFS)
    except DefinitionError:
        pass


@FUZZ
@given(text=st.one_of(st.text(max_size=200),
                      st.lists(st.sampled_from(["---", "\n", "name: x", "description: y", ": :", "[", "{", "!!python/object"]),
                               max_size=12).map("".join)))
def test_parse_skill(text: str) -> None:
    folder = Path("/nonexistent/skills/fuzz_skill")
    try:
        parse_skill(text, folder)
    except DefinitionError:
        pass
