"""Timings in memory and history, and ``POST /api/ap/chat/fork`` (SPEC §20), over real HTTP.

The exact-context tests compare what the fake upstream received: a continued fork must send
the model the copied history and nothing else — the same messages the source chat sent for
the run at the fork point, with only the new question at the end.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import Finish, Gate, Text, text_script, tool_call_script
from app.memory.fork import cut
from tests.engine.helpers import chat_lines
from tests.files.support import upload
from tests.security.support import ISSUER, mint, rsa_pair
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect, types

WEATHER = {"backends": ["mock_city_weather"], "frontends": [], "actions": []}
FORK = "/api/ap/chat/fork"


async def ask(client: httpx.AsyncClient, gw: GatewayServer, message: str, *, chat_id: str | None = None,
              agent_key: str | None = "weather", **extra: Any) -> list[dict[str, Any]]:
    body: dict[str, Any] = {"message": message, **extra}
    if chat_id:
        body["chatId"] = chat_id
    if agent_key:
        body["agentKey"] = agent_key
    events = await collect(client, f"{gw.url}/api/ap/query", body)
    assert events[-1]["type"] == "run.complete", events[-1]
    return events


def run_id_of(events: list[dict[str, Any]]) -> str:
    return next(e["runId"] for e in events if e["type"] == "run.start")


async def history(client: httpx.AsyncClient, gw: GatewayServer, chat_id: str, **params: Any) -> dict[str, Any]:
    response = await client.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id, **params})
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def fork(client: httpx.AsyncClient, gw: GatewayServer, body: Any, *, status: int = 200,
               headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = await client.post(f"{gw.url}{FORK}", json=body, headers=headers)
    assert response.status_code == status, response.text
    envelope: dict[str, Any] = response.json()
    assert (envelope["code"] == 0) == (status == 200), envelope
    return envelope


def without_chat(line: dict[str, Any]) -> dict[str, Any]:
    """A memory line without the fields a fork re-homes (chat id, owner)."""
    out = {k: v for k, v in line.items() if k not in ("chatId", "owner")}
    if isinstance(out.get("query"), dict):
        out["query"] = {k: v for k, v in out["query"].items() if k != "chatId"}
    return out


# ---- timings --------------------------------------------------------------------------------------


async def test_timings_in_memory_and_duration_ms_in_history(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "weather", agent("REACT", tools=WEATHER, reasoning=True))
    gw = start_gateway()
    upstream.enqueue(
        tool_call_script("call_1", "mock_city_weather", ['{"city":"Paris",', '"date":"2026-11-25"}'],
                         text=["Let me check. "]),
        text_script(["Sunny."], reasoning=["hmm"]),
    )
    events = await ask(client, gw, "Paris weather?")
    chat_id = events[0]["chatId"]
    lines = chat_lines(deploy, chat_id)
    messages = [m for line in lines if line["_type"] == "step" for m in line["messages"]]

    # memory: the first message of each model response and every tool result carry _timing
    responses: dict[str, dict[str, Any]] = {}
    for message in messages:
        if message["role"] == "assistant":
            responses.setdefault(message["_msgId"], message)
    assert len(responses) == 2
    for first in responses.values():
        timing = first["_timing"]
        assert timing["startedAt"] <= timing["firstDeltaAt"] <= timing["endedAt"]
        assert first["_usage"]["promptTokens"] == 10
    (result,) = [m for m in messages if m["role"] == "tool"]
    assert result["_timing"]["startedAt"] <= result["_timing"]["endedAt"] == result["ts"]
    call_made = responses[next(iter(responses))]["_timing"]["endedAt"]
    assert call_made <= result["_timing"]["startedAt"]  # the tool ran after the call that asked for it

    def spent(timing: dict[str, int]) -> int:
        return timing["endedAt"] - timing["startedAt"]

    # history: durationMs from those timings, on exactly the events SPEC §20 names
    data = await history(client, gw, chat_id)
    timed = {e["type"]: e["durationMs"] for e in data["events"] if "durationMs" in e}
    first_call, second_call = (spent(m["_timing"]) for m in responses.values())
    by_type: dict[str, list[dict[str, Any]]] = {}
    for event in data["events"]:
        by_type.setdefault(event["type"], []).append(event)
    assert [e["durationMs"] for e in by_type["content.snapshot"]] == [first_call, second_call]
    assert [e["durationMs"] for e in by_type["reasoning.snapshot"]] == [second_call]
    assert by_type["tool.result"][0]["durationMs"] == spent(result["_timing"])
    query_line = next(line for line in lines if line["_type"] == "query")
    run_line = next(line for line in lines if line["_type"] == "run")
    assert by_type["run.complete"][0]["durationMs"] == run_line["updatedAt"] - query_line["updatedAt"]
    assert set(timed) == {"content.snapshot", "reasoning.snapshot", "tool.result", "run.complete"}
    assert all(isinstance(value, int) and value >= 0 for value in timed.values())
    # the live stream is unchanged: durations are a history (replay) field only
    assert not any("durationMs" in e for e in events)


# ---- fork: the copied prefix and the exact upstream context ----------------------------------------


async def three_runs(client: httpx.AsyncClient, gw: GatewayServer, upstream: FakeUpstream) -> tuple[str, list[str]]:
    upstream.enqueue(
        tool_call_script("call_1", "mock_city_weather", ['{"city":"Paris","date":"2026-11-25"}']),
        text_script(["Sunny in Paris."]),
        text_script(["Rainy in Rome."]),
        text_script(["Snow in Oslo."]),
    )
    first = await ask(client, gw, "Paris?")
    chat_id = first[0]["chatId"]
    second = await ask(client, gw, "Rome?", chat_id=chat_id, agent_key=None)
    third = await ask(client, gw, "Oslo?", chat_id=chat_id, agent_key=None)
    return chat_id, [run_id_of(first), run_id_of(second), run_id_of(third)]


async def test_fork_before_a_run_continues_with_exactly_the_copied_context(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "weather", agent("REACT", tools=WEATHER))
    gw = start_gateway()
    chat_id, (r1, r2, r3) = await three_runs(client, gw, upstream)
    source_file = deploy / "chats" / f"{chat_id}.json"
    source_bytes = source_file.read_bytes()
    sent_for_r3 = upstream.requests[3].body  # the context the source chat gave the model for "Oslo?"
    assert sent_for_r3["messages"][-1] == {"role": "user", "content": "Oslo?"}

    data = (await fork(client, gw, {"chatId": chat_id, "runId": r3, "position": "before"}))["data"]
    new_chat = data["chatId"]
    assert new_chat != chat_id and data["runs"] == [r1, r2]
    assert data["forkedFrom"] == {"chatId": chat_id, "runId": r3, "position": "before"}
    assert source_file.read_bytes() == source_bytes  # the source is untouched

    # the new chat holds the source's lines of r1 and r2, unchanged but for chat id and owner
    source_lines = chat_lines(deploy, chat_id)
    copied = chat_lines(deploy, new_chat)
    assert copied[0]["_type"] == "fork" and copied[0]["source"] == data["forkedFrom"]
    assert [without_chat(line) for line in copied[1:]] == [
        without_chat(line) for line in source_lines if line.get("runId") in (r1, r2)]
    assert all(line["chatId"] == new_chat for line in copied)
    assert all(line["query"]["chatId"] == new_chat for line in copied if line["_type"] == "query")

    # continuing the fork: the model gets the copied history and the new question, nothing else
    upstream.enqueue(text_script(["Sleet in Oslo."]))
    edited = await ask(client, gw, "Oslo tomorrow?", chat_id=new_chat, agent_key=None)
    assert edited[0]["chatId"] == new_chat
    sent = upstream.requests[4].body
    assert sent["messages"][:-1] == sent_for_r3["messages"][:-1]
    assert sent["messages"][-1] == {"role": "user", "content": "Oslo tomorrow?"}
    assert sent["tools"] == sent_for_r3["tools"]
    assert source_file.read_bytes() == source_bytes

    # both branches are readable: the source keeps r3, the fork has r1, r2 and its own run
    fork_history = await history(client, gw, new_chat)
    assert fork_history["forkedFrom"] == data["forkedFrom"]
    assert [e["message"] for e in fork_history["events"] if e["type"] == "request.query"] == [
        "Paris?", "Rome?", "Oslo tomorrow?"]
    source_history = await history(client, gw, chat_id)
    assert "forkedFrom" not in source_history
    assert [e["message"] for e in source_history["events"] if e["type"] == "request.query"] == [
        "Paris?", "Rome?", "Oslo?"]
    chats = {c["chatId"]: c for c in (await client.get(f"{gw.url}/api/ap/chats")).json()["data"]}
    assert chats[new_chat]["firstAgentKey"] == "weather" and chats[new_chat]["chatName"] == "Paris?"
    assert chats[new_chat]["forkedFrom"] == data["forkedFrom"] and "forkedFrom" not in chats[chat_id]


async def test_fork_after_a_run_and_before_the_first_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "weather", agent("REACT", tools=WEATHER))
    gw = start_gateway()
    chat_id, (r1, r2, _) = await three_runs(client, gw, upstream)
    sent_for_r2 = upstream.requests[2].body

    after_r1 = (await fork(client, gw, {"chatId": chat_id, "runId": r1, "position": "after"}))["data"]
    assert after_r1["runs"] == [r1]
    upstream.enqueue(text_script(["Hot in Rome."]))
    await ask(client, gw, "Rome in July?", chat_id=after_r1["chatId"], agent_key=None)
    sent = upstream.requests[4].body["messages"]
    assert sent[:-1] == sent_for_r2["messages"][:-1]  # exactly what the source had after r1
    assert sent[-1] == {"role": "user", "content": "Rome in July?"}

    # before the first run: an empty chat of the caller; continuing it sends only the new question
    empty = (await fork(client, gw, {"chatId": chat_id, "runId": r1}))["data"]  # position defaults to before
    assert empty["runs"] == [] and empty["forkedFrom"]["position"] == "before"
    assert (await history(client, gw, empty["chatId"]))["events"] == []
    upstream.enqueue(text_script(["Fresh start."]))
    await ask(client, gw, "Paris, again?", chat_id=empty["chatId"])
    assert [m["role"] for m in upstream.requests[5].body["messages"]] == ["system", "user"]

    # a fork of a fork names its immediate source only
    again = (await fork(client, gw, {"chatId": after_r1["chatId"], "runId": r1, "position": "after"}))["data"]
    lines = chat_lines(deploy, again["chatId"])
    assert [line["_type"] for line in lines].count("fork") == 1
    assert lines[0]["source"]["chatId"] == after_r1["chatId"]
    assert r2 not in {line.get("runId") for line in lines}


async def test_fork_copies_the_uploads_so_a_rerun_sends_the_same_references(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "weather", agent("REACT", tools=WEATHER))
    gw = start_gateway()
    uploaded = (await upload(client, gw, "notes.txt", b"remember the umbrella\n", content_type="text/plain")).json()
    chat_id, ref_id = uploaded["data"]["chatId"], uploaded["data"]["reference"]["id"]
    upstream.enqueue(text_script(["Noted."]))
    first = await ask(client, gw, "Read my notes", chat_id=chat_id, references=[{"id": ref_id}])
    original = upstream.requests[0].body["messages"]

    data = (await fork(client, gw, {"chatId": chat_id, "runId": run_id_of(first)}))["data"]
    forked = await history(client, gw, data["chatId"])
    assert [r["id"] for r in forked["references"]] == [ref_id]
    upstream.enqueue(text_script(["Noted again."]))
    rerun = await ask(client, gw, "Read my notes", chat_id=data["chatId"], references=[{"id": ref_id}])
    assert "run.error" not in types(rerun)
    assert upstream.requests[1].body["messages"] == original  # same question, same listing, same path


# ---- refusals ----------------------------------------------------------------------------------------


async def test_fork_refuses_while_a_copied_run_is_running(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "weather", agent("REACT", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(text_script(["One."]))
    first = await ask(client, gw, "one")
    chat_id = first[0]["chatId"]
    upstream.enqueue([Text("Two"), Gate("hold"), Text("."), Finish()])
    body = {"chatId": chat_id, "message": "two", "onDisconnect": "continue"}
    live = asyncio.create_task(collect(client, f"{gw.url}/api/ap/query", body))
    assert await asyncio.to_thread(upstream.wait_requests, 2)
    runs = (await client.get(f"{gw.url}/api/ap/runs", params={"chatId": chat_id})).json()["data"]
    running = next(r["runId"] for r in runs if r["status"] == "running")
    envelope = await fork(client, gw, {"chatId": chat_id, "runId": running, "position": "after"}, status=409)
    assert "still running" in envelope["msg"]
    before = (await fork(client, gw, {"chatId": chat_id, "runId": running}))["data"]  # what ended is forkable
    assert before["runs"] == [run_id_of(first)]
    upstream.release("hold")
    assert (await live)[-1]["type"] == "run.complete"


@pytest.mark.parametrize(("body", "status", "needle"), [
    ({"chatId": "../../etc/passwd", "runId": "r"}, 400, "chatId"),
    ({"chatId": "CHAT", "runId": "../run"}, 400, "runId"),
    ({"chatId": "CHAT", "runId": "run_nope"}, 404, "not a run of this chat"),
    ({"chatId": "chat_unknown", "runId": "RUN"}, 404, "unknown chat"),
    ({"chatId": "CHAT", "runId": "RUN", "position": "sideways"}, 400, "position"),
    ({"chatId": "CHAT"}, 400, "runId"),
    ({"chatId": "CHAT", "runId": "RUN", "state": {"x": 1}}, 400, "only accepted with node"),
    ({"chatId": "CHAT", "runId": "RUN", "node": "write", "position": "after"}, 400, "position must be before"),
    ({"chatId": "CHAT", "runId": "RUN", "node": "../write"}, 400, "invalid node"),
    ({"chatId": "CHAT", "runId": "RUN", "node": "write"}, 404, "no graph checkpoints"),
    ({"chatId": "CHAT", "runId": "RUN", "state": "not an object", "node": "write"}, 400, "state"),
    (["CHAT", "RUN"], 400, "JSON object"),
])
async def test_attack_hostile_fork_bodies_are_refused_and_write_nothing(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    body: Any, status: int, needle: str,
) -> None:
    write_agent(deploy, "weather", agent("REACT", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(text_script(["One."]))
    events = await ask(client, gw, "one")
    chat_id, run_id = events[0]["chatId"], run_id_of(events)
    filled = orjson.loads(orjson.dumps(body).replace(b"CHAT", chat_id.encode()).replace(b"RUN", run_id.encode()))
    chats_before = sorted(p.name for p in (deploy / "chats").iterdir())
    envelope = await fork(client, gw, filled, status=status)
    assert needle in envelope["msg"]
    assert sorted(p.name for p in (deploy / "chats").iterdir()) == chats_before


async def test_attack_malformed_and_oversize_fork_bodies(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    gw = start_gateway({"server": {"max-body-bytes": 4096}})
    broken = await client.post(f"{gw.url}{FORK}", content=b'{"chatId": ', headers={"Content-Type": "application/json"})
    assert broken.status_code == 400 and "malformed JSON" in broken.json()["msg"]
    huge = await client.post(f"{gw.url}{FORK}", json={"chatId": "c", "runId": "r", "state": {"x": "y" * 8192},
                                                       "node": "n"})
    assert huge.status_code == 413 and huge.json()["code"] > 0


async def test_attack_fork_of_another_users_chat_is_forbidden(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    key = rsa_pair()
    write_agent(deploy, "weather", agent("REACT", tools=WEATHER))
    gw = start_gateway({"agent": {"auth": {"enabled": True, "local-public-key": key.public_pem, "issuer": ISSUER}}})
    alice = {"Authorization": f"Bearer {mint(key, 'alice')}"}
    mallory = {"Authorization": f"Bearer {mint(key, 'mallory')}"}
    upstream.enqueue(text_script(["Alice's secret answer."]))
    response = await client.post(f"{gw.url}/api/ap/query", json={"agentKey": "weather", "message": "secret"},
                                 headers={**alice, "Accept": "text/event-stream"})
    assert response.status_code == 200
    events = [orjson.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    chat_id, run_id = events[0]["chatId"], run_id_of(events)
    chats_before = sorted(p.name for p in (deploy / "chats").iterdir())

    envelope = await fork(client, gw, {"chatId": chat_id, "runId": run_id, "position": "after"}, status=403,
                          headers=mallory)
    assert "another user" in envelope["msg"]
    assert sorted(p.name for p in (deploy / "chats").iterdir()) == chats_before
    assert (await client.post(f"{gw.url}{FORK}", json={"chatId": chat_id, "runId": run_id})).status_code == 401

    # alice's own fork is hers alone
    mine = (await fork(client, gw, {"chatId": chat_id, "runId": run_id, "position": "after"}, headers=alice))["data"]
    peek = await client.get(f"{gw.url}/api/ap/chat", params={"chatId": mine["chatId"]}, headers=mallory)
    assert peek.status_code == 403
    listed = (await client.get(f"{gw.url}/api/ap/chats", headers=mallory)).json()["data"]
    assert listed == []
    own = (await client.get(f"{gw.url}/api/ap/chats", headers=alice)).json()["data"]
    assert {c["chatId"] for c in own} == {chat_id, mine["chatId"]}


# ---- fork from a GRAPH node checkpoint (SPEC §20, §21) ----------------------------------------------

REVIEW_LOOP = {
    "state": {"draft": {"type": "string"}, "review": {"type": "object"}, "rounds": {"type": "integer", "initial": 0}},
    "nodes": [
        {"name": "write", "kind": "llm", "prompt": "Write about ${message}. Before: ${state.draft || 'none'}",
         "output": "draft"},
        {"name": "review", "kind": "llm", "prompt": "Review: ${state.draft}", "outputFormat": "json",
         "output": "review", "update": {"rounds": "state.rounds + 1"}},
    ],
    "edges": [{"from": "START", "to": "write"}, {"from": "write", "to": "review"},
              {"from": "review", "to": "END", "condition": "state.review.passed == true"},
              {"from": "review", "to": "write", "condition": "!state.review.passed && state.rounds < 3"},
              {"from": "review", "to": "END"}],
    "answer": "${state.draft} (${state.rounds} rounds)",
}


async def test_fork_from_a_graph_node_restarts_there_with_the_state_overridden(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "loop", {"name": "loop", "modelConfig": {"modelKey": "fake-openai"}, "mode": "GRAPH",
                                 "graph": REVIEW_LOOP})
    gw = start_gateway()
    upstream.enqueue(text_script(["Draft one."]), text_script(['{"passed": false}']),
                     text_script(["Draft two."]), text_script(['{"passed": true}']))
    events = await ask(client, gw, "tea", agent_key="loop")
    chat_id, run_id = events[0]["chatId"], run_id_of(events)
    source_bytes = (deploy / "chats" / f"{chat_id}.json").read_bytes()
    checkpoints = [line for line in chat_lines(deploy, chat_id) if line.get("_stage") == "graph"]
    after_write_two = next(line for line in checkpoints if line.get("taskId") == "write#2")

    data = (await fork(client, gw, {"chatId": chat_id, "runId": run_id, "node": "review#2",
                                    "state": {"draft": "Draft edited."}}))["data"]
    assert data["runs"] == [] and data["forkedFrom"]["node"] == "review#2"
    header = chat_lines(deploy, data["chatId"])[0]
    assert header["resume"]["state"] == {**after_write_two["state"], "draft": "Draft edited."}
    assert header["resume"]["node"] == "review" and header["resume"]["message"] == "tea"

    # the next run of the fork starts at review, from that state: one model call, the edited draft
    upstream.enqueue(text_script(['{"passed": true}']))
    resumed = await ask(client, gw, "tea", chat_id=data["chatId"], agent_key="loop")
    assert [e["taskId"] for e in resumed if e["type"] == "task.start"] == ["review"]
    assert upstream.requests[4].body["messages"][-1] == {"role": "user", "content": "Review: Draft edited."}
    assert "".join(e["delta"] for e in resumed if e["type"] == "content.delta").endswith("Draft edited. (2 rounds)")
    start = next(line for line in chat_lines(deploy, data["chatId"]) if line.get("node") == "START")
    assert start["resumedAt"] == "review" and start["next"] == ["review"]
    assert (deploy / "chats" / f"{chat_id}.json").read_bytes() == source_bytes

    # only the first run after the fork resumes; the next one starts at START again
    upstream.enqueue(text_script(["Draft three."]), text_script(['{"passed": true}']))
    again = await ask(client, gw, "coffee", chat_id=data["chatId"], agent_key="loop")
    assert [e["taskId"] for e in again if e["type"] == "task.start"] == ["write", "review"]

    # what the studio draws the graph from: the agent's nodes and edges as defined
    graph = (await client.get(f"{gw.url}/api/ap/agent", params={"agentKey": "loop"})).json()["data"]["graph"]
    assert [(n["name"], n["kind"]) for n in graph["nodes"]] == [("write", "llm"), ("review", "llm")]
    assert [(e["from"], e["to"], e["condition"]) for e in graph["edges"]] == [
        (e["from"], e["to"], e.get("condition")) for e in REVIEW_LOOP["edges"]]

    # a node the run never reached is not a fork point
    envelope = await fork(client, gw, {"chatId": chat_id, "runId": run_id, "node": "review#3"}, status=404)
    assert "never reached node 'review'" in envelope["msg"]


async def test_a_fork_cancelled_while_its_lines_wait_on_the_writer_thread_leaves_no_chat_file(
        tmp_path: Path) -> None:
    """The client leaves while the new chat's lines are still queued behind a slow write: the
    half-written chat is removed, and a line that was already handed over does not bring it back
    (it is written first, then the file is deleted)."""
    import threading

    from app.api.fork_routes import _WRITE_BATCH, _write
    from app.memory import ChatStore

    store = ChatStore(tmp_path / "chats")
    gate = threading.Event()
    lines = [{"_type": "fork" if n == 0 else "step", "n": n} for n in range(2 * _WRITE_BATCH + 1)]
    write_line = store._append_sync

    def slow_second_line(chat_id: str, batch: tuple[dict[str, Any], ...], keep_open: bool) -> None:
        if batch[0].get("n") == _WRITE_BATCH:  # the second batch
            gate.wait(30)  # a slow disk
        write_line(chat_id, batch, keep_open)

    store._append_sync = slow_second_line  # type: ignore[method-assign]
    try:
        fork = asyncio.ensure_future(_write(store, "forked_chat", lines))
        while not (store.directory / "forked_chat.json").exists():  # the first line is written
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.02)  # the second is on the thread, waiting for the disk
        fork.cancel()
        await asyncio.sleep(0.02)
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await fork
        await store.append("other_chat", {"_type": "query"})  # everything queued before is done
        assert not (store.directory / "forked_chat.json").exists()
    finally:
        gate.set()
        store.close()


def _routers(state: dict[str, Any], nodes: list[dict[str, Any]], pairs: list[tuple[str, str]],
             answer: str, **extra: Any) -> dict[str, Any]:
    edges = [{"from": a, "to": b} for a, b in pairs]
    return {"name": "g", "modelConfig": {"modelKey": "fake-openai"}, "mode": "GRAPH",
            "graph": {"state": state, "nodes": nodes, "answer": answer, "edges": extra.get("edges", []) + edges}}


def _answer(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "content.delta")


async def test_fork_inside_a_parallel_branch_is_refused_naming_where_to_fork_instead(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """A restart at one branch of a fan-out ran that branch alone: the sibling's result was lost."""
    write_agent(deploy, "par", _routers(
        {"x": {"type": "string"}, "y": {"type": "string"}},
        [{"name": "a", "kind": "router", "update": {"x": "'X'"}}, {"name": "b", "kind": "router", "update": {"y": "'Y'"}},
         {"name": "j", "kind": "router"}],
        [("a", "j"), ("b", "j"), ("j", "END")], "x=${state.x} y=${state.y}",
        edges=[{"from": "START", "to": "a", "parallel": True}, {"from": "START", "to": "b", "parallel": True}]))
    gw = start_gateway()
    events = await ask(client, gw, "go", agent_key="par")
    chat_id, run_id = events[0]["chatId"], run_id_of(events)
    chats_before = sorted(p.name for p in (deploy / "chats").iterdir())
    for node in ("a", "b"):
        envelope = await fork(client, gw, {"chatId": chat_id, "runId": run_id, "node": node}, status=400)
        assert f"node '{node}' runs in a parallel branch of START's fan-out" in envelope["msg"]
        assert "Fork from 'j' (where they meet) instead" in envelope["msg"]
    assert sorted(p.name for p in (deploy / "chats").iterdir()) == chats_before
    data = (await fork(client, gw, {"chatId": chat_id, "runId": run_id, "node": "j"}))["data"]
    resumed = await ask(client, gw, "go", chat_id=data["chatId"], agent_key="par")
    assert [e["taskId"] for e in resumed if e["type"] == "task.start"] == ["j"]
    assert _answer(resumed) == "x=X y=Y"


