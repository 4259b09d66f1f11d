"""The sidecar (SPEC §10) as a real subprocess: ``python -m app sidecar --dir <deployment>``,
models on a FakeUpstream in this process. Ordering is proven with gates, never with clocks."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import Finish, Gate, Text, gated_text_script, text_script, tool_call_script
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.server import GatewayServer
from tests.support.sidecar import SidecarProcess
from tests.support.sse import collect

FRONTEND = {"backends": [], "frontends": ["confirm_dialog"], "actions": []}
WEATHER = {"backends": ["mock_city_weather"], "frontends": [], "actions": []}


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Path:
    root = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(root, "plain", agent("ONESHOT"))
    write_agent(root, "asker", agent("ONESHOT", tools=FRONTEND))
    write_agent(root, "weather", agent("ONESHOT", tools=WEATHER, reasoning=True))
    return root


async def _events_until_terminal(sidecar: SidecarProcess, request_id: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] not in ("run.complete", "run.error", "run.cancel"):
        events.append(await sidecar.next_event(request_id))
    return events


async def test_health_and_agent_list_match_http_shapes(sidecar: SidecarProcess) -> None:
    health = await sidecar.result("gateway.health")
    assert health["status"] == "UP" and health["version"]
    agents = await sidecar.result("agent.list")
    assert {a["key"] for a in agents} == {"plain", "asker", "weather"}
    assert {"key", "name", "icon", "description", "mode"} <= set(agents[0])
    detail = await sidecar.result("agent.get", {"agentKey": "asker"})
    assert detail["key"] == "asker" and detail["stages"][0]["model"]["key"] == "fake-openai"
    missing = await sidecar.call("agent.get", {"agentKey": "nobody"})
    assert missing["error"]["code"] == -32000 and "unknown agent" in missing["error"]["message"]
    assert missing["error"]["data"]["code"] == 4040
    assert await sidecar.result("chat.list") == []
    viewport = await sidecar.result("viewport.get", {"viewportKey": "confirm_dialog"})
    assert "html" in viewport


async def test_query_notifications_arrive_one_by_one_before_the_reply(
    sidecar: SidecarProcess, upstream: FakeUpstream
) -> None:
    n = 5
    upstream.enqueue(gated_text_script(n))
    reply = await sidecar.send("agent.query", {"agentKey": "plain", "message": "go", "requestId": "req-1"})
    received: list[str] = []
    events: list[dict[str, Any]] = []
    while len(received) < n:
        event = await sidecar.next_event("req-1")
        events.append(event)
        assert not reply.done(), "the reply came before the run ended"
        if event["type"] == "content.delta":
            received.append(event["delta"])
            # only now may the upstream send delta k+1: a batching sidecar deadlocks here
            upstream.release(f"g{len(received) - 1}")
    events += await _events_until_terminal(sidecar, "req-1")
    result = (await asyncio.wait_for(reply, 60))["result"]
    assert received == [f"d{k} " for k in range(n)]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[0]["type"] == "request.query" and events[-1]["type"] == "run.complete"
    assert result["runId"] == events[2]["runId"] and result["chatId"] == events[0]["chatId"]
    assert result["finishReason"] == "stop" and result["status"] == "complete"
    # every notification of the run was written before its reply
    positions = [i for i, m in enumerate(sidecar.log) if m.get("method") == "agent.event"]
    reply_at = next(i for i, m in enumerate(sidecar.log) if m.get("result") is result)
    assert max(positions) < reply_at
    history = await sidecar.result("chat.get", {"chatId": result["chatId"]})
    assert [e["text"] for e in history["events"] if e["type"] == "content.snapshot"] == ["".join(received)]
    chats = await sidecar.result("chat.list")
    assert [c["chatId"] for c in chats] == [result["chatId"]]


async def test_two_queries_run_concurrently_and_replies_match_ids(
    sidecar: SidecarProcess, upstream: FakeUpstream
) -> None:
    upstream.enqueue([Text("one"), Gate("first"), Text("!"), Finish("stop")],
                     [Text("two"), Gate("second"), Text("?"), Finish("stop")])
    a = await sidecar.send("agent.query", {"agentKey": "plain", "message": "a", "requestId": "A"})
    while (await sidecar.next_event("A"))["type"] != "content.delta":
        pass
    b = await sidecar.send("agent.query", {"agentKey": "plain", "message": "b", "requestId": "B"})
    while (await sidecar.next_event("B"))["type"] != "content.delta":
        pass
    # both runs are mid-stream now; finish the second first
    upstream.release("second")
    b_reply = await asyncio.wait_for(b, 60)
    assert not a.done()
    upstream.release("first")
    a_reply = await asyncio.wait_for(a, 60)
    assert b_reply["result"]["status"] == a_reply["result"]["status"] == "complete"
    assert a_reply["result"]["chatId"] != b_reply["result"]["chatId"]
    histories = [await sidecar.result("chat.get", {"chatId": r["result"]["chatId"]}) for r in (a_reply, b_reply)]
    texts = [[e["text"] for e in h["events"] if e["type"] == "content.snapshot"] for h in histories]
    assert texts == [["one!"], ["two?"]]


async def test_frontend_tool_answered_with_agent_submit(sidecar: SidecarProcess, upstream: FakeUpstream) -> None:
    upstream.enqueue(tool_call_script("call_c1", "confirm_dialog", ['{"question":', '"Proceed?"}']),
                     text_script(["Confirmed."]))
    reply = await sidecar.send("agent.query", {"agentKey": "asker", "message": "ask me", "requestId": "ask"})
    start: dict[str, Any] = {}
    while True:
        event = await sidecar.next_event("ask")
        if event["type"] == "tool.start":
            start = event
        if event["type"] == "tool.end":
            break
    assert start["toolId"].startswith("t_") and start["toolKey"] == "confirm_dialog"
    unmatched = await sidecar.result("agent.submit", {"runId": start["runId"], "toolId": "t_nothere", "params": {}})
    assert unmatched["status"] == "unmatched" and unmatched["accepted"] is False
    outcome = await sidecar.result("agent.submit",
                                   {"runId": start["runId"], "toolId": start["toolId"], "params": {"ok": True}})
    assert outcome == {"accepted": True, "status": "accepted", "detail": outcome["detail"]}
    rest = await _events_until_terminal(sidecar, "ask")
    assert next(e for e in rest if e["type"] == "tool.result")["result"] == {"ok": True}
    assert (await asyncio.wait_for(reply, 60))["result"]["status"] == "complete"
    tool_message = upstream.requests[1].body["messages"][-1]
    assert tool_message["role"] == "tool" and tool_message["content"] == '{"ok":true}'


async def test_agent_cancel_stops_a_running_query(sidecar: SidecarProcess, upstream: FakeUpstream) -> None:
    upstream.enqueue([Text("partial"), Gate("never"), Text("more"), Finish("stop")])
    reply = await sidecar.send("agent.query", {"agentKey": "plain", "message": "x", "requestId": "c"})
    run_id = ""
    while True:
        event = await sidecar.next_event("c")
        run_id = event.get("runId", run_id)
        if event["type"] == "content.delta":
            break
    assert await sidecar.result("agent.cancel", {"runId": run_id}) == {"cancelled": True}
    events = await _events_until_terminal(sidecar, "c")
    assert events[-1]["type"] == "run.cancel"
    result = (await asyncio.wait_for(reply, 60))["result"]
    assert result["status"] == "cancel" and result["finishReason"] is None
    assert await asyncio.to_thread(upstream.wait_disconnect, 0, 20.0)
    assert await sidecar.result("agent.cancel", {"runId": run_id}) == {"cancelled": False}


async def test_bad_lines_get_errors_and_the_sidecar_goes_on(sidecar: SidecarProcess) -> None:
    await sidecar.write(b"this is not json\n")
    parse = await sidecar.next_orphan()
    assert parse["id"] is None and parse["error"]["code"] == -32700
    await sidecar.write(b'{"id": 5, "method": "gateway.health"}\n')  # no "jsonrpc": "2.0"
    invalid = await sidecar.next_orphan()
    assert invalid["id"] == 5 and invalid["error"]["code"] == -32600
    await sidecar.write(b"[]\n")
    assert (await sidecar.next_orphan())["error"]["code"] == -32600
    await sidecar.write(b"x" * (17 * 1024 * 1024) + b"\n")  # beyond the 16 MiB line limit
    oversize = await sidecar.next_orphan()
    assert oversize["error"]["code"] == -32600 and "longer than" in oversize["error"]["message"]
    unknown = await sidecar.call("agent.fly")
    assert unknown["error"]["code"] == -32601 and "agent.fly" in unknown["error"]["message"]
    bad_params = await sidecar.call("agent.query", {"agentKey": "plain", "message": "   "})
    assert bad_params["error"]["code"] == -32602 and "message" in bad_params["error"]["message"]
    unknown_agent = await sidecar.call("agent.query", {"agentKey": "ghost", "message": "hi"})
    assert unknown_agent["error"]["code"] == -32000 and "unknown agent" in unknown_agent["error"]["message"]
    bad_key = await sidecar.call("chat.get", {"chatId": "../../etc/passwd"})
    assert bad_key["error"]["code"] == -32602
    assert (await sidecar.result("gateway.health"))["status"] == "UP"


async def test_attack_nul_byte_in_an_upload_path_is_invalid_params_not_an_internal_error(
    sidecar: SidecarProcess
) -> None:
    """SPEC §9 paths and §10 errors: ``os.open`` raised ValueError, answered -32603 with a traceback."""
    reply = await sidecar.call("chat.upload", {"path": "/etc/hostname\u0000x"})
    assert reply["error"]["code"] == -32602 and "NUL" in reply["error"]["message"], reply
    assert "Traceback" not in sidecar.stderr_text()


async def test_a_number_id_beyond_2_53_is_an_invalid_request_not_a_rounded_echo(sidecar: SidecarProcess) -> None:
    """An integer past 64 bits parsed as a float and was echoed rounded: the host could not match it."""
    await sidecar.write(b'{"jsonrpc":"2.0","id":18446744073709551617,"method":"gateway.health"}\n')
    invalid = await sidecar.next_orphan()
    assert invalid["id"] is None and invalid["error"]["code"] == -32600 and "2^53" in invalid["error"]["message"]
    await sidecar.write(b'{"jsonrpc":"2.0","id":9007199254740992,"method":"gateway.health"}\n')  # 2^53 itself
    assert (await sidecar.next_orphan())["id"] == 9007199254740992


async def test_concurrent_queries_without_request_id_name_their_call_in_every_notification(
    sidecar: SidecarProcess, upstream: FakeUpstream
) -> None:
    """Without ``requestId`` a notification's ``requestId`` is a runId the host has not seen yet
    (the reply brings it): two queries at once could not be told apart. Each ``agent.event`` now
    carries the call's JSON-RPC ``id`` too."""
    upstream.enqueue([Text("one"), Gate("g1"), Finish("stop")], [Text("two"), Gate("g2"), Finish("stop")])

    async def delta_of(call_id: object) -> str:
        while True:
            for message in sidecar.log:
                params = message.get("params", {})
                if (message.get("method") == "agent.event" and params["event"]["type"] == "content.delta"
                        and params.get("id") == call_id):
                    return str(params["event"]["delta"])
            await asyncio.sleep(0.01)

    first = await sidecar.send("agent.query", {"agentKey": "plain", "message": "a"}, request_id="call-1")
    assert await asyncio.wait_for(delta_of("call-1"), 60) == "one"
    second = await sidecar.send("agent.query", {"agentKey": "plain", "message": "b"}, request_id=2)
    assert await asyncio.wait_for(delta_of(2), 60) == "two"
    assert not first.done() and not second.done()
    upstream.release("g1")
    upstream.release("g2")
    replies = [await asyncio.wait_for(reply, 60) for reply in (first, second)]
    events = [m["params"] for m in sidecar.log if m.get("method") == "agent.event"]
    for reply in replies:
        mine = [e for e in events if e["id"] == reply["id"]]
        assert mine and {e["requestId"] for e in mine} == {reply["result"]["requestId"]}


