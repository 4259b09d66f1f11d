"""One model turn: stream the upstream deltas out as §6 events, one for one (SPEC §7).

The turn owns the upstream stream (``async with`` semantics through ``aclose``), so a
cancelled run closes the upstream connection at once. A failed call is retried only
while nothing of it has been forwarded yet.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from app.config import LlmSettings
from app.catalog.definitions import ModelDefinition, Stage, ToolDefinition, ToolKind
from app.contract import events as ev
from app.engine.context import RunContext
from app.contract.events import now_ms
from app.engine.ids import action_id, frontend_tool_id, msg_id
from app.engine.pricing import points_for
from app.errors import BudgetExceeded, UpstreamError, UpstreamTooLarge
from app.llm.client import stream_chat
from app.llm.deltas import (
    ContentDelta,
    FinishDelta,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    ToolCallArgs,
    ToolCallStart,
    UsageDelta,
)
from app.files.references import ReferenceImages
from app.llm.request import ChatRequest
from app.memory.replay import replay_messages
from app.telemetry import model_call_span

logger = logging.getLogger(__name__)

ToolChoiceWire = Literal["auto", "none", "required"]


@dataclass(slots=True)
class ToolCall:
    """A tool call the model made in this turn, as it streamed."""

    index: int
    call_id: str
    event_id: str
    name: str
    kind: ToolKind | None
    tool: ToolDefinition | None
    fragments: list[str] = field(default_factory=list)
    #: a call the engine refuses whatever it says (a second call of a one-call turn): a frontend
    #: one opens no wait and is announced without its viewport, so no client answers it
    refused: bool = False

    @property
    def arguments(self) -> str:
        return "".join(self.fragments)

    @property
    def is_action(self) -> bool:
        return self.kind is ToolKind.ACTION


@dataclass(slots=True)
class TurnResult:
    reasoning: str = ""
    content: str = ""
    calls: list[ToolCall] = field(default_factory=list)
    finish_reason: str | None = None
    msg_id: str = ""
    #: this call's usage (SPEC §19 spans)
    prompt_tokens: int = 0
    completion_tokens: int = 0


def model_messages(ctx: RunContext, system: str) -> list[dict[str, Any]]:
    """System prompt + replayed history + this run so far, in model shape."""
    current = replay_messages([{"_type": "step", "runId": ctx.run_id, "messages": ctx.messages}], 1,
                              signed_reasoning=True)
    return [{"role": "system", "content": system}, *ctx.history, *current]


class _Blocks:
    """Tracks the open reasoning/content block of a turn and emits start/end events."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.open: Literal["reasoning", "content"] | None = None
        self.block_id = ""
        self.texts: dict[str, list[str]] = {}
        self.order: list[tuple[str, str]] = []
        #: the provider's signature of a reasoning block (Anthropic), and encrypted reasoning blocks,
        #: by block id: never shown, sent back while the run's tool loop goes on
        self.signatures: dict[str, str] = {}
        self.redacted: dict[str, str] = {}

    def sign(self, signature: str) -> None:
        """The signature of the last reasoning block (it follows that block's text)."""
        for kind, block_id in reversed(self.order):
            if kind == "reasoning":
                self.signatures[block_id] = signature
                return

    def redact(self, data: str) -> None:
        """An encrypted reasoning block, in its place among the others."""
        self.close()
        block_id = f"redacted_{len(self.redacted)}"
        self.redacted[block_id] = data
        self.order.append(("redacted", block_id))

    def enter(self, kind: Literal["reasoning", "content"]) -> str:
        if self.open == kind:
            return self.block_id
        self.close()
        ctx = self.ctx
        if kind == "reasoning":
            self.block_id = ctx.next_reasoning_id()
            ctx.emit(ev.ReasoningStart(reasoning_id=self.block_id, run_id=ctx.run_id, task_id=ctx.task_id))
        else:
            self.block_id = ctx.next_content_id()
            ctx.emit(ev.ContentStart(content_id=self.block_id, run_id=ctx.run_id, task_id=ctx.task_id))
        self.open = kind
        self.texts[self.block_id] = []
        self.order.append((kind, self.block_id))
        return self.block_id

    def close(self) -> None:
        if self.open == "reasoning":
            self.ctx.emit(ev.ReasoningEnd(reasoning_id=self.block_id))
        elif self.open == "content":
            self.ctx.emit(ev.ContentEnd(content_id=self.block_id))
        self.open = None


