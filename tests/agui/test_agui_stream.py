"""``POST /ag-ui/{agentKey}`` over real HTTP against the scripted fake upstream (SPEC §17 "AG-UI").

Every frame is validated against ``ag_ui.core``'s ``Event`` union (``tests.agui.support``) and
each test asserts the exact sequence of AG-UI event types the client received.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse

from app.devtools import FakeUpstream
from app.devtools.script import Finish, Gate, Text, ToolArgs, ToolCall, gated_text_script, http_error_script, text_script
from tests.agui.support import collect_agui, kinds, parse_event, raw_types, stream_agui, user_input
from tests.engine.helpers import call
from tests.support.bodies import recording_gateway
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import types

WEATHER = {"backends": ["mock_city_weather", "city_datetime"], "frontends": [], "actions": []}
#: the start of every AG-UI run of a new thread: RUN_STARTED, then the gateway's opening events as RAW
OPENING = ["RUN_STARTED", "RAW", "RAW", "RAW"]
NEW_CHAT_RAW = ["request.query", "chat.start", "run.start"]
#: a generous bound that only turns a hang into a failure
HANG = 60


def _text(events: list[Any], kind: str = "TEXT_MESSAGE_CONTENT") -> list[str]:
    return [event.delta for event in events if event.type.value == kind]


async def _run_watch(client: httpx.AsyncClient, gw: GatewayServer, run_id: str) -> list[dict[str, Any]]:
    """The gateway run's own events (``GET /api/ap/run/stream``), to the terminal one."""
    events: list[dict[str, Any]] = []
    async with aconnect_sse(client, "GET", f"{gw.url}/api/ap/run/stream", params={"runId": run_id}) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if sse.data:
                events.append(orjson.loads(sse.data))
    return events


