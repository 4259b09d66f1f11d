"""Deployment folders for tests: the repository's tools/skills/viewports plus models on the fake upstream."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[2]

FAKE_MODELS: dict[str, dict[str, Any]] = {
    "fake-openai": {"provider": "fake", "protocol": "OPENAI", "modelId": "fake-gpt", "isReasoner": True,
                    "pricing": {"promptPointsPer1k": 10, "completionPointsPer1k": 30}},
    "fake-anthropic": {"provider": "fake", "protocol": "ANTHROPIC", "modelId": "fake-claude",
                       "isReasoner": True, "maxOutputTokens": 1024},
    "fake-newapi": {"provider": "fakenew", "protocol": "NEWAPI_OPENAI_COMPATIBLE", "modelId": "fake-new"},
}


def make_deployment(root: Path, upstream_url: str, *, yaml_extra: str = "") -> Path:
    """A deployment folder whose providers point at the fake upstream."""
    root.mkdir(parents=True, exist_ok=True)
    for folder in ("tools", "skills", "viewports"):
        if (REPO / folder).is_dir():
            shutil.copytree(REPO / folder, root / folder, dirs_exist_ok=True)
    (root / "agents").mkdir(exist_ok=True)
    (root / "models").mkdir(exist_ok=True)
    (root / "data").mkdir(exist_ok=True)
    for key, body in FAKE_MODELS.items():
        (root / "models" / f"{key}.json").write_bytes(orjson.dumps({"key": key, **body}))
    (root / "application.yml").write_text(
        "agent:\n"
        "  auth:\n    enabled: false\n"
        "  providers:\n"
        f"    fake:\n      base-url: {upstream_url}\n      api-key: sk-test-secret-key-123\n"
        f"    fakenew:\n      base-url: {upstream_url}\n      api-key: sk-test-newapi-key\n"
        "      new-api-path: /api/paas/v4/chat/completions\n"
        f"    local:\n      base-url: {upstream_url}\n"
        + yaml_extra,
        encoding="utf-8",
    )
    return root


def write_agent(root: Path, key: str, body: dict[str, Any]) -> Path:
    path = root / "agents" / f"{key}.json"
    path.write_bytes(orjson.dumps({"key": key, **body}, option=orjson.OPT_INDENT_2))
    return path


def agent(mode: str = "ONESHOT", *, model: str = "fake-openai", tools: dict[str, list[str]] | None = None,
          reasoning: bool = False, **extra: Any) -> dict[str, Any]:
    """A minimal valid agent body for ``mode``."""
    body: dict[str, Any] = {
        "name": "test agent",
        "modelConfig": {"modelKey": model, "reasoning": {"enabled": reasoning}},
        "toolConfig": tools,
        "mode": mode,
    }
    if mode == "ONESHOT":
        body["plain"] = {"systemPrompt": "You are a test agent."}
    elif mode == "REACT":
        body["react"] = {"systemPrompt": "You are a test agent.", "maxSteps": extra.pop("max_steps", 6)}
    else:
        body["planExecute"] = {
            "plan": {"systemPrompt": "Plan.", "deepThinking": extra.pop("deep_thinking", False)},
            "execute": {"systemPrompt": "Execute."},
            "maxSteps": extra.pop("max_steps", 10),
        }
        if extra.pop("summary", True):
            body["planExecute"]["summary"] = {"systemPrompt": "Summarise.", "toolConfig": None}
    body.update(extra)
    return body
