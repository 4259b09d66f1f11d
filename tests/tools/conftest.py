"""Fixtures for the built-in tool tests: settings in a temp deployment folder, a catalog,
an agent with skills, and a ``ToolContext`` factory."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.catalog.definitions import (
    AgentDefinition,
    Catalog,
    ModelDefinition,
    SkillDefinition,
    ToolDefinition,
    ToolKind,
)
from app.config import Settings, load_settings
from app.tools.base import ToolContext

REPO = Path(__file__).resolve().parents[2]
SKILL_IDS = ("math_basic", "math_stats", "text_utils", "screenshot", "slack-gif-creator")


def make_settings(base: Path, **overrides: Any) -> Settings:
    return load_settings(base, files=(), env={}, overrides=overrides)


@pytest.fixture
def deploy(tmp_path: Path) -> Path:
    """A deployment folder with a copy of the repository's skills."""
    base = tmp_path / "deploy"
    base.mkdir()
    shutil.copytree(REPO / "skills", base / "skills")
    return base


@pytest.fixture
def skills(deploy: Path) -> dict[str, SkillDefinition]:
    return {
        sid: SkillDefinition(id=sid, name=sid, description="", body="", folder=deploy / "skills" / sid)
        for sid in SKILL_IDS
    }


@pytest.fixture
def catalog(skills: dict[str, SkillDefinition]) -> Catalog:
    models = {
        key: ModelDefinition(key=key, provider="demo", protocol="OPENAI", model_id=key)
        for key in ("demo-model", "other-model")
    }
    tools = {
        name: ToolDefinition(name=name, kind=ToolKind.BACKEND, description="", parameters={})
        for name in ("city_datetime", "mock_city_weather", "_bash_", "_plan_add_tasks_", "_plan_update_task_")
    }
    return Catalog(models=models, tools=tools, skills=skills)


@pytest.fixture
def agent(skills: dict[str, SkillDefinition]) -> AgentDefinition:
    return AgentDefinition(
        key="tester",
        name="tester",
        icon=None,
        description="",
        mode="REACT",
        stages={},
        skills=tuple(skills[s] for s in ("math_basic", "math_stats", "text_utils", "screenshot")),
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


ContextFactory = Callable[..., ToolContext]


@pytest.fixture
def make_ctx(deploy: Path, catalog: Catalog, agent: AgentDefinition, http: httpx.AsyncClient) -> ContextFactory:
    def factory(settings: Settings | None = None, *, timeout_s: float = 30.0, **fields: Any) -> ToolContext:
        values: dict[str, Any] = {
            "settings": settings or make_settings(deploy),
            "catalog": catalog,
            "agent": agent,
            "run_id": "run_test",
            "chat_id": "chat_test",
            "http": http,
            "timeout_s": timeout_s,
        }
        values.update(fields)
        return ToolContext(**values)

    return factory
