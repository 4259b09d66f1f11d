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


Delta = ReasoningDelta | ContentDelta | ToolCallStart | ToolCallArgs | UsageDelta | FinishDelta

__all__ = [
    "ContentDelta",
    "Delta",
    "FinishDelta",
    "ReasoningDelta",
    "ToolCallArgs",
    "ToolCallStart",
    "UsageDelta",
]
