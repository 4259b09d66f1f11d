"""``agent_file_create`` (SPEC §3.2, §3.3)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from app.errors import ToolError
from app.tools.agent_file_create import agent_file_create
from tests.tools.conftest import make_settings

LEGACY_TOP_LEVEL = {"verify", "output", "toolPolicy", "reasoning", "tools", "deepThink", "systemPrompt"}


def _read(deploy: Path, key: str) -> dict[str, Any]:
    return json.loads((deploy / "agents" / f"{key}.json").read_text(encoding="utf-8"))


async def test_creates_a_v2_react_agent(make_ctx: Any, deploy: Path) -> None:
    result = await agent_file_create(
        {
            "key": "weatherBot",
            "name": "天气助手",
            "mode": "REACT",
            "systemPrompt": "你是天气助手。",
            "maxSteps": 4,
            "modelKey": "other-model",
            "toolConfig": {"backends": ["city_datetime", "mock_city_weather"], "frontends": [], "actions": []},
            "skills": ["math_basic"],
        },
        make_ctx(),
    )
    assert result == {"ok": True, "key": "weatherBot", "path": "agents/weatherBot.json", "created": True}
    agent = _read(deploy, "weatherBot")
    assert agent["key"] == "weatherBot" and agent["mode"] == "REACT"
    assert agent["react"] == {"systemPrompt": "你是天气助手。", "maxSteps": 4}
    assert agent["modelConfig"] == {"modelKey": "other-model"}
    assert not LEGACY_TOP_LEVEL & set(agent)
    assert not list((deploy / "agents").glob(".*.tmp"))


async def test_defaults_and_update(make_ctx: Any, deploy: Path) -> None:
    settings = make_settings(deploy, agent={"tools": {"agent-file-create": {"default-system-prompt": "DEFAULT"}}})
    first = await agent_file_create({"agentId": "plainBot"}, make_ctx(settings))
    assert first["created"] is True
    agent = _read(deploy, "plainBot")
    assert agent["mode"] == "ONESHOT"
    assert agent["plain"] == {"systemPrompt": "DEFAULT"}
    assert agent["modelConfig"]["modelKey"] == "demo-model"  # the catalog's first model

    second = await agent_file_create({"key": "plainBot", "description": "updated"}, make_ctx(settings))
    assert second["created"] is False
    updated = _read(deploy, "plainBot")
    assert updated["description"] == "updated" and updated["plain"] == {"systemPrompt": "DEFAULT"}


async def test_plan_execute_shortcuts_and_config_object(make_ctx: Any, deploy: Path) -> None:
    await agent_file_create(
        {
            "key": "planner",
            "config": {
                "mode": "PLAN_EXECUTE",
                "planSystemPrompt": "plan it",
                "executeSystemPrompt": "do it",
                "summarySystemPrompt": "sum it",
                "maxSteps": 7,
                "modelConfig": {"reasoning": {"enabled": True, "effort": "LOW"}},
                "budget": {"runTimeoutMs": 60000, "tool": {"maxCalls": 5}},
            },
            "toolChoice": "auto",
            "modelKey": "demo-model",
        },
        make_ctx(),
    )
    agent = _read(deploy, "planner")
    assert agent["planExecute"] == {
        "plan": {"systemPrompt": "plan it"},
        "execute": {"systemPrompt": "do it"},
        "summary": {"systemPrompt": "sum it"},
        "maxSteps": 7,
    }
    assert agent["modelConfig"] == {"reasoning": {"enabled": True, "effort": "LOW"}, "modelKey": "demo-model"}
    assert agent["toolChoice"] == "AUTO" and agent["budget"]["tool"] == {"maxCalls": 5}


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        ({"key": "../evil"}, "invalid agent key"),
        ({"key": "/abs/path"}, "invalid agent key"),
        ({"key": "a/b"}, "invalid agent key"),
        ({"key": ".hidden"}, "invalid agent key"),
        ({"key": "x\x00y"}, "invalid agent key"),
        ({"agentId": "..", "name": "x"}, "invalid agent key"),
        ({}, "'key' is required"),
        ({"key": "m", "modelKey": "no-such-model"}, "unknown model 'no-such-model'"),
        ({"key": "m", "react": {"systemPrompt": "x", "modelConfig": {"modelKey": "ghost"}}, "mode": "REACT"}, "unknown model 'ghost' in react"),
        ({"key": "m", "mode": "CHAT"}, "mode must be one of"),
        ({"key": "m", "toolConfig": {"backends": ["rm_rf"]}}, "unknown tool 'rm_rf'"),
        ({"key": "m", "skills": ["nope"]}, "unknown skill 'nope'"),
        ({"key": "m", "config": {"tools": ["_bash_"]}}, "legacy field 'tools'"),
        ({"key": "m", "config": {"verify": True}}, "legacy field 'verify'"),
        ({"key": "m", "modelConfig": {"providerKey": "x"}}, "legacy field 'modelConfig.providerKey'"),
        ({"key": "m", "budget": {"maxToolCalls": 3}}, "legacy field 'budget.maxToolCalls'"),
        ({"key": "m", "config": {"whatever": 1}}, "unknown agent field 'whatever'"),
        ({"key": "m", "maxSteps": 0, "mode": "REACT"}, "maxSteps"),
        ({"key": "m", "toolChoice": "SOMETIMES"}, "toolChoice"),
    ],
)
async def test_refusals(make_ctx: Any, deploy: Path, args: dict[str, Any], reason: str) -> None:
    with pytest.raises(ToolError, match=reason):
        await agent_file_create(args, make_ctx())
    agents = deploy / "agents"
    assert not agents.exists() or not any(agents.iterdir())
    assert not (deploy / "evil.json").exists()


async def test_refuses_to_clobber_a_hand_written_file(make_ctx: Any, deploy: Path) -> None:
    agents = deploy / "agents"
    agents.mkdir()
    original = '{\n  // a comment\n  "key": "hand",\n}\n'
    (agents / "hand.json").write_text(original, encoding="utf-8")
    with pytest.raises(ToolError, match="not plain JSON"):
        await agent_file_create({"key": "hand", "name": "x"}, make_ctx())
    assert (agents / "hand.json").read_text(encoding="utf-8") == original


async def test_refuses_to_write_through_a_symlink(make_ctx: Any, deploy: Path, tmp_path: Path) -> None:
    agents = deploy / "agents"
    agents.mkdir()
    target = tmp_path / "target.json"
    target.write_text("{}", encoding="utf-8")
    (agents / "linked.json").symlink_to(target)
    with pytest.raises(ToolError, match="symbolic link"):
        await agent_file_create({"key": "linked"}, make_ctx())
    assert target.read_text(encoding="utf-8") == "{}"


@pytest.mark.parametrize("mode", ["ONESHOT", "REACT", "PLAN_EXECUTE"])
async def test_written_agent_loads_in_the_real_catalog(make_ctx: Any, tmp_path: Path, mode: str) -> None:
    from app.catalog.loader import build_catalog
    from app.config import load_settings
    from app.tools.registry import builtin_tool_names
    from tests.support.deployment import make_deployment

    deploy = make_deployment(tmp_path / "d", "http://127.0.0.1:9")
    settings = load_settings(deploy, files=(Path("application.yml"),), env={})
    catalog = build_catalog(settings, builtin_tool_names())
    args: dict[str, Any] = {
        "key": "fresh",
        "mode": mode,
        "systemPrompt": "hello",
        "maxSteps": 3,
        "toolConfig": {"backends": ["city_datetime"], "frontends": ["confirm_dialog"], "actions": ["switch_theme"]},
        "skills": ["math_basic"],
    }
    result = await agent_file_create(args, make_ctx(settings, catalog=catalog))
    assert result["ok"] is True
    reloaded = build_catalog(settings, builtin_tool_names())
    assert [r for r in reloaded.rejections if "fresh" in r.file] == []
    agent = reloaded.agents["fresh"]
    assert agent.mode == mode and [s.id for s in agent.skills] == ["math_basic"]
