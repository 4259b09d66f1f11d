"""OpenAI chat-completions adapter (``OPENAI`` and ``NEWAPI_OPENAI_COMPATIBLE``, SPEC §7).

``build_body`` turns a ``ChatRequest`` into the streaming request body;
``StreamTranslator`` turns each ``data:`` payload of the response into ``Delta``s, the
moment its line is read:

* ``choices[0].delta.reasoning_content`` / ``.reasoning`` → ``ReasoningDelta``
* ``choices[0].delta.content`` → ``ContentDelta``
* ``choices[0].delta.tool_calls[]`` → ``ToolCallStart`` (once per call, when its name is
  known) and ``ToolCallArgs`` (every non-empty ``function.arguments``); see ``_ToolCallTracker``
* ``choices[0].finish_reason`` → ``FinishDelta``; ``usage`` → ``UsageDelta``
* ``data: [DONE]`` ends the stream. Ending without ``[DONE]`` and without a finish
  reason → ``UpstreamDisconnected``; a non-JSON ``data:`` → ``UpstreamProtocolError``;
  ``{"error": …}`` → ``UpstreamHTTPError``.
"""

from __future__ import annotations

from typing import Any

from app.errors import UpstreamDisconnected
from app.llm._sse import arguments_fragment, count, in_stream_error, json_object, parse_json, wire_index
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


class _Call:
    """One tool call of the response, under the index the tracker gave it."""

    __slots__ = ("index", "wire", "call_id", "name", "started", "held")

    def __init__(self, index: int, wire: int | None, call_id: str | None) -> None:
        self.index = index
        self.wire = wire  # the index the upstream gave it, if any
        self.call_id = call_id
        self.name: str | None = None
        self.started = False
        self.held: list[str] = []  # argument fragments that came before the call's name


class _ToolCallTracker:
    """``tool_calls`` fragments → ``ToolCallStart`` / ``ToolCallArgs``, one index per call.

    The wire's ``index`` says which call a fragment continues, and a call starts with its ``id``
    and ``function.name``. Servers differ: some send every parallel call under index 0, or no
    index (a new ``id`` then means a new call), some send the name after the id. So each call gets
    its own index here; ``ToolCallStart`` goes out once the call has a name (fragments before it
    are held, then follow it), and a call that never got one starts nameless at the finish (it is
    answered as an unknown tool). A call without an id starts with ``""``: the engine gives it a
    unique one. Arguments sent as a JSON object are passed on as their JSON text."""

    def __init__(self) -> None:
        self._by_wire: dict[int, _Call] = {}
        self._by_id: dict[str, _Call] = {}
        self._last: _Call | None = None
        self._calls: list[_Call] = []
        self.finished = False  # a finish reason was read

    def deltas(self, calls: list[Any]) -> list[Delta]:
        out: list[Delta] = []
        for call in calls:
            if not isinstance(call, dict):
                continue
            wire = wire_index(call.get("index"))
            raw_id = call.get("id")
            call_id = raw_id if isinstance(raw_id, str) and raw_id else None
            function = json_object(call.get("function"))
            raw_name = function.get("name")
            name = raw_name if isinstance(raw_name, str) and raw_name else None
            fragment = arguments_fragment(function.get("arguments"))
            current = self._find(wire, call_id)
            if current is None:
                if not (call_id or name or fragment):
                    continue
                current = self._new(wire, call_id)
            if current.name is None and name:
                current.name = name
                out.extend(self._start(current))
            if fragment:
                if current.started:
                    out.append(ToolCallArgs(current.index, fragment))
                else:
                    current.held.append(fragment)
        return out

    def flush(self) -> list[Delta]:
        """At the finish: the calls that never got a name start now (nameless), with what they held."""
        out: list[Delta] = []
        for call in self._calls:
            if not call.started:
                out.extend(self._start(call))
        return out

    def _find(self, wire: int | None, call_id: str | None) -> _Call | None:
        if call_id is not None:
            known = self._by_id.get(call_id)
            if known is not None and (wire is None or known.wire is None or known.wire == wire):
                return known  # (the same id under another index is another call: the engine renames it)
            begun = self._by_wire.get(wire) if wire is not None else None
            if begun is not None and begun.call_id is None:  # the id came after the call began
                begun.call_id = call_id
                self._by_id[call_id] = begun
                return begun
            return None  # a new id: a new call, whatever its index
        if wire is not None:
            return self._by_wire.get(wire)
        return self._last  # neither index nor id: the call being streamed goes on

    def _new(self, wire: int | None, call_id: str | None) -> _Call:
        call = _Call(len(self._calls), wire, call_id)
        self._calls.append(call)
        if wire is not None:
            self._by_wire[wire] = call
        if call_id is not None:
            self._by_id[call_id] = call
        self._last = call
        return call

    @staticmethod
    def _start(call: _Call) -> list[Delta]:
        call.started = True
        out: list[Delta] = [ToolCallStart(call.index, call.call_id or "", call.name or "")]
        out.extend(ToolCallArgs(call.index, fragment) for fragment in call.held)
        call.held = []
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
            out.extend(tracker.flush())
            out.append(FinishDelta(finish))
    usage = chunk.get("usage")
    if isinstance(usage, dict):
        prompt = count(usage.get("prompt_tokens"))
        completion = count(usage.get("completion_tokens"))
        total = count(usage.get("total_tokens")) or prompt + completion
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
            return self._tracker.flush()
        chunk = parse_json(data)
        if not isinstance(chunk, dict):
            return []
        return _chunk_deltas(chunk, self._tracker)

    def end(self) -> None:
        if not self.done and not self._tracker.finished:
            raise UpstreamDisconnected("upstream stream ended without [DONE] or a finish reason")


__all__ = ["StreamTranslator", "build_body"]
