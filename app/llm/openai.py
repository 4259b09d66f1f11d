"""OpenAI chat-completions adapter (``OPENAI`` and ``NEWAPI_OPENAI_COMPATIBLE``, SPEC §7).

``build_body`` turns a ``ChatRequest`` into the streaming request body;
``StreamTranslator`` turns each ``data:`` payload of the response into ``Delta``s, the
moment its line is read:

* ``choices[0].delta.reasoning_content`` / ``.reasoning`` → ``ReasoningDelta``
* ``choices[0].delta.content`` → ``ContentDelta``
* ``choices[0].delta.tool_calls[]`` → ``ToolCallStart`` (once per ``index``, when its id
  or name first appears) and ``ToolCallArgs`` (every non-empty ``function.arguments``)
* ``choices[0].finish_reason`` → ``FinishDelta``; ``usage`` → ``UsageDelta``
* ``data: [DONE]`` ends the stream. Ending without ``[DONE]`` and without a finish
  reason → ``UpstreamDisconnected``; a non-JSON ``data:`` → ``UpstreamProtocolError``;
  ``{"error": …}`` → ``UpstreamHTTPError``.
"""

from __future__ import annotations

from typing import Any

from app.errors import UpstreamDisconnected
from app.llm._sse import in_stream_error, json_object, parse_json
from app.llm.deltas import (
    ContentDelta,
    Delta,
    FinishDelta,
    ReasoningDelta,
    ToolCallArgs,
    ToolCallStart,
    UsageDelta,
)
from app.llm.request import ChatRequest

_MESSAGE_KEYS = ("role", "content", "name", "tool_calls", "tool_call_id")


def _flatten_content(content: Any) -> Any:
    """A list of text parts becomes one string (the most widely accepted form)."""
    if isinstance(content, list) and all(
        isinstance(part, dict) and part.get("type", "text") == "text" for part in content
    ):
        return "".join(str(part.get("text") or "") for part in content)
    return content


def _clean_message(message: dict[str, Any]) -> dict[str, Any]:
    """Only the OpenAI fields of a message; extension fields (``_msgId``, ``ts``…) are dropped."""
    clean = {key: message[key] for key in _MESSAGE_KEYS if key in message}
    if "content" in clean:
        clean["content"] = _flatten_content(clean["content"])
    if clean.get("role") == "assistant" and clean.get("tool_calls") and not clean.get("content"):
        clean["content"] = None
    if clean.get("role") != "tool":
        clean.pop("tool_call_id", None)
    return clean


def build_body(request: ChatRequest) -> dict[str, Any]:
    """The chat-completions request body (always ``stream: true`` with usage)."""
    body: dict[str, Any] = {
        "model": request.model_name,
        "messages": [_clean_message(message) for message in request.messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    tools = request.selected_tools()
    if tools:
        body["tools"] = tools
        if request.tool_choice is not None:
            body["tool_choice"] = request.tool_choice
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.max_tokens is not None:
        body["max_tokens"] = request.max_tokens
    if request.reasoning.enabled:
        body["enable_thinking"] = True
        if request.reasoning.effort:
            body["reasoning_effort"] = request.reasoning.effort.lower()
    elif request.model.is_reasoner:
        body["enable_thinking"] = False
    return body


class _ToolCallTracker:
    """Emits ``ToolCallStart`` once per index, before that index's first fragment; notes the finish."""

    def __init__(self) -> None:
        self._started: set[int] = set()
        self.finished = False  # a finish reason was read

    def deltas(self, calls: list[Any]) -> list[Delta]:
        out: list[Delta] = []
        for position, call in enumerate(calls):
            if not isinstance(call, dict):
                continue
            index = call.get("index")
            if not isinstance(index, int):
                index = position
            function = json_object(call.get("function"))
            call_id = call.get("id")
            name = function.get("name")
            arguments = function.get("arguments")
            fragment = arguments if isinstance(arguments, str) else ""
            if index not in self._started and (call_id or name or fragment):
                self._started.add(index)
                out.append(ToolCallStart(index, str(call_id or f"call_{index}"), str(name or "")))
            if fragment:
                out.append(ToolCallArgs(index, fragment))
        return out


def _chunk_deltas(chunk: dict[str, Any], tracker: _ToolCallTracker) -> list[Delta]:
    """The deltas of one parsed chunk, in wire order (a finish reason sets ``tracker.finished``)."""
    if "error" in chunk and chunk["error"]:
        raise in_stream_error(chunk["error"])
    out: list[Delta] = []
    choices = chunk.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        choice = choices[0]
        delta = json_object(choice.get("delta"))
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if isinstance(reasoning, str) and reasoning:
            out.append(ReasoningDelta(reasoning))
        content = delta.get("content")
        if isinstance(content, str) and content:
            out.append(ContentDelta(content))
        calls = delta.get("tool_calls")
        if isinstance(calls, list):
            out.extend(tracker.deltas(calls))
        finish = choice.get("finish_reason")
        if isinstance(finish, str) and finish:
            tracker.finished = True
            out.append(FinishDelta(finish))
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        total = int(usage.get("total_tokens") or prompt + completion)
        details = usage.get("completion_tokens_details")
        reasoning = details.get("reasoning_tokens") if isinstance(details, dict) else None
        out.append(UsageDelta(prompt, completion, total,
                              reasoning_tokens=reasoning if isinstance(reasoning, int) and reasoning >= 0 else None))
    return out


class StreamTranslator:
    """Chat-completions ``data:`` payloads → deltas (see the module docstring); ``app.llm._sse.Translator``."""

    __slots__ = ("_tracker", "done")

    def __init__(self) -> None:
        self._tracker = _ToolCallTracker()
        self.done = False

    def event(self, name: str | None, data: str) -> list[Delta]:
        if data.strip() == "[DONE]":
            self.done = True
            return []
        chunk = parse_json(data)
        if not isinstance(chunk, dict):
            return []
        return _chunk_deltas(chunk, self._tracker)

    def end(self) -> None:
        if not self.done and not self._tracker.finished:
            raise UpstreamDisconnected("upstream stream ended without [DONE] or a finish reason")


__all__ = ["StreamTranslator", "build_body"]