async def test_scheduler_methods(sidecar: SidecarProcess) -> None:
    job = await sidecar.result("scheduler.add", {"jobId": "nightly", "agentKey": "plain", "message": "report",
                                                 "trigger": {"type": "cron", "expr": "0 3 * * *"}})
    assert job["jobId"] == "nightly" and job["nextRunAt"] and job["lastStatus"] is None
    assert [j["jobId"] for j in await sidecar.result("scheduler.list")] == ["nightly"]
    bad = await sidecar.call("scheduler.add", {"agentKey": "plain", "message": "x",
                                               "trigger": {"type": "cron", "expr": "99 * * * *"}})
    assert bad["error"]["code"] == -32602 and "cron" in bad["error"]["message"]
    assert await sidecar.result("scheduler.remove", {"jobId": "nightly"}) == {"jobId": "nightly", "removed": True}
    assert await sidecar.result("scheduler.list") == []


async def _held_query(sidecar: SidecarProcess, upstream: FakeUpstream,
                      request_id: str) -> tuple[asyncio.Future[dict[str, Any]], str]:
    """An ``agent.query`` whose answer is held after its first delta: its reply (to come) and chat id."""
    upstream.enqueue([Text("half"), Gate("never"), Finish("stop")])
    reply = await sidecar.send("agent.query", {"agentKey": "plain", "message": "x", "requestId": request_id})
    chat_id = ""
    while True:
        event = await sidecar.next_event(request_id)
        chat_id = event.get("chatId", chat_id)
        if event["type"] == "content.delta":
            return reply, chat_id


