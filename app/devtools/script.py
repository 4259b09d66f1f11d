"""Scripts for the fake upstream: what a scripted model says, step by step.

A ``Script`` is a sequence of steps, a closed union of frozen dataclasses. The fake
upstream (``app.devtools.fake_upstream``) renders the same script in the OpenAI
chat-completions SSE dialect or the Anthropic messages SSE dialect (SPEC §7), one
step per written-and-flushed chunk. Fault steps (``HttpError``, ``Malformed``,
``StreamError``, ``Disconnect``, ``Stall``) exercise the adapters' error paths.

Scripts are also plain JSON (``script_to_json`` / ``script_from_json``) so a test in
another process can enqueue one through the control channel.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

FinishReason = Literal["stop", "tool_calls", "length"]


@dataclass(frozen=True, slots=True)
class Text:
    """One answer-text delta (``delta.content`` / ``text_delta``)."""

    delta: str


@dataclass(frozen=True, slots=True)
class Reasoning:
    """One reasoning delta (``delta.reasoning_content`` / ``thinking_delta``)."""

    delta: str


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The start of tool call ``index`` (OpenAI ``tool_calls[].index``) with its id and name."""

    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolArgs:
    """One argument fragment of tool call ``index``, sent exactly as given."""

    index: int
    fragment: str


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage. OpenAI: a ``choices: []`` chunk after the finish chunk, only when the
    request asked for ``stream_options.include_usage``; Anthropic: ``input_tokens`` in
    ``message_start`` and ``output_tokens`` in ``message_delta``."""

    prompt_tokens: int
    completion_tokens: int
    #: OpenAI only: ``completion_tokens_details.reasoning_tokens`` (part of ``completion_tokens``)
    reasoning_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """Why the model stopped: ``finish_reason`` / ``stop_reason`` (end_turn, tool_use, max_tokens)."""

    reason: FinishReason = "stop"


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait before the next step (the stream stays open, nothing is sent)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class Gate:
    """Withhold the rest of the stream until ``FakeUpstream.release(name)``.

    A released gate stays open: a later stream reaching the same gate passes at once.
    """

    name: str


@dataclass(frozen=True, slots=True)
class HttpError:
    """Answer a non-2xx JSON response instead of streaming. Must be the first step.

    ``body`` defaults to the vendor's error shape with a generic message.
    """

    status: int
    body: Mapping[str, Any] | str | None = None


@dataclass(frozen=True, slots=True)
class Malformed:
    """Send a ``data:`` line whose payload (``raw``) is not valid JSON."""

    raw: str = "{not json"


@dataclass(frozen=True, slots=True)
class StreamError:
    """Send a vendor error object inside the stream (OpenAI ``data: {"error": …}``,
    Anthropic ``event: error``), then end the stream."""

    message: str
    type: str = "server_error"


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Close the connection abruptly, without the final chunk / ``[DONE]``."""


@dataclass(frozen=True, slots=True)
class Stall:
    """Stop sending but keep the connection open until the client goes away."""


Step: TypeAlias = (
    Text
    | Reasoning
    | ToolCall
    | ToolArgs
    | Usage
    | Finish
    | Pause
    | Gate
    | HttpError
    | Malformed
    | StreamError
    | Disconnect
    | Stall
)
Script: TypeAlias = Sequence[Step]

STEP_TYPES: Mapping[str, type[Step]] = {
    "text": Text,
    "reasoning": Reasoning,
    "tool_call": ToolCall,
    "tool_args": ToolArgs,
    "usage": Usage,
    "finish": Finish,
    "pause": Pause,
    "gate": Gate,
    "http_error": HttpError,
    "malformed": Malformed,
    "stream_error": StreamError,
    "disconnect": Disconnect,
    "stall": Stall,
}
_STEP_NAMES: Mapping[type, str] = {cls: name for name, cls in STEP_TYPES.items()}


def validate_script(script: Script) -> None:
    """Raise ``ValueError`` for a script that cannot be rendered."""
    for position, step in enumerate(script):
        if type(step) not in _STEP_NAMES:
            raise ValueError(f"step {position} is not a script step: {step!r}")
        if isinstance(step, HttpError) and position != 0:
            raise ValueError(f"HttpError must be the first step (found at step {position})")


# -- builders ---------------------------------------------------------------------------


