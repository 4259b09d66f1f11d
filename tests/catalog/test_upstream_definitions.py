"""The compatibility target: every upstream definition file loads unchanged (SPEC preamble)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.catalog.definitions import ToolKind
from app.catalog.loader import build_catalog

from .support import Deployment

UPSTREAM = Path(__file__).resolve().parents[1] / "fixtures" / "upstream-definitions"
BUILTIN_TOOLS = frozenset(
    {
        "_bash_",
        "_skill_run_script_",
        "_plan_add_tasks_",
        "_plan_update_task_",
        "_plan_get_tasks_",
        "city_datetime",
        "mock_city_weather",
        "mock_logistics_status",
        "mock_ops_runbook",
        "mock_sensitive_data_detector",
        "mock_todo_tasks",
        "mock_transport_schedule",
        "agent_file_create",
    }
)


@pytest.fixture
def upstream(deploy: Deployment) -> Deployment:
    for kind in ("agents", "models", "tools", "skills", "viewports"):
        if (UPSTREAM / kind).is_dir():
            shutil.copytree(UPSTREAM / kind, deploy.base / kind)
    return deploy


def test_every_upstream_definition_loads(upstream: Deployment) -> None:
    settings = upstream.settings(providers=("bailian", "siliconflow", "babelark"))
    catalog = build_catalog(settings, BUILTIN_TOOLS)
    assert catalog.rejections == ()
    expected_agents = sorted(path.stem for path in (UPSTREAM / "agents").glob("*.json"))
    assert sorted(catalog.agents) == expected_agents
    assert sorted(catalog.models) == sorted(path.stem for path in (UPSTREAM / "models").glob("*.json"))
    assert sorted(catalog.skills) == sorted(path.name.lower() for path in (UPSTREAM / "skills").iterdir())
    tool_files = {path.stem for path in (UPSTREAM / "tools").iterdir()}
    assert set(catalog.tools) == tool_files


def test_upstream_details(upstream: Deployment) -> None:
    catalog = build_catalog(upstream.settings(providers=("bailian", "siliconflow", "babelark")), BUILTIN_TOOLS)
    assert catalog.tools["confirm_dialog"].kind is ToolKind.FRONTEND
    assert catalog.tools["switch_theme"].kind is ToolKind.ACTION

    plan_execute = catalog.agents["demoModePlanExecute"]
    assert list(plan_execute.stages) == ["plan", "execute", "summary"]
    assert [t.name for t in plan_execute.stages["summary"].tools] == []
    assert plan_execute.stages["plan"].tools[-1].name == "_plan_add_tasks_"
    assert plan_execute.stages["summary"].model.reasoning.effort == "LOW"
    assert plan_execute.stages["plan"].system_prompt.startswith("你是高级规划助手。\n")

    creator = catalog.agents["demoAgentCreator"]
    assert [t.name for t in creator.stages["plan"].tools] == ["_plan_add_tasks_"]
    assert [t.name for t in creator.stages["execute"].tools] == ["agent_file_create", "_plan_update_task_"]

    confirm = catalog.agents["demoConfirmDialog"]
    assert confirm.react_max_steps == 10
    assert [t.name for t in confirm.stages["react"].tools] == ["city_datetime", "mock_city_weather", "confirm_dialog"]

    assert [s.id for s in catalog.agents["demoMathSkill"].skills] == ["math_basic", "math_stats", "text_utils"]
    assert catalog.agents["demoModePlain"].stages["plain"].tools == ()


def test_upstream_models_need_their_providers(upstream: Deployment) -> None:
    catalog = build_catalog(upstream.settings(providers=("bailian",)), BUILTIN_TOOLS)
    rejected = {r.file: r.reason for r in catalog.rejections}
    assert "unknown provider 'babelark'" in rejected["models/babelark-glm5.json"]
    assert "demoModeReact" in catalog.agents


def test_vendored_copy_matches_shared_reference() -> None:
    """tests/fixtures/upstream-definitions must stay a verbatim copy of shared/reference/."""
    shared = Path(__file__).resolve().parents[3] / "shared" / "reference" / "upstream-definitions"
    if not shared.is_dir():
        pytest.skip(f"no shared/ folder beside the repository at {shared}; nothing to compare against")
    ours = {p.relative_to(UPSTREAM): p.read_bytes() for p in UPSTREAM.rglob("*") if p.is_file()}
    theirs = {p.relative_to(shared): p.read_bytes() for p in shared.rglob("*") if p.is_file()}
    assert ours == theirs
