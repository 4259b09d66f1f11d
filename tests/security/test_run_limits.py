"""Caps on live runs (SPEC §19 ``agent.limits.concurrent-runs`` / ``.user.concurrent-runs``), over real HTTP.

The attack: open many queries whose runs park on a frontend-tool wait (each wait lasts
minutes) until the gateway has no room for anyone else's query. A parked run holds its
slot until it ends; beyond a cap a new query is refused with 429, the JSON envelope and
``Retry-After`` before any stream starts, while ``POST /api/ap/submit`` (which answers an
existing run) is never capped. Every ending — completion, error, cancel, client
disconnect — gives the slot back. Ordering is proven with events, never with clocks.
"""

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
from app.devtools.script import http_error_script, text_script
from tests.engine.helpers import call
from tests.security.support import ISSUER, KeyPair, bearer, mint
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sidecar import SidecarProcess

Start = Callable[..., GatewayServer]

FRONTEND = {"backends": [], "frontends": ["confirm_dialog"], "actions": []}
QUESTION = {"question": "Which city?", "options": ["Paris", "Rome"], "allowFreeText": False}
TERMINAL = ("run.complete", "run.error", "run.cancel")
#: a generous bound that only turns a hang into a failure
HANG = 60
#: how many times a poll asks before it fails (each attempt waits for a reply, not for a clock)
POLLS = 400


def _limits(*, user: int | None = None, total: int | None = None, retry: int = 7,
            pair: KeyPair | None = None) -> dict[str, Any]:
    limits: dict[str, Any] = {"retry-after-seconds": retry}
    if user is not None:
        limits["user"] = {"concurrent-runs": user}
    if total is not None:
        limits["concurrent-runs"] = total
    settings: dict[str, Any] = {"limits": limits}
    if pair is not None:
        settings["auth"] = {"enabled": True, "local-public-key": pair.public_pem, "issuer": ISSUER}
    return {"agent": settings}


