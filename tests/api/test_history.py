"""Chat memory over HTTP: GET /api/ap/chats, GET /api/ap/chat, replay to the model (SPEC §4, §8)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import text_script, tool_call_script
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect, types

WEATHER = {"backends": ["mock_city_weather"], "frontends": [], "actions": []}


async def test_history_snapshots_and_replay_without_reasoning(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "weather", agent("REACT", tools=WEATHER, reasoning=True))
    gw = start_gateway()
    upstream.enqueue(
        tool_call_script("call_1", "mock_city_weather", ['{"city":"Paris",', '"date":"2026-11-25"}'],
                         text=["Let me check. "]),
        text_script(["Sunny ", "enough."], reasoning=["secret ", "thoughts"]),
    )
    first = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "weather", "message": "Paris weather?"})
    chat_id = first[0]["chatId"]
    run_id = first[2]["runId"]

    response = await client.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id})
    assert response.status_code == 200
    history = response.json()["data"]
    assert history["chatId"] == chat_id and "rawMessages" not in history
    assert types(history["events"]) == [
        "request.query", "chat.start", "run.start",
        "content.snapshot", "tool.snapshot", "tool.result",
        "reasoning.snapshot", "content.snapshot",
        "run.complete",
    ]
    assert [e["seq"] for e in history["events"]] == list(range(1, 10))
    snap = {e["type"] + str(i): e for i, e in enumerate(history["events"])}
    tool_snapshot = snap["tool.snapshot4"]
    assert tool_snapshot["toolId"] == "call_1" and tool_snapshot["toolName"] == "mock_city_weather"
    assert orjson.loads(tool_snapshot["arguments"]) == {"city": "Paris", "date": "2026-11-25"}
    assert snap["reasoning.snapshot6"]["text"] == "secret thoughts"
    assert snap["content.snapshot7"]["text"] == "Sunny enough."
    assert snap["content.snapshot7"]["contentId"] == f"{run_id}_c_2"
    live_result = next(e for e in first if e["type"] == "tool.result")["result"]
    assert snap["tool.result5"]["result"] == live_result

    raw = (await client.get(f"{gw.url}/api/ap/chat",
                            params={"chatId": chat_id, "includeRawMessages": "true"})).json()["data"]
    assert all(m["runId"] == run_id for m in raw["rawMessages"])
    assert any("reasoning_content" in m for m in raw["rawMessages"])

    # a second query on the same chat replays the prior run to the model, without reasoning
    upstream.enqueue(text_script(["Again sunny."]))
    second = await collect(client, f"{gw.url}/api/ap/query", {"chatId": chat_id, "message": "And tomorrow?"})
    assert second[-1]["type"] == "run.complete"
    assert "chat.start" not in types(second)
    sent = upstream.requests[2].body["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "assistant", "user"]
    assert sent[1]["content"] == "Paris weather?"
    assert sent[2]["content"] == "Let me check. " and sent[2]["tool_calls"][0]["id"] == "call_1"
    assert sent[3]["tool_call_id"] == "call_1"
    assert sent[4]["content"] == "Sunny enough."
    assert "secret" not in orjson.dumps(sent).decode()
    assert all("reasoning_content" not in m for m in sent)

    chats = (await client.get(f"{gw.url}/api/ap/chats")).json()["data"]
    assert chats[0]["chatId"] == chat_id and chats[0]["firstAgentKey"] == "weather"
    assert chats[0]["chatName"] == "Paris weather?"
    assert chats[0]["updatedAt"] >= chats[0]["createdAt"]


async def test_replay_window_is_k_runs(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway(overrides={"memory": {"chat": {"k": 2}}})
    chat_id = None
    for n in range(4):
        upstream.enqueue(text_script([f"answer {n}"]))
        body = {"message": f"question {n}", **({"chatId": chat_id} if chat_id else {"agentKey": "plain"})}
        events = await collect(client, f"{gw.url}/api/ap/query", body)
        chat_id = events[0]["chatId"]
    last = upstream.requests[3].body["messages"]
    assert [m["content"] for m in last[1:]] == ["question 1", "answer 1", "question 2", "answer 2", "question 3"]


async def test_chat_endpoint_errors(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    gw = start_gateway()
    missing = await client.get(f"{gw.url}/api/ap/chat", params={"chatId": "chat_doesnotexist"})
    assert missing.status_code == 404 and missing.json()["code"] > 0
    retired = await client.get(f"{gw.url}/api/ap/chat", params={"chatId": "x", "includeEvents": "true"})
    assert retired.status_code == 400 and "includeEvents" in retired.json()["msg"]
    no_id = await client.get(f"{gw.url}/api/ap/chat")
    assert no_id.status_code == 400 and no_id.json()["code"] > 0
    for hostile in ("../etc/passwd", "/etc/passwd", "..%2f..%2fx", "a/b", "x\x00y", "a" * 300):
        response = await client.get(f"{gw.url}/api/ap/chat", params={"chatId": hostile})
        assert response.status_code == 400, hostile
        assert response.json()["code"] > 0


async def _gateway_with_one_chat(deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer],
                                 client: httpx.AsyncClient) -> tuple[GatewayServer, list[dict[str, Any]]]:
    """A gateway whose agent ``plain`` has answered one query; the gateway and that run's events."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue(text_script(["fine"]))
    return gw, await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "plain", "message": "hi"})


