"""Wire encoding for the fake upstream: script steps → vendor SSE frames (pure, no I/O).

``OpenAIRenderer`` speaks chat-completions SSE, ``AnthropicRenderer`` speaks messages
SSE (SPEC §7). Each content step becomes the frame(s) a real vendor would send for
it; the server writes and flushes every frame as soon as it is rendered. Control and
fault steps (``Pause``, ``Gate``, ``Disconnect``, ``Stall``, ``HttpError``) are the
server's business and render to nothing here.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from app.devtools.script import (
    Finish,
    Malformed,
    Reasoning,
    Script,
    Step,
    StreamError,
    Text,
    ToolArgs,
    ToolCall,
    Usage,
)

_ANTHROPIC_STOP = {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"}


def sse_frame(data: str | bytes, event: str | None = None) -> bytes:
    """One SSE message: optional ``event:`` line, one ``data:`` line, blank line."""
    payload = data.encode() if isinstance(data, str) else data
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + payload + b"\n\n"


def _json_frame(obj: Any, event: str | None = None) -> bytes:
    return sse_frame(orjson.dumps(obj), event)


def _first_usage(script: Script) -> Usage | None:
    return next((step for step in script if isinstance(step, Usage)), None)


class Renderer(Protocol):
    """What the server needs from a dialect."""

    def start(self) -> list[bytes]:
        """Frames sent right after the response headers."""
        ...

    def step(self, step: Step) -> list[bytes]:
        """Frames for one content step (may be empty)."""
        ...

    def end(self) -> list[bytes]:
        """Frames sent when the script ran out normally."""
        ...

    def error_body(self, status: int, body: Mapping[str, Any] | str | None) -> bytes:
        """The JSON body of an ``HttpError`` answer."""
        ...


class OpenAIRenderer:
    """``chat.completion.chunk`` frames; usage chunk only with ``include_usage``; ``[DONE]``."""

    def __init__(self, *, completion_id: str, model: str, include_usage: bool) -> None:
        self._id = completion_id
        self._model = model
        self._include_usage = include_usage
        self._created = int(time.time())
        self._usage: Usage | None = None
        self._role_sent = False

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        if not self._role_sent:
            delta = {"role": "assistant", **delta}
            self._role_sent = True
        return _json_frame(
            {
                "id": self._id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": self._model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
        )

    def start(self) -> list[bytes]:
        return []

    def step(self, step: Step) -> list[bytes]:
        match step:
            case Text(delta=delta):
                return [self._chunk({"content": delta})]
            case Reasoning(delta=delta):
                return [self._chunk({"reasoning_content": delta})]
            case ToolCall(index=index, id=call_id, name=name):
                call = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
                return [self._chunk({"tool_calls": [call]})]
            case ToolArgs(index=index, fragment=fragment):
                return [self._chunk({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})]
            case Usage():
                self._usage = step
                return []
            case Finish(reason=reason):
                return [self._chunk({}, finish_reason=reason)]
            case Malformed(raw=raw):
                return [sse_frame(raw)]
            case StreamError(message=message, type=kind):
                return [_json_frame({"error": {"message": message, "type": kind, "code": None}})]
            case _:
                return []

    def end(self) -> list[bytes]:
        frames: list[bytes] = []
        if self._include_usage and self._usage is not None:
            usage = self._usage
            frames.append(
                _json_frame(
                    {
                        "id": self._id,
                        "object": "chat.completion.chunk",
                        "created": self._created,
                        "model": self._model,
                        "choices": [],
                        "usage": {
                            "prompt_tokens": usage.prompt_tokens,
                            "completion_tokens": usage.completion_tokens,
                            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                            **({"completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}}
                               if usage.reasoning_tokens is not None else {}),
                        },
                    }
                )
            )
        frames.append(sse_frame("[DONE]"))
        return frames

    def error_body(self, status: int, body: Mapping[str, Any] | str | None) -> bytes:
        if body is None:
            body = {"error": {"message": f"fake upstream error {status}", "type": "fake_error", "code": status}}
        return body.encode() if isinstance(body, str) else orjson.dumps(body)


class AnthropicRenderer:
    """``message_start`` → content blocks (text / thinking / tool_use) → ``message_delta`` →
    ``message_stop``. Block indexes count every block; script tool indexes are mapped."""

    def __init__(self, *, message_id: str, model: str, script: Script) -> None:
        self._id = message_id
        self._model = model
        first_usage = _first_usage(script)
        self._input_tokens = first_usage.prompt_tokens if first_usage else 0
        self._usage: Usage | None = None
        self._open: tuple[str, int] | None = None  # (block type, block index)
        self._next_index = 0
        self._tool_blocks: dict[int, int] = {}

    def _event(self, event: str, body: dict[str, Any]) -> bytes:
        return _json_frame({"type": event, **body}, event)

    def _close_block(self) -> list[bytes]:
        if self._open is None:
            return []
        kind, index = self._open
        self._open = None
        frames: list[bytes] = []
        if kind == "thinking":
            signature = {"type": "signature_delta", "signature": "fake-signature"}
            frames.append(self._event("content_block_delta", {"index": index, "delta": signature}))
        frames.append(self._event("content_block_stop", {"index": index}))
        return frames

    def _open_block(self, kind: str, block: dict[str, Any]) -> tuple[list[bytes], int]:
        frames = self._close_block()
        index = self._next_index
        self._next_index += 1
        self._open = (kind, index)
        frames.append(self._event("content_block_start", {"index": index, "content_block": block}))
        return frames, index

    def _block_delta(self, kind: str, empty_block: dict[str, Any], delta: dict[str, Any]) -> list[bytes]:
        frames: list[bytes] = []
        if self._open is None or self._open[0] != kind:
            frames, _ = self._open_block(kind, empty_block)
        assert self._open is not None
        frames.append(self._event("content_block_delta", {"index": self._open[1], "delta": delta}))
        return frames

    def start(self) -> list[bytes]:
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_tokens, "output_tokens": 1},
        }
        return [self._event("message_start", {"message": message}), self._event("ping", {})]

    def step(self, step: Step) -> list[bytes]:
        match step:
            case Text(delta=delta):
                return self._block_delta("text", {"type": "text", "text": ""}, {"type": "text_delta", "text": delta})
            case Reasoning(delta=delta):
                return self._block_delta(
                    "thinking",
                    {"type": "thinking", "thinking": ""},
                    {"type": "thinking_delta", "thinking": delta},
                )
            case ToolCall(index=tool_index, id=call_id, name=name):
                frames, index = self._open_block("tool_use", {"type": "tool_use", "id": call_id, "name": name, "input": {}})
                self._tool_blocks[tool_index] = index
                return frames
            case ToolArgs(index=tool_index, fragment=fragment):
                index = self._tool_blocks.get(tool_index, tool_index)
                args_delta = {"type": "input_json_delta", "partial_json": fragment}
                return [self._event("content_block_delta", {"index": index, "delta": args_delta})]
            case Usage():
                self._usage = step
                return []
            case Finish(reason=reason):
                output_tokens = self._usage.completion_tokens if self._usage else 0
                frames = self._close_block()
                frames.append(
                    self._event(
                        "message_delta",
                        {
                            "delta": {"stop_reason": _ANTHROPIC_STOP.get(reason, reason), "stop_sequence": None},
                            "usage": {"output_tokens": output_tokens},
                        },
                    )
                )
                return frames
            case Malformed(raw=raw):
                return [sse_frame(raw, "content_block_delta")]
            case StreamError(message=message, type=kind):
                return [self._event("error", {"error": {"type": kind, "message": message}})]
            case _:
                return []

    def end(self) -> list[bytes]:
        frames = self._close_block()
        frames.append(self._event("message_stop", {}))
        return frames

    def error_body(self, status: int, body: Mapping[str, Any] | str | None) -> bytes:
        if body is None:
            body = {"type": "error", "error": {"type": "api_error", "message": f"fake upstream error {status}"}}
        return body.encode() if isinstance(body, str) else orjson.dumps(body)
