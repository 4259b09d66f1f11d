"""Agent definitions, ``agents/<agentKey>.json`` (SPEC §3.2).

Validation happens in three steps, each failing with a ``DefinitionError`` whose
message names the offending field, model, tool or skill:

1. ``check_legacy`` refuses the retired fields of older agent formats, with a hint.
2. The pydantic models below validate the shape (unknown fields refused).
3. ``parse_agent`` applies the inheritance rules and resolves every reference against
   the models, tools and skills already loaded (``AgentRefs``), producing the frozen
   ``AgentDefinition``.

Inheritance rules:

* modelConfig — the outer block is the default; a stage's own block overrides it field
  by field (``reasoning.enabled`` and ``reasoning.effort`` separately). Every stage
  must end up with a ``modelKey``.
* toolConfig — a stage that omits ``toolConfig`` inherits the outer one; an explicit
  ``"toolConfig": null`` means no ordinary tools. PLAN_EXECUTE forces
  ``_plan_add_tasks_`` into the plan stage and ``_plan_update_task_`` into the execute
  stage regardless.

GRAPH mode (SPEC §21): the ``graph`` block is validated by ``app.catalog.graph``; each ``llm``
node is a stage (its ``modelConfig`` over the outer one, its ``tools`` by name). GRAPH agents
load after every other agent (``load_agent_files``) so an ``agent`` node can name one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from app.catalog._edge import read_object, rejection_reason, validate
from app.catalog.definitions import (
    AgentDefinition,
    Budget,
    GraphDefinition,
    CallBudget,
    Effort,
    Mode,
    ModelDefinition,
    ReasoningConfig,
    RuntimePrompts,
    SkillDefinition,
    Stage,
    StageModel,
    StageName,
    ToolChoice,
    ToolDefinition,
    ToolKind,
)
from app.catalog.graph import GraphRefs, parse_graph
from app.catalog.mcp import PREFIX as MCP_PREFIX
from app.catalog.mcp import McpTools, resolve_mcp_tools
from app.errors import DefinitionError, PathEscapeError
from app.paths import check_key

PLAN_ADD_TASKS = "_plan_add_tasks_"
PLAN_UPDATE_TASK = "_plan_update_task_"
PLAN_GET_TASKS = "_plan_get_tasks_"
#: implemented by the engine itself; never need a built-in implementation or a toolApi
ENGINE_TOOLS: frozenset[str] = frozenset({PLAN_ADD_TASKS, PLAN_UPDATE_TASK, PLAN_GET_TASKS})

_MODEL_FIELDS_ELSEWHERE = ("provider", "modelId", "protocol")

#: retired fields: location (dotted, relative to its object) → what to do instead
_LEGACY_TOP: Mapping[str, str] = {
    "verify": "remove it (the gateway makes no verification call)",
    "output": "remove it",
    "toolPolicy": "use 'toolChoice' and 'toolConfig'",
    "reasoning": "use 'modelConfig.reasoning'",
    "tools": "use 'toolConfig' with 'backends', 'frontends' and 'actions'",
    "deepThink": "use 'planExecute.plan.deepThinking'",
    "systemPrompt": "put the prompt in the mode's block ('plain', 'react' or 'planExecute.*')",
}
_LEGACY_MODEL_CONFIG: Mapping[str, str] = {
    "providerKey": "the provider comes from models/<modelKey>.json",
    "model": "use 'modelKey'",
}
_LEGACY_BUDGET: Mapping[str, str] = {
    "maxModelCalls": "use 'budget.model.maxCalls'",
    "maxToolCalls": "use 'budget.tool.maxCalls'",
    "maxSteps": "use 'react.maxSteps' or 'planExecute.maxSteps'",
    "timeoutMs": "use 'budget.runTimeoutMs' or 'budget.model.timeoutMs' / 'budget.tool.timeoutMs'",
    "retryCount": "use 'budget.model.retryCount' / 'budget.tool.retryCount'",
}
_LEGACY_RUNTIME_PROMPTS: Mapping[str, str] = {
    "verify": "remove it (the gateway makes no verification call)",
    "finalAnswer": "remove it",
    "oneshot": "remove it",
    "react": "remove it",
}
_LEGACY_PLAN_EXECUTE_PROMPTS: tuple[str, ...] = (
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

#: every location a modelConfig block may appear at
_MODEL_CONFIG_PATHS: tuple[tuple[str, ...], ...] = (
    ("modelConfig",),
    ("plain", "modelConfig"),
    ("react", "modelConfig"),
    ("planExecute", "plan", "modelConfig"),
    ("planExecute", "execute", "modelConfig"),
    ("planExecute", "summary", "modelConfig"),
)


def _legacy(field: str, hint: str) -> DefinitionError:
    return DefinitionError(f"legacy field '{field}' is not supported; {hint}")


def _dig(data: Mapping[str, Any], path: tuple[str, ...]) -> Mapping[str, Any] | None:
    node: Any = data
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    return node if isinstance(node, Mapping) else None


def check_legacy(data: Mapping[str, Any]) -> None:
    """Refuse the retired fields of SPEC §3.2, naming the field and its replacement."""
    for name, hint in _LEGACY_TOP.items():
        if name in data:
            raise _legacy(name, hint)
    for path in _MODEL_CONFIG_PATHS:
        block = _dig(data, path)
        if block is None:
            continue
        where = ".".join(path)
        for name, hint in _LEGACY_MODEL_CONFIG.items():
            if name in block:
                raise _legacy(f"{where}.{name}", hint)
        for name in _MODEL_FIELDS_ELSEWHERE:
            if name in block:
                raise DefinitionError(
                    f"'{where}.{name}' is not allowed in an agent: provider, modelId and protocol "
                    "come from models/<modelKey>.json"
                )
    budget = _dig(data, ("budget",))
    if budget is not None:
        for name, hint in _LEGACY_BUDGET.items():
            if name in budget:
                raise _legacy(f"budget.{name}", hint)
    prompts = _dig(data, ("runtimePrompts",))
    if prompts is not None:
        for name, hint in _LEGACY_RUNTIME_PROMPTS.items():
            if name in prompts:
                raise _legacy(f"runtimePrompts.{name}", hint)
        plan_prompts = _dig(prompts, ("planExecute",))
        if plan_prompts is not None:
            for name in _LEGACY_PLAN_EXECUTE_PROMPTS:
                if name in plan_prompts:
                    raise _legacy(
                        f"runtimePrompts.planExecute.{name}",
                        "only 'taskExecutionPromptTemplate' is configurable",
                    )


# --------------------------------------------------------------------------- shape


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RawReasoning(_Strict):
    enabled: bool | None = None
    effort: Effort | None = None

    _effort = field_validator("effort", mode="before")(_upper)


class RawModelConfig(_Strict):
    model_key: str | None = Field(None, alias="modelKey", min_length=1)
    reasoning: RawReasoning | None = None
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: PositiveInt | None = None


class RawToolConfig(_Strict):
    backends: list[str] = Field(default_factory=list)
    frontends: list[str] = Field(default_factory=list)
    actions: list[str] = Field(default_factory=list)


class RawSkillConfig(_Strict):
    skills: list[str] = Field(default_factory=list)


class RawStage(_Strict):
    system_prompt: str | None = Field(None, alias="systemPrompt")
    model_cfg: RawModelConfig | None = Field(None, alias="modelConfig")
    tool_config: RawToolConfig | None = Field(None, alias="toolConfig")

    @property
    def inherits_tools(self) -> bool:
        """True when the stage omits ``toolConfig`` (explicit ``null`` does not inherit)."""
        return "tool_config" not in self.model_fields_set


class RawReactStage(RawStage):
    max_steps: PositiveInt = Field(6, alias="maxSteps")


class RawPlanStage(RawStage):
    deep_thinking: bool = Field(False, alias="deepThinking")


class RawPlanExecute(_Strict):
    plan: RawPlanStage | None = None
    execute: RawStage | None = None
    summary: RawStage | None = None
    max_steps: PositiveInt = Field(10, alias="maxSteps")


class RawCallBudget(_Strict):
    max_calls: PositiveInt | None = Field(None, alias="maxCalls")
    timeout_ms: PositiveInt | None = Field(None, alias="timeoutMs")
    retry_count: int | None = Field(None, alias="retryCount", ge=0)


class RawBudget(_Strict):
    run_timeout_ms: PositiveInt | None = Field(None, alias="runTimeoutMs")
    model: RawCallBudget | None = None
    tool: RawCallBudget | None = None


class RawPlanExecutePrompts(_Strict):
    task_execution_prompt_template: str | None = Field(None, alias="taskExecutionPromptTemplate")


class RawSkillPrompts(_Strict):
    catalog_header: str | None = Field(None, alias="catalogHeader")
    disclosure_header: str | None = Field(None, alias="disclosureHeader")
    instructions_label: str | None = Field(None, alias="instructionsLabel")


class RawToolAppendixPrompts(_Strict):
    tool_description_title: str | None = Field(None, alias="toolDescriptionTitle")
    after_call_hint_title: str | None = Field(None, alias="afterCallHintTitle")


class RawRuntimePrompts(_Strict):
    plan_execute: RawPlanExecutePrompts | None = Field(None, alias="planExecute")
    skill: RawSkillPrompts | None = None
    tool_appendix: RawToolAppendixPrompts | None = Field(None, alias="toolAppendix")


class RawAgent(_Strict):
    """The JSON shape of an agent file (SPEC §3.2); unknown fields are refused."""

    key: str | None = None
    name: str | None = None
    icon: str | None = None
    description: str | None = None
    mode: Mode
    model_cfg: RawModelConfig | None = Field(None, alias="modelConfig")
    tool_config: RawToolConfig | None = Field(None, alias="toolConfig")
    skill_config: RawSkillConfig | None = Field(None, alias="skillConfig")
    skills: list[str] = Field(default_factory=list)
    tool_choice: ToolChoice = Field("AUTO", alias="toolChoice")
    budget: RawBudget | None = None
    plain: RawStage | None = None
    react: RawReactStage | None = None
    plan_execute: RawPlanExecute | None = Field(None, alias="planExecute")
    runtime_prompts: RawRuntimePrompts | None = Field(None, alias="runtimePrompts")
    #: GRAPH mode (SPEC §21): validated by ``app.catalog.graph``
    graph: dict[str, Any] | None = None

    _upper_enums = field_validator("mode", "tool_choice", mode="before")(_upper)


# --------------------------------------------------------------------------- resolution


@dataclass(frozen=True, slots=True)
class AgentRefs:
    """What an agent is validated against: the already-loaded models, tools and skills."""

    models: Mapping[str, ModelDefinition]
    tools: Mapping[str, ToolDefinition]
    skills: Mapping[str, SkillDefinition]
    #: names of backend tools the gateway implements itself
    builtin_tools: frozenset[str]
    #: SPEC §18: each MCP server file's tools (``mcp__<serverKey>__<tool>``), by server key
    mcp: Mapping[str, McpTools] = field(default_factory=dict)
    #: SPEC §21: the agents a GRAPH agent's ``agent`` nodes may name (those loaded before it)
    agents: Mapping[str, AgentDefinition] = field(default_factory=dict)


def _merge_model_config(outer: RawModelConfig | None, own: RawModelConfig | None) -> RawModelConfig:
    """``own`` over ``outer``, field by field (reasoning too)."""
    base = outer or RawModelConfig()
    if own is None:
        return base
    reasoning: RawReasoning | None = base.reasoning
    if own.reasoning is not None:
        inherited = base.reasoning or RawReasoning()
        reasoning = RawReasoning(
            enabled=own.reasoning.enabled if own.reasoning.enabled is not None else inherited.enabled,
            effort=own.reasoning.effort if own.reasoning.effort is not None else inherited.effort,
        )
    return RawModelConfig(
        model_key=own.model_key if own.model_key is not None else base.model_key,
        reasoning=reasoning,
        temperature=own.temperature if own.temperature is not None else base.temperature,
        top_p=own.top_p if own.top_p is not None else base.top_p,
        max_tokens=own.max_tokens if own.max_tokens is not None else base.max_tokens,
    )


def _stage_model(stage: str, merged: RawModelConfig, refs: AgentRefs) -> StageModel:
    if merged.model_key is None:
        raise DefinitionError(
            f"stage '{stage}' has no model: set modelConfig.modelKey at the top level or in the stage"
        )
    model = refs.models.get(merged.model_key)
    if model is None:
        raise DefinitionError(f"unknown model '{merged.model_key}' (stage '{stage}')")
    reasoning = merged.reasoning or RawReasoning()
    return StageModel(
        model=model,
        reasoning=ReasoningConfig(enabled=bool(reasoning.enabled), effort=reasoning.effort),
        temperature=merged.temperature,
        top_p=merged.top_p,
        max_tokens=merged.max_tokens,
    )


_LIST_KINDS: tuple[tuple[Literal["backends", "frontends", "actions"], ToolKind], ...] = (
    ("backends", ToolKind.BACKEND),
    ("frontends", ToolKind.FRONTEND),
    ("actions", ToolKind.ACTION),
)


def _resolve_tool(name: str, kind: ToolKind, where: str, refs: AgentRefs) -> ToolDefinition:
    tool = refs.tools.get(name)
    if tool is None:
        raise DefinitionError(f"unknown tool '{name}' ({where})")
    if tool.kind is not kind:
        raise DefinitionError(f"tool '{name}' in {where} is a {tool.kind.value} tool, not a {kind.value} tool")
    if (
        kind is ToolKind.BACKEND
        and tool.tool_api is None
        and name not in refs.builtin_tools
        and name not in ENGINE_TOOLS
    ):
        raise DefinitionError(
            f"backend tool '{name}' has no implementation: it is not a built-in tool and declares no toolApi"
        )
    return tool


def _stage_tools(
    stage: str, config: RawToolConfig | None, forced: str | None, refs: AgentRefs
) -> tuple[ToolDefinition, ...]:
    chosen: dict[str, ToolDefinition] = {}
    if config is not None:
        for field_name, kind in _LIST_KINDS:
            where = f"toolConfig.{field_name} of stage '{stage}'"
            for name in getattr(config, field_name):
                if kind is ToolKind.BACKEND and name.startswith(MCP_PREFIX):
                    for mcp_tool in resolve_mcp_tools(name, where, refs.mcp):  # SPEC §18
                        chosen.setdefault(mcp_tool.name, mcp_tool)
                    continue
                chosen.setdefault(name, _resolve_tool(name, kind, where, refs))
    if forced is not None and forced not in chosen:
        tool = refs.tools.get(forced)
        if tool is None:
            raise DefinitionError(
                f"unknown tool '{forced}' (always required by the {stage} stage of PLAN_EXECUTE; "
                f"add tools/{forced}.backend)"
            )
        chosen[forced] = tool
    return tuple(chosen.values())


def _build_stage(
    name: StageName,
    raw: RawStage,
    agent: RawAgent,
    refs: AgentRefs,
    *,
    forced_tool: str | None = None,
    deep_thinking: bool = False,
) -> Stage:
    tool_config = agent.tool_config if raw.inherits_tools else raw.tool_config
    return Stage(
        name=name,
        system_prompt=raw.system_prompt or "",
        model=_stage_model(name, _merge_model_config(agent.model_cfg, raw.model_cfg), refs),
        tools=_stage_tools(name, tool_config, forced_tool, refs),
        deep_thinking=deep_thinking,
    )


def _require_prompt(raw: RawStage | None, where: str) -> RawStage:
    if raw is None or not (raw.system_prompt or "").strip():
        raise DefinitionError(f"'{where}.systemPrompt' is required for this mode")
    return raw


def _stages(agent: RawAgent, refs: AgentRefs) -> dict[str, Stage]:
    if agent.mode == "GRAPH":
        return {}  # its stages are its llm nodes' (see ``_graph``)
    if agent.mode == "ONESHOT":
        plain = _require_prompt(agent.plain, "plain")
        return {"plain": _build_stage("plain", plain, agent, refs)}
    if agent.mode == "REACT":
        react = _require_prompt(agent.react, "react")
        return {"react": _build_stage("react", react, agent, refs)}
    block = agent.plan_execute
    plan = _require_prompt(block.plan if block else None, "planExecute.plan")
    execute = _require_prompt(block.execute if block else None, "planExecute.execute")
    assert block is not None and isinstance(plan, RawPlanStage)
    stages = {
        "plan": _build_stage(
            "plan", plan, agent, refs, forced_tool=PLAN_ADD_TASKS, deep_thinking=plan.deep_thinking
        ),
        "execute": _build_stage("execute", execute, agent, refs, forced_tool=PLAN_UPDATE_TASK),
    }
    if block.summary is not None:
        summary = _require_prompt(block.summary, "planExecute.summary")
        stages["summary"] = _build_stage("summary", summary, agent, refs)
    return stages


def _budget(raw: RawBudget | None) -> Budget:
    default = Budget()
    if raw is None:
        return default

    def call(own: RawCallBudget | None, base: CallBudget) -> CallBudget:
        if own is None:
            return base
        return CallBudget(
            max_calls=own.max_calls if own.max_calls is not None else base.max_calls,
            timeout_ms=own.timeout_ms if own.timeout_ms is not None else base.timeout_ms,
            retry_count=own.retry_count if own.retry_count is not None else base.retry_count,
        )

    return Budget(
        run_timeout_ms=raw.run_timeout_ms if raw.run_timeout_ms is not None else default.run_timeout_ms,
        model=call(raw.model, default.model),
        tool=call(raw.tool, default.tool),
    )


def _runtime_prompts(raw: RawRuntimePrompts | None) -> RuntimePrompts:
    default = RuntimePrompts()
    if raw is None:
        return default
    plan = raw.plan_execute or RawPlanExecutePrompts()
    skill = raw.skill or RawSkillPrompts()
    appendix = raw.tool_appendix or RawToolAppendixPrompts()
    return RuntimePrompts(
        task_execution_prompt_template=plan.task_execution_prompt_template
        or default.task_execution_prompt_template,
        skill_catalog_header=skill.catalog_header or default.skill_catalog_header,
        skill_disclosure_header=skill.disclosure_header or default.skill_disclosure_header,
        skill_instructions_label=skill.instructions_label or default.skill_instructions_label,
        tool_description_title=appendix.tool_description_title or default.tool_description_title,
        after_call_hint_title=appendix.after_call_hint_title or default.after_call_hint_title,
    )


def _skills(agent: RawAgent, refs: AgentRefs) -> tuple[SkillDefinition, ...]:
    names = [*(agent.skill_config.skills if agent.skill_config else []), *agent.skills]
    resolved: dict[str, SkillDefinition] = {}
    for name in names:
        skill = refs.skills.get(name.lower())
        if skill is None:
            raise DefinitionError(f"unknown skill '{name}'")
        resolved.setdefault(skill.id, skill)
    return tuple(resolved.values())


def _graph_tool(name: str, kind: ToolKind | None, where: str, refs: AgentRefs) -> ToolDefinition:
    """A tool a graph node names: a ``tool`` node's backend (or MCP) tool, a ``human`` node's frontend tool."""
    if name.startswith(MCP_PREFIX) and kind in (ToolKind.BACKEND, None):
        if name.endswith("__*"):
            raise DefinitionError(f"{where}: a tool node calls one tool, not all of a server's ('{name}')")
        found = resolve_mcp_tools(name, where, refs.mcp)
        if found:
            return found[0]
        # listed server, tool not (yet) listed: the agent loads, a call is an error result (SPEC §18)
        return ToolDefinition(name=name, kind=ToolKind.BACKEND, description=f"MCP tool {name}",
                              parameters={"type": "object"})
    if kind is None:
        tool = refs.tools.get(name)
        if tool is None:
            raise DefinitionError(f"unknown tool '{name}' ({where})")
        kind = tool.kind
    return _resolve_tool(name, kind, where, refs)


def _graph_stage(agent: RawAgent, refs: AgentRefs, where: str, model_cfg: Mapping[str, Any] | None,
                 tools: Sequence[str], system: str) -> Stage:
    """An ``llm`` node's stage: the node's modelConfig over the agent's, its ``tools`` by name (any kind)."""
    own = validate(RawModelConfig, dict(model_cfg), prefix=f"{where} modelConfig.") if model_cfg is not None else None
    merged = _merge_model_config(agent.model_cfg, own)
    if merged.model_key is None:
        raise DefinitionError(f"{where} has no model: set modelConfig.modelKey at the top level or in the node")
    if merged.model_key not in refs.models:
        raise DefinitionError(f"unknown model '{merged.model_key}' ({where})")
    lists: dict[ToolKind, list[str]] = {kind: [] for kind in ToolKind}
    for name in tools:
        kind = ToolKind.BACKEND if name.startswith(MCP_PREFIX) else _graph_tool(name, None, f"{where} tools", refs).kind
        lists[kind].append(name)
    return Stage(name="graph", system_prompt=system, model=_stage_model(where, merged, refs),
                 tools=_stage_tools(where, RawToolConfig(backends=lists[ToolKind.BACKEND],
                                                         frontends=lists[ToolKind.FRONTEND],
                                                         actions=lists[ToolKind.ACTION]), None, refs))


