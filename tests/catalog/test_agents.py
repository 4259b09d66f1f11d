"""Agent definitions (SPEC §3.2): every rejection rule and every inheritance rule."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from app.catalog.agents import AgentRefs, load_agent, parse_agent
from app.catalog.definitions import (
    Budget,
    CallBudget,
    ModelDefinition,
    ReasoningConfig,
    RuntimePrompts,
    SkillDefinition,
    ToolDefinition,
    ToolKind,
)
from app.errors import DefinitionError

from .support import Deployment, model_file, tool_item


def _tool(name: str, kind: ToolKind, tool_api: str | None = None) -> ToolDefinition:
    return ToolDefinition(name=name, kind=kind, description=name, parameters={"type": "object"}, tool_api=tool_api)


def _skill(ident: str) -> SkillDefinition:
    return SkillDefinition(id=ident, name=ident.title(), description=f"{ident} skill", body="", folder=Path(ident))


REFS = AgentRefs(
    models={
        key: ModelDefinition(key=key, provider="bailian", protocol="OPENAI", model_id=f"{key}-id")
        for key in ("m1", "m2")
    },
    tools={
        tool.name: tool
        for tool in (
            _tool("_bash_", ToolKind.BACKEND),
            _tool("weather", ToolKind.BACKEND),
            _tool("remote", ToolKind.BACKEND, tool_api="https://tools.example.com/remote"),
            _tool("orphan", ToolKind.BACKEND),
            _tool("confirm_dialog", ToolKind.FRONTEND),
            _tool("switch_theme", ToolKind.ACTION),
            _tool("_plan_add_tasks_", ToolKind.BACKEND),
            _tool("_plan_update_task_", ToolKind.BACKEND),
            _tool("_plan_get_tasks_", ToolKind.BACKEND),
        )
    },
    skills={ident: _skill(ident) for ident in ("math", "stats", "text")},
    builtin_tools=frozenset({"_bash_", "weather"}),
)


def oneshot(**extra: Any) -> dict[str, Any]:
    return {"mode": "ONESHOT", "modelConfig": {"modelKey": "m1"}, "plain": {"systemPrompt": "be brief"}, **extra}


def react(**extra: Any) -> dict[str, Any]:
    return {"mode": "REACT", "modelConfig": {"modelKey": "m1"}, "react": {"systemPrompt": "think"}, **extra}


def plan_execute(**extra: Any) -> dict[str, Any]:
    return {
        "mode": "PLAN_EXECUTE",
        "modelConfig": {"modelKey": "m1"},
        "planExecute": {"plan": {"systemPrompt": "plan"}, "execute": {"systemPrompt": "do"}},
        **extra,
    }


def parse(data: dict[str, Any], stem: str = "agent1", refs: AgentRefs = REFS):  # type: ignore[no-untyped-def]
    return parse_agent(data, stem, refs)


def rejected(data: dict[str, Any], stem: str = "agent1") -> str:
    with pytest.raises(DefinitionError) as info:
        parse(data, stem)
    return info.value.message


def tool_names(agent: Any, stage: str) -> list[str]:
    return [tool.name for tool in agent.stages[stage].tools]


# --------------------------------------------------------------------------- basics


def test_minimal_oneshot_defaults() -> None:
    agent = parse(oneshot())
    assert agent.key == "agent1" and agent.name == "agent1" and agent.description == "" and agent.icon is None
    assert agent.mode == "ONESHOT" and list(agent.stages) == ["plain"]
    assert agent.stages["plain"].system_prompt == "be brief"
    assert agent.tool_choice == "AUTO" and agent.budget == Budget() and agent.runtime_prompts == RuntimePrompts()
    assert agent.skills == () and agent.stages["plain"].tools == ()


def test_display_fields() -> None:
    agent = parse(oneshot(key="agent1", name="Agent One", icon="emoji:🤖", description="desc"))
    assert (agent.name, agent.icon, agent.description) == ("Agent One", "emoji:🤖", "desc")


def test_key_is_optional_and_must_match_the_stem() -> None:
    assert parse(oneshot(key="agent1")).key == "agent1"
    assert "does not match the file name 'agent1'" in rejected(oneshot(key="other"))


def test_file_stem_must_be_a_safe_key() -> None:
    assert "invalid agent key" in rejected(oneshot(), stem="bad key!")


def test_top_level_must_be_an_object() -> None:
    with pytest.raises(DefinitionError, match="JSON object"):
        parse_agent([1], "agent1", REFS)


def test_unknown_field_is_rejected() -> None:
    assert "colour: unknown field" in rejected(oneshot(colour="red"))


def test_mode_is_required() -> None:
    data = oneshot()
    del data["mode"]
    assert "mode" in rejected(data)


def test_mode_must_be_known() -> None:
    assert "mode" in rejected(oneshot(mode="CHAIN"))


def test_mode_and_tool_choice_are_case_insensitive() -> None:
    agent = parse(oneshot(mode="oneshot", toolChoice="required"))
    assert agent.mode == "ONESHOT" and agent.tool_choice == "REQUIRED"


@pytest.mark.parametrize("choice", ["NONE", "AUTO", "REQUIRED"])
def test_tool_choice(choice: str) -> None:
    assert parse(oneshot(toolChoice=choice)).tool_choice == choice


def test_invalid_tool_choice_is_rejected() -> None:
    assert "toolChoice" in rejected(oneshot(toolChoice="SOMETIMES"))


# --------------------------------------------------------------------------- mode blocks


@pytest.mark.parametrize(
    ("data", "missing"),
    [
        ({"mode": "ONESHOT", "modelConfig": {"modelKey": "m1"}}, "plain.systemPrompt"),
        ({"mode": "ONESHOT", "modelConfig": {"modelKey": "m1"}, "plain": {"systemPrompt": "  "}}, "plain.systemPrompt"),
        ({"mode": "ONESHOT", "modelConfig": {"modelKey": "m1"}, "react": {"systemPrompt": "x"}}, "plain.systemPrompt"),
        ({"mode": "REACT", "modelConfig": {"modelKey": "m1"}, "plain": {"systemPrompt": "x"}}, "react.systemPrompt"),
        ({"mode": "PLAN_EXECUTE", "modelConfig": {"modelKey": "m1"}}, "planExecute.plan.systemPrompt"),
        (
            {"mode": "PLAN_EXECUTE", "modelConfig": {"modelKey": "m1"}, "planExecute": {"plan": {"systemPrompt": "p"}}},
            "planExecute.execute.systemPrompt",
        ),
        (
            {"mode": "PLAN_EXECUTE", "modelConfig": {"modelKey": "m1"}, "planExecute": {"execute": {"systemPrompt": "e"}}},
            "planExecute.plan.systemPrompt",
        ),
    ],
)
def test_mode_block_is_required(data: dict[str, Any], missing: str) -> None:
    assert f"'{missing}' is required" in rejected(data)


def test_summary_is_optional() -> None:
    assert list(parse(plan_execute()).stages) == ["plan", "execute"]


def test_summary_block_needs_a_prompt() -> None:
    data = plan_execute()
    data["planExecute"]["summary"] = {"toolConfig": None}
    assert "'planExecute.summary.systemPrompt' is required" in rejected(data)


def test_plan_execute_stages() -> None:
    data = plan_execute()
    data["planExecute"]["summary"] = {"systemPrompt": "sum"}
    agent = parse(data)
    assert list(agent.stages) == ["plan", "execute", "summary"]
    assert [s.system_prompt for s in agent.stages.values()] == ["plan", "do", "sum"]


# --------------------------------------------------------------------------- legacy fields

LEGACY_PATHS: list[str] = [
    "verify",
    "output",
    "toolPolicy",
    "reasoning",
    "tools",
    "deepThink",
    "systemPrompt",
    "modelConfig.providerKey",
    "modelConfig.model",
    "budget.maxModelCalls",
    "budget.maxToolCalls",
    "budget.maxSteps",
    "budget.timeoutMs",
    "budget.retryCount",
    "runtimePrompts.verify",
    "runtimePrompts.finalAnswer",
    "runtimePrompts.oneshot",
    "runtimePrompts.react",
    *(
        f"runtimePrompts.planExecute.{name}"
        for name in (
            "executeToolsTitle",
            "planCallableToolsTitle",
            "draftInstructionBlock",
            "generateInstructionBlockFromDraft",
            "generateInstructionBlockDirect",
            "taskRequireToolUserPrompt",
            "taskMultipleToolsUserPrompt",
            "taskUpdateNoProgressUserPrompt",
            "taskContinueUserPrompt",
            "updateRoundPromptTemplate",
            "updateRoundMultipleToolsUserPrompt",
            "allStepsCompletedUserPrompt",
        )
    ),
    "plain.modelConfig.providerKey",
    "plain.modelConfig.model",
]


def _set(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    data = copy.deepcopy(data)
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    return data


@pytest.mark.parametrize("path", LEGACY_PATHS)
def test_legacy_field_is_rejected_naming_it(path: str) -> None:
    reason = rejected(_set(oneshot(), path, "x"))
    assert reason.startswith(f"legacy field '{path}' is not supported; ")


@pytest.mark.parametrize("field", ["provider", "modelId", "protocol"])
@pytest.mark.parametrize("where", ["modelConfig", "plain.modelConfig"])
def test_model_fields_are_not_allowed_in_an_agent(field: str, where: str) -> None:
    reason = rejected(_set(oneshot(), f"{where}.{field}", "x"))
    assert f"'{where}.{field}' is not allowed in an agent" in reason
    assert "models/<modelKey>.json" in reason


@pytest.mark.parametrize("stage", ["react", "planExecute.plan", "planExecute.execute", "planExecute.summary"])
def test_legacy_model_field_in_any_stage(stage: str) -> None:
    reason = rejected(_set(oneshot(), f"{stage}.modelConfig.providerKey", "p"))
    assert f"'{stage}.modelConfig.providerKey'" in reason


# --------------------------------------------------------------------------- models


def test_model_key_is_required_somewhere() -> None:
    data = oneshot()
    del data["modelConfig"]
    assert "stage 'plain' has no model" in rejected(data)


def test_a_stage_model_key_is_enough() -> None:
    data = plan_execute()
    del data["modelConfig"]
    data["planExecute"]["plan"]["modelConfig"] = {"modelKey": "m1"}
    data["planExecute"]["execute"]["modelConfig"] = {"modelKey": "m2"}
    agent = parse(data)
    assert [s.model.model.key for s in agent.stages.values()] == ["m1", "m2"]


def test_every_stage_needs_a_model_key() -> None:
    data = plan_execute()
    del data["modelConfig"]
    data["planExecute"]["plan"]["modelConfig"] = {"modelKey": "m1"}
    assert "stage 'execute' has no model" in rejected(data)


def test_unknown_model_is_rejected_naming_it() -> None:
    assert "unknown model 'ghost'" in rejected(oneshot(modelConfig={"modelKey": "ghost"}))


def test_unknown_model_in_a_stage() -> None:
    data = plan_execute()
    data["planExecute"]["execute"]["modelConfig"] = {"modelKey": "ghost"}
    assert "unknown model 'ghost' (stage 'execute')" in rejected(data)


def test_model_is_resolved_to_its_definition() -> None:
    stage = parse(oneshot()).stages["plain"]
    assert stage.model.model is REFS.models["m1"]


# --------------------------------------------------------------------------- modelConfig inheritance


def test_outer_model_config_is_the_default() -> None:
    data = react(modelConfig={"modelKey": "m2", "temperature": 0.3, "top_p": 0.9, "max_tokens": 100,
                              "reasoning": {"enabled": True, "effort": "HIGH"}})
    model = parse(data).stages["react"].model
    assert model.model.key == "m2"
    assert (model.temperature, model.top_p, model.max_tokens) == (0.3, 0.9, 100)
    assert model.reasoning == ReasoningConfig(enabled=True, effort="HIGH")


def test_stage_model_config_overrides_field_by_field() -> None:
    data = react(modelConfig={"modelKey": "m1", "temperature": 0.3, "top_p": 0.9})
    data["react"]["modelConfig"] = {"modelKey": "m2", "temperature": 0.8}
    model = parse(data).stages["react"].model
    assert model.model.key == "m2" and model.temperature == 0.8 and model.top_p == 0.9 and model.max_tokens is None


def test_stage_without_model_key_inherits_the_outer_one() -> None:
    data = react(modelConfig={"modelKey": "m2"})
    data["react"]["modelConfig"] = {"max_tokens": 50}
    model = parse(data).stages["react"].model
    assert model.model.key == "m2" and model.max_tokens == 50


def test_reasoning_merges_field_by_field() -> None:
    data = plan_execute(modelConfig={"modelKey": "m1", "reasoning": {"enabled": True, "effort": "LOW"}})
    data["planExecute"]["plan"]["modelConfig"] = {"reasoning": {"effort": "HIGH"}}
    data["planExecute"]["execute"]["modelConfig"] = {"reasoning": {"enabled": False}}
    agent = parse(data)
    assert agent.stages["plan"].model.reasoning == ReasoningConfig(enabled=True, effort="HIGH")
    assert agent.stages["execute"].model.reasoning == ReasoningConfig(enabled=False, effort="LOW")


def test_reasoning_defaults_to_disabled() -> None:
    assert parse(oneshot()).stages["plain"].model.reasoning == ReasoningConfig(enabled=False, effort=None)


def test_effort_is_case_insensitive_and_checked() -> None:
    assert parse(oneshot(modelConfig={"modelKey": "m1", "reasoning": {"effort": "medium"}})).stages[
        "plain"
    ].model.reasoning.effort == "MEDIUM"
    assert "effort" in rejected(oneshot(modelConfig={"modelKey": "m1", "reasoning": {"effort": "MAX"}}))


def test_stages_inherit_independently() -> None:
    data = plan_execute(modelConfig={"modelKey": "m1", "temperature": 0.1})
    data["planExecute"]["plan"]["modelConfig"] = {"modelKey": "m2"}
    agent = parse(data)
    assert agent.stages["plan"].model.model.key == "m2" and agent.stages["plan"].model.temperature == 0.1
    assert agent.stages["execute"].model.model.key == "m1"


# --------------------------------------------------------------------------- toolConfig inheritance and tool checks


def test_stage_omitting_tool_config_inherits_the_outer_one() -> None:
    agent = parse(react(toolConfig={"backends": ["weather"], "frontends": ["confirm_dialog"], "actions": ["switch_theme"]}))
    assert tool_names(agent, "react") == ["weather", "confirm_dialog", "switch_theme"]
    assert [t.kind for t in agent.stages["react"].tools] == [ToolKind.BACKEND, ToolKind.FRONTEND, ToolKind.ACTION]


def test_explicit_null_tool_config_means_no_tools() -> None:
    data = react(toolConfig={"backends": ["weather"]})
    data["react"]["toolConfig"] = None
    assert tool_names(parse(data), "react") == []


def test_stage_tool_config_replaces_the_outer_one() -> None:
    data = react(toolConfig={"backends": ["weather"]})
    data["react"]["toolConfig"] = {"backends": ["_bash_"]}
    assert tool_names(parse(data), "react") == ["_bash_"]


def test_top_level_null_tool_config() -> None:
    assert tool_names(parse(oneshot(toolConfig=None)), "plain") == []


def test_duplicate_tool_names_in_a_stage_are_collapsed() -> None:
    assert tool_names(parse(oneshot(toolConfig={"backends": ["weather", "weather"]})), "plain") == ["weather"]


def test_plan_stage_always_gets_plan_add_tasks() -> None:
    data = plan_execute(toolConfig={"backends": ["weather"]})
    assert tool_names(parse(data), "plan") == ["weather", "_plan_add_tasks_"]


def test_execute_stage_always_gets_plan_update_task() -> None:
    data = plan_execute(toolConfig={"backends": ["weather"]})
    assert tool_names(parse(data), "execute") == ["weather", "_plan_update_task_"]


def test_forced_plan_tools_survive_null_tool_config() -> None:
    data = plan_execute(toolConfig={"backends": ["weather"]})
    data["planExecute"]["plan"]["toolConfig"] = None
    data["planExecute"]["execute"]["toolConfig"] = None
    agent = parse(data)
    assert tool_names(agent, "plan") == ["_plan_add_tasks_"]
    assert tool_names(agent, "execute") == ["_plan_update_task_"]


def test_forced_tool_is_not_duplicated_when_listed() -> None:
    data = plan_execute(toolConfig={"backends": ["_plan_update_task_", "weather"]})
    assert tool_names(parse(data), "execute") == ["_plan_update_task_", "weather"]


def test_summary_gets_no_forced_tool() -> None:
    data = plan_execute(toolConfig={"backends": ["weather"]})
    data["planExecute"]["summary"] = {"systemPrompt": "s", "toolConfig": None}
    assert tool_names(parse(data), "summary") == []


def test_summary_inherits_outer_tools_when_omitted() -> None:
    data = plan_execute(toolConfig={"backends": ["weather"]})
    data["planExecute"]["summary"] = {"systemPrompt": "s"}
    assert tool_names(parse(data), "summary") == ["weather"]


def test_plan_get_tasks_only_where_listed() -> None:
    data = plan_execute(toolConfig={"backends": ["weather"]})
    data["planExecute"]["execute"]["toolConfig"] = {"backends": ["_plan_get_tasks_"]}
    agent = parse(data)
    assert "_plan_get_tasks_" not in tool_names(agent, "plan")
    assert tool_names(agent, "execute") == ["_plan_get_tasks_", "_plan_update_task_"]


def test_missing_forced_tool_definition_is_rejected() -> None:
    refs = AgentRefs(REFS.models, {k: v for k, v in REFS.tools.items() if k != "_plan_add_tasks_"}, REFS.skills,
                     REFS.builtin_tools)
    with pytest.raises(DefinitionError, match="unknown tool '_plan_add_tasks_'"):
        parse(plan_execute(), refs=refs)


def test_unknown_tool_is_rejected_naming_it() -> None:
    assert "unknown tool 'ghost'" in rejected(oneshot(toolConfig={"backends": ["ghost"]}))


def test_unknown_tool_in_a_stage_names_the_stage() -> None:
    data = plan_execute()
    data["planExecute"]["execute"]["toolConfig"] = {"actions": ["ghost"]}
    assert "unknown tool 'ghost' (toolConfig.actions of stage 'execute')" in rejected(data)


@pytest.mark.parametrize(
    ("listed_in", "name", "actual"),
    [
        ("frontends", "weather", "backend"),
        ("backends", "switch_theme", "action"),
        ("actions", "confirm_dialog", "frontend"),
        ("backends", "confirm_dialog", "frontend"),
    ],
)
def test_tool_listed_under_the_wrong_kind_is_rejected(listed_in: str, name: str, actual: str) -> None:
    reason = rejected(oneshot(toolConfig={listed_in: [name]}))
    assert f"tool '{name}' in toolConfig.{listed_in}" in reason and f"is a {actual} tool" in reason


def test_backend_tool_without_implementation_is_rejected() -> None:
    reason = rejected(oneshot(toolConfig={"backends": ["orphan"]}))
    assert "backend tool 'orphan' has no implementation" in reason


def test_backend_tool_with_tool_api_is_accepted() -> None:
    assert tool_names(parse(oneshot(toolConfig={"backends": ["remote"]})), "plain") == ["remote"]


def test_tools_are_resolved_to_their_definitions() -> None:
    agent = parse(oneshot(toolConfig={"backends": ["weather"]}))
    assert agent.stages["plain"].tools[0] is REFS.tools["weather"]


# --------------------------------------------------------------------------- skills


def test_skills_are_merged_deduplicated_in_order() -> None:
    agent = parse(oneshot(skillConfig={"skills": ["stats", "math"]}, skills=["math", "text", "STATS"]))
    assert [s.id for s in agent.skills] == ["stats", "math", "text"]


def test_unknown_skill_is_rejected_naming_it() -> None:
    assert "unknown skill 'ghost'" in rejected(oneshot(skills=["ghost"]))


def test_unknown_skill_in_skill_config() -> None:
    assert "unknown skill 'nope'" in rejected(oneshot(skillConfig={"skills": ["nope"]}))


# --------------------------------------------------------------------------- budget, steps, deepThinking, prompts


def test_budget_defaults_apply_field_by_field() -> None:
    agent = parse(oneshot(budget={"runTimeoutMs": 1000, "model": {"maxCalls": 3}, "tool": {"retryCount": 2}}))
    default = Budget()
    assert agent.budget.run_timeout_ms == 1000
    assert agent.budget.model == CallBudget(max_calls=3, timeout_ms=default.model.timeout_ms, retry_count=0)
    assert agent.budget.tool == CallBudget(
        max_calls=default.tool.max_calls, timeout_ms=default.tool.timeout_ms, retry_count=2
    )


def test_full_budget() -> None:
    budget = {
        "runTimeoutMs": 120000,
        "model": {"maxCalls": 15, "timeoutMs": 60000, "retryCount": 0},
        "tool": {"maxCalls": 20, "timeoutMs": 120000, "retryCount": 1},
    }
    agent = parse(oneshot(budget=budget))
    assert agent.budget == Budget(120000, CallBudget(15, 60000, 0), CallBudget(20, 120000, 1))


@pytest.mark.parametrize(
    "budget", [{"runTimeoutMs": 0}, {"model": {"maxCalls": -1}}, {"tool": {"retryCount": -1}}, {"model": {"x": 1}}]
)
def test_invalid_budget_is_rejected(budget: dict[str, Any]) -> None:
    assert "budget" in rejected(oneshot(budget=budget))


def test_react_max_steps_default_and_value() -> None:
    assert parse(react()).react_max_steps == 6
    data = react()
    data["react"]["maxSteps"] = 10
    assert parse(data).react_max_steps == 10


def test_plan_execute_max_steps_default_and_value() -> None:
    assert parse(plan_execute()).plan_max_steps == 10
    data = plan_execute()
    data["planExecute"]["maxSteps"] = 4
    assert parse(data).plan_max_steps == 4


def test_max_steps_must_be_positive() -> None:
    data = react()
    data["react"]["maxSteps"] = 0
    assert "react.maxSteps" in rejected(data)


def test_deep_thinking() -> None:
    assert parse(plan_execute()).stages["plan"].deep_thinking is False
    data = plan_execute()
    data["planExecute"]["plan"]["deepThinking"] = True
    agent = parse(data)
    assert agent.stages["plan"].deep_thinking is True and agent.stages["execute"].deep_thinking is False


def test_deep_thinking_only_on_the_plan_stage() -> None:
    data = plan_execute()
    data["planExecute"]["execute"]["deepThinking"] = True
    assert "planExecute.execute.deepThinking: unknown field" in rejected(data)


def test_runtime_prompts() -> None:
    prompts = {
        "planExecute": {"taskExecutionPromptTemplate": "T {task_id}"},
        "skill": {"catalogHeader": "C", "disclosureHeader": "D", "instructionsLabel": "I"},
        "toolAppendix": {"toolDescriptionTitle": "TD", "afterCallHintTitle": "AC"},
    }
    assert parse(oneshot(runtimePrompts=prompts)).runtime_prompts == RuntimePrompts("T {task_id}", "C", "D", "I", "TD", "AC")


def test_runtime_prompts_partial_keeps_defaults() -> None:
    agent = parse(oneshot(runtimePrompts={"skill": {"catalogHeader": "C"}}))
    default = RuntimePrompts()
    assert agent.runtime_prompts.skill_catalog_header == "C"
    assert agent.runtime_prompts.tool_description_title == default.tool_description_title


def test_unknown_runtime_prompt_is_rejected() -> None:
    assert "runtimePrompts.skill.footer: unknown field" in rejected(oneshot(runtimePrompts={"skill": {"footer": "x"}}))


# --------------------------------------------------------------------------- files


def test_load_agent_with_comments_and_triple_quoted_prompt(tmp_path: Path) -> None:
    path = tmp_path / "agent1.json"
    path.write_text(
        '{\n  // demo\n  "mode": "REACT",\n  "modelConfig": {"modelKey": "m1",},\n'
        '  "react": {\n    "systemPrompt": """\n      line 1\n        line 2\n    """,\n  },\n}\n',
        encoding="utf-8",
    )
    agent = load_agent(path, REFS)
    assert agent.stages["react"].system_prompt == "line 1\n  line 2"
    assert agent.source == path


def test_catalog_rejects_agent_naming_file_and_keeps_others(deploy: Deployment) -> None:
    deploy.standard()
    deploy.write("agents/good.json", oneshot(modelConfig={"modelKey": "m1"}))
    deploy.write("agents/bad.json", oneshot(modelConfig={"modelKey": "ghost"}))
    deploy.write("agents/broken.json", '{\n  "mode": "ONESHOT",\n  oops\n}')
    catalog = deploy.build()
    assert list(catalog.agents) == ["good"]
    reasons = {r.file: r.reason for r in catalog.rejections if r.kind == "agent"}
    assert "unknown model 'ghost'" in reasons["agents/bad.json"]
    assert reasons["agents/broken.json"].startswith("line 3,")


def test_agent_referring_to_a_rejected_model_is_rejected(deploy: Deployment) -> None:
    deploy.standard()
    deploy.write("models/m2.json", model_file("m2", provider="not-configured"))
    deploy.write("agents/a.json", oneshot(modelConfig={"modelKey": "m2"}))
    catalog = deploy.build()
    assert catalog.agents == {}
    assert {r.file for r in catalog.rejections} == {"models/m2.json", "agents/a.json"}


def test_catalog_tool_kinds_come_from_files(deploy: Deployment) -> None:
    deploy.standard()
    deploy.write("tools/http.backend", {"tools": [tool_item("http_tool", toolApi="http://127.0.0.1:9/x")]})
    deploy.write(
        "agents/a.json",
        react(toolConfig={"backends": ["_bash_", "http_tool"], "frontends": ["confirm_dialog"], "actions": ["switch_theme"]},
              skills=["math"]),
    )
    catalog = deploy.build()
    assert catalog.rejections == ()
    agent = catalog.agents["a"]
    assert tool_names(agent, "react") == ["_bash_", "http_tool", "confirm_dialog", "switch_theme"]
    assert agent.skills[0].id == "math"
