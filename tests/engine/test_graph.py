"""GRAPH mode over real HTTP (SPEC §21): a real gateway, the scripted fake upstream, the SSE stream.

Each test checks what the client receives (the graph shown as a plan: one task per node visit,
node events carrying the ``taskId``), what the upstream was sent after templating, and what the
chat file holds (one ``_stage: "graph"`` checkpoint per node visit with the state after it).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.devtools import FakeUpstream
from app.devtools.script import Finish, Gate, Step, Text, Usage, text_script
from app.engine.graph import resume_point
from app.engine.graph.nodes import JSON_INSTRUCTION
from tests.engine.helpers import call, chat_lines, deltas, first, of_type, tool_names
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect, stream_events, types

#: a generous bound that only turns a hang into a failure
HANG = 60


def graph_agent(graph: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A GRAPH agent on the fake upstream's OpenAI model."""
    return {"name": "graph agent", "modelConfig": {"modelKey": "fake-openai", "reasoning": {"enabled": False}},
            "mode": "GRAPH", "graph": graph, **extra}


def edges(*pairs: tuple[str, str] | tuple[str, str, str]) -> list[dict[str, Any]]:
    """``("a", "b")`` → an edge; ``("a", "b", "cond")`` → a conditional edge."""
    return [{"from": p[0], "to": p[1], **({"condition": p[2]} if len(p) == 3 else {})} for p in pairs]


async def _query(client: httpx.AsyncClient, gw: GatewayServer, key: str, message: str = "hello",
                 **extra: Any) -> list[dict[str, Any]]:
    return await collect(client, f"{gw.url}/api/ap/query", {"agentKey": key, "message": message, **extra})


def user_text(body: dict[str, Any]) -> str:
    """The last user message of a recorded upstream request."""
    return str([m for m in body["messages"] if m["role"] == "user"][-1]["content"])


def graph_steps(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line.get("_type") == "step" and line.get("_stage") == "graph"]


def task_ids(events: list[dict[str, Any]], kind: str = "task.start") -> list[str]:
    return [e["taskId"] for e in of_type(events, kind)]


def content_tasks_of(events: list[dict[str, Any]]) -> list[str | None]:
    """The ``taskId`` of each content block, in order (None: outside any task)."""
    return [e.get("taskId") for e in of_type(events, "content.start")]


# --------------------------------------------------------------------------- linear

LINEAR = {
    "inputs": {"city": {"type": "string", "required": True}, "audience": {"type": "string", "default": "kids"}},
    "state": {"sky": {"type": "string"}},
    "nodes": [
        {"name": "research", "kind": "tool", "tool": "mock_city_weather",
         "params": {"city": "${inputs.city}", "date": "2026-01-02"},
         "outputs": {"sky": "weatherEn", "temp": "temperatureC"}},
        {"name": "write", "kind": "llm", "description": "Write the note",
         "systemPrompt": "You write for ${inputs.audience}.",
         "prompt": "Write about ${inputs.city}: ${state.sky} at ${state.temp}°C. Request: ${message}", "output": "draft"},
    ],
    "edges": edges(("START", "research"), ("research", "write"), ("write", "END")),
    "answer": "${state.draft} (${inputs.city})",
}


