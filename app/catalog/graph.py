"""The ``graph`` block of a GRAPH agent (SPEC §21): its shape and its load-time validation.

``parse_graph`` turns the block into a ``GraphDefinition`` or raises ``DefinitionError`` with
a precise reason. It checks, in order:

1. the shape (unknown fields refused; per node kind, only that kind's fields);
2. node names (unique; not ``START``/``END``), every template, JMESPath ``outputs`` value,
   ``update`` expression and edge ``condition`` (they must parse — ``app.catalog.expressions``);
3. references: a ``tool`` node's backend (or MCP) tool, a ``human`` node's frontend tool, an
   ``llm`` node's model and tools, an ``agent`` node's agent (a loaded ONESHOT or REACT agent);
4. the edges: both ends are known nodes (``START`` only as a source, ``END`` only as a target),
   a node's outgoing edges are all ``parallel`` or none, parallel edges carry no condition, no
   edge hides behind an unconditional one, every node has an outgoing edge;
5. the shape of the graph: every node is reachable from START, END is reachable from every
   node, no cycle runs through unconditional edges only (it would never end), and the
   branches of every parallel fan-out meet again at one node (their join) before END.

Resolving models and tools is the agent loader's business: it passes ``GraphRefs``.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt

from app.catalog._edge import validate
from app.catalog.definitions import (
    GRAPH_END,
    GRAPH_START,
    AgentDefinition,
    GraphDefinition,
    GraphEdge,
    GraphField,
    GraphNode,
    Stage,
    ToolDefinition,
    ToolKind,
)
from app.catalog.expressions import (
    Query,
    Template,
    compile_expression,
    compile_query,
    compile_template,
    compile_value,
)
from app.errors import DefinitionError

NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,63}$"
TypeName = Literal["string", "integer", "number", "boolean", "object", "array", "any"]
#: the modes an ``agent`` node may run as a sub-run
SUB_RUN_MODES = ("ONESHOT", "REACT")
DEFAULT_MAX_STEPS = 20
#: the most node visits a graph may allow (``maxSteps``): every visit writes a checkpoint of the state
MAX_STEPS_LIMIT = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RawGraphInput(_Strict):
    type: TypeName = "any"
    required: bool = False
    default: Any = None
    description: str | None = None


class RawGraphState(_Strict):
    type: TypeName = "any"
    initial: Any = None
    description: str | None = None


class RawGraphNode(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    kind: Literal["llm", "tool", "agent", "human", "router"]
    description: str | None = None
    optional: bool = False
    # llm
    prompt: str | None = None
    system_prompt: str | None = Field(None, alias="systemPrompt")
    model_cfg: dict[str, Any] | None = Field(None, alias="modelConfig")
    tools: list[str] | None = None
    output_format: Literal["text", "json"] | None = Field(None, alias="outputFormat")
    max_steps: PositiveInt | None = Field(None, alias="maxSteps")
    history: bool | None = None
    # tool, human
    tool: str | None = None
    params: dict[str, Any] | None = None
    # agent
    agent_key: str | None = Field(None, alias="agentKey")
    message: str | None = None
    # results
    output: str | None = Field(None, pattern=NAME_PATTERN)
    outputs: dict[str, str] | None = None
    update: dict[str, str] | None = None


class RawGraphEdge(_Strict):
    source: str = Field(alias="from")
    target: str = Field(alias="to")
    condition: str | None = None
    parallel: bool = False


class RawGraph(_Strict):
    inputs: dict[str, RawGraphInput] = Field(default_factory=dict)
    state: dict[str, RawGraphState] = Field(default_factory=dict)
    nodes: list[RawGraphNode] = Field(min_length=1)
    edges: list[RawGraphEdge] = Field(min_length=1)
    answer: str | None = None
    max_steps: PositiveInt = Field(DEFAULT_MAX_STEPS, alias="maxSteps", le=MAX_STEPS_LIMIT)
    #: the default system prompt of ``llm`` nodes
    system_prompt: str | None = Field(None, alias="systemPrompt")


#: per kind, the node fields (JSON names) that kind takes besides the common ones
_KIND_FIELDS: Mapping[str, frozenset[str]] = {
    "llm": frozenset({"prompt", "systemPrompt", "modelConfig", "tools", "outputFormat", "maxSteps", "history",
                      "output", "outputs"}),
    "tool": frozenset({"tool", "params", "output", "outputs"}),
    "human": frozenset({"tool", "params", "output", "outputs"}),
    "agent": frozenset({"agentKey", "message", "output", "outputs"}),
    "router": frozenset(),
}
_REQUIRED: Mapping[str, tuple[str, ...]] = {"llm": ("prompt",), "tool": ("tool",), "human": ("tool",),
                                           "agent": ("agentKey",), "router": ()}


@dataclass(frozen=True, slots=True)
class GraphRefs:
    """How the agent loader resolves what a graph names (see ``app.catalog.agents``)."""

    #: ``(where, node modelConfig, tool names, system prompt) → Stage`` for an ``llm`` node
    stage: Callable[[str, Mapping[str, Any] | None, Sequence[str], str], Stage]
    #: ``(name, kind or None for any kind, where) → ToolDefinition``
    tool: Callable[[str, ToolKind | None, str], ToolDefinition]
    #: the agents already loaded (GRAPH agents load after every other agent)
    agents: Mapping[str, AgentDefinition]


def _json_name(field_name: str) -> str:
    info = RawGraphNode.model_fields[field_name]
    return info.alias or field_name


def _check_fields(raw: RawGraphNode) -> None:
    given = {_json_name(name) for name in raw.model_fields_set}
    common = {"name", "kind", "description", "optional", "update"}
    extra = sorted(given - common - _KIND_FIELDS[raw.kind])
    if extra:
        raise DefinitionError(f"graph node '{raw.name}': {', '.join(repr(e) for e in extra)} "
                              f"{'is' if len(extra) == 1 else 'are'} not a field of {_a(raw.kind)} node")
    for required in _REQUIRED[raw.kind]:
        if required not in given or raw.model_dump(by_alias=True).get(required) in (None, ""):
            raise DefinitionError(f"graph node '{raw.name}': {_a(raw.kind)} node needs '{required}'")


def _a(kind: str) -> str:
    return f"an {kind}" if kind in ("llm", "agent") else f"a {kind}"


def _state_keys(mapping: Mapping[str, str] | None, where: str) -> None:
    for key in mapping or {}:
        validate_key(key, where)


def validate_key(key: str, where: str) -> None:
    if not re.match(NAME_PATTERN, key):
        raise DefinitionError(f"{where}: '{key}' is not a valid state key (letters, digits, _ and -; "
                              "starting with a letter)")


def _node(raw: RawGraphNode, graph: RawGraph, refs: GraphRefs, inputs: Sequence[str]) -> GraphNode:
    _check_fields(raw)
    where = f"graph node '{raw.name}'"

    def template(text: str | None, field_name: str) -> Template | None:
        return compile_template(text, f"{where} {field_name}", inputs=inputs) if text is not None else None

    _state_keys(raw.outputs, f"{where} outputs")
    _state_keys(raw.update, f"{where} update")
    outputs: tuple[tuple[str, Query], ...] = tuple(
        (key, compile_query(value, f"{where} outputs.{key}")) for key, value in (raw.outputs or {}).items())
    update = tuple((key, compile_expression(value, f"{where} update.{key}")) for key, value in (raw.update or {}).items())
    common: dict[str, Any] = {
        "name": raw.name, "kind": raw.kind, "optional": raw.optional, "output": raw.output,
        "outputs": outputs, "update": update,
    }
    if raw.kind == "llm":
        system = raw.system_prompt if raw.system_prompt is not None else graph.system_prompt
        stage = refs.stage(where, raw.model_cfg, raw.tools or [], "")
        return GraphNode(
            description=raw.description or f"{raw.name} (model call)", prompt=template(raw.prompt, "prompt"),
            system_prompt=template(system, "systemPrompt"), stage=stage,
            output_format=raw.output_format or "text", max_steps=raw.max_steps or 6, history=bool(raw.history),
            **common)
    if raw.kind in ("tool", "human"):
        assert raw.tool is not None
        kind = ToolKind.BACKEND if raw.kind == "tool" else ToolKind.FRONTEND
        tool = refs.tool(raw.tool, kind, where)
        params = compile_value(raw.params or {}, f"{where} params", inputs=inputs)
        label = "tool" if raw.kind == "tool" else "asks the user with"
        return GraphNode(description=raw.description or f"{raw.name} ({label} {tool.name})", tool=tool,
                         params=params, **common)
    if raw.kind == "agent":
        assert raw.agent_key is not None
        agent = refs.agents.get(raw.agent_key)
        if agent is None:
            raise DefinitionError(f"unknown agent '{raw.agent_key}' ({where}): no loaded ONESHOT or REACT agent "
                                  "has that key")
        if agent.mode not in SUB_RUN_MODES:
            raise DefinitionError(f"{where}: agent '{raw.agent_key}' is a {agent.mode} agent; an agent node "
                                  f"runs a {' or '.join(SUB_RUN_MODES)} agent")
        message = template(raw.message if raw.message is not None else "${message}", "message")
        return GraphNode(description=raw.description or f"{raw.name} (asks agent {agent.key})", agent=agent,
                         message=message, **common)
    return GraphNode(description=raw.description or f"{raw.name} (router)", **common)


def _edges(raw: RawGraph, nodes: Mapping[str, GraphNode]) -> tuple[GraphEdge, ...]:
    edges: list[GraphEdge] = []
    for number, item in enumerate(raw.edges, start=1):
        where = f"graph edge {number} (from '{item.source}' to '{item.target}')"
        if item.source == GRAPH_END:
            raise DefinitionError(f"{where}: no edge may leave END")
        if item.target == GRAPH_START:
            raise DefinitionError(f"{where}: no edge may enter START")
        for end in (item.source, item.target):
            if end not in nodes and end not in (GRAPH_START, GRAPH_END):
                raise DefinitionError(f"{where}: unknown node '{end}'")
        if item.parallel and item.condition is not None:
            raise DefinitionError(f"{where}: a parallel edge cannot carry a condition")
        condition = compile_expression(item.condition, f"{where} condition") if item.condition is not None else None
        edges.append(GraphEdge(item.source, item.target, condition, item.parallel))
    return tuple(edges)


def _outgoing(edges: Sequence[GraphEdge]) -> dict[str, list[GraphEdge]]:
    """Each source's edges, in file order (grouped once: a scan per node was quadratic)."""
    table: dict[str, list[GraphEdge]] = {}
    for edge in edges:
        table.setdefault(edge.source, []).append(edge)
    return table


