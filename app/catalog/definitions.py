"""Resolved, immutable definitions (SPEC §3). Loaders build these; the engine reads them.

These are the *output* of validation: every inheritance rule is already applied, every
referenced model/tool/skill is resolved to its object. A run holds a reference to one
``AgentDefinition`` (and through it everything it needs), so a hot reload never
changes a run in progress.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Literal

from app.catalog.expressions import Expression, Query, Template, ValueTemplate

Protocol = Literal["OPENAI", "ANTHROPIC", "NEWAPI_OPENAI_COMPATIBLE"]
Mode = Literal["ONESHOT", "REACT", "PLAN_EXECUTE", "GRAPH"]
ToolChoice = Literal["NONE", "AUTO", "REQUIRED"]
Effort = Literal["LOW", "MEDIUM", "HIGH"]
StageName = Literal["plain", "react", "plan", "execute", "summary", "graph"]


class ToolKind(str, Enum):
    BACKEND = "backend"
    FRONTEND = "frontend"
    ACTION = "action"


@dataclass(frozen=True, slots=True)
class PricingTier:
    min_input_tokens: int = 0
    max_input_tokens: int | None = None
    prompt_points_per_1k: float = 0.0
    completion_points_per_1k: float = 0.0
    per_call_points: float = 0.0
    price_ratio: float = 1.0


@dataclass(frozen=True, slots=True)
class Pricing:
    prompt_points_per_1k: float = 0.0
    completion_points_per_1k: float = 0.0
    per_call_points: float = 0.0
    price_ratio: float = 1.0
    tiers: tuple[PricingTier, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelLimits:
    """A model's own ``limits`` (SPEC §19): requests and tokens per minute; 0 = unlimited."""

    rpm: int = 0
    tpm: int = 0


GroupStrategy = Literal["fallback", "round-robin", "weighted"]


@dataclass(frozen=True, slots=True)
class GroupMember:
    model: ModelDefinition
    weight: int = 1


@dataclass(frozen=True, slots=True)
class ModelGroup:
    """A model file that names other models instead of a provider model (SPEC §19)."""

    strategy: GroupStrategy
    members: tuple[GroupMember, ...]


@dataclass(frozen=True, slots=True)
class ModelDefinition:
    """``models/<key>.json``. A group model (``group`` set) carries its first member's connection
    fields so code that only needs the protocol shape keeps working; calls go to the members."""

    key: str
    provider: str
    protocol: Protocol
    model_id: str
    is_reasoner: bool = False
    is_function: bool = True
    #: SPEC §23: the model takes images (image references are sent as image parts)
    is_vision: bool = False
    max_tokens: int | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    pricing: Pricing = Pricing()
    source: Path | None = None
    limits: ModelLimits = ModelLimits()
    group: ModelGroup | None = None

    @property
    def members(self) -> tuple[ModelDefinition, ...]:
        """The models a call may go to: the group's members, or the model itself."""
        return tuple(m.model for m in self.group.members) if self.group is not None else (self,)


@dataclass(frozen=True, slots=True)
class ToolDefinition:
    """One item of a ``tools/*.backend|frontend|action`` file."""

    name: str
    kind: ToolKind
    description: str
    parameters: Mapping[str, Any]
    after_call_hint: str | None = None
    #: http(s) URL for an HTTP backend tool (SPEC §3.3)
    tool_api: str | None = None
    #: frontend tools: viewport type (``html``, ``qlc``…) and key; default ``html`` / the tool name
    tool_type: str | None = None
    tool_key: str | None = None
    source: Path | None = None

    @property
    def is_system(self) -> bool:
        return len(self.name) > 1 and self.name.startswith("_") and self.name.endswith("_")

    def openai_schema(self) -> dict[str, Any]:
        """The OpenAI ``tools[]`` item for this tool."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": dict(self.parameters)},
        }


@dataclass(frozen=True, slots=True)
class SkillDefinition:
    """``skills/<id>/SKILL.md`` (front matter + body)."""

    id: str
    name: str
    description: str
    body: str
    folder: Path


@dataclass(frozen=True, slots=True)
class ViewportDefinition:
    """``viewports/<key>.<suffix>``; ``type`` ∈ html | qlc | json_schema | custom."""

    key: str
    type: str
    path: Path
    #: the payload of ``GET /api/ap/viewport`` (SPEC §3.5), read at load time:
    #: ``{"html": text}`` for html, the file's JSON object otherwise
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ReasoningConfig:
    enabled: bool = False
    effort: Effort | None = None


@dataclass(frozen=True, slots=True)
class StageModel:
    """A stage's modelConfig after inheritance, with the model resolved."""

    model: ModelDefinition
    reasoning: ReasoningConfig = ReasoningConfig()
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Stage:
    """One stage of an agent (``plain``, ``react``, ``plan``, ``execute``, ``summary``).

    ``tools`` is the resolved ordinary tool set after toolConfig inheritance, with the
    PLAN_EXECUTE forced tools already added (plan: ``_plan_add_tasks_``; execute:
    ``_plan_update_task_``).
    """

    name: StageName
    system_prompt: str
    model: StageModel
    tools: tuple[ToolDefinition, ...] = ()
    deep_thinking: bool = False


@dataclass(frozen=True, slots=True)
class CallBudget:
    max_calls: int
    timeout_ms: int
    retry_count: int = 0


@dataclass(frozen=True, slots=True)
class Budget:
    run_timeout_ms: int = 300_000
    model: CallBudget = CallBudget(max_calls=30, timeout_ms=120_000)
    tool: CallBudget = CallBudget(max_calls=40, timeout_ms=120_000)


