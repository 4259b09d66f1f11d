"""Scheduled runs on several instances (SPEC §11, §16), at unit speed: a real redis-server and
in-process gateways (``GatewayServer``, real HTTP on loopback) on one deployment folder. A firing is
driven through the instance's own APScheduler; its end is observed with APScheduler's own
``EVENT_JOB_EXECUTED``, never with clocks."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent

from app.devtools import FakeUpstream
from tests.cluster.support import HANG, RedisServer
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.responders import echo_or_fail
from tests.support.server import GatewayServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(responder=echo_or_fail) as fake:
        yield fake


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Path:
    root = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(root, "plain", agent("ONESHOT"))
    return root


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield http


def instance(deploy: Path, redis: RedisServer, name: str, **scheduler: Any) -> GatewayServer:
    """One instance of a cluster on ``redis`` (not started)."""
    return GatewayServer(deploy, overrides={
        "agent": {"cluster": {"redis-url": redis.url, "lease-seconds": 2, "instance-name": name}},
        "scheduler": scheduler})


def run_on_loop(gw: GatewayServer, fn: Any, *args: Any) -> Any:
    """Call ``fn(*args)`` in the gateway's event loop (where its scheduler lives) and return its result."""
    loop = gw.gateway.scheduler._scheduler._eventloop
    return asyncio.run_coroutine_threadsafe(_call(fn, *args), loop).result(HANG)


async def _call(fn: Any, *args: Any) -> Any:
    return fn(*args)


def fire_at(gw: GatewayServer, job_id: str, scheduled: dt.datetime) -> None:
    """Make the instance's APScheduler fire ``job_id`` for ``scheduled`` (a past run time: a late firing)
    and wait until that firing ended."""
    done = threading.Event()
    scheduler = gw.gateway.scheduler._scheduler

    def executed(event: JobExecutionEvent) -> None:
        if event.job_id == job_id and event.scheduled_run_time == scheduled:
            done.set()

    run_on_loop(gw, scheduler.add_listener, executed, EVENT_JOB_EXECUTED)
    run_on_loop(gw, lambda: scheduler.modify_job(job_id, next_run_time=scheduled))
    assert done.wait(HANG), f"the firing of {job_id} at {scheduled} never ended"
    run_on_loop(gw, scheduler.remove_listener, executed)


async def test_a_cron_job_fired_late_on_one_instance_runs_once(
    deploy: Path, redis_server: RedisServer, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    """One instance fired the 09:00 run; another, its loop stalled, fires the same 09:00 run a minute
    later: the claim is named after the scheduled time (it was named after the current minute)."""
    job_id = f"daily-{uuid.uuid4().hex[:6]}"
    scheduled = (dt.datetime.now(dt.UTC) - dt.timedelta(minutes=2)).replace(second=0, microsecond=0)
    expr = f"{scheduled.minute} {scheduled.hour} * * *"
    with instance(deploy, redis_server, "late") as gw:
        created = await client.post(f"{gw.url}/api/ap/schedules", json={
            "jobId": job_id, "agentKey": "plain", "message": "daily report", "trigger": {"type": "cron", "expr": expr}})
        assert created.status_code == 200, created.text
        created_at = created.json()["data"]["createdAt"]
        # another instance claimed and ran the scheduled firing on time
        with redis_server.client() as redis_client:
            assert redis_client.set(f"agw:sched:fire:{job_id}:{created_at}:{scheduled:%Y-%m-%dT%H:%M}", "other",
                                    nx=True, ex=60)
        await asyncio.to_thread(fire_at, gw, job_id, scheduled)
        job = next(j for j in (await client.get(f"{gw.url}/api/ap/schedules")).json()["data"] if j["jobId"] == job_id)
        assert job["runs"] == 0 and job["lastStatus"] is None, job
        assert not [r for r in upstream.requests if "daily report" in str(r.body)]