async def test_linear_graph_streams_each_node_as_a_plan_task_in_exact_order(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "linear", graph_agent(LINEAR))
    gw = start_gateway()
    upstream.enqueue(text_script(["Sunny ", "note."]))
    events = await _query(client, gw, "linear", "hello", params={"city": "Paris"})
    assert types(events) == [
        "request.query", "chat.start", "run.start",
        "plan.create", "plan.update",
        "task.start", "tool.start", "tool.args", "tool.end", "tool.result", "plan.update", "task.complete",
        "task.start", "content.start", "content.delta", "content.delta", "content.end", "plan.update", "task.complete",
        "content.start", "content.delta", "content.end",
        "run.complete",
    ]
    run_id = events[2]["runId"]
    created = first(events, "plan.create")
    assert created["plan"] == [
        {"taskId": "research", "description": "research (tool mock_city_weather)", "status": "init"},
        {"taskId": "write", "description": "Write the note", "status": "init"},
    ]
    assert all(e["planId"] == created["planId"] and e["chatId"] == events[0]["chatId"]
               for e in of_type(events, "plan.update"))
    assert [[t["status"] for t in e["plan"]] for e in of_type(events, "plan.update")] == [
        ["init", "init"], ["completed", "init"], ["completed", "completed"]]
    assert task_ids(events) == task_ids(events, "task.complete") == ["research", "write"]
    assert all(e["runId"] == run_id for e in of_type(events, "task.start", "task.complete"))
    # the node's own events carry its taskId; the answer streams outside any task
    tool_start = first(events, "tool.start")
    assert tool_start["taskId"] == "research" and tool_start["toolName"] == "mock_city_weather"
    assert tool_start["toolParams"] == {"city": "Paris", "date": "2026-01-02"}
    assert orjson.loads(first(events, "tool.args")["delta"]) == {"city": "Paris", "date": "2026-01-02"}
    weather = first(events, "tool.result")["result"]
    node_content, answer = of_type(events, "content.start")
    assert node_content["taskId"] == "write" and "taskId" not in answer
    node_text, answer_text = ([e["delta"] for e in of_type(events, "content.delta") if e["contentId"] == block["contentId"]]
                              for block in (node_content, answer))
    assert node_text == ["Sunny ", "note."] and answer_text == ["Sunny note. (Paris)"]
    assert events[-1]["finishReason"] == "stop"
    # the upstream got the templates filled in: system prompt, then the node's prompt, nothing else
    (request,) = upstream.requests
    assert request.body["messages"] == [
        {"role": "system", "content": "You write for kids."},
        {"role": "user", "content": f"Write about Paris: {weather['weatherEn']} at {weather['temperatureC']}°C. "
                                    "Request: hello"},
    ]
    assert "tools" not in request.body or request.body["tools"] == []


# --------------------------------------------------------------------------- conditional loop

REVIEW_LOOP = {
    "state": {"draft": {"type": "string"}, "review": {"type": "object"}, "rounds": {"type": "integer", "initial": 0}},
    "nodes": [
        {"name": "write", "kind": "llm",
         "prompt": "Write about ${message}. Feedback: ${state.review.feedback || 'none'}. Before: ${state.draft || 'none'}",
         "output": "draft"},
        {"name": "review", "kind": "llm", "prompt": "Review: ${state.draft}", "outputFormat": "json",
         "output": "review", "update": {"rounds": "state.rounds + 1"}},
    ],
    "edges": edges(("START", "write"), ("write", "review"),
                   ("review", "END", "state.review.passed == true"),
                   ("review", "write", "!state.review.passed && state.rounds < 3"),
                   ("review", "END")),
    "answer": "${state.draft} (${state.rounds} rounds)",
}
LOOP_SCRIPTS = (
    text_script(["Draft ", "one."]),
    text_script(['{"passed": false, ', '"feedback": "Add an example."}']),
    text_script(["Draft two, ", "for example tea."]),
    text_script(['```json\n{"passed": true, "feedback": "Good."}\n```']),  # a fenced answer is read too
)


async def test_review_loop_revisits_the_writer_until_the_review_passes(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "loop", graph_agent(REVIEW_LOOP))
    gw = start_gateway()
    upstream.enqueue(*LOOP_SCRIPTS)
    events = await _query(client, gw, "loop", "tea")
    assert events[-1]["type"] == "run.complete" and events[-1]["finishReason"] == "stop"
    assert task_ids(events) == ["write", "review", "write#2", "review#2"]
    assert task_ids(events, "task.complete") == ["write", "review", "write#2", "review#2"]
    # a revisit is a new task, added to the plan before it starts
    kinds = types(events)
    second = kinds.index("task.start", kinds.index("task.complete", kinds.index("task.complete") + 1))
    assert kinds[second - 1] == "plan.update"
    assert [t["taskId"] for t in events[second - 1]["plan"]] == ["write", "review", "write#2"]
    assert events[second - 1]["plan"][-1]["status"] == "init"
    assert [t["status"] for t in of_type(events, "plan.update")[-1]["plan"]] == ["completed"] * 4
    assert content_tasks_of(events) == ["write", "review", "write#2", "review#2", None]
    assert deltas(events, "content.delta").endswith("Draft two, for example tea. (2 rounds)")
    bodies = [r.body for r in upstream.requests]
    assert len(bodies) == 4
    assert user_text(bodies[0]) == "Write about tea. Feedback: none. Before: none"
    assert user_text(bodies[1]) == "Review: Draft one."
    assert bodies[1]["messages"][0] == {"role": "system", "content": JSON_INSTRUCTION}
    assert user_text(bodies[2]) == "Write about tea. Feedback: Add an example.. Before: Draft one."
    assert user_text(bodies[3]) == "Review: Draft two, for example tea."
    # every node call is a fresh conversation: system + the node's prompt
    assert all(len(body["messages"]) == 2 for body in bodies)