def _tail(usage: tuple[int, int] | None, reason: FinishReason) -> list[Step]:
    steps: list[Step] = []
    if usage is not None:
        steps.append(Usage(*usage))
    steps.append(Finish(reason))
    return steps


def text_script(
    deltas: Iterable[str],
    *,
    usage: tuple[int, int] | None = (10, 5),
    reasoning: Iterable[str] = (),
    finish: FinishReason = "stop",
) -> list[Step]:
    """Reasoning deltas (optional), then answer deltas, then usage and finish."""
    steps: list[Step] = [Reasoning(d) for d in reasoning]
    steps.extend(Text(d) for d in deltas)
    return steps + _tail(usage, finish)


def gated_text_script(n: int) -> list[Step]:
    """``n`` answer deltas ``"d0 "`` … ``"d<n-1> "``, each followed by the gate ``g<k>``: delta k+1
    leaves only once a test released ``g<k>``, i.e. after its client received delta k (the
    zero-buffering handshake). Then usage ``(1, n)`` and finish ``stop``."""
    steps: list[Step] = []
    for k in range(n):
        steps += [Text(f"d{k} "), Gate(f"g{k}")]
    return steps + _tail((1, n), "stop")


def tool_call_script(
    call_id: str,
    name: str,
    fragments: Iterable[str],
    *,
    index: int = 0,
    text: Iterable[str] = (),
    usage: tuple[int, int] | None = (10, 5),
) -> list[Step]:
    """Optional lead-in text, then one tool call whose arguments arrive in ``fragments``."""
    steps: list[Step] = [Text(d) for d in text]
    steps.append(ToolCall(index, call_id, name))
    steps.extend(ToolArgs(index, fragment) for fragment in fragments)
    return steps + _tail(usage, "tool_calls")


def parallel_tool_calls_script(
    calls: Sequence[tuple[str, str, Sequence[str]]],
    *,
    usage: tuple[int, int] | None = (10, 5),
) -> list[Step]:
    """Several tool calls ``(id, name, fragments)`` in one response, indexes 0, 1, …

    Each call's start and fragments are sent before the next call starts (the order
    both vendors use).
    """
    steps: list[Step] = []
    for index, (call_id, name, fragments) in enumerate(calls):
        steps.append(ToolCall(index, call_id, name))
        steps.extend(ToolArgs(index, fragment) for fragment in fragments)
    return steps + _tail(usage, "tool_calls")


def http_error_script(status: int, message: str | None = None) -> list[Step]:
    """A non-2xx answer; ``message`` becomes the vendor error message."""
    if message is None:
        return [HttpError(status)]
    return [HttpError(status, {"error": {"message": message, "type": "fake_error", "code": status}})]


# -- JSON form --------------------------------------------------------------------------


def step_to_json(step: Step) -> dict[str, Any]:
    """``{"type": "<name>", **fields}``."""
    data: dict[str, Any] = {"type": _STEP_NAMES[type(step)]}
    for field in dataclasses.fields(step):
        value = getattr(step, field.name)
        data[field.name] = dict(value) if isinstance(value, Mapping) else value
    return data


def step_from_json(data: Mapping[str, Any]) -> Step:
    """The inverse of ``step_to_json``; raises ``ValueError`` on an unknown type or field."""
    kind = data.get("type")
    cls = STEP_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ValueError(f"unknown script step type: {kind!r}")
    fields = {k: v for k, v in data.items() if k != "type"}
    try:
        return cls(**fields)
    except TypeError as exc:
        raise ValueError(f"bad fields for step {kind!r}: {exc}") from exc


def script_to_json(script: Script) -> list[dict[str, Any]]:
    return [step_to_json(step) for step in script]


def script_from_json(data: Iterable[Mapping[str, Any]]) -> list[Step]:
    script = [step_from_json(item) for item in data]
    validate_script(script)
    return script


__all__ = [
    "STEP_TYPES",
    "Disconnect",
    "Finish",
    "FinishReason",
    "Gate",
    "HttpError",
    "Malformed",
    "Pause",
    "Reasoning",
    "Script",
    "Stall",
    "Step",
    "StreamError",
    "Text",
    "ToolArgs",
    "ToolCall",
    "Usage",
    "gated_text_script",
    "http_error_script",
    "parallel_tool_calls_script",
    "script_from_json",
    "script_to_json",
    "step_from_json",
    "step_to_json",
    "text_script",
    "tool_call_script",
    "validate_script",
]