def _check_outgoing(nodes: Mapping[str, GraphNode], edges: Sequence[GraphEdge]) -> None:
    outgoing = _outgoing(edges)
    for source in (GRAPH_START, *nodes):
        out = outgoing.get(source, [])
        label = "START" if source == GRAPH_START else f"node '{source}'"
        if not out:
            raise DefinitionError(f"graph {label} has no outgoing edge (every path must reach END)")
        if any(edge.parallel for edge in out) and not all(edge.parallel for edge in out):
            raise DefinitionError(f"graph {label}: either all of its outgoing edges are parallel or none")
        targets = [edge.target for edge in out]
        if len(set(targets)) != len(targets) and all(edge.parallel for edge in out):
            raise DefinitionError(f"graph {label}: two parallel edges go to the same node")
        for index, edge in enumerate(out[:-1]):
            if edge.condition is None and not edge.parallel:
                hidden = ", ".join(f"'{later.target}'" for later in out[index + 1:])
                raise DefinitionError(f"graph {label}: the edge to '{edge.target}' has no condition, so the "
                                      f"edges after it (to {hidden}) can never be taken")


def _successors(edges: Sequence[GraphEdge]) -> dict[str, list[str]]:
    table: dict[str, list[str]] = {}
    for edge in edges:
        table.setdefault(edge.source, []).append(edge.target)
    return table


