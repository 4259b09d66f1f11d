"""Endpoint resolution and credential headers exactly per SPEC §2."""

from __future__ import annotations

import pytest

from app.config import ProviderSettings
from app.llm.endpoints import build_headers, resolve_endpoint


def provider(base: str, path: str = "/v1/chat/completions") -> ProviderSettings:
    return ProviderSettings.model_validate({"base-url": base, "api-key": "k", "new-api-path": path})


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://dashscope.aliyuncs.com/compatible-mode", "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions"),
        ("https://api.openai.com/v1", "https://api.openai.com/v1/chat/completions"),
        ("https://api.openai.com/v1/", "https://api.openai.com/v1/chat/completions"),
        ("http://127.0.0.1:9000", "http://127.0.0.1:9000/v1/chat/completions"),
    ],
)
def test_openai(base: str, expected: str) -> None:
    assert resolve_endpoint("OPENAI", provider(base)) == expected


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        ("https://new.example.com", "/v1/chat/completions", "https://new.example.com/v1/chat/completions"),
        ("https://new.example.com/", "/api/paas/v4/chat/completions", "https://new.example.com/api/paas/v4/chat/completions"),
        ("https://new.example.com/v1", "/chat/completions", "https://new.example.com/v1/chat/completions"),
    ],
)
def test_newapi(base: str, path: str, expected: str) -> None:
    assert resolve_endpoint("NEWAPI_OPENAI_COMPATIBLE", provider(base, path)) == expected


def test_newapi_default_path() -> None:
    settings = ProviderSettings.model_validate({"base-url": "https://n.example.com"})
    assert resolve_endpoint("NEWAPI_OPENAI_COMPATIBLE", settings) == "https://n.example.com/v1/chat/completions"


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("https://api.anthropic.com", "https://api.anthropic.com/v1/messages"),
        ("https://api.anthropic.com/v1", "https://api.anthropic.com/v1/messages"),
        ("https://proxy.example.com/anthropic/", "https://proxy.example.com/anthropic/v1/messages"),
    ],
)
def test_anthropic(base: str, expected: str) -> None:
    assert resolve_endpoint("ANTHROPIC", provider(base)) == expected


def test_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="unknown model protocol"):
        resolve_endpoint("GEMINI", provider("https://x"))  # type: ignore[arg-type]


def test_headers() -> None:
    openai = build_headers("OPENAI", "sk-1")
    assert openai["authorization"] == "Bearer sk-1" and "x-api-key" not in openai
    assert build_headers("NEWAPI_OPENAI_COMPATIBLE", "sk-2")["authorization"] == "Bearer sk-2"
    anthropic = build_headers("ANTHROPIC", "sk-3")
    assert anthropic["x-api-key"] == "sk-3" and anthropic["anthropic-version"] == "2023-06-01"
    assert "authorization" not in anthropic
    assert "authorization" not in build_headers("OPENAI", "")
