"""GRAPH agents are validated when they load (SPEC §21, §3): a broken graph is rejected with a
precise reason, visible at ``GET /api/ap/catalog/rejections``, and never takes other agents down."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from app.catalog import jsonc
from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.support.deployment import REPO, agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect, stream_events

START_A = {"from": "START", "to": "a"}
A_END = {"from": "a", "to": "END"}


def graph_agent(graph: dict[str, Any] | None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"name": "g", "modelConfig": {"modelKey": "fake-openai"}, "mode": "GRAPH", **extra}
    if graph is not None:
        body["graph"] = graph
    return body


def llm(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "llm", "prompt": "Say hi", **extra}


def router(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "router", **extra}


def one_node(node: dict[str, Any]) -> dict[str, Any]:
    return {"nodes": [node], "edges": [START_A, A_END]}


#: file stem → (agent body, words the rejection reason must contain)
BROKEN: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "edgeToNowhere": (graph_agent({"nodes": [llm("a")], "edges": [START_A, {"from": "a", "to": "nowhere"}]}),
                      ("graph edge 2 (from 'a' to 'nowhere')", "unknown node 'nowhere'")),
    "edgeFromNowhere": (graph_agent({"nodes": [llm("a")], "edges": [START_A, A_END, {"from": "ghost", "to": "a"}]}),
                        ("unknown node 'ghost'",)),
    "unreachable": (graph_agent({"nodes": [llm("a"), llm("b")],
                                 "edges": [START_A, A_END, {"from": "b", "to": "END"}]}),
                    ("graph node 'b' is unreachable from START",)),
    "noPathToEnd": (graph_agent({"nodes": [router("a"), router("b")], "edges": [
        START_A, {"from": "a", "to": "b"}, {"from": "b", "to": "a", "condition": "state.x == 1"}]}),
                    ("graph node 'a': there is no path from it to END",)),
    "deadEnd": (graph_agent({"nodes": [llm("a"), llm("b")], "edges": [START_A, {"from": "a", "to": "b"}]}),
                ("graph node 'b' has no outgoing edge",)),
    "noStart": (graph_agent({"nodes": [llm("a")], "edges": [A_END]}), ("graph START has no outgoing edge",)),
    "unknownTool": (graph_agent(one_node({"name": "a", "kind": "tool", "tool": "no_such_tool"})),
                    ("unknown tool 'no_such_tool' (graph node 'a')",)),
    "humanWithBackendTool": (graph_agent(one_node({"name": "a", "kind": "human", "tool": "mock_city_weather"})),
                             ("tool 'mock_city_weather' in graph node 'a' is a backend tool, not a frontend tool",)),
    "unknownLlmTool": (graph_agent(one_node(llm("a", tools=["nope_tool"]))), ("unknown tool 'nope_tool'",)),
    "unknownModel": (graph_agent(one_node(llm("a", modelConfig={"modelKey": "no-such-model"}))),
                     ("unknown model 'no-such-model' (graph node 'a')",)),
    "noModel": ({"name": "g", "mode": "GRAPH", "graph": one_node(llm("a"))}, ("graph node 'a' has no model",)),
    "unknownAgent": (graph_agent(one_node({"name": "a", "kind": "agent", "agentKey": "ghost"})),
                     ("unknown agent 'ghost' (graph node 'a')",)),
    "planAgentAsSubRun": (graph_agent(one_node({"name": "a", "kind": "agent", "agentKey": "planner"})),
                          ("agent 'planner' is a PLAN_EXECUTE agent",)),
    "graphAgentAsSubRun": (graph_agent(one_node({"name": "a", "kind": "agent", "agentKey": "good"})),
                           ("unknown agent 'good'",)),
    "badTemplate": (graph_agent(one_node(llm("a", prompt="Hi ${state.}"))),
                    ("graph node 'a' prompt", "'state.' is not a valid JMESPath expression")),
    "unterminatedTemplate": (graph_agent(one_node(llm("a", prompt="Hi ${state.x"))), ("unterminated '${'",)),
    "templateUnknownName": (graph_agent(one_node(llm("a", prompt="About ${topic}"))),
                            ("'${topic}' reads 'topic'",)),
    "templateUndeclaredInput": (graph_agent({"inputs": {"topic": {"type": "string"}},
                                             **one_node(llm("a", prompt="About ${inputs.topik}"))}),
                                ("undeclared input 'topik'",)),
    "badParamsTemplate": (graph_agent(one_node({"name": "a", "kind": "tool", "tool": "mock_city_weather",
                                                "params": {"city": "${inputs..x}"}})),
                          ("graph node 'a' params.city",)),
    "badAnswer": (graph_agent({**one_node(llm("a")), "answer": "${"}), ("graph answer", "unterminated")),
    "badOutputsQuery": (graph_agent(one_node({"name": "a", "kind": "tool", "tool": "mock_city_weather",
                                              "outputs": {"sky": "weather[["}})),
                        ("graph node 'a' outputs.sky",)),
    "badCondition": (graph_agent({"nodes": [router("a")], "edges": [
        START_A, {"from": "a", "to": "END", "condition": "state.x =="}, A_END]}),
                     ("graph edge 2 (from 'a' to 'END') condition", "does not parse")),
    "badUpdate": (graph_agent(one_node(router("a", update={"n": "state.n +* 1"}))),
                  ("graph node 'a' update.n", "does not parse")),
    "unconditionalCycle": (graph_agent({"nodes": [router("a"), router("b")], "edges": [
        START_A, {"from": "a", "to": "END", "condition": "state.done"}, {"from": "a", "to": "b"},
        {"from": "b", "to": "a"}]}), ("the cycle a → b → a has no condition",)),
    "hiddenEdge": (graph_agent({"nodes": [router("a")], "edges": [
        START_A, A_END, {"from": "a", "to": "a", "condition": "state.x"}]}), ("can never be taken",)),
    "conditionalParallel": (graph_agent({"nodes": [router("a"), router("b")], "edges": [
        {"from": "START", "to": "a", "parallel": True, "condition": "state.x"},
        {"from": "START", "to": "b", "parallel": True}, A_END, {"from": "b", "to": "END"}]}),
                            ("a parallel edge cannot carry a condition",)),
    "mixedParallel": (graph_agent({"nodes": [router("a"), router("b")], "edges": [
        {"from": "START", "to": "a", "parallel": True}, {"from": "START", "to": "b"},
        A_END, {"from": "b", "to": "END"}]}), ("either all of its outgoing edges are parallel or none",)),
    "branchesDoNotJoin": (graph_agent({"nodes": [router("a"), router("b"), router("c")], "edges": [
        {"from": "START", "to": "a", "parallel": True}, {"from": "START", "to": "b", "parallel": True},
        {"from": "a", "to": "c"}, {"from": "b", "to": "c", "condition": "state.x"}, {"from": "b", "to": "END"},
        {"from": "c", "to": "END"}]}), ("the parallel branch starting at 'b' can reach END without passing 'c'",)),
    "reservedName": (graph_agent({"nodes": [llm("END")], "edges": [{"from": "START", "to": "END"}]}),
                     ("graph node name 'END' is reserved",)),
    "duplicateNode": (graph_agent({"nodes": [llm("a"), llm("a")], "edges": [START_A, A_END]}),
                      ("graph node 'a' is defined twice",)),
    "wrongKindField": (graph_agent(one_node({"name": "a", "kind": "tool", "tool": "mock_city_weather",
                                             "prompt": "hi"})),
                       ("graph node 'a': 'prompt' is not a field of a tool node",)),
    "missingPrompt": (graph_agent(one_node({"name": "a", "kind": "llm"})), ("an llm node needs 'prompt'",)),
    "unknownNodeField": (graph_agent(one_node(llm("a", colour="red"))), ("graph.nodes.0.colour", "unknown field")),
    "noGraph": (graph_agent(None), ("'graph' is required for this mode",)),
    "graphWithReactBlock": (graph_agent(one_node(llm("a")), react={"systemPrompt": "x"}),
                            ("'react' is not read in GRAPH mode",)),
    "graphInReactAgent": ({**agent("REACT"), "graph": one_node(llm("a"))}, ("'graph' is only read in GRAPH mode",)),
}


async def test_each_broken_graph_is_rejected_with_its_reason_and_the_rest_load(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "planner", agent("PLAN_EXECUTE"))
    write_agent(deploy, "plain", agent("ONESHOT"))
    write_agent(deploy, "good", graph_agent({"nodes": [llm("a"), {"name": "b", "kind": "agent", "agentKey": "plain"}],
                                             "edges": [START_A, {"from": "a", "to": "b"}, {"from": "b", "to": "END"}]}))
    for key, (body, _) in BROKEN.items():
        write_agent(deploy, key, body)
    gw = start_gateway()
    rejections = (await client.get(f"{gw.url}/api/ap/catalog/rejections")).json()["data"]
    reasons = {Path(r["file"]).stem: r["reason"] for r in rejections}
    assert all(r["kind"] == "agent" for r in rejections)
    problems = {key: reasons.get(key) for key, (_, words) in BROKEN.items()
                if key not in reasons or not all(word in reasons[key] for word in words)}
    assert problems == {}, problems
    assert set(reasons) == set(BROKEN)
    listed = {a["key"]: a["mode"] for a in (await client.get(f"{gw.url}/api/ap/agents")).json()["data"]}
    assert listed == {"planner": "PLAN_EXECUTE", "plain": "ONESHOT", "good": "GRAPH"}
    upstream.enqueue(text_script(["hi"]), text_script(["sub"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "good", "message": "go"})
    assert events[-1]["type"] == "run.complete"


async def test_attack_condition_calling_import_is_rejected_at_load(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """Conditions are never ``eval``-ed: a condition reaching for Python's import machinery or an
    object's dunder attributes does not even load."""
    attacks = {
        "importer": "__import__('os').system('touch /tmp/graph-pwned')",
        "dunder": "state.__class__.__mro__",
        "lambda": "(lambda: 1)()",
        "comprehension": "[c for c in ().__class__.__base__.__subclasses__()]",
    }
    for key, condition in attacks.items():
        write_agent(deploy, key, graph_agent({"nodes": [router("a")], "edges": [
            START_A, {"from": "a", "to": "END", "condition": condition}, A_END]}))
    gw = start_gateway()
    rejections = (await client.get(f"{gw.url}/api/ap/catalog/rejections")).json()["data"]
    reasons = {Path(r["file"]).stem: r["reason"] for r in rejections}
    assert set(reasons) == set(attacks)
    assert "calls '__import__('os').system()'; expressions may call only abs," in reasons["importer"]
    assert "names starting with _ are not allowed" in reasons["dunder"]
    assert "calls 'lambda: 1()'" in reasons["lambda"] and "uses ListComp" in reasons["comprehension"]
    assert not Path("/tmp/graph-pwned").exists()