def _reachable(start: str, successors: Mapping[str, Sequence[str]], without: str | None = None) -> dict[str, int]:
    """Shortest distances (in edges) from ``start`` to every node it reaches, not passing ``without``."""
    distance = {start: 0}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        if current == without:
            continue
        for following in successors.get(current, ()):
            if following not in distance:
                distance[following] = distance[current] + 1
                queue.append(following)
    return distance


def _unconditional_cycle(nodes: Sequence[str], edges: Sequence[GraphEdge]) -> list[str] | None:
    """A cycle of edges none of which carries a condition, as the list of its nodes, or None.

    Depth-first with an explicit stack: a chain of thousands of nodes must not hit Python's
    recursion limit (a RecursionError here once took the whole catalog down)."""
    successors = _successors([edge for edge in edges if edge.condition is None])
    colour: dict[str, int] = {}
    for root in nodes:
        if root in colour:
            continue
        colour[root] = 1
        path = [root]
        stack = [iter(successors.get(root, ()))]
        while stack:
            following = next(stack[-1], None)
            if following is None:
                stack.pop()
                colour[path.pop()] = 2
            elif colour.get(following) == 1:
                return [*path[path.index(following):], following]
            elif following not in colour:
                colour[following] = 1
                path.append(following)
                stack.append(iter(successors.get(following, ())))
    return None