def _start_call(ctx: RunContext, tools: dict[str, ToolDefinition], delta: ToolCallStart,
                refused: bool = False) -> ToolCall:
    tool = tools.get(delta.name)
    kind = tool.kind if tool else None
    call_id = delta.call_id or f"call_{msg_id()[2:]}"
    if kind is ToolKind.FRONTEND and refused:  # never waited for: no viewport, no wait
        call = ToolCall(delta.index, call_id, frontend_tool_id(), delta.name, kind, tool, refused=True)
        ctx.emit(ev.ToolStart(tool_id=call.event_id, run_id=ctx.run_id, task_id=ctx.task_id, tool_name=delta.name,
                              description=tool.description if tool else None))
        return call
    if kind is ToolKind.ACTION:
        call = ToolCall(delta.index, call_id, action_id(), delta.name, kind, tool)
        ctx.emit(ev.ActionStart(action_id=call.event_id, run_id=ctx.run_id, task_id=ctx.task_id,
                                action_name=delta.name, description=tool.description if tool else None))
        return call
    if kind is ToolKind.FRONTEND:
        assert tool is not None
        call = ToolCall(delta.index, call_id, frontend_tool_id(), delta.name, kind, tool)
        # the wait opens with tool.start: a client may answer before the turn has finished streaming
        timeout_ms = ctx.services.settings.agent.tools.frontend.submit_timeout_ms
        ctx.services.submits.open(ctx.run_id, call.event_id, ctx.owner, tool_name=delta.name,
                                  tool_type=tool.tool_type or "html", tool_key=tool.tool_key or tool.name,
                                  expires_at=now_ms() + timeout_ms)
        ctx.emit(ev.ToolStart(
            tool_id=call.event_id, run_id=ctx.run_id, task_id=ctx.task_id, tool_name=delta.name,
            tool_type=tool.tool_type or "html", tool_key=tool.tool_key or tool.name,
            tool_timeout=ctx.services.settings.agent.tools.frontend.submit_timeout_ms,
            description=tool.description,
        ))
        return call
    call = ToolCall(delta.index, call_id, call_id, delta.name, kind, tool)
    ctx.emit(ev.ToolStart(tool_id=call.event_id, run_id=ctx.run_id, task_id=ctx.task_id, tool_name=delta.name,
                          tool_api=tool.tool_api if tool else None,
                          description=tool.description if tool else None))
    return call


