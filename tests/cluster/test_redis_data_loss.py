"""Redis restarting without its data while runs are live, and an instance declared lost while it was away
(fencing) (SPEC §16), at unit speed: a real redis-server
(``FLUSHALL`` is what a restart without persistence leaves) and two in-process instances
(``GatewayServer``, real HTTP on loopback) on one deployment folder. The instance notices at its next
heartbeat; the test waits for exactly that (its heartbeat key back, its outbox written), never for a time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import Finish, Gate, Text, Usage
from tests.cluster.support import HANG, RedisServer, ScriptBook, chat_lines, sse
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.server import GatewayServer

NOBODY: dict[str, str] = {}  # auth is off: every request is the anonymous user's


@pytest.fixture(scope="module")
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """This module's own redis-server: it is flushed, so it is nobody else's."""
    server = RedisServer(tmp_path_factory.mktemp("redis-loss")).start()
    yield server
    server.stop()


@pytest.fixture
def book() -> ScriptBook:
    return ScriptBook()


@pytest.fixture
def upstream(book: ScriptBook) -> Iterator[FakeUpstream]:
    with FakeUpstream(responder=book) as fake:
        yield fake


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Path:
    root = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(root, "plain", agent("ONESHOT"))
    return root


def instance(deploy: Path, redis: RedisServer, name: str) -> GatewayServer:
    return GatewayServer(deploy, overrides={
        "agent": {"cluster": {"redis-url": redis.url, "lease-seconds": 2, "instance-name": name}},
        "scheduler": {"enabled": False}})


async def on_loop(gw: GatewayServer, coro: Any) -> Any:
    """Await ``coro`` in the gateway's own event loop."""
    loop = gw.gateway.cluster._tasks[0].get_loop()
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


async def noticed_the_loss(gw: GatewayServer, redis: RedisServer) -> None:
    """Until the instance beat again after the flush (that beat finds its key gone) and wrote what it queued."""
    node = gw.gateway.cluster
    deadline = time.monotonic() + HANG
    with redis.client() as probe:
        while not probe.exists(f"agw:inst:{node.instance_id}"):
            assert time.monotonic() < deadline, "the instance never beat again"
            await asyncio.sleep(0.02)
    await on_loop(gw, node.outbox.join())


async def test_live_runs_survive_redis_losing_its_data(
    deploy: Path, own_redis: RedisServer, upstream: FakeUpstream, book: ScriptBook, client: httpx.AsyncClient
) -> None:
    with instance(deploy, own_redis, "a") as a, instance(deploy, own_redis, "b") as b:
        started, query = await held_events(client, a, book, "loss-gate")
        run_id = started[0].get("runId") or started[0]["requestId"]
        assert (await client.get(f"{b.url}/api/ap/run", params={"runId": run_id})).status_code == 200

        # a watcher on b, then Redis loses everything
        watcher = sse(client, "GET", f"{b.url}/api/ap/run/stream", NOBODY, params={"runId": run_id})
        watched = [await watcher.__anext__()]
        while watched[-1]["seq"] < started[-1]["seq"]:
            watched.append(await watcher.__anext__())
        with own_redis.client() as redis_client:
            redis_client.flushall()
        await noticed_the_loss(a, own_redis)

        # b finds the run again, and a new watcher there replays it from its start
        seen = await client.get(f"{b.url}/api/ap/run", params={"runId": run_id})
        assert seen.status_code == 200 and seen.json()["data"]["status"] == "running", seen.text
        replay = sse(client, "GET", f"{b.url}/api/ap/run/stream", NOBODY, params={"runId": run_id})
        replayed = [await replay.__anext__() for _ in started]
        assert [e["seq"] for e in replayed] == [e["seq"] for e in started]
        await replay.aclose()

        upstream.release("loss-gate")
        with contextlib.suppress(StopAsyncIteration):
            while True:
                started.append(await query.__anext__())
        assert started[-1]["type"] == "run.complete"
        watched += [event async for event in watcher]  # the watcher from before the loss saw it all
        assert [e["seq"] for e in watched] == list(range(1, len(started) + 1)), [e["type"] for e in watched]
        assert watched[-1]["type"] == "run.complete"

        async def ended_on_b() -> dict[str, Any] | None:
            reply = await client.get(f"{b.url}/api/ap/run", params={"runId": run_id})
            assert reply.status_code == 200, reply.text  # was a 500: the ended record had lost its start
            data: dict[str, Any] = reply.json()["data"]
            return data if data["status"] == "completed" else None

        deadline = time.monotonic() + HANG
        while (await ended_on_b()) is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        listed = (await client.get(f"{b.url}/api/ap/runs")).json()["data"]
        assert run_id in [r["runId"] for r in listed]