def _graph(agent: RawAgent, refs: AgentRefs) -> GraphDefinition | None:
    """SPEC §21: the ``graph`` block, required in GRAPH mode and refused in the others."""
    if agent.mode != "GRAPH":
        if agent.graph is not None:
            raise DefinitionError(f"'graph' is only read in GRAPH mode (this agent is {agent.mode})")
        return None
    if agent.graph is None:
        raise DefinitionError("'graph' is required for this mode")
    for block, given in (("plain", agent.plain), ("react", agent.react), ("planExecute", agent.plan_execute)):
        if given is not None:
            raise DefinitionError(f"'{block}' is not read in GRAPH mode; put prompts in the graph's llm nodes")
    return parse_graph(agent.graph, GraphRefs(
        stage=lambda where, cfg, tools, system: _graph_stage(agent, refs, where, cfg, tools, system),
        tool=lambda name, kind, where: _graph_tool(name, kind, where, refs),
        agents=refs.agents,
    ))


def parse_agent(data: object, stem: str, refs: AgentRefs, source: Path | None = None) -> AgentDefinition:
    """Validate a parsed agent file whose file name stem is ``stem``."""
    try:
        key = check_key(stem, "agent key")
    except PathEscapeError as exc:
        raise DefinitionError(exc.message) from exc
    if not isinstance(data, Mapping):
        raise DefinitionError("the top level must be a JSON object")
    check_legacy(data)
    raw = validate(RawAgent, data)
    if raw.key is not None and raw.key != key:
        raise DefinitionError(f"key {raw.key!r} does not match the file name {key!r}")
    graph = _graph(raw, refs)
    stages = _stages(raw, refs)
    if graph is not None:  # SPEC §21: an llm node is a stage (the detail view and the limits read them)
        stages = {name: node.stage for name, node in graph.nodes.items() if node.stage is not None}
    return AgentDefinition(
        key=key,
        name=raw.name or key,
        icon=raw.icon,
        description=raw.description or "",
        mode=raw.mode,
        stages=stages,
        graph=graph,
        tool_choice=raw.tool_choice,
        budget=_budget(raw.budget),
        react_max_steps=raw.react.max_steps if raw.react else 6,
        plan_max_steps=raw.plan_execute.max_steps if raw.plan_execute else 10,
        skills=_skills(raw, refs),
        runtime_prompts=_runtime_prompts(raw.runtime_prompts),
        source=source,
    )