async def model_turn(
    ctx: RunContext,
    stage: Stage,
    system: str,
    tools: Sequence[ToolDefinition],
    *,
    tool_choice: ToolChoiceWire | None,
    reasoning_enabled: bool | None = None,
    allowed_tools: list[str] | None = None,
    one_call: bool = False,
    no_calls: bool = False,
) -> TurnResult:
    """Call the stage's model once, streaming every delta out as an event the moment it arrives.

    ``one_call``: the engine runs only the turn's first call (REACT, SPEC §5) and refuses the
    others; they are ``refused`` from their start, so a frontend one is never offered to a client.
    ``no_calls``: the engine runs none of them (a turn that offered no tool, ``refuse_unoffered``):
    every call is ``refused`` from its start."""
    budget = ctx.agent.budget.model
    if ctx.usage.model_calls >= budget.max_calls:
        raise BudgetExceeded(f"model call budget of {budget.max_calls} calls exhausted", budget="model_calls")
    model = stage.model
    reasoning = model.reasoning
    if reasoning_enabled is not None and reasoning_enabled != reasoning.enabled:
        reasoning = type(reasoning)(enabled=reasoning_enabled, effort=reasoning.effort)
    services = ctx.services
    group = model.model
    candidates = services.router.candidates(group)
    usable = [m for m in candidates if await services.limiter.usable(m)] if group.group is not None else candidates
    if not usable:  # every member is over its own limits: the first one says why
        await services.limiter.before_call(ctx.owner, group, candidates[0])
    by_name = {tool.name: tool for tool in tools}
    messages = model_messages(ctx, system)
    images = ReferenceImages(services.settings, ctx.chat_id, messages)  # SPEC §23: image parts for isVision
    attempts = budget.retry_count + 1 if len(usable) == 1 else 1
    last_error: UpstreamError | None = None
    for member in usable:
        provider = services.settings.agent.providers.get(member.provider)
        if provider is None:
            raise UpstreamError(f"provider '{member.provider}' of model '{member.key}' is not configured")
        request = ChatRequest(
            model=member,
            provider=provider,
            api_key=services.api_key_for(member.provider),
            messages=await images.for_model(member),
            tools=[tool.openai_schema() for tool in tools],
            tool_choice=tool_choice if tools else None,
            allowed_tools=allowed_tools,
            reasoning=reasoning,
            temperature=model.temperature,
            top_p=model.top_p,
            max_tokens=model.max_tokens,
            timeout_s=budget.timeout_ms / 1000,
            trace_id=ctx.run_id,
            stage=ctx.stage,
            interaction_log=services.settings.agent.llm.interaction_log.enabled,
            mask_sensitive=services.settings.agent.llm.interaction_log.mask_sensitive,
        )
        for attempt in range(attempts):
            if ctx.usage.model_calls >= budget.max_calls:
                if last_error is not None:
                    raise last_error
                raise BudgetExceeded(f"model call budget of {budget.max_calls} calls exhausted",
                                     budget="model_calls")
            await services.limiter.before_call(ctx.owner, group, member)
            ctx.usage.model_calls += 1
            ctx.last_call_tokens = 0
            services.router.started(member.key)
            try:
                try:
                    with model_call_span(request) as call_span:  # SPEC §19: one span per model call
                        result = await _stream_turn(ctx, request, by_name, member,
                                                    group.key if group.group is not None else None, one_call,
                                                    no_calls)
                        call_span.response(finish_reason=result.finish_reason, input_tokens=result.prompt_tokens,
                                           output_tokens=result.completion_tokens)
                except BaseException:  # failed or cancelled: the tokens it reported were used all the same
                    await _count_failed_call_tokens(ctx, group, member)
                    raise
            except _Forwarded as wrapped:
                services.router.failed(member.key)
                raise wrapped.error from wrapped.error.__cause__
            except UpstreamError as exc:
                if not _moves_on(exc):
                    raise
                services.router.failed(member.key)
                last_error = exc
                if attempt + 1 < attempts:
                    logger.warning("run %s: model %s failed before any delta (%s); retrying",
                                   ctx.run_id, member.key, exc.message)
                elif group.group is not None:
                    logger.warning("run %s: group %s member %s failed before any delta (%s); trying the next",
                                   ctx.run_id, group.key, member.key, exc.message)
                continue
            services.router.succeeded(member.key)
            await services.limiter.after_call(ctx.owner, group, member, ctx.last_call_tokens)
            return result
    assert last_error is not None
    raise last_error


async def _count_failed_call_tokens(ctx: RunContext, group: ModelDefinition, member: ModelDefinition) -> None:
    """Count a failed or cancelled call's reported tokens against the token limits (SPEC §19):
    Anthropic reports the prompt's tokens first, so a run cancelled mid-answer had used them,
    and not counting them let a user cancel past ``daily-tokens``. A limiter failure here is
    logged: the call's own error is the one the run ends with."""
    if ctx.last_call_tokens <= 0:
        return
    try:
        await ctx.services.limiter.after_call(ctx.owner, group, member, ctx.last_call_tokens)
    except Exception:
        logger.warning("run %s: the %d tokens of a failed call were not counted", ctx.run_id,
                       ctx.last_call_tokens, exc_info=True)


def _moves_on(error: UpstreamError) -> bool:
    """SPEC §19: a failure before the first delta that another try (or member) may not have —
    connect error, timeout, 429, 5xx, a broken or malformed stream; not a 4xx of the request itself."""
    status = getattr(error, "http_status", None)
    return status is None or status == 429 or status >= 500


class _Forwarded(Exception):
    """An upstream error after deltas were forwarded: never retried."""

    def __init__(self, error: UpstreamError) -> None:
        super().__init__(error.message)
        self.error = error