async def held_events(client: httpx.AsyncClient, gw: GatewayServer, book: ScriptBook, name: str) -> tuple[
        list[dict[str, Any]], AsyncIterator[dict[str, Any]]]:
    """A run on ``gw`` held in the middle of its answer by the gate ``name``: its events so far and its stream."""
    tag = book.add(name, [Text("Once "), Text("upon "), Gate(name), Text("a time."), Usage(5, 5), Finish("stop")])
    stream = sse(client, "POST", f"{gw.url}/api/ap/query", NOBODY,
                 json={"agentKey": "plain", "message": f"story {tag}", "onDisconnect": "continue"})
    events = [await stream.__anext__()]
    while events[-1]["type"] != "content.delta" or events[-1]["delta"] != "upon ":
        events.append(await stream.__anext__())
    return events, stream


async def held_run(client: httpx.AsyncClient, gw: GatewayServer, book: ScriptBook, name: str) -> tuple[
        str, str, AsyncIterator[dict[str, Any]]]:
    """A run on ``gw`` held in the middle of its answer by the gate ``name``: its run id, chat id and stream."""
    events, stream = await held_events(client, gw, book, name)
    run_id = events[0].get("runId") or events[0]["requestId"]
    chat_id = next(e["chatId"] for e in events if e.get("chatId"))
    return run_id, chat_id, stream


async def ended_with(client: httpx.AsyncClient, gw: GatewayServer, run_id: str) -> str:
    deadline = time.monotonic() + HANG
    while True:
        data = (await client.get(f"{gw.url}/api/ap/run", params={"runId": run_id})).json()["data"]
        if data["status"] not in ("running", "waiting"):
            return str(data["status"])
        assert time.monotonic() < deadline, "the run never ended"
        await asyncio.sleep(0.02)


async def test_a_run_whose_chat_lease_another_instance_holds_is_cancelled(
    deploy: Path, own_redis: RedisServer, upstream: FakeUpstream, book: ScriptBook, client: httpx.AsyncClient
) -> None:
    """Fencing: the instance was away, the chat went on elsewhere (another token holds its lease): the run
    here stops at its next renewal instead of answering beside the other one."""
    with instance(deploy, own_redis, "a") as a:
        run_id, chat_id, stream = await held_run(client, a, book, "fence-lease")
        with own_redis.client() as redis_client:
            redis_client.set(f"agw:chat:{chat_id}:lease", "gw-elsewhere/token", px=60_000)
        try:
            assert await ended_with(client, a, run_id) == "cancelled"
        finally:
            upstream.release("fence-lease")
        assert [e["type"] async for e in stream][-1] == "run.cancel"


async def test_a_run_ended_as_lost_while_its_instance_was_away_is_cancelled_there(
    deploy: Path, own_redis: RedisServer, upstream: FakeUpstream, book: ScriptBook, client: httpx.AsyncClient
) -> None:
    """Fencing: another instance's reaper declared this one lost (its heartbeat expired while it was
    paused) and ended its run with instance_lost; when this instance beats again, the run stops here
    and never writes its answer into the chat after the end the reaper wrote."""
    with instance(deploy, own_redis, "a") as a, instance(deploy, own_redis, "b") as b:
        run_id, chat_id, stream = await held_run(client, a, book, "fence-reaped")
        record = await on_loop(b, b.gateway.cluster.run_record(run_id))
        await on_loop(b, b.gateway.runs._directory.lost_run(run_id, record))  # b's reaper, exactly
        with own_redis.client() as redis_client:
            redis_client.delete(f"agw:inst:{a.gateway.cluster.instance_id}")  # the heartbeat that expired
        try:
            assert await ended_with(client, a, run_id) == "cancelled"
        finally:
            upstream.release("fence-reaped")
        assert [e["type"] async for e in stream][-1] == "run.cancel"
        lines = [line for line in chat_lines(deploy, chat_id) if line.get("runId") == run_id]
        assert not [line for line in lines if line["_type"] == "run" and line.get("status") == "completed"], lines