def load_agent(path: Path, refs: AgentRefs) -> AgentDefinition:
    """Read and validate ``agents/<key>.json``; raises ``DefinitionError`` with the reason."""
    return parse_agent(read_object(path), path.stem, refs, source=path)


def load_agent_files(paths: Sequence[Path], refs: AgentRefs,
                     reject: Callable[[Path, str], None]) -> dict[str, AgentDefinition]:
    """Load every agent file; ``reject(path, reason)`` for each one that does not validate.

    GRAPH agents load last, against the agents loaded before them (an ``agent`` node names a
    ONESHOT or REACT agent, SPEC §21). The result keeps the files' order."""
    loaded: dict[str, AgentDefinition] = {}
    graphs: list[tuple[Path, dict[str, Any]]] = []
    for path in paths:
        try:
            data = read_object(path)
            if str(data.get("mode", "")).upper() == "GRAPH":
                graphs.append((path, data))
                continue
            loaded[path.stem] = parse_agent(data, path.stem, refs, source=path)
        except Exception as exc:  # noqa: BLE001 - one bad file is that file's rejection
            reject(path, rejection_reason(exc))
    with_agents = replace(refs, agents=dict(loaded))
    for path, data in graphs:
        try:
            loaded[path.stem] = parse_agent(data, path.stem, with_agents, source=path)
        except Exception as exc:  # noqa: BLE001 - one bad file is that file's rejection
            reject(path, rejection_reason(exc))
    order = {path.stem: index for index, path in enumerate(paths)}
    return dict(sorted(loaded.items(), key=lambda item: order[item[0]]))
