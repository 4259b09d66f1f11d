"""Graph checkpoints in chat memory (SPEC §21), and where a fork restarts from (SPEC §20).

A GRAPH run writes ``step`` lines with ``_stage: "graph"`` (SPEC §8) that carry, besides the
usual ``messages``/``taskId``/``system``/``plan``:

* ``node`` — ``"START"`` (first line: ``inputs`` and ``message`` too), a node's name (one line
  per visit, with ``visit`` — 1, 2… — and ``taskId`` = the name, ``#n`` from the second visit),
  the node whose parallel branches just met (``status: "joined"``), or ``"END"``;
* ``status`` — ``started`` (START), ``completed``, ``failed``, ``joined``, ``ended``;
* ``state`` — the whole state after that point;
* ``next`` — the node(s) the graph goes to from there (``[]`` where it stopped).

The checkpoint *before* a visit of node X is the latest line, before that visit's own line,
whose ``next`` names X: its ``state`` is what X started from. ``resume_point`` finds it.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.catalog.definitions import GRAPH_END, GRAPH_START, GraphDefinition
from app.contract.events import now_ms
from app.engine.context import RunContext

STAGE = "graph"


@dataclass(frozen=True, slots=True)
class GraphResume:
    """Where a GRAPH run starts instead of START (SPEC §20 fork): ``node`` with this state."""

    node: str
    state: Mapping[str, Any]
    inputs: Mapping[str, Any] = field(default_factory=dict)
    message: str | None = None


async def write_checkpoint(ctx: RunContext, fields: Mapping[str, Any], *, messages: Sequence[dict[str, Any]] = (),
                           task_id: str | None = None, system: str | None = None) -> None:
    """Append one graph ``step`` line (``fields``: node, status, state, next…) to the run's chat."""
    ctx.step_seq += 1
    line: dict[str, Any] = {
        "_type": "step", "chatId": ctx.chat_id, "runId": ctx.run_id, "_stage": STAGE, "_seq": ctx.step_seq,
        "updatedAt": now_ms(), "messages": list(messages),
    }
    if task_id:
        line["taskId"] = task_id
    if system is not None and system != ctx.last_system:
        line["system"] = system
        ctx.last_system = system
    if ctx.plan is not None and ctx.plan_dirty:
        line["plan"] = ctx.plan.as_memory()
        ctx.plan_dirty = False
    line.update(copy.deepcopy(dict(fields)))  # the writer serialises later; the state may change meanwhile
    await ctx.services.chats.append(ctx.chat_id, line)


def graph_lines(lines: Sequence[Mapping[str, Any]], run_id: str) -> list[Mapping[str, Any]]:
    """The graph checkpoint lines of one run, in file order."""
    return [line for line in lines if line.get("_type") == "step" and line.get("runId") == run_id
            and line.get("_stage") == STAGE and isinstance(line.get("node"), str)]


def resume_point(lines: Sequence[Mapping[str, Any]], run_id: str, node: str, *, visit: int = 1,
                 state: Mapping[str, Any] | None = None) -> GraphResume:
    """The checkpoint taken before visit ``visit`` of ``node`` in run ``run_id``, with ``state``
    merged over it (SPEC §20: ``POST /api/ap/chat/fork {…, node, state?}``).

    Raises ``LookupError`` when the run never got to ``node``."""
    checkpoints = graph_lines(lines, run_id)
    if not checkpoints:
        raise LookupError(f"run {run_id} has no graph checkpoints")
    start = checkpoints[0]
    before: Mapping[str, Any] | None = None
    seen = announced = 0
    for line in checkpoints:
        if line.get("node") == node and line.get("status") not in ("joined",):
            seen += 1
            if seen == visit:
                break
        following = line.get("next")
        if isinstance(following, list) and node in following:
            before, announced = line, announced + 1
    if before is None or announced < visit:  # each visit was announced by the checkpoint before it
        raise LookupError(f"run {run_id} never reached node '{node}'" + (f" (visit {visit})" if visit > 1 else ""))
    merged = dict(before.get("state") or {})
    merged.update(state or {})
    inputs = start.get("inputs") if isinstance(start.get("inputs"), Mapping) else {}
    message = start.get("message") if isinstance(start.get("message"), str) else None
    return GraphResume(node=node, state=merged, inputs=dict(inputs or {}), message=message)


def _branch_nodes(graph: GraphDefinition, source: str, join: str) -> set[str]:
    """The nodes of the parallel branches of ``source``'s fan-out: reached from its targets before ``join``."""
    seen: set[str] = set()
    stack = [edge.target for edge in graph.edges_from(source)]
    while stack:
        name = stack.pop()
        if name in seen or name in (join, GRAPH_END):
            continue
        seen.add(name)
        stack.extend(edge.target for edge in graph.edges_from(name))
    return seen


def fork_refusal(graph: GraphDefinition, node: str) -> str | None:
    """Why a run of ``graph`` cannot restart at ``node`` (SPEC §20 fork), or ``None`` when it can.

    A restart must be at a node of the graph, and not inside a parallel branch: the run would walk
    that one branch to the join and never run its siblings, whose results the join expects."""
    if node in (GRAPH_START, GRAPH_END):
        return f"'{node}' is not a node a run can restart at; fork from one of the graph's nodes"
    if node not in graph.nodes:
        return f"the graph has no node '{node}'"
    for source, join in graph.joins.items():
        if node not in _branch_nodes(graph, source, join):
            continue
        options = [f"'{source}' (where the branches start)"] if source != GRAPH_START else []
        options += [f"'{join}' (where they meet)"] if join != GRAPH_END else []
        instead = " or ".join(options) if options else "before the run (without node)"
        label = "START" if source == GRAPH_START else f"'{source}'"
        return (f"node '{node}' runs in a parallel branch of {label}'s fan-out; restarting there would not run "
                f"the other branches. Fork from {instead} instead")
    return None


__all__ = ["STAGE", "GraphResume", "fork_refusal", "graph_lines", "resume_point", "write_checkpoint"]
