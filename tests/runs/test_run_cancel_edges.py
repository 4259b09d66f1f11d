"""A run cancelled at the edges of its life (SPEC §6, §15) still records its end once, on a real
``Gateway`` and the fake upstream: before its first step, and cancelled again while it records."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from app.config import load_settings
from app.contract.bodies import QueryRequest
from app.devtools import FakeUpstream
from app.devtools.script import Finish, Gate, Text, text_script
from app.gateway import Gateway
from tests.support.deployment import agent, make_deployment, write_agent


@pytest.fixture
async def gateway(tmp_path: Path, upstream: FakeUpstream) -> AsyncIterator[Gateway]:
    deploy = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(deploy, "plain", agent("ONESHOT"))
    gateway = Gateway(load_settings(deploy, files=(Path("application.yml"),), env={}))
    await gateway.__aenter__()
    try:
        yield gateway
    finally:
        await gateway.__aexit__(None, None, None)


async def test_a_run_cancelled_before_its_first_step_is_recorded_as_cancelled(
        gateway: Gateway, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client leaving while a long chat's history was still being read: the run ended with
    no line in memory (not even its question) and the outcome "cancelled before it started"."""
    upstream.enqueue(text_script(["first answer"]))
    first = await gateway.runs.start(QueryRequest(agentKey="plain", message="one"), "alice")
    await first.wait()
    reading, release = threading.Event(), threading.Event()
    real_read = gateway.chats.read_lines

    def slow_read(chat_id: str) -> list[dict[str, Any]]:
        reading.set()
        release.wait(30)
        return real_read(chat_id)

    monkeypatch.setattr(gateway.chats, "read_lines", slow_read)
    second = await gateway.runs.start(QueryRequest(chatId=first.chat_id, message="two"), "alice")
    assert await asyncio.to_thread(reading.wait, 30)
    second.cancel()
    release.set()
    await second.wait()
    assert second.outcome is not None and second.outcome.status == "cancelled"
    assert second.outcome.reason != "the run was cancelled before it started"
    lines = [line for line in real_read(first.chat_id) if line.get("runId") == second.run_id]
    assert [line["_type"] for line in lines] == ["query", "run"] and lines[-1]["status"] == "cancel"
    assert lines[0]["query"]["message"] == "two"
    assert [e.wire()["type"] for e in second.log._events][-1] == "run.cancel"


async def test_a_second_cancel_while_the_run_records_its_end_changes_nothing(
        gateway: Gateway, upstream: FakeUpstream, monkeypatch: pytest.MonkeyPatch) -> None:
    """An interrupt and the client leaving at once, or a double click: the second cancel cut the
    recording of the run's end short; the outcome became "cancelled before it started" with no
    usage, and the chat lock was released before the run line was written."""
    upstream.enqueue([Text("partial"), Gate("never"), Finish("stop")])
    recording, release = asyncio.Event(), asyncio.Event()
    real_append = gateway.chats.append

    async def slow_end(chat_id: str, *lines: dict[str, Any], run_ends: bool = False) -> None:
        if run_ends:
            recording.set()
            await release.wait()
        await real_append(chat_id, *lines, run_ends=run_ends)

    monkeypatch.setattr(gateway.chats, "append", slow_end)
    try:
        run = await gateway.runs.start(QueryRequest(agentKey="plain", message="x"), "alice")
        for _ in range(2000):  # bounded: until the upstream's first delta is in the log
            if any(e.wire()["type"] == "content.delta" for e in run.log._events):
                break
            await asyncio.sleep(0.005)
        assert run.cancel()
        await asyncio.wait_for(recording.wait(), 30)
        assert run.cancel()  # again, while the end is being recorded: a no-op …
        assert run.task is not None
        run.task.cancel()  # … and even a raw second cancellation of the task is ridden out
        await asyncio.sleep(0)
        release.set()
        await run.wait()
    finally:
        upstream.release("never")
    assert run.outcome is not None and run.outcome.status == "cancelled"
    assert run.outcome.reason != "the run was cancelled before it started" and run.outcome.usage is not None
    ended = [line for line in gateway.chats.read_lines(run.chat_id) if line["_type"] == "run"]
    assert [line["status"] for line in ended] == ["cancel"]
    assert [e.wire()["type"] for e in run.log._events].count("run.cancel") == 1