async def _stream_turn(
    ctx: RunContext, request: ChatRequest, tools: dict[str, ToolDefinition], model: ModelDefinition,
    group_key: str | None = None, one_call: bool = False, no_calls: bool = False,
) -> TurnResult:
    result = TurnResult(msg_id=msg_id())
    blocks = _Blocks(ctx)
    calls: dict[int, ToolCall] = {}  # by index: where the next fragment goes
    ordered: list[ToolCall] = []  # every call, in the order they started
    call_ids: set[str] = set()
    started = now_ms()
    first_delta_at: int | None = None
    prompt_tokens = completion_tokens = 0
    reasoning_tokens: int | None = None
    limits = ctx.services.settings.agent.llm
    chars_left, deltas_left = limits.max_response_chars, limits.max_response_deltas
    stream = stream_chat(ctx.services.http, request)
    try:
        async for delta in stream:
            if first_delta_at is None and not isinstance(delta, UsageDelta | FinishDelta):
                first_delta_at = now_ms()  # the first one the client sees: not a usage report
            deltas_left -= 1
            if isinstance(delta, ContentDelta):
                chars_left -= len(delta.text)
                if chars_left < 0 or deltas_left < 0:
                    raise _too_large(limits)
                block = blocks.enter("content")
                blocks.texts[block].append(delta.text)
                ctx.emit(ev.ContentDeltaEvent(content_id=block, delta=delta.text))
            elif isinstance(delta, ReasoningDelta):
                chars_left -= len(delta.text)
                if chars_left < 0 or deltas_left < 0:
                    raise _too_large(limits)
                block = blocks.enter("reasoning")
                blocks.texts[block].append(delta.text)
                ctx.emit(ev.ReasoningDeltaEvent(reasoning_id=block, delta=delta.text))
            elif deltas_left < 0:
                raise _too_large(limits)
            elif isinstance(delta, ToolCallStart):
                blocks.close()
                if len(ordered) >= limits.max_response_tool_calls:
                    raise _too_large(limits)
                # a start for an index already in use (a hostile or broken upstream) is a new call:
                # the earlier one keeps its place, its end and its result
                if delta.call_id in call_ids:
                    delta = ToolCallStart(delta.index, "", delta.name)  # an id used twice: a unique one
                calls[delta.index] = begun = _start_call(ctx, tools, delta, no_calls or (one_call and bool(ordered)))
                ordered.append(begun)
                call_ids.add(begun.call_id)
            elif isinstance(delta, ToolCallArgs):
                chars_left -= len(delta.fragment)
                if chars_left < 0:
                    raise _too_large(limits)
                call = calls.get(delta.index)
                if call is None:  # fragment before its start: adopt it under a generated id
                    if len(ordered) >= limits.max_response_tool_calls:
                        raise _too_large(limits)
                    call = _start_call(ctx, tools, ToolCallStart(delta.index, "", ""),
                                       no_calls or (one_call and bool(ordered)))
                    calls[delta.index] = call
                    ordered.append(call)
                    call_ids.add(call.call_id)
                call.fragments.append(delta.fragment)
                if call.is_action:
                    ctx.emit(ev.ActionArgs(action_id=call.event_id, delta=delta.fragment, run_id=ctx.run_id))
                else:
                    ctx.emit(ev.ToolArgs(tool_id=call.event_id, delta=delta.fragment, run_id=ctx.run_id,
                                         chunk_index=len(call.fragments) - 1))
            elif isinstance(delta, ReasoningSignature):
                chars_left -= len(delta.signature)
                if chars_left < 0:
                    raise _too_large(limits)
                blocks.sign(delta.signature)
            elif isinstance(delta, RedactedReasoning):
                chars_left -= len(delta.data)
                if chars_left < 0:
                    raise _too_large(limits)
                blocks.redact(delta.data)
            elif isinstance(delta, UsageDelta):
                prompt_tokens, completion_tokens = delta.prompt_tokens, delta.completion_tokens
                reasoning_tokens = delta.reasoning_tokens
            elif isinstance(delta, FinishDelta):
                result.finish_reason = delta.reason
    except BaseException as exc:  # cancelled or failed mid-stream: keep what the client already saw
        blocks.close()
        _end_calls(ctx, ordered)  # and close what it saw open: the run's end gives each call its result
        result.calls = ordered
        ctx.last_call_tokens = prompt_tokens + completion_tokens
        if ctx.last_call_tokens:  # reported before the failure: the run's usage says so, as the ledger does
            ctx.add_usage(model, prompt_tokens, completion_tokens)
        _record_response(ctx, result, blocks, started, first_delta_at, prompt_tokens, completion_tokens, model.key)
        _to_ledger(ctx, model, group_key, started, first_delta_at, prompt_tokens, completion_tokens, exc,
                   reasoning_tokens=reasoning_tokens)
        if isinstance(exc, UpstreamError) and first_delta_at is not None:
            raise _Forwarded(exc) from exc
        raise
    finally:
        await stream.aclose()
    blocks.close()
    _end_calls(ctx, ordered)
    ctx.add_usage(model, prompt_tokens, completion_tokens)
    ctx.last_call_tokens = prompt_tokens + completion_tokens
    result.prompt_tokens, result.completion_tokens = prompt_tokens, completion_tokens
    result.calls = ordered
    _record_response(ctx, result, blocks, started, first_delta_at, prompt_tokens, completion_tokens, model.key)
    _to_ledger(ctx, model, group_key, started, first_delta_at, prompt_tokens, completion_tokens, None,
               reasoning_tokens=reasoning_tokens)
    return result


