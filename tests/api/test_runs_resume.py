"""Runs outlive connections (SPEC §15) over real HTTP with a real SSE client: ``onDisconnect``,
resuming with ``after`` and ``Last-Event-ID``, several watchers, ``GET /api/ap/run(s)``,
``POST /api/ap/interrupt``, a frontend-tool wait answered by a new client, retention."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse

from app.devtools import FakeUpstream
from app.devtools.script import Finish, Gate, Step, Text, Usage, text_script
from tests.engine.helpers import call
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import stream_events

ASK = {"backends": [], "frontends": ["confirm_dialog"], "actions": []}
ANSWER = ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "gateway."]


def gated_answer(gate: str, before: int = 3) -> list[Step]:
    """The answer's first ``before`` deltas, then a gate, then the rest."""
    steps: list[Step] = [Text(d) for d in ANSWER[:before]]
    steps.append(Gate(gate))
    steps += [Text(d) for d in ANSWER[before:]]
    return steps + [Usage(10, 8), Finish("stop")]


async def watch(client: httpx.AsyncClient, url: str, params: dict[str, Any],
                headers: dict[str, str] | None = None) -> AsyncIterator[dict[str, Any]]:
    """GET an SSE stream and yield each event's JSON (checks ``id`` = ``seq``)."""
    async with aconnect_sse(client, "GET", url, params=params, headers=dict(headers or {})) as source:
        assert source.response.status_code == 200, await source.response.aread()
        async for sse in source.aiter_sse():
            if not sse.data:
                continue
            data = orjson.loads(sse.data)
            assert sse.id == str(data["seq"])
            yield data


