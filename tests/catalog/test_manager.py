"""Hot reload (SPEC §3: watched folders, fallback rescan, atomic snapshots)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from app.catalog.definitions import Catalog
from app.catalog.manager import BUILTIN_MODELS_DIR, CatalogManager, fingerprint, rescan_interval_s, sync_builtin_models

from .support import BUILTIN_TOOLS, Deployment, model_file

AGENT = {"mode": "ONESHOT", "modelConfig": {"modelKey": "m1"}, "plain": {"systemPrompt": "hi"}}


async def wait_for(manager: CatalogManager, predicate: Callable[[Catalog], bool], timeout: float = 10.0) -> Catalog:
    """Poll the snapshot until ``predicate`` holds (generous bound; never asserts on timing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        snapshot = manager.snapshot
        if predicate(snapshot):
            return snapshot
        if loop.time() > deadline:
            raise AssertionError(f"condition not met; last snapshot v{snapshot.version}: {snapshot.rejections}")
        await asyncio.sleep(0.05)


@pytest.fixture
async def running(deploy: Deployment, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[CatalogManager]:
    deploy.standard()
    deploy.write("agents/first.json", AGENT)
    manager = CatalogManager(deploy.settings(), BUILTIN_TOOLS, builtin_models_dir=tmp_path_factory.mktemp("none"))
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()


async def test_start_loads_the_catalog(running: CatalogManager) -> None:
    snapshot = running.snapshot
    assert snapshot.version == 1 and list(snapshot.agents) == ["first"] and snapshot.rejections == ()


async def test_new_agent_file_goes_live(running: CatalogManager, deploy: Deployment) -> None:
    deploy.write("agents/second.json", AGENT)
    snapshot = await wait_for(running, lambda c: "second" in c.agents)
    assert "first" in snapshot.agents


async def test_broken_file_is_rejected_and_others_keep_working(running: CatalogManager, deploy: Deployment) -> None:
    deploy.write("agents/broken.json", '{\n  "mode": "ONESHOT",\n  "plain": {"systemPrompt": "x"\n}')
    snapshot = await wait_for(running, lambda c: any(r.file == "agents/broken.json" for r in c.rejections))
    (rejection,) = snapshot.rejections
    assert rejection.kind == "agent" and rejection.reason.startswith("line ")
    assert "first" in snapshot.agents


async def test_deleting_a_file_removes_the_agent(running: CatalogManager, deploy: Deployment) -> None:
    (deploy.base / "agents" / "first.json").unlink()
    await wait_for(running, lambda c: "first" not in c.agents)


async def test_model_change_reloads_its_agents(running: CatalogManager, deploy: Deployment) -> None:
    before = running.snapshot.agents["first"]
    deploy.write("models/m1.json", model_file("m1", modelId="changed-id"))
    snapshot = await wait_for(running, lambda c: c.agents["first"].stages["plain"].model.model.model_id == "changed-id")
    assert snapshot.agents["first"] is not before
    # a run holding the old definition keeps it unchanged
    assert before.stages["plain"].model.model.model_id == "m1-id"


async def test_model_removal_rejects_its_agents(running: CatalogManager, deploy: Deployment) -> None:
    (deploy.base / "models" / "m1.json").unlink()
    snapshot = await wait_for(running, lambda c: "first" not in c.agents)
    assert any("unknown model 'm1'" in r.reason for r in snapshot.rejections)


async def test_tool_and_skill_changes_are_watched(running: CatalogManager, deploy: Deployment) -> None:
    deploy.write("skills/extra/SKILL.md", "---\ndescription: new\n---\n")
    await wait_for(running, lambda c: "extra" in c.skills)
    (deploy.base / "tools" / "theme.action").unlink()
    await wait_for(running, lambda c: "switch_theme" not in c.tools)


async def test_folder_created_later_is_picked_up(deploy: Deployment, tmp_path_factory: pytest.TempPathFactory) -> None:
    deploy.write("models/m1.json", model_file("m1"))
    fast = {"refresh-interval-ms": 100}
    settings = deploy.settings(catalog={**fast, "external-dir": "agents"})
    manager = CatalogManager(settings, BUILTIN_TOOLS, builtin_models_dir=tmp_path_factory.mktemp("none"))
    await manager.start()
    try:
        assert manager.snapshot.agents == {}
        deploy.write("agents/late.json", AGENT)
        await wait_for(manager, lambda c: "late" in c.agents)
        deploy.write("agents/later.json", AGENT)
        await wait_for(manager, lambda c: "later" in c.agents)
    finally:
        await manager.stop()


def test_reload_swaps_a_new_snapshot(deploy: Deployment) -> None:
    deploy.standard()
    manager = CatalogManager(deploy.settings(), BUILTIN_TOOLS, builtin_models_dir=deploy.base / "none")
    first = manager.reload()
    deploy.write("agents/a.json", AGENT)
    second = manager.reload()
    assert (first.version, second.version) == (1, 2)
    assert first.agents == {} and "a" in second.agents and manager.snapshot is second


def test_reload_if_changed_uses_the_fingerprint(deploy: Deployment) -> None:
    deploy.standard()
    manager = CatalogManager(deploy.settings(), BUILTIN_TOOLS, builtin_models_dir=deploy.base / "none")
    manager.reload()
    assert manager.reload_if_changed() is False
    deploy.write("agents/a.json", AGENT)
    assert manager.reload_if_changed() is True and "a" in manager.snapshot.agents


def test_fingerprint_sees_content_and_folders(tmp_path: Path) -> None:
    empty = fingerprint([tmp_path / "missing"])
    (tmp_path / "missing").mkdir()
    assert fingerprint([tmp_path / "missing"]) != empty
    (tmp_path / "missing" / "x.json").write_text("1")
    one = fingerprint([tmp_path / "missing"])
    (tmp_path / "missing" / "x.json").write_text("12")
    assert fingerprint([tmp_path / "missing"]) != one


def test_rescan_interval_is_the_smallest_setting(deploy: Deployment) -> None:
    settings = deploy.settings(skill={"refresh-interval-ms": 700})
    assert rescan_interval_s(settings) == 0.7
    assert rescan_interval_s(deploy.settings()) == 10.0


def test_sync_builtin_models_overwrites_same_name_and_keeps_others(tmp_path: Path) -> None:
    source = tmp_path / "builtin"
    source.mkdir()
    (source / "local-demo.json").write_text('{"new": true}')
    target = tmp_path / "deploy" / "models"
    target.mkdir(parents=True)
    (target / "local-demo.json").write_text('{"old": true}')
    (target / "mine.json").write_text("{}")
    assert sync_builtin_models(target, source) == [target / "local-demo.json"]
    assert (target / "local-demo.json").read_text() == '{"new": true}'
    assert (target / "mine.json").read_text() == "{}"
    assert sync_builtin_models(target, source) == []


async def test_start_installs_the_shipped_models(deploy: Deployment) -> None:
    manager = CatalogManager(deploy.settings(providers=("local",)), BUILTIN_TOOLS)
    await manager.start()
    try:
        assert (deploy.base / "models" / "local-demo.json").read_bytes() == (
            BUILTIN_MODELS_DIR / "local-demo.json"
        ).read_bytes()
        assert manager.snapshot.models["local-demo"].provider == "local"
    finally:
        await manager.stop()


async def test_stop_is_clean_and_idempotent(deploy: Deployment) -> None:
    manager = CatalogManager(deploy.settings(), BUILTIN_TOOLS, builtin_models_dir=deploy.base / "none")
    await manager.start()
    await manager.stop()
    await manager.stop()
    deploy.write("models/m1.json", model_file("m1"))
    await asyncio.sleep(0.3)
    assert manager.snapshot.models == {}


async def test_attack_hostile_file_does_not_stop_hot_reload(running: CatalogManager, deploy: Deployment) -> None:
    """An ``update`` of 1+1+…+1 once raised RecursionError out of the build: the watcher and the
    rescan died and nothing reloaded again, not even after the file was removed."""
    hostile = {"mode": "GRAPH", "modelConfig": {"modelKey": "m1"}, "graph": {
        "nodes": [{"name": "a", "kind": "router", "update": {"n": "+".join(["1"] * 5000)}}],
        "edges": [{"from": "START", "to": "a"}, {"from": "a", "to": "END"}]}}
    deploy.write("agents/hostile.json", hostile)
    snapshot = await wait_for(running, lambda c: any(r.file == "agents/hostile.json" for r in c.rejections))
    assert "update.n" in snapshot.rejections[0].reason and "nested too deeply" in snapshot.rejections[0].reason
    assert list(snapshot.agents) == ["first"]
    (deploy.base / "agents" / "hostile.json").unlink()
    deploy.write("agents/second.json", AGENT)
    snapshot = await wait_for(running, lambda c: "second" in c.agents and not c.rejections)


async def test_a_failing_reload_is_logged_and_the_watchers_go_on(
    running: CatalogManager, deploy: Deployment, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Whatever a build raises, the watcher and the rescan log it and keep the last snapshot live."""
    import app.catalog.manager as manager_module

    real_build = manager_module.build_catalog

    def build(*args: object, **kwargs: object) -> Catalog:
        if (deploy.base / "agents" / "boom.json").exists():
            raise RuntimeError("injected build failure")
        return real_build(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(manager_module, "build_catalog", build)
    deploy.write("agents/boom.json", AGENT)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while "catalog reload failed" not in caplog.text:
        assert loop.time() < deadline, "the failed reload was not logged"
        await asyncio.sleep(0.05)
    assert list(running.snapshot.agents) == ["first"]
    (deploy.base / "agents" / "boom.json").unlink()
    deploy.write("agents/second.json", AGENT)
    await wait_for(running, lambda c: sorted(c.agents) == ["first", "second"], timeout=5)
    assert all(not task.done() for task in running._tasks)
