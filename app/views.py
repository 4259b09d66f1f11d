"""Payloads shared by the HTTP routes (SPEC §4) and the sidecar (SPEC §10).

Both front ends answer the same data for the same question; the shaping lives here so
neither copies the other (and neither imports the other: ``app.sidecar`` never imports
``app.api``). Functions take the ``Gateway`` (or a catalog definition) and the caller
(``owner``) and raise the gateway's typed errors.
"""

from __future__ import annotations

import asyncio
from typing import Any

from app.catalog.definitions import AgentDefinition, Budget, CallBudget, GraphDefinition, Stage, ToolDefinition
from app.errors import ForbiddenError, NotFoundError
from app.gateway import Gateway
from app.memory.history import build_history
from app.paths import check_key


async def chat_list(gateway: Gateway, owner: str) -> list[dict[str, Any]]:
    """``GET /api/ap/chats`` / ``chat.list``: the owner's chats, newest first."""
    metas = await asyncio.to_thread(gateway.chats.list_chats, owner)
    return [meta.payload() for meta in metas]


async def chat_history(gateway: Gateway, chat_id: str, owner: str, include_raw: bool) -> dict[str, Any]:
    """``GET /api/ap/chat`` / ``chat.get``: one chat rebuilt as snapshot events (SPEC §8)."""
    chat_id = check_key(chat_id, "chatId")
    meta = await asyncio.to_thread(gateway.chats.chat_meta, chat_id)
    if meta is None:
        raise NotFoundError(f"unknown chat: {chat_id}")
    if meta.owner not in (None, owner):
        raise ForbiddenError(f"chat {chat_id} belongs to another user")
    lines = await asyncio.to_thread(gateway.chats.read_lines, chat_id)
    running = gateway.runs.active_run_ids()
    # off the event loop too: rebuilding a chat of 20,000 runs took 1.5 s, and every stream waited
    return await asyncio.to_thread(build_history, chat_id, lines, include_raw, running=running)


def viewport_data(gateway: Gateway, viewport_key: str) -> dict[str, Any]:
    """``GET /api/ap/viewport`` / ``viewport.get`` (SPEC §3.5)."""
    key = check_key(viewport_key, "viewportKey")
    viewport = gateway.catalog.snapshot.viewports.get(key)
    if viewport is None:
        raise NotFoundError(f"unknown viewport: {key}")
    return dict(viewport.data)


# --------------------------------------------------------------------------- agents


def _primary_stage(agent: AgentDefinition) -> Stage | None:
    return next(iter(agent.stages.values()), None)


def agent_summary(agent: AgentDefinition) -> dict[str, Any]:
    """The list item of ``GET /api/ap/agents``."""
    primary = _primary_stage(agent)
    return {
        "key": agent.key,
        "name": agent.name,
        "icon": agent.icon,
        "description": agent.description,
        "mode": agent.mode,
        "modelKey": primary.model.model.key if primary else None,
        "tools": [tool.name for tool in agent.all_tools],
    }


def _tool_view(tool: ToolDefinition) -> dict[str, Any]:
    view: dict[str, Any] = {"name": tool.name, "kind": tool.kind.value, "description": tool.description}
    if tool.tool_type is not None:
        view["toolType"] = tool.tool_type
        view["toolKey"] = tool.tool_key
    return view


def _stage_view(stage: Stage) -> dict[str, Any]:
    model = stage.model
    return {
        "name": stage.name,
        "model": {
            "key": model.model.key,
            "modelId": model.model.model_id,
            "protocol": model.model.protocol,
            "provider": model.model.provider,
        },
        "reasoning": {"enabled": model.reasoning.enabled, "effort": model.reasoning.effort},
        "temperature": model.temperature,
        "top_p": model.top_p,
        "max_tokens": model.max_tokens,
        "deepThinking": stage.deep_thinking,
        "tools": [_tool_view(tool) for tool in stage.tools],
    }


def _call_budget(budget: CallBudget) -> dict[str, int]:
    return {"maxCalls": budget.max_calls, "timeoutMs": budget.timeout_ms, "retryCount": budget.retry_count}


def _budget_view(budget: Budget) -> dict[str, Any]:
    return {
        "runTimeoutMs": budget.run_timeout_ms,
        "model": _call_budget(budget.model),
        "tool": _call_budget(budget.tool),
    }


def agent_detail(agent: AgentDefinition) -> dict[str, Any]:
    """The data of ``GET /api/ap/agent``: resolved models, tools and skills; no secrets."""
    detail = agent_summary(agent)
    detail.update(
        {
            "toolChoice": agent.tool_choice,
            "budget": _budget_view(agent.budget),
            "stages": [_stage_view(stage) for stage in agent.stages.values()],
            "skills": [
                {"id": skill.id, "name": skill.name, "description": skill.description} for skill in agent.skills
            ],
        }
    )
    if agent.mode == "REACT":
        detail["maxSteps"] = agent.react_max_steps
    elif agent.mode == "PLAN_EXECUTE":
        detail["maxSteps"] = agent.plan_max_steps
    if agent.graph is not None:  # SPEC §20/§21: what the studio draws the graph from
        detail["maxSteps"] = agent.graph.max_steps
        detail["graph"] = graph_view(agent.graph)
    return detail


def graph_view(graph: GraphDefinition) -> dict[str, Any]:
    """A GRAPH agent's nodes and edges (file order; conditions as written), for drawing it."""
    nodes = []
    for node in graph.nodes.values():
        view: dict[str, Any] = {"name": node.name, "kind": node.kind, "description": node.description,
                                "optional": node.optional}
        if node.tool is not None:
            view["tool"] = node.tool.name
        if node.agent is not None:
            view["agentKey"] = node.agent.key
        nodes.append(view)
    edges = [{"from": edge.source, "to": edge.target, "condition": edge.condition.source if edge.condition else None,
              "parallel": edge.parallel} for edge in graph.edges]
    return {"nodes": nodes, "edges": edges}
