"""``agent_file_create`` (SPEC §3.2, §3.3, §14): new keys only, no tool or skill the caller lacks."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from app.catalog.definitions import (
    AgentDefinition,
    Catalog,
    ModelDefinition,
    SkillDefinition,
    Stage,
    StageModel,
    ToolDefinition,
    ToolKind,
)
from app.errors import ToolError
from app.tools.agent_file_create import agent_file_create
from tests.tools.conftest import make_settings

LEGACY_TOP_LEVEL = {"verify", "output", "toolPolicy", "reasoning", "tools", "deepThink", "systemPrompt"}
MODEL = ModelDefinition(key="demo-model", provider="demo", protocol="OPENAI", model_id="demo-model")


def _read(deploy: Path, key: str) -> dict[str, Any]:
    return json.loads((deploy / "agents" / f"{key}.json").read_text(encoding="utf-8"))


def caller(
    tools: Mapping[str, ToolDefinition],
    names: Iterable[str] = (),
    skills: Iterable[SkillDefinition] = (),
    *,
    execute_only: Iterable[str] = (),
) -> AgentDefinition:
    """A calling agent whose REACT stage has ``names``; ``execute_only`` makes it a PLAN_EXECUTE
    agent whose execute stage alone has those extra tools."""
    model = StageModel(model=MODEL)
    own = tuple(tools[name] for name in names)
    stages: dict[str, Stage] = {"react": Stage(name="react", system_prompt="x", model=model, tools=own)}
    mode: Any = "REACT"
    if execute_only:
        extra = tuple(tools[name] for name in execute_only)
        stages = {
            "plan": Stage(name="plan", system_prompt="x", model=model, tools=(*own, tools["_plan_add_tasks_"])),
            "execute": Stage(name="execute", system_prompt="x", model=model,
                             tools=(*own, *extra, tools["_plan_update_task_"])),
        }
        mode = "PLAN_EXECUTE"
    return AgentDefinition(key="creator", name="creator", icon=None, description="", mode=mode,
                           stages=stages, skills=tuple(skills))


def _no_agent_files(deploy: Path) -> bool:
    agents = deploy / "agents"
    return not agents.exists() or not any(agents.iterdir())


async def test_creates_a_v2_react_agent(
    make_ctx: Any, deploy: Path, catalog: Catalog, skills: dict[str, SkillDefinition]
) -> None:
    creator = caller(catalog.tools, ["city_datetime", "mock_city_weather"], [skills["math_basic"]])
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
        make_ctx(agent=creator),
    )
    assert result == {"ok": True, "key": "weatherBot", "path": "agents/weatherBot.json", "created": True}
    agent = _read(deploy, "weatherBot")
    assert agent["key"] == "weatherBot" and agent["mode"] == "REACT"
    assert agent["react"] == {"systemPrompt": "你是天气助手。", "maxSteps": 4}
    assert agent["modelConfig"] == {"modelKey": "other-model"}
    assert not LEGACY_TOP_LEVEL & set(agent)
    assert not list((deploy / "agents").glob(".*.tmp"))


async def test_defaults_and_a_second_call_never_updates(make_ctx: Any, deploy: Path) -> None:
    settings = make_settings(deploy, agent={"tools": {"agent-file-create": {"default-system-prompt": "DEFAULT"}}})
    first = await agent_file_create({"agentId": "plainBot"}, make_ctx(settings))
    assert first["created"] is True
    agent = _read(deploy, "plainBot")
    assert agent["mode"] == "ONESHOT"
    assert agent["plain"] == {"systemPrompt": "DEFAULT"}
    assert agent["modelConfig"]["modelKey"] == "demo-model"  # the catalog's first model

    before = (deploy / "agents" / "plainBot.json").read_bytes()
    with pytest.raises(ToolError, match="already exists.*creates only new agents"):
        await agent_file_create({"key": "plainBot", "description": "updated"}, make_ctx(settings))
    assert (deploy / "agents" / "plainBot.json").read_bytes() == before
    assert [p.name for p in (deploy / "agents").iterdir()] == ["plainBot.json"]  # no temp file left


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
    assert _no_agent_files(deploy)
    assert not (deploy / "evil.json").exists()


async def test_refuses_to_clobber_a_hand_written_file(make_ctx: Any, deploy: Path) -> None:
    agents = deploy / "agents"
    agents.mkdir()
    original = '{\n  // a comment\n  "key": "hand",\n}\n'
    (agents / "hand.json").write_text(original, encoding="utf-8")
    with pytest.raises(ToolError, match="'hand' already exists"):
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
    creator = caller(catalog.tools, ["city_datetime", "confirm_dialog", "switch_theme"],
                     [catalog.skills["math_basic"]])
    result = await agent_file_create(args, make_ctx(settings, catalog=catalog, agent=creator))
    assert result["ok"] is True
    reloaded = build_catalog(settings, builtin_tool_names())
    assert [r for r in reloaded.rejections if "fresh" in r.file] == []
    agent = reloaded.agents["fresh"]
    assert agent.mode == mode and [s.id for s in agent.skills] == ["math_basic"]


# --------------------------------------------------------------------------- only new keys (SPEC §14)


@pytest.mark.parametrize("existing", ["taken.json", "Taken.json", "TAKEN.JSON", "taken.Json"])
async def test_refuses_a_key_taken_on_disk_in_any_letter_case(make_ctx: Any, deploy: Path, existing: str) -> None:
    agents = deploy / "agents"
    agents.mkdir()
    original = b'{"key": "whatever", "mode": "ONESHOT"}\n'
    (agents / existing).write_bytes(original)
    with pytest.raises(ToolError, match=f"'taken' already exists \\(agents/{existing} is there\\)"):
        await agent_file_create({"key": "taken"}, make_ctx())
    assert sorted(p.name for p in agents.iterdir()) == [existing]
    assert (agents / existing).read_bytes() == original


@pytest.mark.parametrize("key", ["known", "KNOWN", "Known"])
async def test_refuses_a_key_in_the_catalog_in_any_letter_case(make_ctx: Any, deploy: Path, catalog: Catalog,
                                                                agent: AgentDefinition, key: str) -> None:
    listed = Catalog(models=catalog.models, tools=catalog.tools, skills=catalog.skills, agents={"known": agent})
    with pytest.raises(ToolError, match="already exists \\(the catalog has agent 'known'\\)"):
        await agent_file_create({"key": key}, make_ctx(catalog=listed))
    assert _no_agent_files(deploy)


def test_concurrent_calls_with_one_key_create_it_once(make_ctx: Any, deploy: Path) -> None:
    """Threads (each with its own event loop) race on one key: exactly one wins, its bytes stay."""
    contenders = 8
    barrier = threading.Barrier(contenders)
    outcomes: list[str] = []
    lock = threading.Lock()

    def contend(index: int) -> None:
        ctx = make_ctx()
        barrier.wait()
        try:
            asyncio.run(agent_file_create({"key": "race", "description": f"writer {index}"}, ctx))
            outcome = f"won {index}"
        except ToolError as exc:
            outcome = exc.message
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [o for o in outcomes if o.startswith("won ")]
    assert len(winners) == 1, outcomes
    assert all("already exists" in o for o in outcomes if not o.startswith("won ")), outcomes
    assert _read(deploy, "race")["description"] == f"writer {winners[0].split()[1]}"
    assert [p.name for p in (deploy / "agents").iterdir()] == ["race.json"]


async def test_a_file_appearing_after_the_check_is_not_overwritten(make_ctx: Any, deploy: Path) -> None:
    """The write itself is exclusive: a file that shows up between the check and the write wins."""
    from app.tools.agent_file_create import _create_exclusively

    agents = deploy / "agents"
    agents.mkdir()
    (agents / "late.json").write_bytes(b"first writer\n")
    with pytest.raises(ToolError, match="'late' already exists .*appeared while it was being created"):
        _create_exclusively(agents / "late.json", "late", {"key": "late"})
    assert (agents / "late.json").read_bytes() == b"first writer\n"
    assert [p.name for p in agents.iterdir()] == ["late.json"]


# --------------------------------------------------------------------------- no tool or skill the caller lacks


async def test_refuses_a_tool_the_caller_lacks_naming_every_one(make_ctx: Any, deploy: Path,
                                                                catalog: Catalog) -> None:
    creator = caller(catalog.tools, ["city_datetime"])
    args = {"key": "escalate", "toolConfig": {"backends": ["city_datetime", "_bash_", "mock_city_weather"]}}
    with pytest.raises(ToolError, match="tools the calling agent 'creator' does not have: _bash_, mock_city_weather"):
        await agent_file_create(args, make_ctx(agent=creator))
    assert _no_agent_files(deploy)


@pytest.mark.parametrize(
    "args",
    [
        {"mode": "PLAN_EXECUTE", "planExecute": {"execute": {"systemPrompt": "x", "toolConfig": {"backends": ["_bash_"]}}}},
        {"mode": "PLAN_EXECUTE", "planExecute": {"summary": {"systemPrompt": "x", "toolConfig": {"backends": ["_bash_"]}}}},
        {"mode": "PLAN_EXECUTE", "planExecute": {"plan": {"systemPrompt": "x", "toolConfig": {"backends": ["_bash_"]}}}},
        {"mode": "REACT", "react": {"systemPrompt": "x", "toolConfig": {"backends": ["_bash_"]}}},
        {"mode": "PLAN_EXECUTE", "toolConfig": {"backends": ["_bash_"]}},  # inherited by plan and execute
        {"config": {"mode": "REACT", "toolConfig": {"backends": ["_bash_"]}}},
    ],
)
async def test_refuses_a_tool_the_caller_lacks_in_any_stage(make_ctx: Any, deploy: Path, catalog: Catalog,
                                                            args: dict[str, Any]) -> None:
    creator = caller(catalog.tools, ["city_datetime"])
    with pytest.raises(ToolError, match="does not have: _bash_$"):
        await agent_file_create({"key": "sneaky", **args}, make_ctx(agent=creator))
    assert _no_agent_files(deploy)


async def test_a_tool_any_stage_of_the_caller_has_may_be_given(make_ctx: Any, deploy: Path,
                                                               catalog: Catalog) -> None:
    creator = caller(catalog.tools, ["city_datetime"], execute_only=["_bash_"])
    args = {"key": "helper", "mode": "REACT", "toolConfig": {"backends": ["_bash_", "city_datetime"]}}
    assert (await agent_file_create(args, make_ctx(agent=creator)))["ok"] is True
    assert _read(deploy, "helper")["toolConfig"] == {"backends": ["_bash_", "city_datetime"]}


async def test_plan_execute_needs_no_plan_tools_from_the_caller(make_ctx: Any, deploy: Path,
                                                                catalog: Catalog) -> None:
    """The forced plan tools act only on the new agent's own plan; a REACT caller may create one."""
    creator = caller(catalog.tools, ["city_datetime"])
    args = {"key": "planner", "mode": "PLAN_EXECUTE", "toolConfig": {"backends": ["city_datetime"]}}
    assert (await agent_file_create(args, make_ctx(agent=creator)))["ok"] is True


