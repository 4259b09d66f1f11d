"""Scheduled runs on several instances (SPEC §11, §16), at unit speed: a real redis-server and
in-process gateways (``GatewayServer``, real HTTP on loopback) on one deployment folder. A firing is
driven through the instance's own APScheduler; its end is observed with APScheduler's own
``EVENT_JOB_EXECUTED``, never with clocks."""

from __future__ import annotations

import asyncio
import datetime as dt
import fcntl
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from apscheduler.events import EVENT_JOB_EXECUTED, JobExecutionEvent

from app.cluster.schedules import SharedScheduleFile, job_ref
from app.devtools import FakeUpstream
from app.scheduler.jobs import JobRecord, ScheduleFile, job_key
from tests.cluster.support import HANG, RedisServer
from tests.security.support import ISSUER, KeyPair, ec_pair, mint
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.server import GatewayServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Path:
    root = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(root, "plain", agent("ONESHOT"))
    return root


def instance(deploy: Path, redis: RedisServer, name: str, key: KeyPair | None = None,
             **scheduler: Any) -> GatewayServer:
    """One instance of a cluster on ``redis`` (not started); with ``key``, callers sign in with JWTs it signed."""
    agent: dict[str, Any] = {"cluster": {"redis-url": redis.url, "lease-seconds": 2, "instance-name": name}}
    if key is not None:
        agent["auth"] = {"enabled": True, "issuer": ISSUER, "local-public-key": key.public_pem}
    return GatewayServer(deploy, overrides={"agent": agent, "scheduler": scheduler})


def run_on_loop(gw: GatewayServer, fn: Any, *args: Any) -> Any:
    """Call ``fn(*args)`` in the gateway's event loop (where its scheduler lives) and return its result."""
    loop = gw.gateway.scheduler._scheduler._eventloop
    return asyncio.run_coroutine_threadsafe(_call(fn, *args), loop).result(HANG)


async def _call(fn: Any, *args: Any) -> Any:
    return fn(*args)


def fire_at(gw: GatewayServer, job_id: str, scheduled: dt.datetime, owner: str = "anonymous") -> None:
    """Make the instance's APScheduler fire ``owner``'s ``job_id`` for ``scheduled`` (a past run time: a
    late firing) and wait until that firing ended."""
    job_id = job_key(owner, job_id)  # APScheduler's id of the job
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
        # another instance claimed and ran the scheduled firing on time
        ref = job_ref(gw.gateway.scheduler._records[job_key("anonymous", job_id)])
        with redis_server.client() as redis_client:
            assert redis_client.set(f"agw:sched:fire:{ref}:{scheduled:%Y-%m-%dT%H:%M}", "other", nx=True, ex=60)
        await asyncio.to_thread(fire_at, gw, job_id, scheduled)
        job = next(j for j in (await client.get(f"{gw.url}/api/ap/schedules")).json()["data"] if j["jobId"] == job_id)
        assert job["runs"] == 0 and job["lastStatus"] is None, job
        assert not [r for r in upstream.requests if "daily report" in str(r.body)]


def written(gw: GatewayServer) -> None:
    """Until the instance wrote to Redis everything it queued so far."""
    loop = gw.gateway.scheduler._scheduler._eventloop
    asyncio.run_coroutine_threadsafe(gw.gateway.cluster.outbox.join(), loop).result(HANG)


def stop_reloading(gw: GatewayServer) -> None:
    """The instance stops polling for changes of ``schedules.json``: it has not reloaded yet, for as long
    as the test needs."""
    node = gw.gateway.cluster
    [watch] = [task for task in node._tasks if task.get_coro().__name__ == "_watch"]
    run_on_loop(gw, watch.cancel)


def record(job_id: str, **changes: Any) -> JobRecord:
    return JobRecord(job_id=job_id, agent_key="plain", message="m", chat_id=None,
                     trigger={"type": "cron", "expr": "0 9 * * 1"}, owner="alice", created_at=1, **changes)


def test_a_job_removed_by_one_instance_is_not_written_back_by_another(tmp_path: Path) -> None:
    path = tmp_path / "schedules.json"
    a, b = SharedScheduleFile(path, lambda: None), SharedScheduleFile(path, lambda: None)
    a.save([record("kept"), record("doomed")])
    b.load()
    a.save([record("kept")])  # removed on a
    # b, not reloaded yet, records an outcome of the removed job and creates a job of its own
    b.save([record("kept"), record("doomed", runs=1, last_status="complete"), record("new-on-b")])
    assert sorted(r.job_id for r in ScheduleFile(path).load()) == ["kept", "new-on-b"]