async def watch_all(client: httpx.AsyncClient, url: str, params: dict[str, Any],
                    headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    return [event async for event in watch(client, url, params, headers)]


async def first_events(client: httpx.AsyncClient, url: str, body: dict[str, Any],
                       until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """POST a query, read until ``until(event)``, then drop the connection."""
    seen: list[dict[str, Any]] = []
    async for event in stream_events(client, url, body):
        seen.append(event)
        if until(event):
            break
    return seen


def answer_text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "content.delta")


def assert_contiguous(events: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def wait_status(client: httpx.AsyncClient, gw: GatewayServer, run_id: str, wanted: set[str]) -> dict[str, Any]:
    for _ in range(400):  # bounded poll, no timing assertion
        reply = (await client.get(f"{gw.url}/api/ap/run", params={"runId": run_id})).json()
        if reply["code"] == 0 and reply["data"]["status"] in wanted:
            return dict(reply["data"])
        await asyncio.sleep(0.025)
    raise AssertionError(f"run {run_id} never reached {wanted}: {reply}")


@pytest.fixture
def gw(deploy: Path, start_gateway: Callable[..., GatewayServer]) -> GatewayServer:
    write_agent(deploy, "plain", agent("ONESHOT"))
    write_agent(deploy, "asker", agent("REACT", tools=ASK))
    return start_gateway()


@pytest.mark.parametrize("how", ["after", "last_event_id"])
async def test_continue_run_survives_a_disconnect_and_resumes_exactly_once(
    gw: GatewayServer, upstream: FakeUpstream, client: httpx.AsyncClient, how: str
) -> None:
    upstream.enqueue(gated_answer("g1"))
    body = {"agentKey": "plain", "message": "tell me", "onDisconnect": "continue"}
    first = await first_events(client, f"{gw.url}/api/ap/query", body,
                               until=lambda e: e["type"] == "content.delta" and e["delta"] == ANSWER[2])
    run_id, last = first[0]["requestId"], first[-1]["seq"]
    # the client is gone; the run goes on (it would have been cancelled in the default mode)
    assert (await client.get(f"{gw.url}/api/ap/run", params={"runId": run_id})).json()["data"]["status"] == "running"
    upstream.release("g1")
    if how == "after":
        rest = await watch_all(client, f"{gw.url}/api/ap/run/stream", {"runId": run_id, "after": last})
    else:
        rest = await watch_all(client, f"{gw.url}/api/ap/run/stream", {"runId": run_id},
                               headers={"Last-Event-ID": str(last)})
    combined = first + rest
    assert_contiguous(combined)
    assert answer_text(combined) == "".join(ANSWER)  # every delta exactly once, in order
    assert [e["type"] for e in combined].count("run.complete") == 1 and combined[-1]["type"] == "run.complete"
    # replay after the end equals what the clients saw live, event for event
    replay = await watch_all(client, f"{gw.url}/api/ap/run/stream", {"runId": run_id})
    assert replay == combined
    status = (await client.get(f"{gw.url}/api/ap/run", params={"runId": run_id})).json()["data"]
    assert status["status"] == "completed" and status["lastSeq"] == combined[-1]["seq"]
    assert status["endedAt"] >= status["startedAt"] and status["pendingTools"] == []


async def test_two_watchers_see_identical_streams(
    gw: GatewayServer, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(gated_answer("g2"))
    body = {"agentKey": "plain", "message": "go", "onDisconnect": "continue"}
    first = await first_events(client, f"{gw.url}/api/ap/query", body, until=lambda e: e["type"] == "run.start")
    run_id = first[0]["requestId"]
    url = f"{gw.url}/api/ap/run/stream"
    streams = [watch(client, url, {"runId": run_id}), watch(client, url, {"runId": run_id}),
               watch(client, f"{gw.url}/api/ap/chat/stream", {"chatId": first[0]["chatId"]})]
    # each watcher is connected (it got its first replayed event) before the run may go on
    heads = [[await stream.__anext__()] for stream in streams]
    upstream.release("g2")

    async def rest(head: list[dict[str, Any]], stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
        return head + [event async for event in stream]

    watchers = [asyncio.create_task(rest(head, stream)) for head, stream in zip(heads, streams, strict=True)]
    one, two, by_chat = await asyncio.gather(*watchers)
    assert one == two == by_chat
    assert_contiguous(one)
    assert one[: len(first)] == first and answer_text(one) == "".join(ANSWER)


async def test_default_cancel_mode_still_cancels_on_disconnect(
    gw: GatewayServer, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(gated_answer("g3"))
    first = await first_events(client, f"{gw.url}/api/ap/query", {"agentKey": "plain", "message": "go"},
                               until=lambda e: e["type"] == "content.delta")
    status = await wait_status(client, gw, first[0]["requestId"], {"cancelled"})
    replay = await watch_all(client, f"{gw.url}/api/ap/run/stream", {"runId": first[0]["requestId"]})
    assert replay[-1]["type"] == "run.cancel" and status["lastSeq"] == replay[-1]["seq"]


async def test_frontend_tool_wait_survives_the_client_and_a_new_client_answers(
    gw: GatewayServer, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(call("c1", "confirm_dialog", {"question": "Proceed?", "options": ["yes", "no"]}),
                     text_script(["Done: yes."]))
    body = {"agentKey": "asker", "message": "ask me", "onDisconnect": "continue"}
    first = await first_events(client, f"{gw.url}/api/ap/query", body, until=lambda e: e["type"] == "tool.end")
    run_id = first[0]["requestId"]
    status = await wait_status(client, gw, run_id, {"waiting"})
    [pending] = status["pendingTools"]
    tool_start = next(e for e in first if e["type"] == "tool.start")
    assert pending["toolId"] == tool_start["toolId"] and pending["toolName"] == "confirm_dialog"
    assert pending["toolType"] == "html" and pending["toolKey"] == "confirm_dialog" and pending["expiresAt"] > 0
    listed = (await client.get(f"{gw.url}/api/ap/runs", params={"status": "waiting"})).json()["data"]
    assert [r["runId"] for r in listed] == [run_id]
    # a new client attaches, then answers
    attached = asyncio.create_task(watch_all(client, f"{gw.url}/api/ap/run/stream",
                                             {"runId": run_id, "after": first[-1]["seq"]}))
    answer = await client.post(f"{gw.url}/api/ap/submit",
                               json={"runId": run_id, "toolId": pending["toolId"], "params": {"choice": "yes"}})
    assert answer.json()["data"]["accepted"] is True
    rest = await attached
    assert_contiguous(first + rest)
    assert rest[-1]["type"] == "run.complete" and answer_text(rest) == "Done: yes."
    assert any(e["type"] == "tool.result" and e["result"] == {"choice": "yes"} for e in rest)


async def test_interrupt_reaches_every_watcher(
    gw: GatewayServer, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(gated_answer("never"))
    body = {"agentKey": "plain", "message": "go", "onDisconnect": "continue"}
    first = await first_events(client, f"{gw.url}/api/ap/query", body, until=lambda e: e["type"] == "content.delta")
    run_id = first[0]["requestId"]
    watchers = [asyncio.create_task(watch_all(client, f"{gw.url}/api/ap/run/stream", {"runId": run_id}))
                for _ in range(2)]
    reply = await client.post(f"{gw.url}/api/ap/interrupt", json={"runId": run_id})
    assert reply.json() == {"code": 0, "msg": "success", "data": {"cancelled": True}}
    for events in await asyncio.gather(*watchers):
        assert events[-1]["type"] == "run.cancel"
        assert_contiguous(events)
    again = await client.post(f"{gw.url}/api/ap/interrupt", json={"runId": run_id})
    assert again.json()["data"] == {"cancelled": False}
    assert (await client.get(f"{gw.url}/api/ap/run", params={"runId": run_id})).json()["data"]["status"] == "cancelled"


async def test_runs_list_filters_by_chat_and_status(
    gw: GatewayServer, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    upstream.enqueue(text_script(["one"]), text_script(["two"]))
    a = await watch_all_query(client, gw, {"agentKey": "plain", "message": "a"})
    b = await watch_all_query(client, gw, {"agentKey": "plain", "message": "b"})
    everything = (await client.get(f"{gw.url}/api/ap/runs")).json()["data"]
    assert [r["runId"] for r in everything] == [b[0]["requestId"], a[0]["requestId"]]  # newest first
    only_a = (await client.get(f"{gw.url}/api/ap/runs", params={"chatId": a[0]["chatId"]})).json()["data"]
    assert [r["runId"] for r in only_a] == [a[0]["requestId"]] and only_a[0]["status"] == "completed"
    assert (await client.get(f"{gw.url}/api/ap/runs", params={"status": "running"})).json()["data"] == []


async def watch_all_query(client: httpx.AsyncClient, gw: GatewayServer, body: dict[str, Any]) -> list[dict[str, Any]]:
    return [event async for event in stream_events(client, f"{gw.url}/api/ap/query", body)]


# -- bad and hostile input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "params", "headers", "status", "message"), [
    ("/api/ap/run/stream", {"runId": "run_nope"}, None, 404, "unknown or expired run"),
    ("/api/ap/run/stream", {}, None, 400, "runId"),
    ("/api/ap/run/stream", {"runId": "../etc"}, None, 400, "invalid runId"),
    ("/api/ap/run/stream", {"runId": "run_x", "after": "-1"}, None, 400, "after must be a non-negative"),
    ("/api/ap/run/stream", {"runId": "run_x", "after": "1e9"}, None, 400, "after must be a non-negative"),
    ("/api/ap/run/stream", {"runId": "run_x"}, {"Last-Event-ID": "abc"}, 400, "Last-Event-ID must be"),
    ("/api/ap/run/stream", {"runId": "run_x", "after": "9" * 30}, None, 400, "after"),
    ("/api/ap/run/stream", {"runId": "run_x", "after": "\u00b2"}, None, 400, "after must be a non-negative"),
    ("/api/ap/chat/stream", {"chatId": "chat_none", "after": "\u2460"}, None, 400, "after must be a non-negative"),
    ("/api/ap/chat/stream", {"chatId": "chat_none"}, None, 404, "has no active run"),
    ("/api/ap/run", {"runId": "run_nope"}, None, 404, "unknown or expired run"),
    ("/api/ap/runs", {"status": "sleeping"}, None, 400, "status must be one of"),
    ("/api/ap/runs", {"chatId": "a/b"}, None, 400, "invalid chatId"),
], ids=["unknown", "missing_id", "path_trick", "negative_after", "float_after", "bad_last_event_id",
        "huge_after", "attack_superscript_digit_after", "attack_circled_digit_after", "chat_without_run", "status_unknown", "bad_status", "bad_chat"])
async def test_watch_endpoints_refuse_bad_input_with_an_envelope(
    gw: GatewayServer, client: httpx.AsyncClient, path: str, params: dict[str, str],
    headers: dict[str, str] | None, status: int, message: str
) -> None:
    reply = await client.get(f"{gw.url}{path}", params=params, headers=headers)
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert body["code"] > 0 and message in body["msg"] and body["data"] is None


@pytest.mark.parametrize("body", [{}, {"runId": ""}, {"runId": 5}, {"runId": "x" * 500}, [], "run"],
                         ids=["missing", "empty", "number", "oversize", "array", "string"])
async def test_interrupt_refuses_malformed_bodies(gw: GatewayServer, client: httpx.AsyncClient, body: Any) -> None:
    reply = await client.post(f"{gw.url}/api/ap/interrupt", json=body)
    assert reply.status_code == 400 and reply.json()["code"] > 0


async def test_interrupt_of_an_unknown_run_is_404(gw: GatewayServer, client: httpx.AsyncClient) -> None:
    reply = await client.post(f"{gw.url}/api/ap/interrupt", json={"runId": "run_nope"})
    assert reply.status_code == 404 and "unknown or expired run" in reply.json()["msg"]


async def test_retained_runs_expire(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway(overrides={"agent": {"runs": {"retention-seconds": 0.2}}})
    upstream.enqueue(text_script(["short-lived"]))
    events = await watch_all_query(client, gw, {"agentKey": "plain", "message": "go"})
    run_id = events[0]["requestId"]
    for _ in range(400):  # bounded poll: retained first, then gone
        reply = await client.get(f"{gw.url}/api/ap/run/stream", params={"runId": run_id})
        if reply.status_code == 404:
            break
        await asyncio.sleep(0.025)
    assert reply.status_code == 404 and "expired" in reply.json()["msg"]


async def test_on_disconnect_must_be_cancel_or_continue(gw: GatewayServer, client: httpx.AsyncClient) -> None:
    reply = await client.post(f"{gw.url}/api/ap/query",
                              json={"agentKey": "plain", "message": "x", "onDisconnect": "detach"})
    assert reply.status_code == 400 and "onDisconnect" in reply.json()["msg"]