async def test_eof_cancels_running_runs_flushes_memory_and_exits_zero(
    sidecar: SidecarProcess, upstream: FakeUpstream, deploy: Path
) -> None:
    reply, chat_id = await _held_query(sidecar, upstream, "eof")
    assert await sidecar.close_stdin() == 0, sidecar.stderr_text()
    result = (await asyncio.wait_for(reply, 10))["result"]
    assert result["status"] == "cancel"
    lines = (deploy / "chats" / f"{chat_id}.json").read_text(encoding="utf-8").splitlines()
    assert '"status":"cancel"' in lines[-1].replace(" ", "")
    # stdout carried protocol lines only (the reader parsed every line as JSON-RPC)
    assert all(m.get("jsonrpc") == "2.0" for m in sidecar.log)


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="SIGHUP is POSIX")
async def test_sighup_shuts_down_cleanly_like_sigterm(
    sidecar: SidecarProcess, upstream: FakeUpstream, deploy: Path
) -> None:
    """The launcher's terminal or session goes away: SIGHUP killed the sidecar at once, with no
    reply and the run never recorded in chat memory."""
    reply, chat_id = await _held_query(sidecar, upstream, "hup")
    assert sidecar.proc is not None
    sidecar.proc.send_signal(signal.SIGHUP)  # stdin stays open: the signal alone stops it
    assert await asyncio.wait_for(sidecar.proc.wait(), 60) == 0, sidecar.stderr_text()
    assert (await asyncio.wait_for(reply, 10))["result"]["status"] == "cancel"
    lines = (deploy / "chats" / f"{chat_id}.json").read_text(encoding="utf-8").splitlines()
    assert '"status":"cancel"' in lines[-1].replace(" ", "")
    assert "sidecar: stopped" in sidecar.stderr_text()


