"""Helpers for the catalog tests: a temporary deployment folder and file builders."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from app.catalog.definitions import Catalog
from app.catalog.loader import build_catalog
from app.config import Settings, load_settings

BUILTIN_TOOLS: frozenset[str] = frozenset({"_bash_", "_plan_add_tasks_", "_plan_update_task_", "_plan_get_tasks_"})


def tool_item(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "function",
        "name": name,
        "description": f"the {name} tool",
        "parameters": {"type": "object", "properties": {}},
        **extra,
    }


def model_file(key: str, provider: str = "bailian", **extra: Any) -> dict[str, Any]:
    return {"key": key, "provider": provider, "protocol": "OPENAI", "modelId": f"{key}-id", **extra}


class Deployment:
    """A deployment folder under ``tmp_path`` with helpers to write definition files."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def write(self, relative: str, content: str | dict[str, Any] | bytes) -> Path:
        path = self.base / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, dict):
            path.write_bytes(orjson.dumps(content, option=orjson.OPT_INDENT_2))
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        return path

    def settings(self, providers: Iterable[str] = ("bailian",), **overrides: Any) -> Settings:
        tree: dict[str, Any] = {
            "agent": {
                "providers": {
                    name: {"base-url": f"http://{name}.invalid", "api-key": f"sk-{name}-secret"} for name in providers
                }
            }
        }
        for key, value in overrides.items():
            tree["agent"][key] = value
        return load_settings(self.base, files=(), env={}, overrides=tree)

    def build(self, builtin: frozenset[str] = BUILTIN_TOOLS, **kwargs: Any) -> Catalog:
        return build_catalog(self.settings(**kwargs), builtin)

    def standard(self) -> Deployment:
        """One model, the plan tools, a backend/frontend/action tool and a skill."""
        self.write("models/m1.json", model_file("m1"))
        self.write(
            "tools/plan.backend",
            {"tools": [tool_item("_plan_add_tasks_"), tool_item("_plan_update_task_"), tool_item("_plan_get_tasks_")]},
        )
        self.write("tools/bash.backend", {"tools": [tool_item("_bash_")]})
        self.write("tools/confirm.frontend", {"tools": [tool_item("confirm_dialog")]})
        self.write("tools/theme.action", {"tools": [tool_item("switch_theme")]})
        self.write("skills/math/SKILL.md", "---\nname: Math\ndescription: does math\n---\nUse calc.py.\n")
        return self


