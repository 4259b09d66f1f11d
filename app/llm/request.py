"""``ChatRequest``: everything one model call needs, protocol-neutral (SPEC §2, §7)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from app.catalog.definitions import ModelDefinition, ReasoningConfig
from app.config import ProviderSettings

ToolChoiceValue = Literal["auto", "none", "required"]


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """One streaming model call, in OpenAI chat terms; adapters translate it per protocol.

    ``messages`` are OpenAI chat messages (content as a string or a list of text parts;
    assistant messages may carry ``tool_calls``; tool messages carry ``tool_call_id``).
    Extension fields (``_msgId``, ``ts``, ``reasoning_content``…) are dropped by the
    adapters. ``timeout_s`` is the read timeout per chunk (from the agent's model budget).
    ``api_key`` never appears in ``repr``.
    """

    model: ModelDefinition
    provider: ProviderSettings
    api_key: str = field(repr=False)
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] = field(default_factory=list)
    tool_choice: ToolChoiceValue | None = None
    #: restrict ``tools`` to these names (``None`` = all)
    allowed_tools: list[str] | None = None
    reasoning: ReasoningConfig = ReasoningConfig()
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    trace_id: str = ""
    stage: str = ""
    #: log every delta at debug (SPEC §7, ``agent.llm.interaction-log.enabled``)
    interaction_log: bool = True
    #: mask credentials in that log (SPEC §2 ``agent.llm.interaction-log.mask-sensitive``)
    mask_sensitive: bool = True

    @property
    def model_name(self) -> str:
        """The upstream model id: the model's ``modelId``, else the provider's default model."""
        return self.model.model_id or self.provider.model

    def selected_tools(self) -> list[dict[str, Any]]:
        """``tools`` restricted to ``allowed_tools``."""
        if self.allowed_tools is None:
            return list(self.tools)
        allowed = set(self.allowed_tools)
        return [tool for tool in self.tools if _tool_name(tool) in allowed]


def _tool_name(tool: dict[str, Any]) -> str | None:
    function = tool.get("function")
    if isinstance(function, dict):
        name = function.get("name")
        return name if isinstance(name, str) else None
    name = tool.get("name")
    return name if isinstance(name, str) else None


__all__ = ["ChatRequest", "ToolChoiceValue"]