async def test_plain_text_one_text_message_content_per_delta(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    pieces = ["Hel", "lo", ", ", "wor", "ld", "!"]
    upstream.enqueue(text_script(pieces, usage=(12, 6)))
    events = await collect_agui(client, f"{gw.url}/ag-ui/plain", user_input("thread-plain", "hi", run_id="r-1"))
    assert kinds(events) == [*OPENING, "TEXT_MESSAGE_START", *["TEXT_MESSAGE_CONTENT"] * 6, "TEXT_MESSAGE_END",
                             "RUN_FINISHED"]
    assert raw_types(events) == NEW_CHAT_RAW
    started, finished = events[0], events[-1]
    assert (started.thread_id, started.run_id, started.protocol_version) == ("thread-plain", "r-1", "1.0")
    assert (finished.thread_id, finished.run_id) == ("thread-plain", "r-1")
    assert finished.outcome.type == "success" and not finished.outcome.pending_tool_call_ids
    assert [(u.input_tokens, u.output_tokens, u.total_tokens) for u in finished.usage] == [(12, 6, 18)]
    assert _text(events) == pieces
    message_id = events[4].message_id
    assert events[4].role == "assistant"
    assert {event.message_id for event in events[4:-1]} == {message_id}
    # our run id travels in the RAW run.start event; the chat id is the thread id
    run_start = events[3].event
    assert run_start["chatId"] == "thread-plain" and run_start["runId"].startswith("run_")
    assert events[1].source == "agent-gateway"


async def test_response_headers_name_the_gateway_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue(text_script(["ok"]))
    async with aconnect_sse(client, "POST", f"{gw.url}/ag-ui/plain", json=user_input("thread-h", "hi")) as source:
        headers = source.response.headers
        events = [parse_event(sse.data) async for sse in source.aiter_sse() if sse.data]
    assert headers["x-chat-id"] == "thread-h"
    assert headers["x-run-id"] == events[3].event["runId"]
    assert headers["cache-control"] == "no-cache" and headers["x-accel-buffering"] == "no"
    status = (await client.get(f"{gw.url}/api/ap/run", params={"runId": headers["x-run-id"]})).json()["data"]
    assert status["status"] == "completed" and status["chatId"] == "thread-h"


async def test_reasoning_then_text(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "thinker", agent("ONESHOT", reasoning=True))
    gw = start_gateway()
    upstream.enqueue(text_script(["The answer ", "is 4."], reasoning=["Two ", "plus ", "two."]))
    events = await collect_agui(client, f"{gw.url}/ag-ui/thinker", user_input("thread-think", "2+2?"))
    assert kinds(events) == [
        *OPENING,
        "REASONING_START", "REASONING_MESSAGE_START", *["REASONING_MESSAGE_CONTENT"] * 3, "REASONING_MESSAGE_END",
        "REASONING_END",
        "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    assert _text(events, "REASONING_MESSAGE_CONTENT") == ["Two ", "plus ", "two."]
    assert _text(events) == ["The answer ", "is 4."]
    reasoning = {event.message_id for event in events[4:11]}
    assert len(reasoning) == 1 and events[5].role == "reasoning"
    assert reasoning != {events[11].message_id}


async def test_backend_tool_call_then_its_result_then_the_answer(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "weather", agent("REACT", tools=WEATHER))
    gw = start_gateway()
    args = {"city": "Paris", "date": "2026-01-01"}
    upstream.enqueue(call("c1", "mock_city_weather", args), text_script(["Cold ", "in Paris."]))
    events = await collect_agui(client, f"{gw.url}/ag-ui/weather", user_input("thread-weather", "Paris?"))
    assert kinds(events) == [
        *OPENING,
        "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT",
        "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    start, result = events[4], events[8]
    assert start.tool_call_name == "mock_city_weather" and start.tool_call_id == "c1"
    assert orjson.loads("".join(_text(events, "TOOL_CALL_ARGS"))) == args
    assert result.tool_call_id == "c1" and result.role == "tool"
    weather = orjson.loads(result.content)
    assert weather["city"] == "Paris" and weather["date"] == "2026-01-01" and "temperatureC" in weather
    # a backend tool ran in the gateway: the run finished with nothing left for the client
    assert not events[-1].outcome.pending_tool_call_ids


async def test_plan_execute_tasks_are_steps_and_the_plan_is_state(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "planner", agent("PLAN_EXECUTE", tools=WEATHER))
    gw = start_gateway()
    tasks = {"tasks": [{"description": "look up the time"}, {"description": "look up the weather"}]}
    upstream.enqueue(
        call("p1", "_plan_add_tasks_", tasks),
        call("e1", "city_datetime", {"city": "Paris"}),
        call("e2", "_plan_update_task_", {"taskId": "task_1", "status": "completed"}),
        call("e3", "mock_city_weather", {"city": "Paris", "date": "2026-01-01"}),
        call("e4", "_plan_update_task_", {"taskId": "task_2", "status": "completed"}),
        text_script(["All ", "done."]),
    )
    events = await collect_agui(client, f"{gw.url}/ag-ui/planner", user_input("thread-plan", "Paris?"))
    tool = ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT"]
    assert kinds(events) == [
        *OPENING,
        # _plan_add_tasks_ creates the plan (plan.create, plan.update) before its result
        *tool[:4], "STATE_SNAPSHOT", "STATE_SNAPSHOT", tool[4],
        # each task: its tool call, then _plan_update_task_ settles it before its own result
        "STEP_STARTED", *tool, *tool[:4], "STATE_SNAPSHOT", "STEP_FINISHED", tool[4],
        "STEP_STARTED", *tool, *tool[:4], "STATE_SNAPSHOT", "STEP_FINISHED", tool[4],
        "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END",
        "RUN_FINISHED",
    ]
    steps = [(event.type.value, event.step_name) for event in events if event.type.value.startswith("STEP_")]
    assert steps == [("STEP_STARTED", "task_1"), ("STEP_FINISHED", "task_1"),
                     ("STEP_STARTED", "task_2"), ("STEP_FINISHED", "task_2")]
    started = [event for event in events if event.type.value == "STEP_STARTED"]
    assert [event.metadata for event in started] == [{"description": "look up the time"},
                                                     {"description": "look up the weather"}]
    finished = [event for event in events if event.type.value == "STEP_FINISHED"]
    assert [event.metadata for event in finished] == [{"status": "completed"}] * 2
    snapshots = [event.snapshot for event in events if event.type.value == "STATE_SNAPSHOT"]
    assert snapshots[0] == {"plan": [{"taskId": "task_1", "description": "look up the time", "status": "init"},
                                     {"taskId": "task_2", "description": "look up the weather", "status": "init"}]}
    assert snapshots[-1] == {"plan": [
        {"taskId": "task_1", "description": "look up the time", "status": "completed"},
        {"taskId": "task_2", "description": "look up the weather", "status": "completed"},
    ]}


async def test_the_plan_snapshot_keeps_the_clients_own_state(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """A STATE_SNAPSHOT replaces the client's whole state: the plan's snapshot was ``{plan}`` alone
    and wiped the application's own keys. It now carries them, with ``plan`` the gateway's."""
    write_agent(deploy, "planner", agent("PLAN_EXECUTE", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(
        call("p1", "_plan_add_tasks_", {"tasks": [{"description": "answer"}]}),
        call("e1", "_plan_update_task_", {"taskId": "task_1", "status": "completed"}),
        text_script(["done"]),
    )
    body = user_input("thread-state", "go")
    body["state"] = {"theme": "dark", "cart": [1, 2], "plan": "the client's stale copy"}
    events = await collect_agui(client, f"{gw.url}/ag-ui/planner", body)
    snapshots = [event.snapshot for event in events if event.type.value == "STATE_SNAPSHOT"]
    assert snapshots and all(snapshot["theme"] == "dark" and snapshot["cart"] == [1, 2] for snapshot in snapshots)
    assert snapshots[-1]["plan"] == [{"taskId": "task_1", "description": "answer", "status": "completed"}]


async def test_upstream_error_is_run_error(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    body = agent("ONESHOT", budget={"model": {"maxCalls": 5, "timeoutMs": 5000, "retryCount": 0}})
    write_agent(deploy, "fragile", body)
    gw = start_gateway()
    upstream.enqueue(http_error_script(500, "upstream exploded"))
    events = await collect_agui(client, f"{gw.url}/ag-ui/fragile", user_input("thread-err", "hi"))
    assert kinds(events) == [*OPENING, "RUN_ERROR"]
    assert events[-1].code == "upstream_http_error" and events[-1].message


async def test_a_second_input_on_the_thread_continues_the_stored_chat(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue(text_script(["Hi ", "Ann."]), text_script(["Ann."]))
    url = f"{gw.url}/ag-ui/plain"
    first = await collect_agui(client, url, user_input("thread-two", "I am Ann", run_id="r-1"))
    earlier: list[dict[str, Any]] = [{"id": "u-r-1", "role": "user", "content": "I am Ann"},
               {"id": "a-1", "role": "assistant", "content": "Hi Ann."}]
    second = await collect_agui(client, url, user_input("thread-two", "Who am I?", run_id="r-2", messages=earlier))
    assert kinds(first)[-1] == kinds(second)[-1] == "RUN_FINISHED"
    assert raw_types(second) == ["request.query", "run.start"]  # no chat.start: the chat exists
    assert first[3].event["chatId"] == second[2].event["chatId"] == "thread-two"
    # the model got the stored conversation (the chat's memory), then the new query
    messages = upstream.requests[1].body["messages"]
    said = [(m["role"], m["content"] if isinstance(m["content"], str) else m["content"][0]["text"])
            for m in messages if m["role"] != "system"]
    assert said == [("user", "I am Ann"), ("assistant", "Hi Ann."), ("user", "Who am I?")]


async def test_earlier_messages_of_a_new_thread_are_the_history(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue(text_script(["Ann."]))
    earlier: list[dict[str, Any]] = [{"id": "s-1", "role": "system", "content": "Be brief."},
               {"id": "u-0", "role": "user", "content": [{"type": "text", "text": "I am Ann"}]},
               {"id": "a-0", "role": "assistant", "content": "Hi Ann."}]
    events = await collect_agui(client, f"{gw.url}/ag-ui/plain",
                                user_input("thread-imported", "Who am I?", messages=earlier))
    assert kinds(events)[-1] == "RUN_FINISHED"
    said = [(m["role"], m["content"] if isinstance(m["content"], str) else m["content"][0]["text"])
            for m in upstream.requests[0].body["messages"]]
    assert said[-4:] == [("system", "Be brief."), ("user", "I am Ann"), ("assistant", "Hi Ann."),
                         ("user", "Who am I?")]


async def test_zero_buffering_each_delta_reaches_client_before_next_is_sent(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """The upstream withholds delta k+1 until the client has read TEXT_MESSAGE_CONTENT k (no clocks)."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    n = 8
    upstream.enqueue(gated_text_script(n))
    received: list[str] = []

    async def consume() -> None:
        async for event in stream_agui(client, f"{gw.url}/ag-ui/plain", user_input("thread-ack", "go")):
            if event.type.value == "TEXT_MESSAGE_CONTENT":
                received.append(event.delta)
                # acknowledge delta k: only now may the upstream send delta k+1
                upstream.release(f"g{len(received) - 1}")

    # a buffering gateway deadlocks here; the bound only turns a hang into a failure
    await asyncio.wait_for(consume(), timeout=HANG)
    assert received == [f"d{k} " for k in range(n)]


async def test_client_disconnect_mid_stream_cancels_the_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue([Text("first "), Gate("never"), Text("second"), Finish("stop")])
    async with aconnect_sse(client, "POST", f"{gw.url}/ag-ui/plain", json=user_input("thread-gone", "go")) as source:
        run_id = source.response.headers["x-run-id"]
        async for sse in source.aiter_sse():
            if sse.data and parse_event(sse.data).type.value == "TEXT_MESSAGE_CONTENT":
                break  # leave in the middle of the answer: the connection closes
    gateway_events = await asyncio.wait_for(_run_watch(client, gw, run_id), timeout=HANG)
    assert types(gateway_events)[-1] == "run.cancel"
    status = (await client.get(f"{gw.url}/api/ap/run", params={"runId": run_id})).json()["data"]
    assert status["status"] == "cancelled"


async def test_interrupt_mid_tool_call_closes_it_and_finishes_cancelled(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """AG-UI refuses RUN_FINISHED with a tool call open: the cut call is closed first, and (as
    every call of a run that ends) gets its error result."""
    write_agent(deploy, "weather", agent("REACT", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue([ToolCall(0, "c1", "mock_city_weather"), ToolArgs(0, '{"city": '), Gate("never"),
                      ToolArgs(0, '"Paris"}'), Finish("tool_calls")])
    events: list[Any] = []

    async def consume() -> None:
        async for event in stream_agui(client, f"{gw.url}/ag-ui/weather", user_input("thread-stop", "go")):
            events.append(event)
            if event.type.value == "TOOL_CALL_ARGS":
                run_id = events[3].event["runId"]
                response = await client.post(f"{gw.url}/api/ap/interrupt", json={"runId": run_id})
                assert response.json()["data"] == {"cancelled": True}

    await asyncio.wait_for(consume(), timeout=HANG)
    assert kinds(events) == [*OPENING, "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END", "TOOL_CALL_RESULT",
                             "RUN_FINISHED"]
    assert events[-3].tool_call_id == events[-2].tool_call_id == "c1"
    assert "cancelled" in events[-2].content
    assert events[-1].outcome.type == "cancelled"


@pytest.mark.parametrize(
    ("body", "code", "says"),
    [
        (b"{not json", 4000, "malformed JSON"),
        (orjson.dumps({"runId": "r", "messages": []}), 4000, "threadId"),
        (orjson.dumps({**user_input("t", "x"), "messages": "nope"}), 4000, "messages"),
        (orjson.dumps({**user_input("t", "x"), "messages": []}), 4000, "messages is empty"),
        (orjson.dumps(user_input("../x", "hi")), 4003, "threadId"),
        (orjson.dumps(user_input("t", "   ")), 4000, "no text"),
        (orjson.dumps({**user_input("t", "x"), "messages": [{"id": "a", "role": "assistant", "content": "hi"}]}),
         4000, "last message"),
    ],
    ids=["malformed-json", "no-thread-id", "messages-not-a-list", "no-messages", "thread-id-escapes",
         "blank-query", "last-message-assistant"],
)
async def test_bad_inputs_are_400_with_the_envelope(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    body: bytes, code: int, says: str,
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    response = await client.post(f"{gw.url}/ag-ui/plain", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    envelope = response.json()
    assert envelope["code"] == code and says in envelope["msg"], envelope


async def test_unknown_agent_is_404(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    gw = start_gateway()
    response = await client.post(f"{gw.url}/ag-ui/nobody", json=user_input("thread-x", "hi"))
    assert response.status_code == 404
    assert response.json()["code"] == 4040 and "nobody" in response.json()["msg"]


@pytest.mark.parametrize("key", ["%2e%2e", "pl%00ain", "a" * 129, "%2e%2e%5cagents"])  # a raw ".." httpx resolves itself
async def test_attack_agent_key_traversal_in_the_ag_ui_path_is_refused(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient, key: str
) -> None:
    """The path parameter is read from the request on the direct lane; ``check_key`` still refuses it."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    response = await client.post(f"{gw.url}/ag-ui/{key}", json=user_input("thread-x", "hi"))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 4003 and "invalid agentKey" in response.json()["msg"]


async def test_the_gateway_stream_of_the_same_run_is_unchanged(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """The AG-UI edge only translates: the run's own log (``/api/ap/run/stream``) is the §6 contract."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue(text_script(["a", "b"]))
    events = await collect_agui(client, f"{gw.url}/ag-ui/plain", user_input("thread-log", "hi"))
    own = await _run_watch(client, gw, events[3].event["runId"])
    assert types(own) == ["request.query", "chat.start", "run.start", "content.start", "content.delta",
                          "content.delta", "content.end", "run.complete"]


async def test_traceparent_makes_the_run_part_of_the_callers_trace_on_new_and_continued_threads(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """SPEC §19 on the AG-UI endpoint as on /api/ap/query: the caller's trace id is the run's."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    for n, trace_id in enumerate(("4bf92f3577b34da6a3ce929d0e0e4736", "0af7651916cd43dd8448eb211c80319c")):
        upstream.enqueue(text_script([f"answer {n}"]))
        body = user_input("thread-traced", f"question {n}", run_id=f"r-{n}")
        async with aconnect_sse(client, "POST", f"{gw.url}/ag-ui/plain", json=body,
                                headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}) as source:
            events = [parse_event(sse.data) async for sse in source.aiter_sse() if sse.data]
        run_start = next(e.event for e in events if kinds([e]) == ["RAW"] and e.event["type"] == "run.start")
        assert run_start["traceId"] == trace_id and run_start["chatId"] == "thread-traced"
        assert _text(events) == [f"answer {n}"]


async def test_events_already_there_go_out_in_one_write_each_still_its_own_message(
    deploy: Path, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    # the run's opening events are in its log together, and so are its last ones
    # (TEXT_MESSAGE_END, RUN_FINISHED): each group is one write, each event still a message
    server, bodies = recording_gateway(deploy, upstream, "/ag-ui/plain", ["one ", "two"])
    with server:
        events = await collect_agui(client, f"{server.url}/ag-ui/plain", user_input("thread-batched", "hi"))
    assert kinds(events) == [*OPENING, "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT",
                             "TEXT_MESSAGE_END", "RUN_FINISHED"]
    per_send = [body.count(b"data: ") for body in bodies]
    assert sum(per_send) == len(events)
    assert max(per_send) >= 2, per_send
    assert b"".join(bodies).endswith(b"\n\n") and b"\r" not in b"".join(bodies)