class Query:
    """One ``POST /api/ap/query`` streamed by a background task.

    ``answered`` is set when the response headers arrived (``status``); for a 200 the events
    are collected as they come, ``parked`` is set on the frontend tool's ``tool.start`` and
    ``ended`` on the terminal event. Cancelling the task closes the connection (a disconnect).
    """

    def __init__(self, client: httpx.AsyncClient, gw: GatewayServer, body: dict[str, Any],
                 headers: dict[str, str] | None = None) -> None:
        self.status = 0
        self.headers: httpx.Headers = httpx.Headers()
        self.refusal: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.answered = asyncio.Event()
        self.parked = asyncio.Event()
        self.ended = asyncio.Event()
        self.task = asyncio.create_task(self._run(client, f"{gw.url}/api/ap/query", body, headers or {}))

    async def _run(self, client: httpx.AsyncClient, url: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        async with aconnect_sse(client, "POST", url, json=body, headers=headers) as source:
            response = source.response
            self.status, self.headers = response.status_code, response.headers
            if response.status_code != 200:
                self.refusal = orjson.loads(await response.aread())
                self.answered.set()
                return
            self.answered.set()
            async for sse in source.aiter_sse():
                if not sse.data:
                    continue  # a heartbeat comment
                event = orjson.loads(sse.data)
                self.events.append(event)
                if event["type"] == "tool.start" and event.get("toolType"):
                    self.parked.set()
                if event["type"] in TERMINAL:
                    self.ended.set()
                    return

    @property
    def tool_start(self) -> dict[str, Any]:
        return next(e for e in self.events if e["type"] == "tool.start")

    async def wait(self, event: asyncio.Event) -> None:
        waiter = asyncio.create_task(event.wait())
        done, _ = await asyncio.wait({waiter, self.task}, timeout=HANG, return_when=asyncio.FIRST_COMPLETED)
        if waiter not in done:
            waiter.cancel()
            failure = self.task.exception() if self.task in done else None
            if failure is not None:
                raise failure
            raise AssertionError(f"the query did not get there: status={self.status} events={self.events}")

    async def close(self) -> None:
        """Drop the connection (a client disconnect) and wait until the task is gone."""
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class Queries:
    """Queries of one test against one gateway; ``opened`` is closed by the ``opened`` fixture."""

    def __init__(self, client: httpx.AsyncClient, gw: GatewayServer, upstream: FakeUpstream,
                 opened: list[Query]) -> None:
        self.client, self.gw, self.upstream, self._opened = client, gw, upstream, opened

    def open(self, body: dict[str, Any], headers: dict[str, str] | None = None) -> Query:
        query = Query(self.client, self.gw, body, headers)
        self._opened.append(query)
        return query

    async def park(self, headers: dict[str, str] | None = None) -> Query:
        """A query whose run is parked on the ``confirm_dialog`` frontend tool (it waits minutes)."""
        self.upstream.enqueue(call("c1", "confirm_dialog", QUESTION))
        query = self.open({"agentKey": "asker", "message": "pick"}, headers)
        await query.wait(query.parked)
        assert query.status == 200
        return query

    async def refused(self, headers: dict[str, str] | None = None, body: dict[str, Any] | None = None) -> Query:
        query = self.open(body or {"agentKey": "asker", "message": "one more"}, headers)
        await query.wait(query.answered)
        await query.task
        return query

    async def completes(self, text: str, headers: dict[str, str] | None = None) -> None:
        self.upstream.enqueue(text_script([text]))
        query = self.open({"agentKey": "asker", "message": "plain"}, headers)
        await query.wait(query.ended)
        assert query.status == 200 and query.events[-1]["type"] == "run.complete", query.events

    async def submit(self, query: Query, params: Any, headers: dict[str, str] | None = None) -> dict[str, Any]:
        start = query.tool_start
        response = await self.client.post(
            f"{self.gw.url}/api/ap/submit", headers=headers or {},
            json={"runId": start["runId"], "toolId": start["toolId"], "params": params})
        assert response.status_code == 200, response.text
        data: dict[str, Any] = response.json()["data"]
        return data

    async def poll_until_admitted(self, headers: dict[str, str] | None = None) -> None:
        """Ask (non-streaming) until a query is admitted, within a bounded number of attempts."""
        self.upstream.enqueue(text_script(["admitted"]))
        for _ in range(POLLS):
            response = await self.client.post(
                f"{self.gw.url}/api/ap/query", headers=headers or {},
                json={"agentKey": "asker", "message": "again?", "stream": False})
            if response.status_code == 200:
                assert response.json()["data"]["answer"] == "admitted"
                return
            assert response.status_code == 429, response.text
            await asyncio.sleep(0.02)  # pacing only; the bound is the number of attempts
        raise AssertionError(f"the slot was never released after {POLLS} attempts")


def assert_429(query: Query, setting: str, retry: int = 7) -> None:
    assert query.status == 429, (query.status, query.events)
    assert query.headers["retry-after"] == str(retry)
    assert query.headers["content-type"].startswith("application/json")  # refused before any SSE
    assert query.refusal["code"] == 4290 and query.refusal["data"] is None
    assert setting in query.refusal["msg"], query.refusal["msg"]
    assert not query.events


@pytest.fixture
async def opened(start_gateway: Start, client: httpx.AsyncClient) -> AsyncIterator[list[Query]]:
    """Every query a test opened; the ones still streaming are dropped before the gateway stops."""
    queries: list[Query] = []
    yield queries
    for query in queries:
        await query.close()


async def test_attack_parked_streams_starve_new_queries(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient, rsa_key: KeyPair,
    opened: list[Query],
) -> None:
    write_agent(deploy, "asker", agent("ONESHOT", tools=FRONTEND))
    q = Queries(client, start_gateway(_limits(user=2, pair=rsa_key)), upstream, opened)
    alice, bob = bearer(mint(rsa_key, "alice")), bearer(mint(rsa_key, "bob"))
    first, second = await q.park(alice), await q.park(alice)

    # the third query by the same user: refused before any stream, streaming or not
    assert_429(await q.refused(alice), "agent.limits.user.concurrent-runs")
    assert_429(await q.refused(alice, {"agentKey": "asker", "message": "x", "stream": False}),
               "agent.limits.user.concurrent-runs")
    assert len(upstream.requests) == 2  # the refused queries never reached the model
    # another user is not starved by alice's parked runs
    await q.completes("bob is served", bob)

    # submit answers an existing run: never capped, even with alice at her cap
    upstream.enqueue(text_script(["You chose Rome."]))
    assert (await q.submit(first, {"selected": "Rome"}, alice))["accepted"] is True
    await first.wait(first.ended)
    assert first.events[-1]["type"] == "run.complete"
    # the answered run ended, so its slot is free: alice's next query is served at once
    await q.completes("alice again", alice)
    assert not second.ended.is_set()  # the other parked run still holds its slot...
    await q.park(alice)  # ...and the freed slot can park again
    assert_429(await q.refused(alice), "agent.limits.user.concurrent-runs")


async def test_attack_many_users_park_streams_to_starve_the_gateway(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient, rsa_key: KeyPair,
    opened: list[Query],
) -> None:
    write_agent(deploy, "asker", agent("ONESHOT", tools=FRONTEND))
    q = Queries(client, start_gateway(_limits(total=2, retry=3, pair=rsa_key)), upstream, opened)
    alice, bob, carol = (bearer(mint(rsa_key, sub)) for sub in ("alice", "bob", "carol"))
    parked_alice = await q.park(alice)
    await q.park(bob)
    assert_429(await q.refused(carol), "agent.limits.concurrent-runs", retry=3)
    # alice drops her connection: her run is cancelled and the gateway has room again
    await parked_alice.close()
    await q.poll_until_admitted(carol)


async def test_attack_disconnected_parked_streams_leak_their_slots(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient, opened: list[Query]
) -> None:
    write_agent(deploy, "asker", agent("ONESHOT", tools=FRONTEND))
    # the cap from the environment variable, as an operator would set it
    q = Queries(client, start_gateway(env={"AGENT_LIMITS_USER_CONCURRENT_RUNS": "1"}), upstream, opened)
    for _ in range(3):  # without the release the second round would already be refused
        parked = await q.park()
        assert_429(await q.refused(), "agent.limits.user.concurrent-runs", retry=5)
        await parked.close()
        await q.poll_until_admitted()


async def test_attack_failing_runs_leak_their_slots(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient, opened: list[Query]
) -> None:
    write_agent(deploy, "asker", agent("ONESHOT", tools=FRONTEND))
    q = Queries(client, start_gateway(_limits(user=1)), upstream, opened)
    for k in range(3):
        upstream.enqueue(http_error_script(500, f"boom {k}"))
        query = q.open({"agentKey": "asker", "message": "fail"})
        await query.wait(query.ended)
        assert query.status == 200 and query.events[-1]["type"] == "run.error"
    await q.completes("still served")


async def test_attack_burst_of_simultaneous_queries_overshoots_the_cap(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient, opened: list[Query]
) -> None:
    """Queries on existing chats await a file read before admission: a check-then-await-then-count
    cap would let the whole burst in."""
    write_agent(deploy, "asker", agent("ONESHOT", tools=FRONTEND))
    q = Queries(client, start_gateway(_limits(user=2)), upstream, opened)
    chats = []
    for k in range(6):
        upstream.enqueue(text_script([f"chat {k}"]))
        query = q.open({"agentKey": "asker", "message": f"chat {k}"})
        await query.wait(query.ended)
        chats.append(query.events[0]["chatId"])
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), call("c1", "confirm_dialog", QUESTION))
    burst = [q.open({"chatId": chat_id, "message": "pick"}) for chat_id in chats]
    for query in burst:
        await query.wait(query.answered)
    assert sorted(query.status for query in burst) == [200, 200, 429, 429, 429, 429]
    for query in burst:
        if query.status == 200:
            await query.wait(query.parked)
        else:
            await query.task
            assert_429(query, "agent.limits.user.concurrent-runs")