def readme_example() -> dict[str, Any]:
    """The GRAPH agent the README documents (section "Workflows (GRAPH mode)")."""
    section = (REPO / "README.md").read_text(encoding="utf-8").split("## Workflows (GRAPH mode)", 1)[1]
    return jsonc.loads_object(section.split("```jsonc\n", 1)[1].split("\n```", 1)[0])


async def test_the_readme_example_loads_and_runs(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    body = readme_example()
    body["modelConfig"]["modelKey"] = "fake-openai"
    write_agent(deploy, "article", body)
    gw = start_gateway()
    assert (await client.get(f"{gw.url}/api/ap/catalog/rejections")).json()["data"] == []
    upstream.enqueue(text_script(["A draft."]), text_script(['{"passed": true, "feedback": "ok"}']))
    events: list[dict[str, Any]] = []
    query = {"agentKey": "article", "message": "go", "params": {"topic": "Paris"}}
    async for event in stream_events(client, f"{gw.url}/api/ap/query", query):
        events.append(event)
        if event["type"] == "tool.start" and event.get("toolType"):
            await client.post(f"{gw.url}/api/ap/submit", json={"runId": event["runId"], "toolId": event["toolId"],
                                                               "params": {"confirmed": True}})
    assert events[-1]["type"] == "run.complete"
    assert [e["taskId"] for e in events if e["type"] == "task.complete"] == ["research", "write", "review", "ask"]
    assert events[-2]["type"] == "content.end" and events[-3]["delta"] == "A draft."
    assert upstream.requests[0].body["messages"][-1]["content"].startswith("Write about Paris using ")