async def test_checkpoints_one_graph_step_per_node_visit_with_the_state_after_it(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "loop", graph_agent(REVIEW_LOOP))
    gw = start_gateway()
    upstream.enqueue(*LOOP_SCRIPTS)
    events = await _query(client, gw, "loop", "tea")
    chat_id, run_id = events[0]["chatId"], events[2]["runId"]
    lines = chat_lines(deploy, chat_id)
    steps = graph_steps(lines)
    assert [(s["node"], s.get("taskId"), s["status"], s["next"]) for s in steps] == [
        ("START", None, "started", ["write"]),
        ("write", "write", "completed", ["review"]),
        ("review", "review", "completed", ["write"]),
        ("write", "write#2", "completed", ["review"]),
        ("review", "review#2", "completed", ["END"]),
        ("END", None, "ended", []),
    ]
    assert [s["_seq"] for s in steps] == [1, 2, 3, 4, 5, 6]
    assert steps[0]["state"] == {"draft": None, "review": None, "rounds": 0}
    assert steps[0]["message"] == "tea" and steps[0]["inputs"] == {}
    assert steps[0]["plan"]["tasks"][0] == {"taskId": "write", "description": "write (model call)", "status": "init"}
    assert steps[0]["messages"][0]["content"] == [{"type": "text", "text": "tea"}]
    assert steps[2]["state"] == {"draft": "Draft one.", "review": {"passed": False, "feedback": "Add an example."},
                                 "rounds": 1}
    assert steps[4]["state"]["rounds"] == 2 and steps[4]["state"]["review"]["passed"] is True
    assert [s["visit"] for s in steps[1:5]] == [1, 1, 2, 2]
    # each node's step holds that node's messages: its prompt and the model's answer
    write_two = steps[3]["messages"]
    assert [m["role"] for m in write_two] == ["user", "assistant"]
    assert all(m["_taskId"] == "write#2" for m in write_two)
    assert write_two[1]["content"] == [{"type": "text", "text": "Draft two, for example tea."}]
    assert steps[5]["messages"][0]["content"] == [{"type": "text", "text": "Draft two, for example tea. (2 rounds)"}]
    # the fork of SPEC §20 restarts from the checkpoint taken before a node, with state merged over it
    before_review_two = resume_point(lines, run_id, "review", visit=2)
    assert before_review_two.state == steps[3]["state"] and before_review_two.message == "tea"
    before_write_two = resume_point(lines, run_id, "write", visit=2, state={"rounds": 0})
    assert before_write_two.state == {**steps[2]["state"], "rounds": 0}
    assert resume_point(lines, run_id, "write").state == steps[0]["state"]
    # the history rebuilds the run: node answers with their taskIds, the plan, the answer last
    history = (await client.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id})).json()["data"]["events"]
    snapshots = [(e.get("taskId"), e["text"]) for e in of_type(history, "content.snapshot")]
    assert snapshots[0] == ("write", "Draft one.") and snapshots[-1] == (None, "Draft two, for example tea. (2 rounds)")
    assert [e.get("taskId") for e in of_type(history, "content.snapshot")] == content_tasks_of(events)
    assert of_type(history, "plan.update")[-1]["plan"] == of_type(events, "plan.update")[-1]["plan"]
    assert history[-1]["type"] == "run.complete"


async def test_history_node_sees_the_chat_so_far_on_the_next_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "memo", graph_agent({
        "nodes": [{"name": "reply", "kind": "llm", "prompt": "Answer: ${message}", "history": True}],
        "edges": edges(("START", "reply"), ("reply", "END")),
    }))
    gw = start_gateway()
    upstream.enqueue(text_script(["First answer."]), text_script(["Second answer."]))
    first_run = await _query(client, gw, "memo", "first question")
    assert first_run[-1]["type"] == "run.complete"
    chat_id = first_run[0]["chatId"]
    second_run = await collect(client, f"{gw.url}/api/ap/query", {"chatId": chat_id, "message": "second question"})
    assert second_run[-1]["type"] == "run.complete"
    replayed = upstream.requests[1].body["messages"]
    assert [m["role"] for m in replayed][0] == "system" and replayed[-1] == {"role": "user",
                                                                             "content": "Answer: second question"}
    texts = [m.get("content") for m in replayed]
    assert "first question" in texts and "Answer: first question" in texts and "First answer." in texts
    # a node without ``history`` sees only its own prompt
    assert upstream.requests[0].body["messages"][1:] == [{"role": "user", "content": "Answer: first question"}]


