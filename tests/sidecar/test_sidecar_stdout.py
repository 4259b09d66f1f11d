"""The sidecar's protocol output (SPEC §10) in the cases a desktop app can create: stdout is a
pipe the app stops reading from, or a regular file. Real subprocesses, models on a FakeUpstream
in this process; the run's chat file shows that the work went on."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.support.deployment import REPO, agent, make_deployment, write_agent

#: a generous bound that only turns a hang into a failure
HANG = 60


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Path:
    root = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(root, "plain", agent("ONESHOT"))
    return root


def _query(request_id: str, text: str) -> bytes:
    return orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": "agent.query",
                         "params": {"agentKey": "plain", "message": text, "requestId": request_id}}) + b"\n"


async def _spawn(deploy: Path, stdout: int, stderr_path: Path) -> asyncio.subprocess.Process:
    with open(stderr_path, "wb") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "app", "sidecar", "--dir", str(deploy),
            stdin=asyncio.subprocess.PIPE, stdout=stdout, stderr=stderr, cwd=str(REPO))


def _chat_lines(deploy: Path) -> list[dict[str, object]]:
    files = list((deploy / "chats").glob("*.json"))
    assert len(files) == 1, files
    return [orjson.loads(line) for line in files[0].read_bytes().splitlines()]


async def test_an_app_that_stops_reading_stdout_does_not_stop_the_sidecar(
    deploy: Path, upstream: FakeUpstream, tmp_path: Path
) -> None:
    # the read end is closed before the sidecar writes anything: every write meets a broken pipe
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = await _spawn(deploy, write_end, tmp_path / "stderr")
    finally:
        os.close(write_end)
    upstream.enqueue(text_script(["still ", "running"]))
    assert proc.stdin is not None
    proc.stdin.write(_query("q1", "hello"))
    await proc.stdin.drain()
    # the run completes and is written to memory although nobody reads its notifications
    for _ in range(HANG * 20):
        if (deploy / "chats").is_dir() and any((deploy / "chats").glob("*.json")):
            lines = _chat_lines(deploy)
            if lines and lines[-1].get("_type") == "run":
                break
        await asyncio.sleep(0.05)
    assert _chat_lines(deploy)[-1]["status"] == "complete"
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), HANG) == 0
    stderr = (tmp_path / "stderr").read_text(errors="replace")
    assert "Traceback" not in stderr, stderr


async def test_stdout_a_regular_file_gets_every_line_in_order(
    deploy: Path, upstream: FakeUpstream, tmp_path: Path
) -> None:
    # a regular file cannot be a non-blocking pipe: the sidecar writes it on its writer thread
    upstream.enqueue(text_script(["one ", "two ", "three"]))
    out_path = tmp_path / "stdout.jsonl"
    with open(out_path, "wb") as out:
        proc = await _spawn(deploy, out.fileno(), tmp_path / "stderr")
    assert proc.stdin is not None
    proc.stdin.write(_query("q1", "hello"))
    await proc.stdin.drain()
    for _ in range(HANG * 20):  # the reply is the last line of the query
        if b'"id":"q1"' in out_path.read_bytes():
            break
        await asyncio.sleep(0.05)
    proc.stdin.close()
    assert await asyncio.wait_for(proc.wait(), HANG) == 0, (tmp_path / "stderr").read_text(errors="replace")
    messages = [orjson.loads(line) for line in out_path.read_bytes().splitlines()]
    assert all(m["jsonrpc"] == "2.0" for m in messages)
    events = [m["params"]["event"] for m in messages if m.get("method") == "agent.event"]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert "".join(e["delta"] for e in events if e["type"] == "content.delta") == "one two three"
    assert events[-1]["type"] == "run.complete"
    assert messages[-1]["id"] == "q1" and messages[-1]["result"]["status"] == "complete"