@pytest.mark.parametrize("field", ["skills", "skillConfig"])
async def test_refuses_a_skill_the_caller_lacks(make_ctx: Any, deploy: Path, catalog: Catalog,
                                               skills: dict[str, SkillDefinition], field: str) -> None:
    creator = caller(catalog.tools, ["city_datetime"], [skills["math_basic"]])
    value: Any = ["math_basic", "slack-gif-creator"] if field == "skills" else {"skills": ["slack-gif-creator"]}
    with pytest.raises(ToolError, match="skills the calling agent 'creator' does not have: slack-gif-creator"):
        await agent_file_create({"key": "skilled", field: value}, make_ctx(agent=creator))
    assert _no_agent_files(deploy)


async def test_without_a_calling_agent_no_tools_and_no_skills(make_ctx: Any, deploy: Path) -> None:
    with pytest.raises(ToolError, match="no calling agent, so the new agent may not have any tools: city_datetime"):
        await agent_file_create({"key": "a", "toolConfig": {"backends": ["city_datetime"]}}, make_ctx(agent=None))
    with pytest.raises(ToolError, match="no calling agent, so the new agent may not have any skills: math_basic"):
        await agent_file_create({"key": "b", "skills": ["math_basic"]}, make_ctx(agent=None))
    assert _no_agent_files(deploy)
    assert (await agent_file_create({"key": "bare"}, make_ctx(agent=None)))["ok"] is True


