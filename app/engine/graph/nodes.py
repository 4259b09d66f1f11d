"""What each kind of graph node does (SPEC §21), inside its ``NodeContext``.

* ``llm`` — the rendered ``prompt`` as the user message of a fresh conversation (plus the
  chat's history when ``history`` is on) under the node's system prompt; one streamed model
  turn, or with ``tools`` a REACT loop of at most ``maxSteps`` turns of one tool each. With
  ``outputFormat: "json"`` the system prompt asks for JSON and the answer is parsed.
* ``tool`` — the rendered ``params`` as the arguments of one backend (or MCP) tool call,
  streamed as ``tool.start`` → ``tool.args`` → ``tool.end`` → ``tool.result``; an error result
  fails the node.
* ``human`` — the same with a frontend tool: the run waits for ``POST /api/ap/submit``; the
  submitted params are the result, a timeout fails the node.
* ``agent`` — a sub-run of a ONESHOT or REACT agent in the node's context: the rendered
  ``message`` is its user message, its events carry the node's ``taskId``, the graph
  agent's budgets bound it, its answer is the result.
* ``router`` — nothing; its edges decide.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import orjson

from app.catalog.definitions import GraphNode, ToolDefinition, ToolKind
from app.contract import events as ev
from app.contract.events import now_ms
from app.engine.graph.context import NodeContext
from app.engine.ids import frontend_tool_id, msg_id
from app.engine.oneshot import run_oneshot
from app.engine.prompts import system_prompt
from app.engine.react import ONE_AT_A_TIME, run_react
from app.engine.tool_exec import disclose_skills, execute_call, refuse_call
from app.engine.turn import ToolCall, model_turn

#: appended to an ``outputFormat: "json"`` node's system prompt
JSON_INSTRUCTION = "Answer with one JSON value only (no other text, no code fence)."
_FENCE = re.compile(r"^```[A-Za-z]*\s*\n?(.*?)\n?```$", re.DOTALL)
_SUB_RUNS = {"ONESHOT": run_oneshot, "REACT": run_react}


class NodeFailed(Exception):
    """The node could not do its work (an optional node is then skipped; otherwise the run fails)."""

    def __init__(self, message: str, code: str = "graph_node_failed") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass(slots=True)
class NodeResult:
    """What a node produced: the value its outputs read, its answer text (llm, agent), the system prompt used."""

    value: Any = None
    text: str | None = None
    system: str | None = None


async def run_node(ctx: NodeContext, node: GraphNode, scope: dict[str, Any]) -> NodeResult:
    if node.kind == "llm":
        return await _llm(ctx, node, scope)
    if node.kind in ("tool", "human"):
        return await _tool(ctx, node, scope)
    if node.kind == "agent":
        return await _agent(ctx, node, scope)
    return NodeResult()


def _user_message(ctx: NodeContext, text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}], "ts": now_ms(), "_taskId": ctx.task_id}


def parse_json_answer(text: str) -> Any:
    """The JSON value of a model's answer (a surrounding code fence is tolerated)."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    try:
        return orjson.loads(stripped)
    except orjson.JSONDecodeError:
        shown = stripped if len(stripped) <= 200 else stripped[:200] + "…"
        raise NodeFailed(f"the answer is not JSON: {shown!r}") from None


async def _llm(ctx: NodeContext, node: GraphNode, scope: dict[str, Any]) -> NodeResult:
    assert node.stage is not None and node.prompt is not None
    text = node.system_prompt.render_text(scope) if node.system_prompt is not None else ""
    stage = dataclasses.replace(node.stage, system_prompt=text)
    tools = list(stage.tools)
    system = system_prompt(ctx.agent, stage, tools)
    if node.output_format == "json":
        system = f"{system}\n\n{JSON_INSTRUCTION}" if system else JSON_INSTRUCTION
    if node.history:
        ctx.history = list(ctx.root.history)
    ctx.record(_user_message(ctx, node.prompt.render_text(scope)))
    for _ in range(node.max_steps):
        turn = await model_turn(ctx, stage, system, tools, tool_choice="auto" if tools else None, one_call=True)
        if not turn.calls:
            answer = turn.content
            value = parse_json_answer(answer) if node.output_format == "json" else answer
            return NodeResult(value, answer, system)
        first, *extra = turn.calls
        await execute_call(ctx, first, {})
        for call in extra:
            refuse_call(ctx, call, ONE_AT_A_TIME)
        disclose_skills(ctx)
    raise NodeFailed(f"no answer within the node's maxSteps={node.max_steps} turns", "graph_node_max_steps")