async def test_a_job_removed_on_one_instance_never_fires_on_another_that_has_not_reloaded(
    deploy: Path, redis_server: RedisServer, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    job_id = f"doomed-{uuid.uuid4().hex[:6]}"
    run_at = int((time.time() + 3600) * 1000)
    with instance(deploy, redis_server, "a") as a, instance(deploy, redis_server, "b") as b:
        created = await client.post(f"{a.url}/api/ap/schedules", json={
            "jobId": job_id, "agentKey": "plain", "message": "doomed report",
            "trigger": {"type": "date", "runAt": run_at}})
        assert created.status_code == 200, created.text
        deadline = time.monotonic() + HANG
        while job_id not in [j["jobId"] for j in (await client.get(f"{b.url}/api/ap/schedules")).json()["data"]]:
            assert time.monotonic() < deadline, "b never loaded the job"
            await asyncio.sleep(0.02)
        await asyncio.to_thread(stop_reloading, b)
        removed = await client.delete(f"{a.url}/api/ap/schedules", params={"jobId": job_id})
        assert removed.json()["data"] == {"jobId": job_id, "removed": True}
        await asyncio.to_thread(written, a)  # everything a queued for Redis with the removal
        # b still has it scheduled, and its time comes
        await asyncio.to_thread(fire_at, b, job_id, dt.datetime.now(dt.UTC).replace(microsecond=0))
        on_b = next(j for j in (await client.get(f"{b.url}/api/ap/schedules")).json()["data"] if j["jobId"] == job_id)
        assert on_b["runs"] == 0 and on_b["lastStatus"] is None, on_b
        assert not [r for r in upstream.requests if "doomed report" in str(r.body)]
        on_disk = orjson.loads((deploy / "data" / ".agw" / "schedules.json").read_bytes())
        assert job_id not in [job["jobId"] for job in on_disk["jobs"]]


async def test_attack_job_ids_are_per_user_so_none_is_lost_or_revealed(
    deploy: Path, redis_server: RedisServer, client: httpx.AsyncClient
) -> None:
    """Alice and Bob both name a job ``daily-report`` on two instances at once: both keep theirs (one of
    them vanished from the shared file), and a user reusing another's id is never told it is taken (a 409
    naming it told Carol that someone had a job ``daily-report``)."""
    key = ec_pair("sched-key")
    users = {name: {"Authorization": f"Bearer {mint(key, name, exp_in=3600)}"} for name in ("alice", "bob", "carol")}
    later = {"type": "cron", "expr": "0 9 * * 1"}

    def job(message: str) -> dict[str, Any]:
        return {"jobId": "daily-report", "agentKey": "plain", "message": message, "trigger": later}

    with instance(deploy, redis_server, "a", key) as a, instance(deploy, redis_server, "b", key) as b:
        replies = await asyncio.gather(
            client.post(f"{a.url}/api/ap/schedules", headers=users["alice"], json=job("alice's report")),
            client.post(f"{b.url}/api/ap/schedules", headers=users["bob"], json=job("bob's report")))
        assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
        carol = await client.post(f"{a.url}/api/ap/schedules", headers=users["carol"], json=job("carol's report"))
        assert carol.status_code == 200, carol.text
        again = await client.post(f"{b.url}/api/ap/schedules", headers=users["alice"], json=job("twice"))
        assert again.status_code == 409 and "daily-report" in again.json()["msg"]

        async def listed(url: str, user: str) -> list[str]:
            jobs = (await client.get(f"{url}/api/ap/schedules", headers=users[user])).json()["data"]
            return [f"{j['jobId']}: {j['message']}" for j in jobs]

        deadline = time.monotonic() + HANG
        for gw in (a, b):
            for user in users:
                while await listed(gw.url, user) != [f"daily-report: {user}'s report"]:
                    assert time.monotonic() < deadline, (gw.url, user, await listed(gw.url, user))
                    await asyncio.sleep(0.02)
        removed = await client.delete(f"{b.url}/api/ap/schedules", headers=users["bob"],
                                      params={"jobId": "daily-report"})
        assert removed.status_code == 200
        while await listed(a.url, "bob") != []:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert await listed(a.url, "alice") == ["daily-report: alice's report"]
        on_disk = orjson.loads((deploy / "data" / ".agw" / "schedules.json").read_bytes())
        assert sorted((j["jobId"], j["owner"]) for j in on_disk["jobs"]) == [
            ("daily-report", "alice"), ("daily-report", "carol")]


async def test_attack_job_flood_is_capped_per_user_and_in_all_with_a_bounded_message(
    deploy: Path, redis_server: RedisServer, client: httpx.AsyncClient
) -> None:
    """Jobs were unbounded (each up to 200 000 characters, all in one file every save rewrites): a user's
    jobs, all jobs and a job's message are capped, counted on the shared file across instances."""
    key = ec_pair("flood-key")
    users = {name: {"Authorization": f"Bearer {mint(key, name, exp_in=3600)}"} for name in ("alice", "bob", "carol")}
    caps = {"max-jobs-per-user": 2, "max-jobs": 3, "max-message-chars": 100}
    later = {"type": "cron", "expr": "0 9 * * 1"}

    def job(message: str = "report") -> dict[str, Any]:
        return {"agentKey": "plain", "message": message, "trigger": later}

    with instance(deploy, redis_server, "a", key, **caps) as a, instance(deploy, redis_server, "b", key, **caps) as b:
        url_a, url_b = f"{a.url}/api/ap/schedules", f"{b.url}/api/ap/schedules"
        too_long = await client.post(url_a, headers=users["alice"], json=job("x" * 101))
        assert too_long.status_code == 400 and "scheduler.max-message-chars" in too_long.json()["msg"]
        for _ in range(2):
            assert (await client.post(url_a, headers=users["alice"], json=job())).status_code == 200
        # b may not have reloaded a's jobs yet: the file it writes under its lock is what counts
        third = await client.post(url_b, headers=users["alice"], json=job())
        assert third.status_code == 409 and "scheduler.max-jobs-per-user" in third.json()["msg"], third.text
        assert (await client.post(url_b, headers=users["bob"], json=job())).status_code == 200
        full = await client.post(url_a, headers=users["carol"], json=job())
        assert full.status_code == 409 and "scheduler.max-jobs" in full.json()["msg"], full.text
        mine = (await client.get(url_a, headers=users["alice"])).json()["data"]
        assert (await client.delete(url_a, headers=users["alice"], params={"jobId": mine[0]["jobId"]})).status_code \
            == 200
        assert (await client.post(url_a, headers=users["carol"], json=job())).status_code == 200
        on_disk = orjson.loads((deploy / "data" / ".agw" / "schedules.json").read_bytes())
        assert sorted(j["owner"] for j in on_disk["jobs"]) == ["alice", "bob", "carol"]


async def test_the_schedules_file_is_never_written_on_the_event_loop(
    deploy: Path, redis_server: RedisServer, client: httpx.AsyncClient
) -> None:
    """Another instance holds the shared file's lock (a large file being written): this instance keeps
    answering while its job waits for the lock, and the job is added once the lock is free."""
    with instance(deploy, redis_server, "a") as gw:
        lock_path = deploy / "data" / ".agw" / "schedules.json.lock"
        with open(lock_path, "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                adding = asyncio.create_task(client.post(f"{gw.url}/api/ap/schedules", json={
                    "jobId": "patient", "agentKey": "plain", "message": "x",
                    "trigger": {"type": "cron", "expr": "0 9 * * 1"}}))
                await asyncio.sleep(0)  # the request is on its way
                health = await client.get(f"{gw.url}/healthz", timeout=10)  # was stuck behind the lock
                assert health.status_code == 200
                assert not adding.done()
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)
        added = await adding
        assert added.status_code == 200 and added.json()["data"]["jobId"] == "patient"