async def test_attack_parked_sidecar_queries_starve_new_ones(
    upstream: FakeUpstream, deploy: Path, tmp_path: Path
) -> None:
    write_agent(deploy, "asker", agent("ONESHOT", tools=FRONTEND))
    sidecar = await SidecarProcess(deploy, tmp_path / "sidecar.stderr",
                                   env={"AGENT_LIMITS_USER_CONCURRENT_RUNS": "1"}).start()
    try:
        upstream.enqueue(call("c1", "confirm_dialog", QUESTION))
        parked_reply = await sidecar.send("agent.query", {"agentKey": "asker", "message": "pick", "requestId": "p"})
        event = await sidecar.next_event("p")
        while event["type"] != "tool.start":
            event = await sidecar.next_event("p")
        refusal = await sidecar.call("agent.query", {"agentKey": "asker", "message": "more", "requestId": "q"})
        assert refusal["error"]["code"] == -32000
        assert "agent.limits.user.concurrent-runs" in refusal["error"]["message"]
        assert refusal["error"]["data"] == {"code": 4290, "status": 429}
        # agent.cancel ends the parked run; its slot is free the moment cancel answers
        assert await sidecar.result("agent.cancel", {"runId": event["runId"]}) == {"cancelled": True}
        assert (await asyncio.wait_for(parked_reply, timeout=HANG))["result"]["status"] == "cancel"
        upstream.enqueue(text_script(["served"]))
        served = await sidecar.result("agent.query", {"agentKey": "asker", "message": "now", "stream": False})
        assert served["status"] == "complete" and served["answer"] == "served"
    finally:
        await sidecar.stop()
