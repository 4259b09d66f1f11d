"""Replay of chat memory to the model (SPEC §8 "Replay to the model").

``replay_messages`` turns the stored lines into the OpenAI chat messages of the
last ``k`` runs:

* runs are grouped by ``runId`` in order of first appearance; messages keep file order;
* ``reasoning_content`` is never replayed (but see ``signed_reasoning``: the run in progress
  sends a provider's signed reasoning back to it); system messages are not memory (the engine
  sets the system prompt per call);
* text parts are joined into plain strings; ``ts`` and every ``_``-prefixed field go, except a
  user message's ``_references`` (SPEC §23: its images reach vision models; adapters drop it);
* the one-call-per-message assistant messages of one response (same ``_msgId``) are
  merged back into one ``{role: "assistant", content, tool_calls}``;
* consistency repair: a tool call without its result (cancelled / crashed run) is
  dropped, and so is a result without its call; an assistant message left with
  neither text nor calls disappears;
* a run whose steps hold no user message (it crashed before its first step) is
  replayed with the user message of its query line.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.memory.lines import LINE_QUERY, LINE_STEP, group_runs, messages_of, text_of

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Turn:
    """One model response: its merged assistant message and the tool results after it."""

    msg_id: str | None
    texts: list[str] = field(default_factory=list)
    calls: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    thinking: list[dict[str, Any]] = field(default_factory=list)  # signed reasoning (``signed_reasoning``)

    def render(self) -> list[dict[str, Any]]:
        # results pair with calls by id, in order: two calls that share an id (an upstream that
        # repeats ids) each keep their own result
        waiting: dict[str, list[dict[str, Any]]] = {}
        for result in self.results:
            waiting.setdefault(result["tool_call_id"], []).append(result)
        calls: list[dict[str, Any]] = []
        results: list[dict[str, Any]] = []
        for call in self.calls:
            queue = waiting.get(call["id"])
            if queue:
                calls.append(call)
                results.append(queue.pop(0))
        if len(calls) != len(self.calls) or len(self.results) != len(calls):
            logger.debug("replay: dropped %d unanswered call(s), %d orphan result(s)",
                         len(self.calls) - len(calls), len(self.results) - len(calls))
        text = "".join(self.texts)
        if not calls and not text:
            return []
        assistant: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            assistant["tool_calls"] = calls
        if self.thinking:
            assistant["_thinking"] = self.thinking
        return [assistant, *results]


def _tool_call(call: Mapping[str, Any], message: Mapping[str, Any]) -> dict[str, Any] | None:
    function = call.get("function")
    function = function if isinstance(function, Mapping) else {}
    call_id = call.get("id") or message.get("_toolId") or message.get("_actionId")
    name = function.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str):
        return None
    arguments = function.get("arguments")
    if not isinstance(arguments, str):
        arguments = orjson.dumps(arguments if arguments is not None else {}).decode()
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def _run_messages(run_lines: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    messages = [m for line in run_lines if line.get("_type") == LINE_STEP for m in messages_of(line)]
    if any(m.get("role") == "user" for m in messages):
        return messages
    for line in run_lines:
        query = line.get("query") if line.get("_type") == LINE_QUERY else None
        if isinstance(query, Mapping) and isinstance(query.get("message"), str):
            return [{"role": "user", "content": query["message"]}, *messages]
    return messages


def _signed_thinking(message: Mapping[str, Any]) -> dict[str, Any] | None:
    """A reasoning message's block as the provider must get it back (Anthropic), when it has one."""
    if isinstance(message.get("_redactedReasoning"), str):
        return {"type": "redacted_thinking", "data": message["_redactedReasoning"]}
    signature = message.get("_reasoningSignature")
    if isinstance(signature, str) and "reasoning_content" in message:
        return {"type": "thinking", "thinking": text_of(message.get("reasoning_content")) or "", "signature": signature}
    return None


def _convert(messages: Sequence[Mapping[str, Any]], signed_reasoning: bool = False) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any] | _Turn] = []
    for message in messages:
        role = message.get("role")
        last = blocks[-1] if blocks else None
        if role == "user":
            text = text_of(message.get("content"))
            if text:
                user: dict[str, Any] = {"role": "user", "content": text}
                if isinstance(message.get("_references"), list):  # SPEC §23: kept for image parts (vision)
                    user["_references"] = message["_references"]
                blocks.append(user)
        elif role == "assistant":
            text = text_of(message.get("content"))
            raw_calls = message.get("tool_calls")
            calls = [
                c for c in (_tool_call(rc, message) for rc in raw_calls if isinstance(rc, Mapping)) if c
            ] if isinstance(raw_calls, list) else []
            thinking = _signed_thinking(message) if signed_reasoning else None
            if not text and not calls and thinking is None:
                continue  # reasoning only: never replayed
            msg_id = message.get("_msgId")
            if isinstance(last, _Turn) and msg_id is not None and last.msg_id == msg_id:
                turn = last
            else:
                turn = _Turn(msg_id if isinstance(msg_id, str) else None)
                blocks.append(turn)
            if thinking is not None:
                turn.thinking.append(thinking)
            if text:
                turn.texts.append(text)
            turn.calls.extend(calls)
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(last, _Turn) or not isinstance(call_id, str):
                logger.debug("replay: dropped a tool result without its call")
                continue
            result: dict[str, Any] = {"role": "tool", "tool_call_id": call_id}
            if isinstance(message.get("name"), str):
                result["name"] = message["name"]
            result["content"] = text_of(message.get("content")) or ""
            last.results.append(result)
        # system and unknown roles are not memory
    out: list[dict[str, Any]] = []
    for block in blocks:
        out.extend(block.render() if isinstance(block, _Turn) else [block])
    return out


def replay_messages(lines: Sequence[Mapping[str, Any]], k: int, *,
                    signed_reasoning: bool = False) -> list[dict[str, Any]]:
    """The model messages of the last ``k`` runs of a chat (see the module docstring).

    ``signed_reasoning``: the run in progress, replayed to its own next model call. Its reasoning
    blocks that the provider signed (or sent encrypted) go on their assistant message as
    ``_thinking``; Anthropic must get them back with that turn's ``tool_use``. Other adapters drop
    the field, and earlier runs never carry it (their reasoning is never replayed)."""
    if k <= 0:
        return []
    runs = list(group_runs(lines).values())[-k:]
    out: list[dict[str, Any]] = []
    for run_lines in runs:
        out.extend(_convert(_run_messages(run_lines), signed_reasoning))
    return out