# --------------------------------------------------------------------------- human in the loop

ASK = {
    "inputs": {"title": {"type": "string", "default": "the note"}},
    "nodes": [{"name": "ask", "kind": "human", "tool": "confirm_dialog",
               "params": {"question": "Publish ${inputs.title}?", "options": ["Publish", "Keep"]},
               "output": "decision"}],
    "edges": edges(("START", "ask"), ("ask", "END")),
    "answer": "Decision: ${state.decision.answer}",
}


async def test_human_node_waits_for_the_confirm_dialog_submit(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "ask", graph_agent(ASK))
    gw = start_gateway()
    events: list[dict[str, Any]] = []
    submitted: dict[str, Any] = {}

    async def consume() -> None:
        async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "ask", "message": "go"}):
            events.append(event)
            if event["type"] == "tool.start":
                answer = {"runId": event["runId"], "toolId": event["toolId"],
                          "params": {"confirmed": True, "answer": "Publish"}}
                submitted.update((await client.post(f"{gw.url}/api/ap/submit", json=answer)).json()["data"])

    await asyncio.wait_for(consume(), timeout=HANG)
    assert submitted["status"] == "accepted"
    node_events = types(events)[types(events).index("task.start"):]
    assert node_events == ["task.start", "tool.start", "tool.args", "tool.end", "request.submit", "tool.result",
                           "plan.update", "task.complete", "content.start", "content.delta", "content.end",
                           "run.complete"]
    start = first(events, "tool.start")
    assert start["taskId"] == "ask" and start["toolName"] == "confirm_dialog"
    assert start["toolType"] == "html" and start["toolKey"] == "confirm_dialog" and start["toolTimeout"] > 0
    assert start["toolId"].startswith("t_")
    assert start["toolParams"] == {"question": "Publish the note?", "options": ["Publish", "Keep"]}
    assert first(events, "tool.result")["result"] == {"confirmed": True, "answer": "Publish"}
    assert deltas(events, "content.delta") == "Decision: Publish"
    assert upstream.requests == []  # no model call at all


async def test_interrupting_a_waiting_human_node_cancels_its_task(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "ask", graph_agent(ASK))
    gw = start_gateway()
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "ask", "message": "go"}):
            events.append(event)
            if event["type"] == "tool.start":
                await client.post(f"{gw.url}/api/ap/interrupt", json={"runId": event["runId"]})

    await asyncio.wait_for(consume(), timeout=HANG)
    assert types(events)[-4:] == ["tool.end", "plan.update", "task.cancel", "run.cancel"]
    assert of_type(events, "plan.update")[-1]["plan"][0]["status"] == "canceled"
    lines = chat_lines(deploy, events[0]["chatId"])
    assert lines[-1]["_type"] == "run" and lines[-1]["status"] == "cancel"
    # the node's tool call is still in memory (the run's last step)
    assert any(m.get("_taskId") == "ask" for line in lines if line.get("_type") == "step" for m in line["messages"])


# --------------------------------------------------------------------------- sub-agent