@dataclass(frozen=True, slots=True)
class RuntimePrompts:
    task_execution_prompt_template: str = (
        "Task list:\n{task_list}\n\nCurrent task: {task_id} — {task_description}\n"
        "Execute only the current task. When it is done, call _plan_update_task_ with "
        'taskId "{task_id}" and status "completed" (or "failed" if it cannot be done).'
    )
    skill_catalog_header: str = (
        "Available skills (use only these; never invent skills or scripts — run a skill's "
        "scripts with _skill_run_script_):"
    )
    skill_disclosure_header: str = "Skill instructions disclosed on first use:"
    skill_instructions_label: str = "Instructions"
    tool_description_title: str = "Tool descriptions"
    after_call_hint_title: str = "After-call instructions"


GraphNodeKind = Literal["llm", "tool", "agent", "human", "router"]
#: the pseudo-nodes every graph starts from and ends at
GRAPH_START = "START"
GRAPH_END = "END"


@dataclass(frozen=True, slots=True)
class GraphField:
    """One declared input (``required``, ``default``) or state key (``initial``) of a graph."""

    name: str
    type: str = "any"
    required: bool = False
    #: an input's default, or a state key's initial value
    default: Any = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class GraphNode:
    """One node of a GRAPH agent (SPEC §21), its templates and expressions compiled.

    Per kind: ``llm`` — ``prompt``, ``stage`` (model, system prompt, tools), ``output_format``,
    ``max_steps``, ``history``; ``tool`` / ``human`` — ``tool`` (backend / frontend) and
    ``params``; ``agent`` — ``agent`` (a ONESHOT or REACT agent) and ``message``; ``router`` —
    nothing. Any kind: ``output`` (the node's result into one state key), ``outputs`` (state
    key → JMESPath over the result), ``update`` (state key → expression), ``optional``.
    """

    name: str
    kind: GraphNodeKind
    description: str
    optional: bool = False
    prompt: Template | None = None
    system_prompt: Template | None = None
    stage: Stage | None = None
    output_format: Literal["text", "json"] = "text"
    max_steps: int = 6
    history: bool = False
    tool: ToolDefinition | None = None
    params: ValueTemplate | None = None
    agent: AgentDefinition | None = None
    message: Template | None = None
    output: str | None = None
    outputs: tuple[tuple[str, Query], ...] = ()
    update: tuple[tuple[str, Expression], ...] = ()


@dataclass(frozen=True, slots=True)
class GraphEdge:
    source: str
    target: str
    condition: Expression | None = None
    parallel: bool = False


@dataclass(frozen=True, slots=True)
class GraphDefinition:
    """The ``graph`` block of a GRAPH agent after validation (SPEC §21)."""

    inputs: tuple[GraphField, ...]
    state: tuple[GraphField, ...]
    #: in file order
    nodes: Mapping[str, GraphNode]
    #: in file order (the first matching edge of a node wins)
    edges: tuple[GraphEdge, ...]
    answer: Template | None = None
    max_steps: int = 20
    #: a node (or START) whose edges are parallel → the node its branches meet at (or END)
    joins: Mapping[str, str] = field(default_factory=dict)
    #: ``edges`` grouped by source, once
    _outgoing: Mapping[str, tuple[GraphEdge, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        outgoing: dict[str, list[GraphEdge]] = {}
        for edge in self.edges:
            outgoing.setdefault(edge.source, []).append(edge)
        object.__setattr__(self, "_outgoing", {source: tuple(out) for source, out in outgoing.items()})

    def edges_from(self, name: str) -> tuple[GraphEdge, ...]:
        return self._outgoing.get(name, ())


@dataclass(frozen=True, slots=True)
class AgentDefinition:
    """``agents/<key>.json`` after validation and inheritance (SPEC §3.2)."""

    key: str
    name: str
    icon: str | None
    description: str
    mode: Mode
    stages: Mapping[str, Stage]
    tool_choice: ToolChoice = "AUTO"
    budget: Budget = Budget()
    react_max_steps: int = 6
    plan_max_steps: int = 10
    skills: tuple[SkillDefinition, ...] = ()
    runtime_prompts: RuntimePrompts = RuntimePrompts()
    source: Path | None = None
    #: GRAPH mode only (SPEC §21)
    graph: GraphDefinition | None = None

    def stage(self, name: StageName) -> Stage | None:
        return self.stages.get(name)

    @property
    def all_tools(self) -> tuple[ToolDefinition, ...]:
        seen: dict[str, ToolDefinition] = {}
        for stage in self.stages.values():
            for tool in stage.tools:
                seen.setdefault(tool.name, tool)
        return tuple(seen.values())


@dataclass(frozen=True, slots=True)
class Rejection:
    """A definition file that did not load, and why (visible over the API)."""

    kind: Literal["model", "agent", "tool", "skill", "viewport"]
    file: str
    reason: str


@dataclass(frozen=True, slots=True)
class Catalog:
    """One immutable snapshot of every definition. Swapped atomically on reload."""

    models: Mapping[str, ModelDefinition] = field(default_factory=dict)
    tools: Mapping[str, ToolDefinition] = field(default_factory=dict)
    skills: Mapping[str, SkillDefinition] = field(default_factory=dict)
    viewports: Mapping[str, ViewportDefinition] = field(default_factory=dict)
    agents: Mapping[str, AgentDefinition] = field(default_factory=dict)
    rejections: tuple[Rejection, ...] = ()
    #: monotonically increasing per reload
    version: int = 0
