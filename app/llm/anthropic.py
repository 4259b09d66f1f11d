"""Anthropic messages adapter (``ANTHROPIC``, SPEC §7).

``build_body`` translates the OpenAI-format ``ChatRequest``:

* every ``system`` message → the top-level ``system`` string (joined by blank lines);
* user / assistant content (string or text parts) → ``text`` blocks (empty text dropped);
* user ``image_url`` parts (data URLs of uploaded images, SPEC §23) → ``image`` blocks (base64);
* assistant ``tool_calls`` → ``tool_use`` blocks (arguments parsed; invalid JSON → ``{}``);
* ``role: tool`` messages → ``tool_result`` blocks in a user message;
* consecutive messages of the same role are merged (Anthropic requires alternation);
* tools → ``{name, description, input_schema}``; ``tool_choice`` auto/none/required →
  ``{"type": "auto" | "none" | "any"}``;
* ``max_tokens`` is required: the request's, else the model's ``maxOutputTokens``, else 4096;
* reasoning enabled → ``thinking: {type: enabled, budget_tokens}`` by effort (LOW 1024,
  MEDIUM 4096, HIGH 16384, unset 2048); ``max_tokens`` is raised above the budget when
  needed and ``temperature`` is omitted (Anthropic rejects it with thinking); not on a call
  that forces tool use (``tool_choice`` required: Anthropic refuses thinking there);
* with thinking on, the run's own earlier turns send their signed ``thinking`` /
  ``redacted_thinking`` blocks back first in their content (required with their ``tool_use``;
  SPEC §8's "reasoning is never replayed" still holds for earlier runs).

``StreamTranslator`` turns the SSE into deltas: ``thinking_delta`` → ``ReasoningDelta``,
``signature_delta`` → ``ReasoningSignature``, a ``redacted_thinking`` block →
``RedactedReasoning``, ``text_delta`` → ``ContentDelta``, a ``tool_use`` block start →
``ToolCallStart`` (an index of its own per call, whatever the block index),
``input_json_delta`` → ``ToolCallArgs``; ``message_delta``
→ ``FinishDelta`` (``end_turn``/``stop_sequence`` → ``stop``, ``tool_use`` →
``tool_calls``, ``max_tokens`` → ``length``) followed by one ``UsageDelta`` (input tokens
from ``message_start``, output tokens from ``message_delta``). ``message_start``'s own
input tokens are a ``UsageDelta`` at once too: the prompt is paid for even when the
answer then fails or is cancelled, and the run's usage and token limits must count it. ``message_stop`` ends the
stream; an ``error`` event raises ``UpstreamHTTPError``; ending before ``message_stop``
and without a stop reason → ``UpstreamDisconnected``.
"""

from __future__ import annotations

from typing import Any

import orjson

from app.errors import UpstreamDisconnected
from app.llm._sse import count, in_stream_error, json_object, parse_json, wire_index
from app.llm.deltas import (
    ContentDelta,
    Delta,
    FinishDelta,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    ToolCallArgs,
    ToolCallStart,
    UsageDelta,
)
from app.llm.request import ChatRequest

DEFAULT_MAX_TOKENS = 4096
THINKING_BUDGETS = {"LOW": 1024, "MEDIUM": 4096, "HIGH": 16384}
DEFAULT_THINKING_BUDGET = 2048
_TOOL_CHOICE = {"auto": "auto", "none": "none", "required": "any"}
_STOP_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "tool_use": "tool_calls", "max_tokens": "length"}
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "overloaded_error": 529,
}


def _text_blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str) and part:
                blocks.append({"type": "text", "text": part})
            elif isinstance(part, dict) and part.get("type", "text") == "text" and part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
    return blocks


def _image_block(part: dict[str, Any]) -> dict[str, Any] | None:
    """An OpenAI ``image_url`` part (SPEC §23: a data URL, or an http(s) URL) as an ``image`` block."""
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str):
        return None
    if url.startswith("data:") and ";base64," in url:
        media_type, _, data = url[5:].partition(";base64,")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    return None


def _user_blocks(content: Any) -> list[dict[str, Any]]:
    """User content: text blocks, and ``image_url`` parts as ``image`` blocks (in order)."""
    if not isinstance(content, list):
        return _text_blocks(content)
    blocks: list[dict[str, Any]] = []
    for part in content:
        image = _image_block(part) if isinstance(part, dict) and part.get("type") == "image_url" else None
        blocks.extend([image] if image is not None else _text_blocks([part]))
    return blocks


