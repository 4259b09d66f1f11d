"""Executing the tool calls of a turn (SPEC §3.3, §5): backend, frontend (wait for submit), action.

Every call ends with exactly one ``tool.result`` / ``action.result`` event and one
``role=tool`` memory message. A tool's own failure is an *error result* the model
sees; only budgets end the run.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson

from app.catalog.definitions import ToolKind
from app.contract import events as ev
from app.engine.context import RunContext
from app.contract.events import now_ms
from app.contract.nesting import MAX_JSON_DEPTH, depth_problem, nesting_depth, too_deep
from app.engine.prompts import skill_disclosure
from app.engine.turn import ToolCall
from app.errors import BudgetExceeded, GatewayError, ToolError
from app.tools.base import ToolContext
from app.tools.http_tool import call_http_tool
from app.telemetry import tool_call_span
from app.tools.templates import resolve_templates

logger = logging.getLogger(__name__)

#: engine-implemented tools (the plan tools), provided by the mode that offers them
EngineTool = Callable[[dict[str, Any], RunContext], Awaitable[Any]]

SKILL_TOOL = "_skill_run_script_"
#: deepest object/array nesting accepted in a tool call's arguments (deeper is a tool error result)
MAX_ARGUMENT_DEPTH = MAX_JSON_DEPTH


def error_result(message: str) -> dict[str, Any]:
    return {"ok": False, "error": message}


def result_text(result: Any) -> str:
    """Tool results go to the model JSON-serialised; plain strings are passed as they are."""
    if isinstance(result, str):
        return result
    return orjson.dumps(result, option=orjson.OPT_NON_STR_KEYS).decode()


def _parse_arguments(call: ToolCall) -> dict[str, Any]:
    raw = call.arguments.strip()
    if not raw:
        return {}
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ToolError(f"the arguments of {call.name} are not valid JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise ToolError(f"the arguments of {call.name} must be a JSON object")
    if nesting_depth(parsed, MAX_ARGUMENT_DEPTH) > MAX_ARGUMENT_DEPTH:
        # checked before anything recursive (templates, schemas, serialisers) touches them
        raise ToolError(
            f"the arguments of {call.name} are nested deeper than the nesting limit of "
            f"{MAX_ARGUMENT_DEPTH} levels of objects/arrays"
        )
    return parsed


async def execute_call(ctx: RunContext, call: ToolCall, engine_tools: Mapping[str, EngineTool]) -> Any:
    """Run one call, emit its result event and record the tool message. Returns the result."""
    budget = ctx.agent.budget.tool
    if ctx.tool_calls >= budget.max_calls:
        raise BudgetExceeded(f"tool call budget of {budget.max_calls} calls exhausted", budget="tool_calls")
    ctx.tool_calls += 1
    started = now_ms()  # SPEC §20: the result's _timing
    try:
        args = _parse_arguments(call)
        args = resolve_templates(args, ctx.results_by_tool)
        if too_deep(args):  # a template took a deep value out of a result's JSON text
            raise ToolError(f"the arguments of {call.name}, their templates resolved, are {depth_problem()}")
        with tool_call_span(call.name, call.call_id):  # SPEC §19: one span per tool call
            result = await _dispatch(ctx, call, args, engine_tools)
        if too_deep(result):  # an HTTP or MCP tool's body: no event or chat line could carry it
            raise ToolError(f"the result of {call.name} is {depth_problem()}")
    except ToolError as exc:
        result = error_result(exc.message)
        if call.kind is ToolKind.FRONTEND:  # failed before (or while) waiting: a submit now goes nowhere
            ctx.services.submits.discard(ctx.run_id, call.event_id, "the call failed")
    if not (isinstance(result, dict) and result.get("ok") is False):
        ctx.results_by_tool[call.name] = result
    if call.is_action:
        ctx.emit(ev.ActionResult(action_id=call.event_id, result=result, run_id=ctx.run_id))
    else:
        ctx.emit(ev.ToolResult(tool_id=call.event_id, result=result, run_id=ctx.run_id))
    id_key = _memory_id_key(ctx, call)
    ended = now_ms()
    ctx.record({
        "role": "tool", "name": call.name, "tool_call_id": call.call_id,
        "content": [{"type": "text", "text": result_text(result)}], "ts": ended, id_key: call.event_id,
        "_timing": {"startedAt": started, "endedAt": ended},
    })
    if call.name == SKILL_TOOL and isinstance(args, dict):
        skill_id = str(args.get("skill", "")).lower()
        if skill_id and skill_id not in ctx.disclosed_skills and skill_id not in ctx.to_disclose:
            ctx.to_disclose.append(skill_id)
    return result


async def execute_calls(ctx: RunContext, calls: list[ToolCall], engine_tools: Mapping[str, EngineTool]) -> None:
    """Run a turn's calls in order, then disclose skills used for the first time (SPEC §3.4)."""
    for call in calls:
        await execute_call(ctx, call, engine_tools)
    disclose_skills(ctx)