def _start_call(ctx: NodeContext, tool: ToolDefinition, args: dict[str, Any]) -> ToolCall:
    """Emit the events of a call the engine makes itself (its arguments in one ``tool.args``) and
    record it as an assistant tool call, so history and replay show it like a model's call."""
    raw = orjson.dumps(args, option=orjson.OPT_NON_STR_KEYS).decode()
    call_id = f"call_{msg_id()[2:]}"
    frontend = tool.kind is ToolKind.FRONTEND
    event_id = frontend_tool_id() if frontend else call_id
    call = ToolCall(0, call_id, event_id, tool.name, tool.kind, tool, [raw])
    settings = ctx.services.settings
    if frontend:
        timeout_ms = settings.agent.tools.frontend.submit_timeout_ms
        # the wait opens with tool.start: a client may answer at once
        ctx.services.submits.open(ctx.run_id, event_id, ctx.owner, tool_name=tool.name,
                                  tool_type=tool.tool_type or "html", tool_key=tool.tool_key or tool.name,
                                  expires_at=now_ms() + timeout_ms)
        ctx.emit(ev.ToolStart(tool_id=event_id, run_id=ctx.run_id, task_id=ctx.task_id, tool_name=tool.name,
                              tool_type=tool.tool_type or "html", tool_key=tool.tool_key or tool.name,
                              tool_timeout=timeout_ms, tool_params=args, description=tool.description))
    else:
        ctx.emit(ev.ToolStart(tool_id=event_id, run_id=ctx.run_id, task_id=ctx.task_id, tool_name=tool.name,
                              tool_api=tool.tool_api, tool_params=args, description=tool.description))
    ctx.emit(ev.ToolArgs(tool_id=event_id, delta=raw, run_id=ctx.run_id, chunk_index=0))
    ctx.emit(ev.ToolEnd(tool_id=event_id, run_id=ctx.run_id))
    id_key = "_actionId" if tool.name in settings.memory.chat.action_tools else "_toolId"
    message: dict[str, Any] = {
        "role": "assistant",
        "tool_calls": [{"id": call_id, "type": "function", "function": {"name": tool.name, "arguments": raw}}],
        id_key: event_id, "_toolKind": tool.kind.value, "_msgId": msg_id(), "ts": now_ms(), "_taskId": ctx.task_id,
    }
    if frontend:
        message["_toolType"] = tool.tool_type or "html"
        message["_toolKey"] = tool.tool_key or tool.name
    ctx.record(message)
    return call


async def _tool(ctx: NodeContext, node: GraphNode, scope: dict[str, Any]) -> NodeResult:
    assert node.tool is not None
    args = node.params.render(scope) if node.params is not None else {}
    if not isinstance(args, dict):
        raise NodeFailed(f"params must give an object of arguments, not {type(args).__name__}")
    call = _start_call(ctx, node.tool, args)
    result = await execute_call(ctx, call, {})
    if isinstance(result, dict) and result.get("ok") is False:
        raise NodeFailed(f"tool '{node.tool.name}' failed: {result.get('error')}", "graph_tool_failed")
    return NodeResult(result)


async def _agent(ctx: NodeContext, node: GraphNode, scope: dict[str, Any]) -> NodeResult:
    assert node.agent is not None and node.message is not None
    # the sub-run is part of this run: the graph agent's budgets bound it
    ctx.agent = dataclasses.replace(node.agent, budget=ctx.root.agent.budget)
    ctx.record(_user_message(ctx, node.message.render_text(scope)))
    finish = await _SUB_RUNS[node.agent.mode](ctx)
    if finish == "max_steps":
        raise NodeFailed(f"agent '{node.agent.key}' used all its steps without answering", "graph_node_max_steps")
    return NodeResult(ctx.final_text, ctx.final_text)
