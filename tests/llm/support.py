"""Helpers for the adapter tests: a ``ChatRequest`` pointed at the fake upstream."""

from __future__ import annotations

from typing import Any

from app.catalog.definitions import ModelDefinition, Protocol, ReasoningConfig
from app.config import ProviderSettings
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