def _end_calls(ctx: RunContext, calls: list[ToolCall]) -> None:
    for call in calls:
        ctx.emit(ev.ActionEnd(action_id=call.event_id, run_id=ctx.run_id) if call.is_action
                 else ev.ToolEnd(tool_id=call.event_id, run_id=ctx.run_id))


def _too_large(limits: LlmSettings) -> UpstreamTooLarge:
    return UpstreamTooLarge(
        f"the model's response passed the gateway's limit of {limits.max_response_chars} characters, "
        f"{limits.max_response_deltas} deltas or {limits.max_response_tool_calls} tool calls "
        "(agent.llm.max-response-chars, agent.llm.max-response-deltas, agent.llm.max-response-tool-calls)")


def _to_ledger(ctx: RunContext, model: ModelDefinition, group_key: str | None, started: int,
               first_delta_at: int | None, prompt_tokens: int, completion_tokens: int,
               error: BaseException | None, *, reasoning_tokens: int | None = None) -> None:
    """SPEC §19 usage ledger: one line per model call, only queued here (the writer thread does the disk).
    ``reasoningTokens`` only when the provider reported them (part of ``completionTokens``)."""
    ended = now_ms()
    entry: dict[str, Any] = {
        "ts": ended, "runId": ctx.run_id, "chatId": ctx.chat_id, "agentKey": ctx.agent.key,
        "modelKey": model.key, "provider": model.provider, "user": ctx.owner,
        "promptTokens": prompt_tokens, "completionTokens": completion_tokens,
        "points": points_for(model.pricing, prompt_tokens, completion_tokens)
        if error is None or prompt_tokens or completion_tokens else 0.0,
        "durationMs": ended - started,
        "ttftMs": first_delta_at - started if first_delta_at is not None else None,
        "status": "ok" if error is None else "error",
    }
    if group_key is not None:
        entry["groupKey"] = group_key
    if reasoning_tokens is not None:
        entry["reasoningTokens"] = reasoning_tokens
    if error is not None:
        entry["errorCode"] = ("cancelled" if isinstance(error, asyncio.CancelledError)
                              else getattr(error, "error_code", None) or "internal_error")
    ctx.services.ledger.record(entry)


def _record_response(ctx: RunContext, result: TurnResult, blocks: _Blocks, started: int,
                     first_delta_at: int | None, prompt_tokens: int, completion_tokens: int,
                     model_key: str) -> None:
    """Write the response into memory shape: one message per block and per tool call (SPEC §8)."""
    ts = now_ms()
    timing = {"startedAt": started, "firstDeltaAt": first_delta_at, "endedAt": ts}
    usage = {"promptTokens": prompt_tokens, "completionTokens": completion_tokens, "modelKey": model_key}
    extras: dict[str, Any] = {"_msgId": result.msg_id, "ts": ts}
    if ctx.task_id:
        extras["_taskId"] = ctx.task_id
    first = True
    for kind, block_id in blocks.order:
        message: dict[str, Any]
        if kind == "redacted":
            message = {"role": "assistant", "_redactedReasoning": blocks.redacted[block_id], **extras}
        elif kind == "reasoning":
            text = "".join(blocks.texts[block_id])
            result.reasoning += text
            message = {"role": "assistant", "reasoning_content": [{"type": "text", "text": text}],
                       "_reasoningId": block_id, **extras}
            if block_id in blocks.signatures:
                message["_reasoningSignature"] = blocks.signatures[block_id]
        else:
            text = "".join(blocks.texts[block_id])
            result.content += text
            message = {"role": "assistant", "content": [{"type": "text", "text": text}],
                       "_contentId": block_id, **extras}
        if first:
            message["_timing"], message["_usage"], first = timing, usage, False
        ctx.record(message)
    action_tools = set(ctx.services.settings.memory.chat.action_tools)
    for call in result.calls:
        id_key = "_actionId" if call.is_action or call.name in action_tools else "_toolId"
        message = {
            "role": "assistant",
            "tool_calls": [{"id": call.call_id, "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments}}],
            id_key: call.event_id,
            "_toolKind": call.kind.value if call.kind else "backend",
            **extras,
        }
        if call.kind is ToolKind.FRONTEND and call.tool is not None and not call.refused:
            message["_toolType"] = call.tool.tool_type or "html"
            message["_toolKey"] = call.tool.tool_key or call.tool.name
        if first:
            message["_timing"], message["_usage"], first = timing, usage, False
        ctx.record(message)