async def test_refuses_an_agent_the_catalog_would_reject(make_ctx: Any, deploy: Path, catalog: Catalog) -> None:
    """city_datetime is a backend tool; listing it as a frontend would be rejected on reload."""
    creator = caller(catalog.tools, ["city_datetime"])
    args = {"key": "wrongKind", "toolConfig": {"frontends": ["city_datetime"]}}
    with pytest.raises(ToolError, match="would not load: tool 'city_datetime' .* is a backend tool"):
        await agent_file_create(args, make_ctx(agent=creator))
    assert _no_agent_files(deploy)


def _mcp_tools(*names: str) -> dict[str, ToolDefinition]:
    return {name: ToolDefinition(name=name, kind=ToolKind.BACKEND, description=f"MCP {name}",
                                 parameters={"type": "object", "properties": {}}) for name in names}


async def test_mcp_tools_the_caller_has_are_given_by_name(make_ctx: Any, deploy: Path, catalog: Catalog) -> None:
    """SPEC §18: an MCP tool the calling agent has may be given to the new agent, like any tool."""
    tools = {**catalog.tools, **_mcp_tools("mcp__files__read", "mcp__files__write")}
    creator = caller(tools, ["city_datetime", "mcp__files__read", "mcp__files__write"])
    result = await agent_file_create(
        {"key": "reader", "mode": "REACT", "systemPrompt": "read files",
         "toolConfig": {"backends": ["city_datetime", "mcp__files__read"], "frontends": [], "actions": []}},
        make_ctx(agent=creator))
    assert result["created"] is True
    assert _read(deploy, "reader")["toolConfig"]["backends"] == ["city_datetime", "mcp__files__read"]