#: the result of a call made on a model call that offered no tools (``tool_choice: none``, which
#: many OpenAI-compatible servers ignore): streamed, so it still gets its one result
NOT_OFFERED = "no tool may be called at this point of the run; the call was not run"


def _memory_id_key(ctx: RunContext, call: ToolCall) -> str:
    """The id field of a call's result message: the same as its call message's (SPEC §8; a tool
    listed in ``memory.chat.action-tools`` is kept as an action), so history pairs the two."""
    return "_actionId" if call.is_action or call.name in ctx.services.settings.memory.chat.action_tools else "_toolId"


def refuse_unoffered(ctx: RunContext, calls: list[ToolCall]) -> None:
    """Answer the calls of a turn that asked for none: every ``tool.start`` gets its result, a
    frontend call's wait is closed, and the chat's history pairs each call with a result."""
    for call in calls:
        refuse_call(ctx, call, NOT_OFFERED)


def refuse_call(ctx: RunContext, call: ToolCall, message: str) -> None:
    """Answer a call the engine will not run (e.g. a second parallel call in REACT)."""
    result = error_result(message)
    if call.kind is ToolKind.FRONTEND:
        ctx.services.submits.discard(ctx.run_id, call.event_id, "the call was refused")
    if call.is_action:
        ctx.emit(ev.ActionResult(action_id=call.event_id, result=result, run_id=ctx.run_id))
    else:
        ctx.emit(ev.ToolResult(tool_id=call.event_id, result=result, run_id=ctx.run_id))
    ended = now_ms()
    ctx.record({
        "role": "tool", "name": call.name, "tool_call_id": call.call_id,
        "content": [{"type": "text", "text": result_text(result)}], "ts": ended,
        _memory_id_key(ctx, call): call.event_id,
        "_timing": {"startedAt": ended, "endedAt": ended},  # SPEC §20: refused at once
    })


def settle_unanswered(ctx: RunContext, message: str) -> None:
    """A run that ends (cancelled, a budget, an error) while calls of its own have no result gives
    each its error result: every ``tool.start`` gets its ``tool.result`` and the chat's history
    pairs every call with a result (SPEC §6, §8), instead of a call (a frontend form, say) that
    looks as if it were still waiting."""
    unanswered: list[dict[str, Any]] = []
    for recorded in ctx.messages:
        if recorded.get("role") == "assistant" and recorded.get("tool_calls"):
            unanswered.append(recorded)
        elif recorded.get("role") == "tool":
            event_id = recorded.get("_toolId") or recorded.get("_actionId")
            answered = next((c for c in unanswered if (c.get("_toolId") or c.get("_actionId")) == event_id), None)
            if answered is not None:
                unanswered.remove(answered)
    result = error_result(message)
    for recorded in unanswered:
        [tool_call] = recorded["tool_calls"]
        id_key = "_actionId" if "_actionId" in recorded else "_toolId"
        event_id = recorded[id_key]
        if recorded.get("_toolKind") == "action":
            ctx.emit(ev.ActionResult(action_id=event_id, result=result, run_id=ctx.run_id))
        else:
            ctx.emit(ev.ToolResult(tool_id=event_id, result=result, run_id=ctx.run_id))
        ended = now_ms()
        ctx.record({
            "role": "tool", "name": tool_call["function"]["name"], "tool_call_id": tool_call["id"],
            "content": [{"type": "text", "text": result_text(result)}], "ts": ended, id_key: event_id,
            "_timing": {"startedAt": ended, "endedAt": ended},
        })


