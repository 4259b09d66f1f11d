"""The sidecar's run methods of SPEC §15 through a real subprocess: ``agent.attach`` (replay
after a seq, then live, result at the end), ``agent.status`` and ``agent.interrupt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.devtools import FakeUpstream
from app.devtools.script import Finish, Gate, Text, Usage
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.sidecar import SidecarProcess

ANSWER = ["al", "pha ", "be", "ta"]
TERMINAL = ("run.complete", "run.error", "run.cancel")


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Path:
    root = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(root, "plain", agent("ONESHOT"))
    return root


def _gated(gate: str) -> list[Any]:
    return [Text(ANSWER[0]), Text(ANSWER[1]), Gate(gate), Text(ANSWER[2]), Text(ANSWER[3]), Usage(5, 4), Finish("stop")]


async def _until(sidecar: SidecarProcess, request_id: str, kind: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] != kind:
        events.append(await sidecar.next_event(request_id))
    return events


def _attached(sidecar: SidecarProcess, attach_id: str) -> list[dict[str, Any]]:
    return [m["params"]["event"] for m in sidecar.log
            if m.get("method") == "agent.event" and m["params"].get("attachId") == attach_id]


async def test_attach_replays_after_a_seq_then_follows_live(sidecar: SidecarProcess, upstream: FakeUpstream) -> None:
    upstream.enqueue(_gated("s1"))
    query = await sidecar.send("agent.query", {"agentKey": "plain", "message": "go", "requestId": "req-a"})
    seen = await _until(sidecar, "req-a", "content.delta")
    run_id = next(e["runId"] for e in seen if e["type"] == "run.start")
    status = await sidecar.result("agent.status", {"runId": run_id})
    assert status["status"] == "running" and status["lastSeq"] >= seen[-1]["seq"]
    attach = await sidecar.send("agent.attach", {"runId": run_id, "after": 2, "attachId": "a1"})
    upstream.release("s1")
    query_reply, attach_reply = (await query)["result"], (await attach)["result"]
    assert query_reply["status"] == attach_reply["status"] == "complete"
    assert attach_reply["attachId"] == "a1" and attach_reply["runId"] == run_id
    own = seen + await _until_terminal_from_log(sidecar, "req-a", len(seen))
    attached = _attached(sidecar, "a1")
    assert [e["seq"] for e in own] == list(range(1, len(own) + 1))
    assert attached == own[2:]  # exactly the events after seq 2, identical to the query's own stream
    assert "".join(e["delta"] for e in attached if e["type"] == "content.delta") == "".join(ANSWER)
    # attaching after the end replays everything and answers at once
    late = await sidecar.result("agent.attach", {"runId": run_id, "attachId": "late"})
    assert late["status"] == "complete" and _attached(sidecar, "late") == own


async def _until_terminal_from_log(sidecar: SidecarProcess, request_id: str, skip: int) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] not in TERMINAL:
        events.append(await sidecar.next_event(request_id))
    # the queue per requestId also holds the attachment's notifications: keep the query's own only
    own = [m["params"]["event"] for m in sidecar.log if m.get("method") == "agent.event"
           and m["params"]["requestId"] == request_id and "attachId" not in m["params"]]
    return own[skip:]


async def test_interrupt_ends_the_run_for_the_query_and_every_attachment(
    sidecar: SidecarProcess, upstream: FakeUpstream
) -> None:
    upstream.enqueue(_gated("never"))
    query = await sidecar.send("agent.query", {"agentKey": "plain", "message": "go", "requestId": "req-b"})
    seen = await _until(sidecar, "req-b", "content.delta")
    run_id = next(e["runId"] for e in seen if e["type"] == "run.start")
    attach = await sidecar.send("agent.attach", {"runId": run_id, "attachId": "b1"})
    assert await sidecar.result("agent.interrupt", {"runId": run_id}) == {"cancelled": True}
    assert (await query)["result"]["status"] == "cancel"
    assert (await attach)["result"]["status"] == "cancel"
    assert _attached(sidecar, "b1")[-1]["type"] == "run.cancel"
    assert (await sidecar.result("agent.status", {"runId": run_id}))["status"] == "cancelled"
    assert await sidecar.result("agent.interrupt", {"runId": run_id}) == {"cancelled": False}


@pytest.mark.parametrize(("method", "params", "code", "message"), [
    ("agent.attach", {"runId": "run_nope"}, -32000, "unknown or expired run"),
    ("agent.status", {"runId": "run_nope"}, -32000, "unknown or expired run"),
    ("agent.interrupt", {"runId": "run_nope"}, -32000, "unknown or expired run"),
    ("agent.attach", {}, -32602, "runId"),
    ("agent.attach", {"runId": "r", "after": -1}, -32602, "after"),
    ("agent.attach", {"runId": "r", "after": "x"}, -32602, "after"),
    ("agent.status", {"runId": 7}, -32602, "runId"),
    ("agent.interrupt", {"runId": "x" * 500}, -32602, "runId"),
])
async def test_run_methods_refuse_bad_params(sidecar: SidecarProcess, method: str, params: dict[str, Any],
                                             code: int, message: str) -> None:
    reply = await sidecar.call(method, params)
    assert reply["error"]["code"] == code and message in reply["error"]["message"], reply