async def test_a_redis_blip_at_a_jobs_run_time_delays_it_and_an_outage_past_the_grace_records_it_missed(
    deploy: Path, tmp_path: Path, upstream: FakeUpstream, client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture
) -> None:
    """The firing's claim failed while Redis was away, and the job was dropped without a trace."""
    redis = RedisServer(tmp_path).start()  # its own: it is stopped
    try:
        with instance(deploy, redis, "a", **{"misfire-grace-seconds": 3}) as gw:
            outcomes: list[dict[str, Any]] = []
            heard = threading.Event()

            async def listener(event: Any) -> None:
                outcomes.append(event.to_json())
                heard.set()

            gw.gateway.scheduler.on_outcome(listener)
            later = {"type": "date", "runAt": int((time.time() + 3600) * 1000)}
            for job_id in ("blip", "outage"):
                created = await client.post(f"{gw.url}/api/ap/schedules", json={
                    "jobId": job_id, "agentKey": "plain", "message": f"{job_id} report", "trigger": later})
                assert created.status_code == 200, created.text

            # a blip: Redis is away when the job is due, and back before the grace time is over
            redis.stop()
            blip = asyncio.create_task(asyncio.to_thread(fire_at, gw, "blip", dt.datetime.now(dt.UTC)))
            deadline = time.monotonic() + HANG
            while not any("blip" in r.getMessage() and "Redis" in r.getMessage() for r in caplog.records):
                assert time.monotonic() < deadline, "the firing never tried to claim"
                await asyncio.sleep(0.02)
            redis.start()
            await blip
            jobs = {j["jobId"]: j for j in (await client.get(f"{gw.url}/api/ap/schedules")).json()["data"]}
            assert jobs["blip"]["runs"] == 1 and jobs["blip"]["lastStatus"] == "complete", jobs["blip"]
            assert outcomes[-1]["jobId"] == "blip" and outcomes[-1]["status"] == "completed"

            # an outage past the grace time: recorded as missed, and the listeners hear of it
            heard.clear()
            redis.stop()
            await asyncio.to_thread(fire_at, gw, "outage", dt.datetime.now(dt.UTC))
            assert await asyncio.to_thread(heard.wait, HANG)
            jobs = {j["jobId"]: j for j in (await client.get(f"{gw.url}/api/ap/schedules")).json()["data"]}
            assert jobs["outage"]["lastStatus"] == "missed" and "unreachable" in jobs["outage"]["lastError"]
            assert jobs["outage"]["runs"] == 0 and jobs["outage"]["nextRunAt"] is None
            assert outcomes[-1]["jobId"] == "outage" and outcomes[-1]["status"] == "failed"
            redis.start()
    finally:
        redis.stop()
