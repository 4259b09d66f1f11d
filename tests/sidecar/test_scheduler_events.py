"""``scheduler.event`` notifications (SPEC §10 "Desktop additions"): ``python -m app sidecar`` as a
real subprocess tells its app the outcome of every scheduled run, ``completed`` or ``failed``.
Each notification is awaited as it arrives (the reader queues it as an orphan: it answers no
request); nothing is asserted about durations."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.devtools import FakeUpstream
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.sidecar import SidecarProcess
from tests.support.responders import echo_or_fail


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(responder=echo_or_fail) as fake:
        yield fake


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Path:
    root = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(root, "plain", agent("ONESHOT", budget={"model": {"maxCalls": 3, "timeoutMs": 20000, "retryCount": 0}}))
    return root


async def add_date_job(sidecar: SidecarProcess, job: dict[str, Any]) -> dict[str, Any]:
    """``scheduler.add`` of a date job due in a few hundred ms; a busy machine that took longer to
    deliver the request gets a later time (a date in the past is refused), not a failed test."""
    for delay_s in (0.3, 1.0, 3.0, 10.0):
        run_at = int((time.time() + delay_s) * 1000)
        reply = await sidecar.call("scheduler.add", {**job, "trigger": {"type": "date", "runAt": run_at}})
        if "in the past" not in reply.get("error", {}).get("message", ""):
            assert "result" in reply, reply
            return dict(reply["result"])
    raise AssertionError("every runAt was in the past by the time the sidecar read the request")


async def scheduler_events(sidecar: SidecarProcess, count: int) -> dict[str, dict[str, Any]]:
    """The next ``count`` ``scheduler.event`` notifications, by jobId (each checked for its shape)."""
    events: dict[str, dict[str, Any]] = {}
    while len(events) < count:
        message = await sidecar.next_orphan()
        assert message.get("method") == "scheduler.event", message
        assert message["jsonrpc"] == "2.0" and "id" not in message, message  # a notification
        params = message["params"]
        assert {"jobId", "runId", "chatId", "status"} <= set(params) <= {"jobId", "runId", "chatId", "status", "error"}
        assert params["jobId"] not in events, f"two events for job {params['jobId']}"
        events[params["jobId"]] = params
    return events


async def test_scheduled_runs_send_completed_and_failed_scheduler_events(sidecar: SidecarProcess) -> None:
    for job_id, message in (("greet", "good morning"), ("doomed", "please fail")):
        job = await add_date_job(sidecar, {"jobId": job_id, "agentKey": "plain", "message": message})
        assert job["lastStatus"] is None
    events = await scheduler_events(sidecar, 2)
    jobs = {job["jobId"]: job for job in await sidecar.result("scheduler.list")}

    completed = events["greet"]
    assert completed["status"] == "completed" and "error" not in completed
    assert (completed["runId"], completed["chatId"]) == (jobs["greet"]["lastRunId"], jobs["greet"]["lastChatId"])
    history = await sidecar.result("chat.get", {"chatId": completed["chatId"]})
    assert [e["text"] for e in history["events"] if e["type"] == "content.snapshot"] == ["echo: good morning"]
    assert history["events"][-1]["type"] == "run.complete"

    failed = events["doomed"]
    assert failed["status"] == "failed" and "the model is down" in failed["error"]
    assert failed["runId"] == jobs["doomed"]["lastRunId"] and failed["runId"] != completed["runId"]
    assert jobs["doomed"]["lastStatus"] == "error"
    # the notifications went out after the replies of the requests that scheduled them, and only once
    assert [m["params"]["jobId"] for m in sidecar.log if m.get("method") == "scheduler.event"] == list(events)
    assert await sidecar.close_stdin() == 0


async def test_jobs_due_at_start_up_are_reported_too(deploy: Path, tmp_path: Path) -> None:
    """Jobs from the job file that fire or are missed as the sidecar starts are reported too:
    a job whose agent is gone fails without a run, a missed run time is a failure."""
    just_due = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 1))
    base = {"message": "hello", "chatId": None, "owner": "anonymous", "createdAt": 1, "finished": False}
    jobs = [
        # its agent was deleted while the sidecar was down; due within the grace time: fires at start
        {**base, "jobId": "orphaned", "agentKey": "ghost", "trigger": {"type": "date", "runAt": just_due}},
        # due long ago, beyond misfire-grace-seconds: missed
        {**base, "jobId": "stale", "agentKey": "plain", "trigger": {"type": "date", "runAt": "2001-01-01T00:00:00Z"}},
    ]
    (deploy / "data" / ".agw").mkdir(parents=True, exist_ok=True)
    (deploy / "data" / ".agw" / "schedules.json").write_bytes(orjson.dumps({"version": 1, "jobs": jobs}))
    process = await SidecarProcess(deploy, tmp_path / "sidecar.stderr").start()
    try:
        events = await scheduler_events(process, 2)
        assert events["orphaned"] == {"jobId": "orphaned", "runId": None, "chatId": None, "status": "failed",
                                      "error": "unknown agent: ghost"}
        stale = events["stale"]
        assert stale["status"] == "failed" and stale["runId"] is None and "missed its run time" in stale["error"]
        listed = {job["jobId"]: job["lastStatus"] for job in await process.result("scheduler.list")}
        assert listed == {"orphaned": "error", "stale": "missed"}
        assert await process.close_stdin() == 0
    finally:
        await process.stop()