def _plain_text(content: Any) -> str:
    return "".join(block["text"] for block in _text_blocks(content))


def _tool_use_block(call: dict[str, Any]) -> dict[str, Any]:
    function = json_object(call.get("function"))
    raw = function.get("arguments")
    arguments: Any = raw if isinstance(raw, dict) else {}
    if isinstance(raw, str) and raw.strip():
        try:
            arguments = orjson.loads(raw)
        except orjson.JSONDecodeError:
            arguments = {}
    if not isinstance(arguments, dict):
        arguments = {}
    return {"type": "tool_use", "id": str(call.get("id") or ""), "name": str(function.get("name") or ""), "input": arguments}


def _thinking_blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    """The signed ``thinking`` / ``redacted_thinking`` blocks an assistant message of the current
    run carries (``_thinking``, from ``replay_messages(..., signed_reasoning=True)``), as they came."""
    blocks = message.get("_thinking")
    out: list[dict[str, Any]] = []
    for block in blocks if isinstance(blocks, list) else ():
        if not isinstance(block, dict):
            continue
        if block.get("type") == "thinking" and isinstance(block.get("thinking"), str) \
                and isinstance(block.get("signature"), str):
            out.append({"type": "thinking", "thinking": block["thinking"], "signature": block["signature"]})
        elif block.get("type") == "redacted_thinking" and isinstance(block.get("data"), str):
            out.append({"type": "redacted_thinking", "data": block["data"]})
    return out


def translate_messages(messages: list[dict[str, Any]], *, thinking: bool = False) -> tuple[str, list[dict[str, Any]]]:
    """OpenAI chat messages → (Anthropic ``system`` text, Anthropic ``messages``). With ``thinking``
    (the call has extended thinking on), an assistant message's signed thinking blocks go first
    in its content: Anthropic requires them back with the ``tool_use`` of the same turn."""
    system_parts: list[str] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = _plain_text(content)
            if text:
                system_parts.append(text)
            continue
        if role == "tool":
            result = _plain_text(content) if not isinstance(content, (dict, int, float)) else orjson.dumps(content).decode()
            blocks = [{"type": "tool_result", "tool_use_id": str(message.get("tool_call_id") or ""), "content": result}]
            target_role = "user"
        elif role == "assistant":
            blocks = [*(_thinking_blocks(message) if thinking else ()), *_text_blocks(content)]
            blocks += [_tool_use_block(call) for call in message.get("tool_calls") or [] if isinstance(call, dict)]
            target_role = "assistant"
        else:
            blocks = _user_blocks(content)
            target_role = "user"
        if not blocks:
            continue
        if out and out[-1]["role"] == target_role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": target_role, "content": blocks})
    return "\n\n".join(system_parts), out


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    nested = tool.get("function")
    function: dict[str, Any] = nested if isinstance(nested, dict) else tool
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    return {"name": function.get("name"), "description": function.get("description") or "", "input_schema": schema}


def build_body(request: ChatRequest) -> dict[str, Any]:
    """The messages request body (always ``stream: true``)."""
    tools = request.selected_tools()
    # extended thinking refuses forced tool use (tool_choice any): that call goes without thinking
    thinking = request.reasoning.enabled and not (tools and request.tool_choice == "required")
    system, messages = translate_messages(request.messages, thinking=thinking)
    max_tokens = request.max_tokens or request.model.max_output_tokens or DEFAULT_MAX_TOKENS
    body: dict[str, Any] = {"model": request.model_name, "messages": messages, "stream": True}
    if system:
        body["system"] = system
    if tools:
        body["tools"] = [_tool(tool) for tool in tools]
        if request.tool_choice is not None:
            body["tool_choice"] = {"type": _TOOL_CHOICE[request.tool_choice]}
    if thinking:
        effort = request.reasoning.effort
        budget = THINKING_BUDGETS.get(effort, DEFAULT_THINKING_BUDGET) if effort else DEFAULT_THINKING_BUDGET
        max_tokens = max(max_tokens, budget + 1024)
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    body["max_tokens"] = max_tokens
    if request.temperature is not None and not thinking:
        body["temperature"] = request.temperature
    if request.top_p is not None and (not thinking or request.top_p >= 0.95):
        body["top_p"] = request.top_p
    return body