async def test_a_chat_file_with_out_of_range_times_neither_breaks_the_list_nor_its_history(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    gw, events = await _gateway_with_one_chat(deploy, upstream, start_gateway, client)
    good = events[0]["chatId"]
    # a chat file whose times no clock wrote: JSON numbers past 64 bits once they are ints
    odd = {"_type": "query", "chatId": "chat_odd", "runId": "r1", "updatedAt": 1e300, "owner": "anonymous",
           "query": {"agentKey": "plain", "message": "odd"}}
    step = {"_type": "step", "chatId": "chat_odd", "runId": "r1", "_stage": "oneshot", "_seq": 1, "updatedAt": 1e300,
            "messages": [{"role": "assistant", "content": [{"type": "text", "text": "x"}], "_msgId": "m1",
                          "_timing": {"startedAt": -1e300, "endedAt": 1e300}}]}
    done = {"_type": "run", "chatId": "chat_odd", "runId": "r1", "status": "complete", "updatedAt": 1e300}
    (deploy / "chats" / "chat_odd.json").write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in (odd, step, done)))

    listed = await client.get(f"{gw.url}/api/ap/chats")
    assert listed.status_code == 200, listed.text
    assert {chat["chatId"] for chat in listed.json()["data"]} == {good, "chat_odd"}
    odd_chat = await client.get(f"{gw.url}/api/ap/chat", params={"chatId": "chat_odd"})
    assert odd_chat.status_code == 200, odd_chat.text
    events = odd_chat.json()["data"]["events"]
    assert [e["type"] for e in events][-2:] == ["content.snapshot", "run.complete"]
    assert all("durationMs" not in e for e in events)  # no time to measure from


async def test_a_directory_or_fifo_in_place_of_a_chat_file_is_refused_at_once_by_every_chat_endpoint(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """Reading a directory there answered 500; a FIFO held the request and a worker thread for good."""
    gw, events = await _gateway_with_one_chat(deploy, upstream, start_gateway, client)
    good = events[0]["chatId"]
    (deploy / "chats" / "chat_dir.json").mkdir()
    fifo = deploy / "chats" / "chat_fifo.json"
    os.mkfifo(fifo)
    try:
        for chat_id in ("chat_dir", "chat_fifo"):
            for response in (
                await client.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id}),
                await client.post(f"{gw.url}/api/ap/chat/fork", json={"chatId": chat_id, "runId": "r1"}),
                await client.post(f"{gw.url}/api/ap/query", json={"chatId": chat_id, "message": "hi"}),
            ):
                assert response.status_code == 400, (chat_id, response.text)
                assert "not a regular file" in response.json()["msg"]
        listed = await client.get(f"{gw.url}/api/ap/chats")
        assert [chat["chatId"] for chat in listed.json()["data"]] == [good]
    finally:  # a gateway still waiting to open the FIFO for reading: a writer ends that wait
        with contextlib.suppress(OSError):  # ENXIO: no reader waits
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))


async def test_a_chat_history_is_rebuilt_off_the_event_loop(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The lines were read on a worker thread but rebuilt into events on the event loop: a chat of
    20,000 runs held every stream of the gateway for 1.5 s per GET. The rebuild's own log line says
    on which thread it ran (not a timing)."""
    gw, events = await _gateway_with_one_chat(deploy, upstream, start_gateway, client)
    chat_id, run_id = events[0]["chatId"], next(e["runId"] for e in events if e["type"] == "run.start")
    with (deploy / "chats" / f"{chat_id}.json").open("ab") as fp:  # the rebuild logs the kind of line it skips
        fp.write(orjson.dumps({"_type": "note", "chatId": chat_id, "runId": run_id}) + b"\n")
    with caplog.at_level(logging.DEBUG, logger="app.memory.history"):
        response = await client.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id})
    assert response.status_code == 200, response.text
    [skipped] = [r for r in caplog.records if "unknown _type 'note'" in r.getMessage()]
    loop_thread = gw._thread.ident  # uvicorn's event loop runs on the server's thread
    assert skipped.thread != loop_thread, skipped.threadName
