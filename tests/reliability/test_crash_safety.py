"""Crash safety: SIGKILL mid-stream, restart on the same folder (SPEC §8 "A crash can leave a
partial last line: reading skips it, writing continues"; DECISIONS "interrupted").

The gateway runs as a real subprocess (``python -m app serve``); the model is a
``FakeUpstream`` in this test process whose script holds at a ``Gate`` so the run is
provably mid-stream when the process is killed.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import Finish, Gate, Text, Usage, text_script
from tests.support.deployment import REPO, agent, make_deployment, write_agent
from tests.support.sse import collect, stream_events
from tests.support.server import wait_healthy


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class GatewayProcess:
    """``python -m app serve --dir <deploy>`` on a free port; ``kill()`` is SIGKILL."""

    def __init__(self, deploy: Path, log: IO[bytes]) -> None:
        self.port = free_port()
        env = {**os.environ, "SERVER_PORT": str(self.port), "PYTHONPATH": str(REPO)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app", "--dir", str(deploy), "serve"], cwd=deploy, env=env,
            stdout=log, stderr=subprocess.STDOUT,
        )
        assert wait_healthy(self.url, self.process), (
            "the gateway exited during startup" if self.process.poll() is not None else "the gateway did not come up")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


def _lines(path: Path) -> tuple[list[dict[str, Any]], list[bytes], bytes]:
    """The JSON lines, the newline-terminated lines that are not JSON, and what trails the last newline."""
    data = path.read_bytes()
    *complete, tail = data.split(b"\n")
    parsed: list[dict[str, Any]] = []
    broken: list[bytes] = []
    for line in complete:
        try:
            parsed.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            broken.append(line)
    return parsed, broken, tail


async def test_sigkill_mid_stream_then_restart(tmp_path: Path, upstream: FakeUpstream) -> None:
    deploy = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(deploy, "plain", agent("ONESHOT"))
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        first = GatewayProcess(deploy, log)
        try:
            upstream.enqueue([Text("partial "), Text("answer"), Gate("never-released"), Text(" lost"),
                              Usage(5, 3), Finish()])
            seen: list[dict[str, Any]] = []
            async with httpx.AsyncClient(timeout=30) as client:
                with pytest.raises(httpx.HTTPError):  # the stream breaks when the process dies
                    async for event in stream_events(client, f"{first.url}/api/ap/query",
                                                     {"agentKey": "plain", "message": "before the crash"}):
                        seen.append(event)
                        if [e.get("delta") for e in seen if e["type"] == "content.delta"] == ["partial ", "answer"]:
                            first.kill()
            assert seen[-1]["type"] == "content.delta"  # mid-stream: no terminal event was sent
        finally:
            first.stop()
        chat_id = seen[0]["chatId"]
        run_id = next(e for e in seen if e["type"] == "run.start")["runId"]
        chat_file = deploy / "chats" / f"{chat_id}.json"
        lines, broken, tail = _lines(chat_file)
        assert broken == []
        assert lines[0]["_type"] == "query" and lines[0]["runId"] == run_id
        assert not any(line.get("_type") == "run" for line in lines)  # the run never recorded its end
        # a torn write of our own: half a line with no newline
        with chat_file.open("ab") as fp:
            fp.write(tail + b'{"_type":"step","chatId":"' + chat_id.encode() + b'","runId":"' + run_id.encode()
                     + b'","_stage":"oneshot","_seq":9,"messages":[{"role":"assi')

        second = GatewayProcess(deploy, log)
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                history = (await client.get(f"{second.url}/api/ap/chat",
                                            params={"chatId": chat_id, "includeRawMessages": "true"})).json()
                assert history["code"] == 0
                events = history["data"]["events"]
                assert events[0]["type"] == "request.query" and events[0]["message"] == "before the crash"
                assert events[-1]["type"] == "run.error" and events[-1]["runId"] == run_id
                assert events[-1]["error"]["code"] == "interrupted"
                listed = (await client.get(f"{second.url}/api/ap/chats")).json()["data"]
                assert [c["chatId"] for c in listed] == [chat_id]

                upstream.enqueue(text_script(["after ", "restart"]))
                after = await collect(client, f"{second.url}/api/ap/query",
                                      {"chatId": chat_id, "message": "after the crash"})
                assert after[-1]["type"] == "run.complete"
                assert "".join(e["delta"] for e in after if e["type"] == "content.delta") == "after restart"
                # the replayed history reached the model: the first question is there, the torn line is not
                sent = upstream.requests[-1].body["messages"]
                assert any(m.get("content") == "before the crash" for m in sent)
                history = (await client.get(f"{second.url}/api/ap/chat", params={"chatId": chat_id})).json()["data"]
                terminal = [e for e in history["events"] if e["type"] in ("run.complete", "run.error", "run.cancel")]
                assert [e["type"] for e in terminal] == ["run.error", "run.complete"]
        finally:
            second.stop()
            upstream.release("never-released")
    lines, broken, tail = _lines(chat_file)
    assert tail == b""  # the next append ended the torn line first; every later line is whole
    assert len(broken) == 1 and broken[0].endswith(b'"role":"assi')
    assert lines[-1]["_type"] == "run" and lines[-1]["status"] == "complete"


async def test_sigterm_mid_stream_records_the_run_as_cancelled_and_exits_cleanly(
    tmp_path: Path, upstream: FakeUpstream
) -> None:
    deploy = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(deploy, "plain", agent("ONESHOT"))
    with (tmp_path / "gateway.log").open("wb") as log:
        gateway = GatewayProcess(deploy, log)
        try:
            upstream.enqueue([Text("half"), Gate("never-released"), Text(" rest"), Usage(5, 3), Finish()])
            seen: list[dict[str, Any]] = []
            async with httpx.AsyncClient(timeout=30) as client:
                try:
                    async for event in stream_events(client, f"{gateway.url}/api/ap/query",
                                                     {"agentKey": "plain", "message": "stop soon"}):
                        seen.append(event)
                        if event["type"] == "content.delta":
                            gateway.process.send_signal(signal.SIGTERM)
                except httpx.HTTPError:
                    pass  # the server may close the stream without a final chunk while it stops
            # uvicorn shuts down gracefully, then re-raises the signal so the exit status shows it
            assert gateway.process.wait(timeout=60) in (0, -signal.SIGTERM)
        finally:
            gateway.stop()
            upstream.release("never-released")
    assert b"Application shutdown complete" in (tmp_path / "gateway.log").read_bytes()
    assert seen[-1]["type"] == "run.cancel"  # the client is told, not just cut off
    lines, broken, tail = _lines(deploy / "chats" / f"{seen[0]['chatId']}.json")
    assert broken == [] and tail == b""
    assert lines[-1]["_type"] == "run" and lines[-1]["status"] == "cancel"
    steps = [line for line in lines if line["_type"] == "step"]
    assert steps and steps[-1]["messages"][-1]["content"] == [{"type": "text", "text": "half"}]


async def test_a_step_of_the_shutdown_that_fails_still_leaves_memory_and_usage_flushed(
        tmp_path: Path, upstream: FakeUpstream, caplog: pytest.LogCaptureFixture) -> None:
    """Redis gone or an MCP server that hangs up badly makes one step of the gateway's shutdown
    raise: the steps after it still run, the chat files and usage lines are written, and the
    writer thread stops (it used to be skipped, left running with the chats' files open)."""
    import asyncio
    import logging
    import threading

    from app.config import load_settings
    from app.gateway import Gateway

    deploy = make_deployment(tmp_path / "deploy", upstream.url)
    settings = load_settings(deploy, files=(Path("application.yml"),), env={})
    gateway = Gateway(settings)
    await gateway.__aenter__()
    steps: list[str] = []

    async def broken_catalog_stop() -> None:
        steps.append("catalog")
        raise ConnectionError("the catalog's watcher went away")

    real_http_close = gateway.http.aclose

    async def http_close() -> None:
        steps.append("http")
        await real_http_close()

    gateway.catalog.stop = broken_catalog_stop  # type: ignore[method-assign]
    gateway.http.aclose = http_close  # type: ignore[method-assign]
    lock = gateway.chats.lock("chat_1")
    await lock.acquire()
    await gateway.chats.append("chat_1", {"_type": "query", "runId": "r1"})
    gateway.services.ledger.record({"runId": "r1", "ts": 1_764_547_200_000, "totalTokens": 1})
    lock.release()
    with caplog.at_level(logging.ERROR, logger="app.gateway"):
        await gateway.__aexit__(None, None, None)
    await asyncio.sleep(0)
    assert steps == ["catalog", "http"]  # the step after the failed one ran
    assert any("stopping the catalog failed" in r.getMessage() for r in caplog.records)
    assert not any(thread.name == "gateway-writer" for thread in threading.enumerate())
    assert [line["runId"] for line in gateway.chats.read_lines("chat_1")] == ["r1"]
    usage_files = list((settings.state_dir / "usage").glob("*.jsonl"))
    assert len(usage_files) == 1 and b'"r1"' in usage_files[0].read_bytes()