class _StreamState:
    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.stop_reason: str | None = None
        #: content block index → the index of its tool call here: each ``tool_use`` block gets its own,
        #: so a block index the upstream repeats or sends out of order never merges two calls
        self._calls: dict[int, int] = {}
        self._next_call = 0

    def deltas(self, event: dict[str, Any]) -> list[Delta]:
        kind = event.get("type")
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "message_start":
            message = json_object(event.get("message"))
            self._absorb_usage(message.get("usage"))
            if not self.input_tokens:
                return []
            return [UsageDelta(self.input_tokens, self.output_tokens, self.input_tokens + self.output_tokens)]
        if kind == "message_delta":
            self._absorb_usage(event.get("usage"))
            delta = json_object(event.get("delta"))
            reason = delta.get("stop_reason")
            if not isinstance(reason, str) or not reason:
                return []
            self.stop_reason = reason
            total = self.input_tokens + self.output_tokens
            return [
                FinishDelta(_STOP_REASONS.get(reason, reason)),
                UsageDelta(self.input_tokens, self.output_tokens, total),
            ]
        if kind == "error":
            error = event.get("error")
            error_type = error.get("type") if isinstance(error, dict) else None
            status = _ERROR_STATUS.get(error_type, 502) if isinstance(error_type, str) else 502
            raise in_stream_error(error, status)
        return []  # ping, content_block_stop, unknown future events

    def _absorb_usage(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        if "input_tokens" in usage:
            self.input_tokens = sum(
                count(usage.get(key)) for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
            )
        if "output_tokens" in usage:
            self.output_tokens = count(usage.get("output_tokens"))

    def _call_index(self, block: int | None, *, new: bool) -> int:
        """The tool call index of content block ``block``: a new one for a ``tool_use`` start (or a
        fragment of a block never started, which the engine adopts as a nameless call)."""
        if not new:
            if block is not None and block in self._calls:
                return self._calls[block]
            if block is None and self._next_call:  # no usable block index: the call being streamed
                return self._next_call - 1
        index, self._next_call = self._next_call, self._next_call + 1
        if block is not None:
            self._calls[block] = index
        return index

    def _block_start(self, event: dict[str, Any]) -> list[Delta]:
        block = json_object(event.get("content_block"))
        kind = block.get("type")
        if kind == "tool_use":
            index = self._call_index(wire_index(event.get("index")), new=True)
            call_id, name = block.get("id"), block.get("name")
            # no id: "" and the engine gives the call a unique one
            return [ToolCallStart(index, call_id if isinstance(call_id, str) else "",
                                  name if isinstance(name, str) else "")]
        if kind == "text" and block.get("text"):
            return [ContentDelta(str(block["text"]))]
        if kind == "thinking":
            out: list[Delta] = [ReasoningDelta(block["thinking"])] if isinstance(block.get("thinking"), str) \
                and block["thinking"] else []
            if isinstance(block.get("signature"), str) and block["signature"]:
                out.append(ReasoningSignature(block["signature"]))
            return out
        if kind == "redacted_thinking" and isinstance(block.get("data"), str):
            return [RedactedReasoning(block["data"])]
        return []

    def _block_delta(self, event: dict[str, Any]) -> list[Delta]:
        delta = json_object(event.get("delta"))
        kind = delta.get("type")
        if kind == "text_delta" and delta.get("text"):
            return [ContentDelta(str(delta["text"]))]
        if kind == "thinking_delta" and delta.get("thinking"):
            return [ReasoningDelta(str(delta["thinking"]))]
        if kind == "input_json_delta" and delta.get("partial_json"):
            return [ToolCallArgs(self._call_index(wire_index(event.get("index")), new=False),
                                 str(delta["partial_json"]))]
        if kind == "signature_delta" and isinstance(delta.get("signature"), str) and delta["signature"]:
            return [ReasoningSignature(delta["signature"])]
        return []  # empty fragments, unknown kinds


class StreamTranslator:
    """Messages ``data:`` payloads → deltas (see the module docstring); ``app.llm._sse.Translator``."""

    __slots__ = ("_state", "done")

    def __init__(self) -> None:
        self._state = _StreamState()
        self.done = False

    def event(self, name: str | None, data: str) -> list[Delta]:
        event = parse_json(data)
        if not isinstance(event, dict):
            return []
        if "type" not in event and name:
            event = {**event, "type": name}
        if event.get("type") == "message_stop":
            self.done = True
            return []
        return self._state.deltas(event)

    def end(self) -> None:
        if not self.done and self._state.stop_reason is None:
            raise UpstreamDisconnected("upstream stream ended without message_stop or a stop reason")


__all__ = ["StreamTranslator", "build_body", "translate_messages"]
