"""Helpers for the adapter tests: a ``ChatRequest`` pointed at the fake upstream; a translator fed lines."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.catalog.definitions import ModelDefinition, Protocol, ReasoningConfig
from app.config import ProviderSettings
from app.llm._sse import EventReader, Translator, deltas_of
from app.llm.deltas import Delta
from app.llm.request import ChatRequest

API_KEY = "sk-test-secret-123"


def make_request(
    base_url: str,
    protocol: Protocol = "OPENAI",
    *,
    is_reasoner: bool = False,
    model_id: str = "test-model",
    max_output_tokens: int | None = None,
    new_api_path: str = "/v1/chat/completions",
    **overrides: Any,
) -> ChatRequest:
    model = ModelDefinition(
        key="test",
        provider="local",
        protocol=protocol,
        model_id=model_id,
        is_reasoner=is_reasoner,
        max_output_tokens=max_output_tokens,
    )
    provider = ProviderSettings.model_validate({"base-url": base_url, "api-key": API_KEY, "new-api-path": new_api_path})
    fields: dict[str, Any] = {
        "model": model,
        "provider": provider,
        "api_key": API_KEY,
        "messages": [{"role": "user", "content": "hi"}],
        "reasoning": ReasoningConfig(),
        "timeout_s": 5.0,
    }
    fields.update(overrides)
    return ChatRequest(**fields)



def translate(translator: Translator, lines: Iterable[str], seen: list[Delta] | None = None) -> list[Delta]:
    """The deltas of an event stream's ``lines``, each line its own chunk, as the client feeds a body.

    ``seen`` (when given) collects them too, so a test still sees what came before an error.
    """
    out: list[Delta] = [] if seen is None else seen
    reader = EventReader()
    for line in lines:
        out.extend(deltas_of(reader.feed(line.encode() + b"\n"), translator))
        if translator.done:
            break
    translator.end()
    return out