async def test_agent_node_runs_a_sub_agent_nested_under_its_task(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "helper", agent("REACT", tools={"backends": ["mock_city_weather"], "frontends": [],
                                                        "actions": []}))
    write_agent(deploy, "boss", graph_agent({
        "inputs": {"city": {"type": "string", "required": True}},
        "nodes": [{"name": "consult", "kind": "agent", "agentKey": "helper", "message": "Check ${inputs.city}",
                   "output": "opinion"}],
        "edges": edges(("START", "consult"), ("consult", "END")),
        "answer": "Helper says: ${state.opinion}",
    }))
    gw = start_gateway()
    upstream.enqueue(call("h1", "mock_city_weather", {"city": "Oslo", "date": "2026-03-01"}),
                     text_script(["Cold ", "in Oslo."]))
    events = await _query(client, gw, "boss", "hi", params={"city": "Oslo"})
    assert events[-1]["type"] == "run.complete"
    assert task_ids(events) == ["consult"]
    inside = events[types(events).index("task.start") + 1:types(events).index("task.complete")]
    starts = [e for e in inside if e["type"] in ("tool.start", "content.start", "reasoning.start")]
    assert [e["type"] for e in starts] == ["tool.start", "content.start"]
    assert all(e["taskId"] == "consult" for e in starts)
    assert first(events, "tool.start")["toolId"] == "h1"
    assert deltas(events, "content.delta").endswith("Helper says: Cold in Oslo.")
    first_call, second_call = (r.body for r in upstream.requests)
    assert first_call["messages"][0]["content"].startswith("You are a test agent.")  # the sub-agent's own prompt
    assert first_call["messages"][1:] == [{"role": "user", "content": "Check Oslo"}]
    assert tool_names(first_call) == ["mock_city_weather"]
    assert [m["role"] for m in second_call["messages"]] == ["system", "user", "assistant", "tool"]
    # memory: the sub-run's own steps under the node's task, then the node's graph checkpoint
    steps = [line for line in chat_lines(deploy, events[0]["chatId"]) if line.get("_type") == "step"]
    assert [(s["_stage"], s.get("taskId")) for s in steps] == [
        ("graph", None), ("react", "consult"), ("react", "consult"), ("graph", "consult"), ("graph", None)]
    assert steps[3]["state"] == {"opinion": "Cold in Oslo."}


async def test_the_graph_budget_bounds_its_sub_runs(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "helper", agent("REACT", tools={"backends": ["mock_city_weather"], "frontends": [],
                                                        "actions": []}, budget={"model": {"maxCalls": 10}}))
    write_agent(deploy, "boss", graph_agent({
        "nodes": [{"name": "consult", "kind": "agent", "agentKey": "helper", "optional": True}],
        "edges": edges(("START", "consult"), ("consult", "END")),
    }, budget={"model": {"maxCalls": 1}}))
    gw = start_gateway()
    upstream.enqueue(call("h1", "mock_city_weather", {"city": "Oslo", "date": "2026-03-01"}), text_script(["never"]))
    events = await _query(client, gw, "boss")
    # a budget is never swallowed, not even by an optional node
    assert types(events)[-3:] == ["plan.update", "task.fail", "run.error"]
    assert events[-1]["error"]["code"] == "budget_model_calls"
    assert first(events, "task.fail")["error"]["code"] == "budget_model_calls"
    assert len(upstream.requests) == 1


# --------------------------------------------------------------------------- parallel

PARALLEL = {
    "nodes": [
        {"name": "split", "kind": "router"},
        {"name": "left", "kind": "llm", "prompt": "Branch left: ${message}", "output": "left"},
        {"name": "right", "kind": "llm", "prompt": "Branch right: ${message}", "output": "right"},
        {"name": "right_more", "kind": "tool", "tool": "mock_city_weather",
         "params": {"city": "Rome", "date": "2026-05-05"}, "outputs": {"sky": "weatherEn"}},
        {"name": "join", "kind": "llm", "prompt": "Join: ${state.left} + ${state.right} + ${state.sky}", "output": "all"},
    ],
    "edges": [
        {"from": "START", "to": "split"},
        {"from": "split", "to": "left", "parallel": True},
        {"from": "split", "to": "right", "parallel": True},
        {"from": "left", "to": "join"}, {"from": "right", "to": "right_more"}, {"from": "right_more", "to": "join"},
        {"from": "join", "to": "END"},
    ],
    "answer": "${state.all}",
}


def _by_prompt(body: dict[str, Any]) -> list[Step]:
    """The parallel test's model: the left branch waits at a gate; every answer names its prompt."""
    prompt = user_text(body)
    head: list[Step] = [Gate("left")] if prompt.startswith("Branch left") else []
    answer = {"Branch left": "L", "Branch right": "R"}.get(prompt.split(":")[0], prompt.upper())
    return [*head, Text(answer), Usage(5, 1), Finish("stop")]