@pytest.mark.parametrize("grace", [None, "0"])
async def test_query_racing_eof_is_refused_or_cancelled_and_always_answered(
    deploy: Path, upstream: FakeUpstream, tmp_path: Path, grace: str | None
) -> None:
    """A query written right before EOF (the app sends a last request and closes the pipe) was
    still looking up its chat when the shutdown cancelled the live runs: its run started
    afterwards, called the model, and was cut at the end of the grace without any reply. Now the
    start is refused once the gateway closes, and a request still unanswered when the grace ends
    (``--shutdown-grace 0``: nearly every request still open) is answered with -32000 all the same."""
    upstream.enqueue(text_script(["first"]), [Text("running"), Gate("never"), Finish("stop")],
                     [Text("late"), Gate("never"), Finish("stop")])
    args = ("--shutdown-grace", grace) if grace is not None else ()
    sidecar = await SidecarProcess(deploy, tmp_path / "sidecar.stderr", extra_args=args).start()
    try:
        chat_id = (await sidecar.result("agent.query", {"agentKey": "plain", "message": "hi"}))["chatId"]
        running = await sidecar.send("agent.query", {"agentKey": "plain", "message": "x", "requestId": "running"})
        while (await sidecar.next_event("running"))["type"] != "content.delta":
            pass
        big = tmp_path / "big.bin"
        with big.open("wb") as file:  # copied on a thread: not done by the next loop iteration
            file.truncate(16 * 1024 * 1024)
        upload = await sidecar.send("chat.upload", {"path": str(big), "chatId": chat_id})
        late = await sidecar.send("agent.query", {"chatId": chat_id, "message": "more", "requestId": "late"})
        assert await sidecar.close_stdin() == 0, sidecar.stderr_text()
        replies = (running, upload, late)
        assert all(reply.done() for reply in replies), sidecar.stderr_text()  # answered before the process ended
        for message in (reply.result() for reply in replies):
            if "error" in message:
                assert message["error"]["code"] == -32000 and "shutting down" in message["error"]["message"]
                assert message["error"]["data"] == {"code": 5031, "status": 503}
            else:
                assert message["result"].get("status", "cancel") == "cancel", message
        if grace == "0":  # the upload's copy and commit take longer than no grace at all
            assert "did not finish within the shutdown grace" in upload.result()["error"]["message"]
        assert len(upstream.requests) == 2  # the late query never reached the model
    finally:
        await sidecar.stop()


