"""The closed union of model-stream deltas every provider adapter yields.

One vendor chunk becomes zero or more deltas, in order, the moment it is read; an
adapter never merges, splits or delays them (SPEC §7). ``kind`` discriminates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    text: str
    kind: Literal["reasoning"] = "reasoning"


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str
    kind: Literal["content"] = "content"


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    """A new tool call in this response. ``index`` identifies it for later fragments."""

    index: int
    call_id: str
    name: str
    kind: Literal["tool_call_start"] = "tool_call_start"


@dataclass(frozen=True, slots=True)
class ToolCallArgs:
    """One argument fragment of the tool call at ``index``, exactly as the upstream sent it."""

    index: int
    fragment: str
    kind: Literal["tool_call_args"] = "tool_call_args"


@dataclass(frozen=True, slots=True)
class UsageDelta:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    kind: Literal["usage"] = "usage"
    #: the part of ``completion_tokens`` spent reasoning, when the provider says (OpenAI's
    #: ``completion_tokens_details.reasoning_tokens``); None when it does not
    reasoning_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class FinishDelta:
    """The upstream said why it stopped (``stop``, ``tool_calls``, ``length``…)."""

    reason: str
    kind: Literal["finish"] = "finish"


@dataclass(frozen=True, slots=True)
class ReasoningSignature:
    """The provider's signature of the reasoning block just streamed (Anthropic ``signature_delta``).
    Opaque: never shown; sent back with that block while the run's tool loop goes on."""

    signature: str
    kind: Literal["reasoning_signature"] = "reasoning_signature"


@dataclass(frozen=True, slots=True)
class RedactedReasoning:
    """A reasoning block the provider sent encrypted (Anthropic ``redacted_thinking``): nothing to
    show, sent back as it came while the run's tool loop goes on."""

    data: str
    kind: Literal["redacted_reasoning"] = "redacted_reasoning"


Delta = (ReasoningDelta | ContentDelta | ToolCallStart | ToolCallArgs | UsageDelta | FinishDelta
         | ReasoningSignature | RedactedReasoning)

__all__ = [
    "ContentDelta",
    "Delta",
    "FinishDelta",
    "ReasoningDelta",
    "ReasoningSignature",
    "RedactedReasoning",
    "ToolCallArgs",
    "ToolCallStart",
    "UsageDelta",
]