async def test_parallel_branches_run_concurrently_and_join(
    tmp_path: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    with FakeUpstream(responder=_by_prompt) as model:
        root = make_deployment(tmp_path / "parallel", model.url)
        write_agent(root, "fan", graph_agent(PARALLEL))
        gw = start_gateway(root=root)
        events: list[dict[str, Any]] = []
        left_was_waiting: list[bool] = []

        async def consume() -> None:
            query = {"agentKey": "fan", "message": "go"}
            async for event in stream_events(client, f"{gw.url}/api/ap/query", query):
                events.append(event)
                if event["type"] == "task.complete" and event["taskId"] == "right_more":
                    # the right branch ran to its end while the left one's model call was held open
                    left_was_waiting.append(any(user_text(r.body).startswith("Branch left") for r in model.requests))
                    model.release("left")

        await asyncio.wait_for(consume(), timeout=HANG)
        assert left_was_waiting == [True], "the branches did not run concurrently"
    assert events[-1]["type"] == "run.complete"
    starts, completes = task_ids(events), task_ids(events, "task.complete")
    assert starts[:3] == ["split", "left", "right"] and starts[-1] == "join"
    # right finishes its two nodes while left waits; join starts only when both branches ended
    assert completes == ["split", "right", "right_more", "left", "join"]
    join_start = [i for i, e in enumerate(events) if e["type"] == "task.start" and e["taskId"] == "join"][0]
    assert max(i for i, e in enumerate(events) if e["type"] == "task.complete" and e["taskId"] == "left") < join_start
    join_request = [r.body for r in model.requests if user_text(r.body).startswith("Join")]
    weather = first(events, "tool.result")["result"]
    assert [user_text(b) for b in join_request] == [f"Join: L + R + {weather['weatherEn']}"]
    assert deltas(events, "content.delta").endswith(f"JOIN: L + R + {weather['weatherEn'].upper()}")
    steps = graph_steps(chat_lines(root, events[0]["chatId"]))
    joined = [s for s in steps if s["status"] == "joined"]
    assert len(joined) == 1 and joined[0]["node"] == "split" and joined[0]["next"] == ["join"]
    assert joined[0]["state"] == {"left": "L", "right": "R", "sky": weather["weatherEn"]}
    split = next(s for s in steps if s["node"] == "split")
    assert split["next"] == ["left", "right"]


# --------------------------------------------------------------------------- failures, limits

def _optional_graph(optional: bool) -> dict[str, Any]:
    return {
        "nodes": [
            {"name": "clock", "kind": "tool", "tool": "city_datetime", "params": {"city": "Atlantis"},
             "output": "clock", "optional": optional},
            {"name": "judge", "kind": "llm", "prompt": "Judge ${message}", "outputFormat": "json",
             "output": "verdict", "optional": True},
            {"name": "write", "kind": "llm", "prompt": "Clock: ${state.clock || 'unknown'}; verdict: "
                                                       "${state.verdict || 'none'}", "output": "text"},
        ],
        "edges": edges(("START", "clock"), ("clock", "judge"), ("judge", "write"), ("write", "END")),
    }


async def test_an_optional_node_that_fails_is_recorded_and_skipped(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "opt", graph_agent(_optional_graph(optional=True)))
    gw = start_gateway()
    upstream.enqueue(text_script(["this is ", "not JSON"]), text_script(["Done anyway."]))
    events = await _query(client, gw, "opt")
    assert events[-1]["type"] == "run.complete" and events[-1]["finishReason"] == "stop"
    assert task_ids(events) == ["clock", "judge", "write"]
    assert task_ids(events, "task.fail") == ["clock", "judge"] and task_ids(events, "task.complete") == ["write"]
    clock_fail, judge_fail = of_type(events, "task.fail")
    assert clock_fail["error"]["code"] == "graph_tool_failed" and "Atlantis" in clock_fail["error"]["message"]
    assert judge_fail["error"]["code"] == "graph_node_failed"
    assert judge_fail["error"]["message"] == "the answer is not JSON: 'this is not JSON'"
    assert [t["status"] for t in of_type(events, "plan.update")[-1]["plan"]] == ["failed", "failed", "completed"]
    assert user_text(upstream.requests[1].body) == "Clock: unknown; verdict: none"
    # no answer template: the last llm node's text is the answer, already streamed inside its task
    assert of_type(events, "content.start")[-1]["taskId"] == "write"
    steps = graph_steps(chat_lines(deploy, events[0]["chatId"]))
    assert [(s["node"], s["status"]) for s in steps] == [
        ("START", "started"), ("clock", "failed"), ("judge", "failed"), ("write", "completed"), ("END", "ended")]
    assert steps[2]["state"] == {}  # a failed node changes nothing


async def test_a_required_node_that_fails_ends_the_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "req", graph_agent(_optional_graph(optional=False)))
    gw = start_gateway()
    events = await _query(client, gw, "req")
    assert types(events)[-8:] == ["task.start", "tool.start", "tool.args", "tool.end", "tool.result", "plan.update",
                                  "task.fail", "run.error"]
    error = events[-1]["error"]
    assert error["code"] == "graph_node_failed" and error["message"].startswith("graph node 'clock' failed: ")
    assert upstream.requests == []
    lines = chat_lines(deploy, events[0]["chatId"])
    assert graph_steps(lines)[-1]["status"] == "failed" and graph_steps(lines)[-1]["next"] == []
    assert lines[-1]["status"] == "error"