# -- parity with the HTTP endpoint ------------------------------------------------------

_IDS = ("runId", "chatId", "requestId", "contentId", "reasoningId", "toolId", "timestamp", "traceId")


def _normalise(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: ("<id>" if k in _IDS else v) for k, v in event.items()} for event in events]


def _scripts() -> list[list[Any]]:
    return [
        tool_call_script("call_w1", "mock_city_weather", ['{"city":', '"Paris","date":"2026-11-25"}']),
        text_script(["It is ", "mild", "."], reasoning=["Let me ", "see"]),
    ]


async def test_events_identical_to_the_http_endpoint(
    sidecar: SidecarProcess, upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.enqueue(*_scripts())
    reply = await sidecar.send("agent.query", {"agentKey": "weather", "message": "weather?", "requestId": "p"})
    via_sidecar = await _events_until_terminal(sidecar, "p")
    await asyncio.wait_for(reply, 60)

    http_deploy = make_deployment(tmp_path / "http-deploy", upstream.url)
    write_agent(http_deploy, "weather", agent("ONESHOT", tools=WEATHER, reasoning=True))
    upstream.enqueue(*_scripts())
    with GatewayServer(http_deploy) as server:
        async with httpx.AsyncClient(timeout=30) as client:
            via_http = await collect(client, f"{server.url}/api/ap/query",
                                     {"agentKey": "weather", "message": "weather?", "requestId": "p"})
    assert len(via_sidecar) > 12
    assert _normalise(via_sidecar) == _normalise(via_http)