async def _dispatch(ctx: RunContext, call: ToolCall, args: dict[str, Any], engine_tools: Mapping[str, EngineTool]) -> Any:
    if call.tool is None:
        if call.name in engine_tools:
            return await engine_tools[call.name](args, ctx)
        raise ToolError(f"tool '{call.name}' is not available here; use only the tools offered")
    if call.kind is ToolKind.ACTION:
        if args:
            ctx.emit(ev.ActionParam(action_id=call.event_id, param=args, run_id=ctx.run_id))
        return "OK"
    if call.kind is ToolKind.FRONTEND:
        return await _wait_for_submit(ctx, call)
    if call.name in engine_tools:
        return await engine_tools[call.name](args, ctx)
    return await _run_backend(ctx, call, args)


async def _run_backend(ctx: RunContext, call: ToolCall, args: dict[str, Any]) -> Any:
    budget = ctx.agent.budget.tool
    assert call.tool is not None
    tool_ctx = ToolContext(
        settings=ctx.services.settings, catalog=ctx.catalog, agent=ctx.agent, run_id=ctx.run_id,
        chat_id=ctx.chat_id, http=ctx.services.http, timeout_s=budget.timeout_ms / 1000,
        sandbox=ctx.services.sandbox, emit=ctx.emit,
    )
    implementation = ctx.services.builtin_tools.get(call.name)
    for attempt in range(budget.retry_count + 1):
        try:
            async with asyncio.timeout(budget.timeout_ms / 1000):
                if call.tool.tool_api:
                    return await call_http_tool(call.tool, args, tool_ctx)
                if implementation is None:
                    raise ToolError(f"tool '{call.name}' has no implementation")
                return await implementation(args, tool_ctx)
        except TimeoutError as exc:
            if attempt >= budget.retry_count:
                raise BudgetExceeded(
                    f"tool '{call.name}' exceeded its {budget.timeout_ms} ms budget", budget="tool_timeout"
                ) from exc
        except ToolError:
            if attempt >= budget.retry_count:
                raise
        except GatewayError as exc:
            raise ToolError(exc.message) from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning("tool %s failed in run %s: %r", call.name, ctx.run_id, exc)
            if attempt >= budget.retry_count:
                raise ToolError(f"tool '{call.name}' failed: {exc}") from exc
    raise AssertionError("unreachable")


async def _wait_for_submit(ctx: RunContext, call: ToolCall) -> Any:
    """Pause the run until the browser submits (or the submit timeout passes)."""
    services = ctx.services
    timeout_ms = services.settings.agent.tools.frontend.submit_timeout_ms
    pending = services.submits.open(ctx.run_id, call.event_id, ctx.owner)
    pending.expires_at = now_ms() + timeout_ms  # the wait's clock starts now
    if ctx.deadline is not None:
        ctx.deadline.pause()  # the user's time does not count against runTimeoutMs
    try:
        try:
            async with asyncio.timeout(timeout_ms / 1000):
                params = await pending.future
        except TimeoutError:
            services.submits.close(pending, "timed out")
            return error_result(f"the user did not answer within {timeout_ms} ms (frontend tool timed out)")
    finally:
        services.submits.close(pending, "closed")
        if ctx.deadline is not None:
            ctx.deadline.resume()
    ctx.emit(ev.RequestSubmit(request_id=ctx.request_id, chat_id=ctx.chat_id, run_id=ctx.run_id,
                              tool_id=call.event_id, payload=params))
    await services.chats.append(ctx.chat_id, {
        "_type": "submit", "chatId": ctx.chat_id, "runId": ctx.run_id, "toolId": call.event_id,
        "payload": params, "updatedAt": now_ms(),
    })
    return params


def disclose_skills(ctx: RunContext) -> None:
    """After a turn's tool results: the full body of each skill used for the first time, as a user message."""
    for skill_id in ctx.to_disclose:
        skill = next((s for s in ctx.agent.skills if s.id == skill_id), None)
        if skill is None:
            continue
        ctx.disclosed_skills.add(skill_id)
        text = skill_disclosure(ctx.agent, skill, ctx.services.settings.agent.skill.max_prompt_chars)
        ctx.record({"role": "user", "content": [{"type": "text", "text": text}], "ts": now_ms(), "_skillId": skill_id})
    ctx.to_disclose.clear()