async def test_max_steps_ends_the_run_with_finish_reason_max_steps(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "ticker", graph_agent({
        "state": {"count": {"type": "integer", "initial": 0}},
        "nodes": [{"name": "tick", "kind": "router", "update": {"count": "state.count + 1"}}],
        "edges": edges(("START", "tick"), ("tick", "tick", "state.count < 100"), ("tick", "END")),
        "maxSteps": 3,
    }))
    gw = start_gateway()
    events = await _query(client, gw, "ticker")
    assert events[-1]["type"] == "run.complete" and events[-1]["finishReason"] == "max_steps"
    assert task_ids(events) == task_ids(events, "task.complete") == ["tick", "tick#2", "tick#3"]
    steps = graph_steps(chat_lines(deploy, events[0]["chatId"]))
    assert [s["state"]["count"] for s in steps] == [0, 1, 2, 3]
    assert steps[-1]["next"] == ["tick"]  # where it would have gone


async def test_no_matching_edge_ends_the_run_with_graph_no_route(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "stuck", graph_agent({
        "state": {"score": {"type": "integer", "initial": 5}},
        "nodes": [{"name": "gate", "kind": "router"}],
        "edges": edges(("START", "gate"), ("gate", "END", "state.score > 10"), ("gate", "END", "state.missing < 3")),
    }))
    gw = start_gateway()
    events = await _query(client, gw, "stuck")
    assert types(events)[-3:] == ["plan.update", "task.complete", "run.error"]
    error = events[-1]["error"]
    assert error["code"] == "graph_no_route"
    assert "'state.score > 10' is false" in error["message"]
    assert "'state.missing < 3' could not be evaluated" in error["message"]


async def test_missing_or_mistyped_inputs_end_the_run_before_any_node(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "linear", graph_agent(LINEAR))
    gw = start_gateway()
    missing = await _query(client, gw, "linear")
    assert types(missing)[-2:] == ["run.start", "run.error"]
    assert missing[-1]["error"]["code"] == "graph_input_missing" and "city" in missing[-1]["error"]["message"]
    wrong = await _query(client, gw, "linear", params={"city": 42})
    assert wrong[-1]["error"]["code"] == "graph_input_invalid"
    assert upstream.requests == []


async def test_attack_state_blowups_fail_the_node_with_a_clear_code(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """An int past 64 bits in the state broke the checkpoint writer (``internal_error``), and
    ``[state.l, state.l]`` doubled the state on every visit until the gateway ran out of memory."""
    write_agent(deploy, "bigint", graph_agent({
        "state": {"n": {"type": "integer", "initial": 3}},
        "nodes": [{"name": "square", "kind": "router", "update": {"n": "state.n * state.n"}}],
        "edges": edges(("START", "square"), ("square", "square", "state.n > 0"), ("square", "END")),
    }))
    write_agent(deploy, "double", graph_agent({
        "state": {"l": {"type": "array", "initial": [1, 2, 3, 4]}},
        "nodes": [{"name": "grow", "kind": "router", "update": {"l": "[state.l, state.l]"}}],
        "edges": edges(("START", "grow"), ("grow", "grow", "true"), ("grow", "END")),
    }))
    gw = start_gateway()
    for key, node, visits, reason in (("bigint", "square", 6, "outside the 64-bit range"),
                                      ("double", "grow", 15, "more than 100000 values")):
        events = await _query(client, gw, key)
        failed = of_type(events, "task.fail")
        assert [e["taskId"] for e in failed] == [f"{node}#{visits}"]
        assert failed[0]["error"]["code"] == "graph_expression_failed" and reason in failed[0]["error"]["message"]
        assert events[-1]["type"] == "run.error" and events[-1]["error"]["code"] == "graph_node_failed"
        steps = graph_steps(chat_lines(deploy, events[0]["chatId"]))
        assert steps[-1]["status"] == "failed" and steps[-1]["taskId"] == f"{node}#{visits}"
