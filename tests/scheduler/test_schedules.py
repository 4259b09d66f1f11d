"""Scheduled runs (SPEC §11) over real HTTP: ``/api/ap/schedules`` on a real gateway whose
models are a FakeUpstream. A job's firing is observed by polling the list (bounded), never
by asserting on durations."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.scheduler.jobs import CronTriggerSpec, build_trigger
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.server import GatewayServer


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Path:
    root = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(root, "plain", agent("ONESHOT", budget={"model": {"maxCalls": 3, "timeoutMs": 20000, "retryCount": 0}}))
    return root


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield http


def _soon(seconds: float) -> int:
    return int((time.time() + seconds) * 1000)


async def _wait_for_outcome(client: httpx.AsyncClient, base: str, job_id: str) -> dict[str, Any]:
    """Poll the list until the job has finished a run (bounded; the bound only turns a hang into a failure)."""
    for _ in range(600):
        jobs = (await client.get(f"{base}/api/ap/schedules")).json()["data"]
        job = next(j for j in jobs if j["jobId"] == job_id)
        if job["lastStatus"] not in (None, "running"):
            return job
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} never ran")


async def test_date_jobs_fire_into_chat_memory_and_failures_are_recorded(
    deploy: Path, client: httpx.AsyncClient
) -> None:
    with GatewayServer(deploy) as gw:
        ok_job = await client.post(f"{gw.url}/api/ap/schedules", json={
            "jobId": "greet", "agentKey": "plain", "message": "good morning",
            "trigger": {"type": "date", "runAt": _soon(1)}})
        assert ok_job.status_code == 200, ok_job.text
        created = ok_job.json()["data"]
        assert created["jobId"] == "greet" and created["nextRunAt"] and created["lastStatus"] is None
        iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 1.2))
        bad_job = await client.post(f"{gw.url}/api/ap/schedules", json={
            "jobId": "doomed", "agentKey": "plain", "message": "please fail", "trigger": {"type": "date", "runAt": iso}})
        assert bad_job.status_code == 200, bad_job.text

        done = await _wait_for_outcome(client, gw.url, "greet")
        assert done["lastStatus"] == "complete" and done["lastError"] is None and done["runs"] == 1
        assert done["lastRunId"] and done["lastChatId"] and done["nextRunAt"] is None
        history = (await client.get(f"{gw.url}/api/ap/chat", params={"chatId": done["lastChatId"]})).json()["data"]
        assert [e["text"] for e in history["events"] if e["type"] == "content.snapshot"] == ["echo: good morning"]
        assert history["events"][-1]["type"] == "run.complete"

        failed = await _wait_for_outcome(client, gw.url, "doomed")
        assert failed["lastStatus"] == "error" and "the model is down" in failed["lastError"]

        # a job may continue an existing chat
        follow = await client.post(f"{gw.url}/api/ap/schedules", json={
            "agentKey": "plain", "message": "and again", "chatId": done["lastChatId"],
            "trigger": {"type": "date", "runAt": _soon(0.5)}})
        job_id = follow.json()["data"]["jobId"]
        assert job_id.startswith("job_")
        again = await _wait_for_outcome(client, gw.url, job_id)
        assert again["lastStatus"] == "complete" and again["lastChatId"] == done["lastChatId"]
        history = (await client.get(f"{gw.url}/api/ap/chat", params={"chatId": done["lastChatId"]})).json()["data"]
        assert [e["message"] for e in history["events"] if e["type"] == "request.query"] == ["good morning", "and again"]


async def test_jobs_survive_a_restart(deploy: Path, client: httpx.AsyncClient) -> None:
    with GatewayServer(deploy) as first:
        created = await client.post(f"{first.url}/api/ap/schedules", json={
            "jobId": "later", "agentKey": "plain", "message": "after restart",
            "trigger": {"type": "date", "runAt": _soon(4)}})
        assert created.status_code == 200, created.text
        cron = await client.post(f"{first.url}/api/ap/schedules", json={
            "jobId": "weekly", "agentKey": "plain", "message": "weekly", "trigger": {"type": "cron", "expr": "0 9 * * 1"}})
        assert cron.status_code == 200, cron.text
    stored = orjson.loads((deploy / "data" / ".agw" / "schedules.json").read_bytes())
    assert {job["jobId"] for job in stored["jobs"]} == {"later", "weekly"}

    with GatewayServer(deploy) as second:
        jobs = {j["jobId"]: j for j in (await client.get(f"{second.url}/api/ap/schedules")).json()["data"]}
        assert set(jobs) == {"later", "weekly"}
        assert jobs["weekly"]["nextRunAt"] and jobs["weekly"]["trigger"] == {"type": "cron", "expr": "0 9 * * 1"}
        fired = await _wait_for_outcome(client, second.url, "later")
        assert fired["lastStatus"] == "complete"
        history = (await client.get(f"{second.url}/api/ap/chat", params={"chatId": fired["lastChatId"]})).json()
        assert [e["text"] for e in history["data"]["events"] if e["type"] == "content.snapshot"] == [
            "echo: after restart"]
        deleted = await client.delete(f"{second.url}/api/ap/schedules", params={"jobId": "weekly"})
        assert deleted.json()["data"] == {"jobId": "weekly", "removed": True}
    stored = orjson.loads((deploy / "data" / ".agw" / "schedules.json").read_bytes())
    assert [job["jobId"] for job in stored["jobs"]] == ["later"]  # kept with its outcome, never re-added


@pytest.mark.parametrize(
    ("trigger", "fragment"),
    [
        ({"type": "cron", "expr": "61 * * * *"}, "invalid cron"),
        ({"type": "cron", "expr": "* * *"}, "5 fields"),
        ({"type": "cron", "expr": "every day"}, "invalid cron"),
        ({"type": "date", "runAt": "2001-01-01T00:00:00Z"}, "in the past"),
        ({"type": "date", "runAt": 1000}, "in the past"),
        ({"type": "date", "runAt": "next tuesday"}, "ISO-8601"),
        ({"type": "date", "runAt": "\u00b2\u00b3"}, "ISO-8601"),
        ({"type": "date", "runAt": "9" * 5000}, "ISO-8601"),
        ({"type": "weekly"}, "trigger"),
        ({"type": "cron"}, "expr"),
    ],
    ids=["cron-range", "cron-fields", "cron-words", "date-past", "date-past-ms", "date-junk",
         "attack-superscript-digits", "attack-5000-digits", "type", "no-expr"],
)
async def test_invalid_triggers_are_clear_400s(
    deploy: Path, client: httpx.AsyncClient, trigger: dict[str, Any], fragment: str
) -> None:
    with GatewayServer(deploy) as gw:
        response = await client.post(f"{gw.url}/api/ap/schedules",
                                     json={"agentKey": "plain", "message": "x", "trigger": trigger})
        body = response.json()
        assert response.status_code == 400 and body["code"] > 0, body
        assert fragment in body["msg"], body["msg"]
        assert (await client.get(f"{gw.url}/api/ap/schedules")).json()["data"] == []


#: more bad triggers, all against one gateway: (trigger, a fragment of the 400's message)
MORE_BAD_TRIGGERS: list[tuple[dict[str, Any], str]] = [
    # an offset that moves year 9999 / year 1 out of the datetime range in UTC (was a 500)
    ({"type": "date", "runAt": "9999-12-31T23:59:59-01:00"}, "out of range"),
    ({"type": "date", "runAt": "0001-01-01T00:00:00+01:00"}, "out of range"),
    # a cron that can never fire (31 February) was accepted with nextRunAt null
    ({"type": "cron", "expr": "0 0 31 2 *"}, "never fires"),
    ({"type": "cron", "expr": "0 0 30-31 2 *"}, "never fires"),
    # trailing junk in a field was ignored: 'mon#1' (first Monday) ran every Monday
    ({"type": "cron", "expr": "0 9 * * mon#1"}, "day-of-week field 'mon#1'"),
    ({"type": "cron", "expr": "0 9 * * fri#5"}, "day-of-week field"),
    ({"type": "cron", "expr": "0 9 * * mon-wed@@garbage"}, "day-of-week field"),
    ({"type": "cron", "expr": "0 9 1x * *"}, "day-of-month field"),
    ({"type": "cron", "expr": "5-1 * * * *"}, "runs backwards"),
]


async def test_more_invalid_triggers_are_clear_400s_and_nothing_is_kept(
    deploy: Path, client: httpx.AsyncClient
) -> None:
    with GatewayServer(deploy) as gw:
        for trigger, fragment in MORE_BAD_TRIGGERS:
            response = await client.post(f"{gw.url}/api/ap/schedules",
                                         json={"agentKey": "plain", "message": "x", "trigger": trigger})
            body = response.json()
            assert response.status_code == 400 and body["code"] > 0, (trigger, body)
            assert fragment in body["msg"], (trigger, body["msg"])
        assert (await client.get(f"{gw.url}/api/ap/schedules")).json()["data"] == []


def _fire_times(expr: str, count: int, now: dt.datetime) -> list[dt.datetime]:
    trigger = build_trigger(CronTriggerSpec(type="cron", expr=expr), dt.UTC, now)
    fired: list[dt.datetime] = []
    for _ in range(count):
        previous = fired[-1] if fired else None
        moment = trigger.get_next_fire_time(previous, previous + dt.timedelta(seconds=1) if previous else now)
        assert moment is not None
        fired.append(moment)
    return fired


@pytest.mark.parametrize(
    ("expr", "days"),
    [("0 9 * * 1", {"Mon"}), ("0 9 * * 0", {"Sun"}), ("0 9 * * 7", {"Sun"}),
     ("0 8 * * 1-5", {"Mon", "Tue", "Wed", "Thu", "Fri"}), ("0 8 * * mon-fri", {"Mon", "Tue", "Wed", "Thu", "Fri"}),
     ("0 8 * * */2", {"Sun", "Tue", "Thu", "Sat"}), ("0 8 * * 5-7", {"Fri", "Sat", "Sun"})],
)
def test_cron_weekdays_are_numbered_as_in_crontab(expr: str, days: set[str]) -> None:
    """0 and 7 are Sunday, 1 is Monday (APScheduler 3's own numbering starts at Monday = 0:
    '0 8 * * 1-5' ran Tuesday to Saturday)."""
    fired = _fire_times(expr, 14, dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC))
    assert {moment.strftime("%a") for moment in fired} == days


def test_cron_day_of_month_and_weekday_both_given_fire_on_either_as_in_crontab() -> None:
    """crontab runs '0 9 13 * fri' on every 13th and on every Friday; APScheduler alone wants both,
    so it ran only on a Friday the 13th, once or twice a year."""
    now = dt.datetime(2026, 12, 1, 12, tzinfo=dt.UTC)
    fired = _fire_times("0 9 13 * fri", 6, now)
    assert [moment.date().isoformat() for moment in fired] == [
        "2026-12-04", "2026-12-11", "2026-12-13", "2026-12-18", "2026-12-25", "2027-01-01"]
    assert all(moment.hour == 9 and moment.minute == 0 for moment in fired)
    # one of the two left at '*' (or '*/n') still narrows by the other alone, as in crontab
    assert {m.strftime("%a") for m in _fire_times("0 9 * * fri", 5, now)} == {"Fri"}
    assert {m.day for m in _fire_times("0 9 13 * *", 3, now)} == {13}
    assert {m.strftime("%a") for m in _fire_times("0 9 */1 * fri", 5, now)} == {"Fri"}
    # February has no 31st, but it has Mondays: with both given, the job fires
    assert {m.strftime("%a") for m in _fire_times("0 0 31 2 mon", 4, now)} == {"Mon"}


async def test_unknown_agent_chat_and_job(deploy: Path, client: httpx.AsyncClient) -> None:
    cron = {"type": "cron", "expr": "*/5 * * * *"}
    with GatewayServer(deploy) as gw:
        url = f"{gw.url}/api/ap/schedules"
        ghost = await client.post(url, json={"agentKey": "ghost", "message": "x", "trigger": cron})
        assert ghost.status_code == 400 and "unknown agent: ghost" in ghost.json()["msg"]
        chat = await client.post(url, json={"agentKey": "plain", "message": "x", "chatId": "chat_nope", "trigger": cron})
        assert chat.status_code == 400 and "unknown chat" in chat.json()["msg"]
        sneaky = await client.post(url, json={"jobId": "../x", "agentKey": "plain", "message": "x", "trigger": cron})
        assert sneaky.status_code == 400
        first = await client.post(url, json={"jobId": "dup", "agentKey": "plain", "message": "x", "trigger": cron})
        assert first.status_code == 200
        second = await client.post(url, json={"jobId": "dup", "agentKey": "plain", "message": "x", "trigger": cron})
        assert second.status_code == 409 and "already exists" in second.json()["msg"]
        missing = await client.delete(url, params={"jobId": "nope"})
        assert missing.status_code == 404 and "unknown job" in missing.json()["msg"]
        no_id = await client.delete(url)
        assert no_id.status_code == 400


async def test_missed_date_job_is_recorded_after_a_restart(
    deploy: Path, client: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A job whose time passed while the gateway was down, beyond the grace time, is ``missed``."""
    job = {"jobId": "stale", "agentKey": "plain", "message": "too late", "chatId": None,
           "trigger": {"type": "date", "runAt": "2001-01-01T00:00:00Z"}, "owner": "anonymous",
           "createdAt": 1, "finished": False}
    (deploy / "data" / ".agw").mkdir(parents=True, exist_ok=True)
    (deploy / "data" / ".agw" / "schedules.json").write_bytes(orjson.dumps({"version": 1, "jobs": [job]}))
    with GatewayServer(deploy) as gw:
        outcome = await _wait_for_outcome(client, gw.url, "stale")
        assert outcome["lastStatus"] == "missed" and "misfire" in outcome["lastError"]