async def test_attack_agent_file_create_grants_an_mcp_tool_the_caller_lacks(
    make_ctx: Any, deploy: Path, catalog: Catalog
) -> None:
    tools = {**catalog.tools, **_mcp_tools("mcp__files__read", "mcp__files__delete", "mcp__shell__run")}
    creator = caller(tools, ["mcp__files__read"])
    for name in ("mcp__files__delete", "mcp__shell__run", "mcp__nosuch__tool"):
        with pytest.raises(ToolError, match="the calling agent has no such MCP tool"):
            await agent_file_create(
                {"key": "sneaky", "mode": "REACT", "systemPrompt": "x",
                 "toolConfig": {"backends": [name], "frontends": [], "actions": []}},
                make_ctx(agent=creator))
    assert _no_agent_files(deploy)


async def test_attack_agent_file_create_grants_a_whole_mcp_server_by_wildcard(
    make_ctx: Any, deploy: Path, catalog: Catalog
) -> None:
    """``mcp__files__*`` would load as every tool the server lists then: refused, even for a caller
    that has all of today's tools, because the server may add one tomorrow."""
    tools = {**catalog.tools, **_mcp_tools("mcp__files__read")}
    creator = caller(tools, ["mcp__files__read"])
    with pytest.raises(ToolError, match="not a wildcard"):
        await agent_file_create(
            {"key": "greedy", "mode": "REACT", "systemPrompt": "x",
             "toolConfig": {"backends": ["mcp__files__*"], "frontends": [], "actions": []}},
            make_ctx(agent=creator))
    assert _no_agent_files(deploy)