def _agent_a(with_show: bool = True) -> dict[str, Any]:
    nodes = [{"name": "load", "kind": "router", "update": {"secret": "'A-private'"}}]
    nodes += [{"name": "show", "kind": "router"}] if with_show else []
    pairs = [("START", "load"), ("load", "show"), ("show", "END")] if with_show else [("START", "load"), ("load", "END")]
    return _routers({"secret": {"type": "string"}}, nodes, pairs, "A says ${state.secret}")


async def test_attack_fork_resume_is_for_a_real_node_of_the_forked_agent_only(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """``node: "END"`` or an unknown node was accepted and silently dropped, and the pending restart
    was applied to whichever GRAPH agent ran next in the chat (with the other agent's state); once
    that was fixed, another agent's run in between dropped the restart the forked agent was owed."""
    write_agent(deploy, "ga", _agent_a())
    write_agent(deploy, "gb", _routers(
        {"secret": {"type": "string", "initial": "B-default"}},
        [{"name": "init", "kind": "router", "update": {"secret": "'B-computed'"}}, {"name": "show", "kind": "router"}],
        [("START", "init"), ("init", "show"), ("show", "END")], "B says ${state.secret}"))
    gw = start_gateway()
    events = await ask(client, gw, "go", agent_key="ga")
    chat_id, run_id = events[0]["chatId"], run_id_of(events)
    for node, needle in (("END", "'END' is not a node a run can restart at"),
                         ("START", "'START' is not a node a run can restart at"),
                         ("ghost", "the graph has no node 'ghost'")):
        envelope = await fork(client, gw, {"chatId": chat_id, "runId": run_id, "node": node}, status=400)
        assert f"cannot fork from node '{node}' of agent 'ga': {needle}" in envelope["msg"]

    forked = (await fork(client, gw, {"chatId": chat_id, "runId": run_id, "node": "show"}))["data"]["chatId"]
    assert chat_lines(deploy, forked)[0]["resume"]["agentKey"] == "ga"
    other = await ask(client, gw, "go", chat_id=forked, agent_key="gb")
    assert [e["taskId"] for e in other if e["type"] == "task.start"] == ["init", "show"]
    assert _answer(other) == "B says B-computed"
    # another agent's run in between neither used the restart nor threw it away
    resumed = await ask(client, gw, "go", chat_id=forked, agent_key="ga")
    assert [e["taskId"] for e in resumed if e["type"] == "task.start"] == ["show"]
    assert _answer(resumed) == "A says A-private"
    again = await ask(client, gw, "go", chat_id=forked, agent_key="ga")  # used once, then a plain run
    assert [e["taskId"] for e in again if e["type"] == "task.start"] == ["load", "show"]

    # the forked agent lost the node in a hot reload: its restart fails clearly, not silently from START
    forked = (await fork(client, gw, {"chatId": chat_id, "runId": run_id, "node": "show"}))["data"]["chatId"]
    write_agent(deploy, "ga", _agent_a(with_show=False))
    for _ in range(400):
        graph = (await client.get(f"{gw.url}/api/ap/agent", params={"agentKey": "ga"})).json()["data"]["graph"]
        if len(graph["nodes"]) == 1:
            break
        await asyncio.sleep(0.025)
    failed = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "ga", "message": "go", "chatId": forked})
    assert failed[-1]["type"] == "run.error" and failed[-1]["error"]["code"] == "graph_fork_invalid"
    assert "the graph has no node 'show'" in failed[-1]["error"]["message"]


