"""GRAPH definitions that are hostile or merely huge (SPEC §21, §3): each is that file's rejection
with a reason naming the field, or loads quickly; the other files always load."""

from __future__ import annotations

from typing import Any

from .support import Deployment

GOOD = {"mode": "ONESHOT", "modelConfig": {"modelKey": "m1"}, "plain": {"systemPrompt": "hi"}}


def graph_agent(graph: dict[str, Any]) -> dict[str, Any]:
    return {"name": "g", "modelConfig": {"modelKey": "m1"}, "mode": "GRAPH", "graph": graph}


def reasons(deploy: Deployment) -> tuple[list[str], dict[str, str]]:
    catalog = deploy.build()
    return sorted(catalog.agents), {r.file: r.reason for r in catalog.rejections}


def test_attack_long_unconditional_chain_loads_without_recursion(deploy: Deployment) -> None:
    """The unconditional-cycle check recursed once per node: 1,200 chained nodes raised RecursionError
    and the whole catalog build failed."""
    deploy.standard().write("agents/good.json", GOOD)
    count = 1500
    nodes = [{"name": f"n{i}", "kind": "router"} for i in range(count)]
    edges = [{"from": "START", "to": "n0"}, *({"from": f"n{i}", "to": f"n{i + 1}"} for i in range(count - 1)),
             {"from": f"n{count - 1}", "to": "END"}]
    deploy.write("agents/chain.json", graph_agent({"nodes": nodes, "edges": edges}))
    loaded, rejected = reasons(deploy)
    assert loaded == ["chain", "good"] and rejected == {}


def test_attack_deeply_nested_update_is_that_files_rejection(deploy: Deployment) -> None:
    deploy.standard().write("agents/good.json", GOOD)
    deploy.write("agents/deep.json", graph_agent({
        "nodes": [{"name": "a", "kind": "router", "update": {"n": "+".join(["1"] * 5000)}}],
        "edges": [{"from": "START", "to": "a"}, {"from": "a", "to": "END"}]}))
    deploy.write("agents/nested.json", graph_agent({
        "nodes": [{"name": "a", "kind": "router", "update": {"n": "+".join(["1"] * 300)}}],
        "edges": [{"from": "START", "to": "a"}, {"from": "a", "to": "END"}]}))
    loaded, rejected = reasons(deploy)
    assert loaded == ["good"]
    assert "graph node 'a' update.n" in rejected["agents/deep.json"]
    assert "does not parse (it is nested too deeply)" in rejected["agents/deep.json"]
    assert "graph node 'a' update.n" in rejected["agents/nested.json"]
    assert "an expression may nest at most 100" in rejected["agents/nested.json"]


def test_max_steps_has_an_upper_bound(deploy: Deployment) -> None:
    deploy.standard().write("agents/good.json", GOOD)
    one = {"nodes": [{"name": "a", "kind": "router"}], "edges": [{"from": "START", "to": "a"}, {"from": "a", "to": "END"}]}
    deploy.write("agents/endless.json", graph_agent({**one, "maxSteps": 1_000_000}))
    deploy.write("agents/most.json", graph_agent({**one, "maxSteps": 1000}))
    loaded, rejected = reasons(deploy)
    assert loaded == ["good", "most"]
    assert "graph.maxSteps" in rejected["agents/endless.json"] and "1000" in rejected["agents/endless.json"]


def test_attack_oversize_definition_file_is_rejected_and_the_others_load(deploy: Deployment) -> None:
    """Files had no size bound: a 20 MiB agent file made every rebuild (on any change) take seconds."""
    deploy.standard().write("agents/good.json", GOOD)
    body = '{"mode": "ONESHOT", "modelConfig": {"modelKey": "m1"}, "plain": {"systemPrompt": "hi"}, "description": "'
    deploy.write("agents/big.json", body + "x" * (1024 * 1024 - len(body)) + '"}')
    deploy.write("agents/fits.json", body + "x" * (1024 * 1024 - len(body) - 2) + '"}')
    deploy.write("tools/big.backend", '{"tools": []}' + " " * 1024 * 1024)
    catalog = deploy.build()
    assert sorted(catalog.agents) == ["fits", "good"]
    rejected = {r.file: r.reason for r in catalog.rejections}
    assert set(rejected) == {"agents/big.json", "tools/big.backend"}
    assert rejected["agents/big.json"] == ("the file is larger than 1048576 bytes (1 MiB), the most a definition "
                                           "file may be (1048578 bytes)")


def test_a_fan_out_wider_than_max_steps_is_rejected(deploy: Deployment) -> None:
    """The step budget cancelled in-budget branches and the run "completed" with no output."""
    deploy.standard().write("agents/good.json", GOOD)

    def fan(width: int, max_steps: int) -> dict[str, Any]:
        names = [f"b{i}" for i in range(width)]
        return graph_agent({
            "nodes": [*({"name": n, "kind": "router"} for n in names), {"name": "join", "kind": "router"}],
            "edges": [*({"from": "START", "to": n, "parallel": True} for n in names),
                      *({"from": n, "to": "join"} for n in names), {"from": "join", "to": "END"}],
            "maxSteps": max_steps})

    deploy.write("agents/wide.json", fan(3, 3))
    deploy.write("agents/fits.json", fan(3, 4))
    loaded, rejected = reasons(deploy)
    assert loaded == ["fits", "good"]
    assert rejected == {"agents/wide.json": "graph START: its 3 parallel branches and their join take at least 4 "
                                            "node visits, more than maxSteps (3)"}