def _join(source: str, targets: Sequence[str], successors: Mapping[str, Sequence[str]], order: Sequence[str]) -> str:
    """The node the branches of ``source``'s parallel fan-out meet at (see the module docstring)."""
    label = "START" if source == GRAPH_START else f"node '{source}'"
    reach = [_reachable(target, successors) for target in targets]
    common = [name for name in (*order, GRAPH_END) if all(name in distances for distances in reach)]
    if not common:
        raise DefinitionError(f"graph {label}: its parallel branches never meet again")
    rank = {name: n for n, name in enumerate((*order, GRAPH_END))}
    join = min(common, key=lambda name: (max(d[name] for d in reach), sum(d[name] for d in reach), rank[name]))
    if join in targets:
        raise DefinitionError(f"graph {label}: its parallel branches meet at '{join}', which is itself one of "
                              "the branches")
    if join != GRAPH_END:
        for target in targets:
            if GRAPH_END in _reachable(target, successors, without=join):
                raise DefinitionError(f"graph {label}: the parallel branch starting at '{target}' can reach END "
                                      f"without passing '{join}', where the other branches meet")
    return join


def _check_shape(nodes: Mapping[str, GraphNode], edges: Sequence[GraphEdge]) -> dict[str, str]:
    successors = _successors(edges)
    reached = _reachable(GRAPH_START, successors)
    for name in nodes:
        if name not in reached:
            raise DefinitionError(f"graph node '{name}' is unreachable from START")
    predecessors: dict[str, list[str]] = {}
    for edge in edges:
        predecessors.setdefault(edge.target, []).append(edge.source)
    to_end = _reachable(GRAPH_END, predecessors)
    for name in nodes:
        if name not in to_end:
            raise DefinitionError(f"graph node '{name}': there is no path from it to END")
    cycle = _unconditional_cycle(list(nodes), edges)
    if cycle:
        raise DefinitionError(f"graph: the cycle {' → '.join(cycle)} has no condition on any of its edges "
                              "(it would never end)")
    joins: dict[str, str] = {}
    outgoing = _outgoing(edges)
    for source in (GRAPH_START, *nodes):
        out = outgoing.get(source, [])
        if out and out[0].parallel and len(out) > 1:
            joins[source] = _join(source, [edge.target for edge in out], successors, list(nodes))
    return joins


def _check_fan_out_steps(joins: Mapping[str, str], edges: Sequence[GraphEdge], max_steps: int) -> None:
    """A fan-out wider than ``maxSteps`` allows could never finish: its branches (one visit each at
    least) and the join would be cut by the step budget, and the run would end with no answer."""
    outgoing = _outgoing(edges)
    for source in joins:
        width = len(outgoing[source])
        if width + 1 > max_steps:
            label = "START" if source == GRAPH_START else f"node '{source}'"
            raise DefinitionError(f"graph {label}: its {width} parallel branches and their join take at least "
                                  f"{width + 1} node visits, more than maxSteps ({max_steps})")


def parse_graph(data: Any, refs: GraphRefs) -> GraphDefinition:
    """Validate a ``graph`` block (see the module docstring)."""
    if not isinstance(data, Mapping):
        raise DefinitionError("'graph' must be an object with nodes and edges")
    raw = validate(RawGraph, data, prefix="graph.")
    for key in (*raw.inputs, *raw.state):
        validate_key(key, "graph inputs/state")
    inputs = tuple(GraphField(name, spec.type, spec.required, spec.default, spec.description or "")
                   for name, spec in raw.inputs.items())
    state = tuple(GraphField(name, spec.type, False, spec.initial, spec.description or "")
                  for name, spec in raw.state.items())
    input_names = [field.name for field in inputs]
    nodes: dict[str, GraphNode] = {}
    for item in raw.nodes:
        if item.name in (GRAPH_START, GRAPH_END):
            raise DefinitionError(f"graph node name '{item.name}' is reserved")
        if item.name in nodes:
            raise DefinitionError(f"graph node '{item.name}' is defined twice")
        nodes[item.name] = _node(item, raw, refs, input_names)
    edges = _edges(raw, nodes)
    _check_outgoing(nodes, edges)
    joins = _check_shape(nodes, edges)
    _check_fan_out_steps(joins, edges, raw.max_steps)
    answer = compile_template(raw.answer, "graph answer", inputs=input_names) if raw.answer is not None else None
    return GraphDefinition(inputs=inputs, state=state, nodes=nodes, edges=edges, answer=answer,
                           max_steps=raw.max_steps, joins=joins)


__all__ = ["DEFAULT_MAX_STEPS", "MAX_STEPS_LIMIT", "SUB_RUN_MODES", "GraphRefs", "RawGraph", "parse_graph"]