async def test_a_forked_chat_is_written_in_a_few_trips_to_the_writer_thread_not_one_per_line(
        tmp_path: Path) -> None:
    """Forking a chat of 20,000 runs handed its 60,000 lines to the writer thread one at a time and
    took 6 s; the lines now go in batches, in order, each one ``write(2)``."""
    from app.api.fork_routes import _write
    from app.memory import ChatStore

    store = ChatStore(tmp_path / "chats")
    trips: list[int] = []
    write_lines = store._append_sync

    def counted(chat_id: str, batch: tuple[dict[str, Any], ...], keep_open: bool) -> None:
        trips.append(len(batch))
        write_lines(chat_id, batch, keep_open)

    store._append_sync = counted  # type: ignore[method-assign]
    try:
        lines = [{"_type": "step", "n": n} for n in range(1000)]
        await _write(store, "forked_chat", lines)
        assert sum(trips) == 1000 and len(trips) <= 4, trips
        assert [line["n"] for line in store.read_lines("forked_chat")] == list(range(1000))
    finally:
        store.close()


def test_cutting_a_chat_of_many_runs_looks_each_line_up_once_not_through_every_run() -> None:
    """``cut`` (on the event loop) looked each line's run up in a list of the kept runs: forking a chat
    of 20,000 runs held the loop 15 s, and no request was answered meanwhile. Counted, not timed:
    the comparisons of run ids grew with runs × lines, now with lines."""
    comparisons = [0]

    class RunId(str):
        __hash__ = str.__hash__

        def __eq__(self, other: object) -> bool:
            comparisons[0] += 1
            return str.__eq__(self, other)

    runs = 1000
    lines: list[dict[str, Any]] = []
    for n in range(runs):
        run_id = RunId(f"run_{n}")
        lines += [{"_type": "query", "chatId": "c", "runId": run_id, "query": {"message": f"q{n}"}},
                  {"_type": "run", "chatId": "c", "runId": run_id, "status": "complete"}]
    copied = cut(lines, f"run_{runs - 1}", "after")
    assert len(copied.run_ids) == runs and len(copied.lines) == 2 * runs
    assert comparisons[0] < 10 * runs, comparisons[0]  # a list lookup per line: about runs² (1,000,000)
