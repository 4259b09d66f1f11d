"""POST /api/ap/query over real HTTP, against the real fake upstream (SPEC §4–§7)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import (
    gated_text_script,
    Disconnect,
    Finish,
    Gate,
    Malformed,
    Reasoning,
    Stall,
    Text,
    ToolArgs,
    ToolCall,
    Usage,
    http_error_script,
    parallel_tool_calls_script,
    text_script,
    tool_call_script,
)
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect, stream_events, types

WEATHER = {"backends": ["mock_city_weather", "city_datetime"], "frontends": [], "actions": []}


def _deltas(events: list[dict], kind: str) -> list[str]:
    return [e["delta"] for e in events if e["type"] == kind]


def _check_envelope_order(events: list[dict]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert all("rawEvent" not in e and isinstance(e["timestamp"], int) for e in events)
    assert events[0]["type"] == "request.query"
    assert events[-1]["type"] in ("run.complete", "run.error", "run.cancel")


async def test_text_answer_one_event_per_delta(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    pieces = ["Hel", "lo", ", ", "wor", "ld", "!"]
    upstream.enqueue(text_script(pieces, usage=(12, 6)))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "plain", "message": "hi"})
    _check_envelope_order(events)
    assert types(events)[:3] == ["request.query", "chat.start", "run.start"]
    assert _deltas(events, "content.delta") == pieces
    assert types(events)[-3:] == ["content.delta", "content.end", "run.complete"]
    start = next(e for e in events if e["type"] == "content.start")
    run_id = events[2]["runId"]
    assert start["contentId"] == f"{run_id}_c_1" and start["runId"] == run_id
    assert events[0]["requestId"] == run_id  # requestId defaults to the runId
    complete = events[-1]
    assert complete["finishReason"] == "stop"
    assert complete["usage"]["promptTokens"] == 12 and complete["usage"]["completionTokens"] == 6
    # fake-openai pricing: 10 points/1K prompt, 30 points/1K completion
    assert complete["usage"]["points"] == pytest.approx(12 / 1000 * 10 + 6 / 1000 * 30)
    body = upstream.requests[0].body
    assert body["model"] == "fake-gpt" and body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["messages"][0]["role"] == "system" and body["messages"][-1] == {"role": "user", "content": "hi"}


async def test_reasoning_then_content(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "think", agent("ONESHOT", reasoning=True))
    gw = start_gateway()
    upstream.enqueue(text_script(["Answer", "."], reasoning=["Let ", "me ", "think"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "think", "message": "why?"})
    kinds = [t for t in types(events) if t.startswith(("reasoning", "content"))]
    assert kinds == ["reasoning.start"] + ["reasoning.delta"] * 3 + ["reasoning.end", "content.start",
                                                                       "content.delta", "content.delta", "content.end"]
    assert "".join(_deltas(events, "reasoning.delta")) == "Let me think"
    assert upstream.requests[0].body.get("enable_thinking") is True


async def test_tool_call_in_three_fragments_then_second_turn(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "tooling", agent("ONESHOT", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(
        tool_call_script("call_w1", "mock_city_weather", ['{"city":', '"Paris",', '"date":"2026-11-25"}']),
        text_script(["It is ", "mild."]),
    )
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "tooling", "message": "weather?"})
    tool_events = [e for e in events if e["type"].startswith("tool.")]
    assert [e["type"] for e in tool_events] == ["tool.start", "tool.args", "tool.args", "tool.args",
                                                "tool.end", "tool.result"]
    assert all(e["toolId"] == "call_w1" for e in tool_events)
    assert tool_events[0]["toolName"] == "mock_city_weather"
    assert [e["chunkIndex"] for e in tool_events[1:4]] == [0, 1, 2]
    assert "args" not in tool_events[1]
    result = tool_events[-1]["result"]
    assert result["city"] == "Paris" and result["date"] == "2026-11-25"
    assert _deltas(events, "content.delta") == ["It is ", "mild."]
    assert events[-1]["type"] == "run.complete"
    second = upstream.requests[1].body["messages"]
    assert second[-2]["tool_calls"][0]["function"] == {
        "name": "mock_city_weather", "arguments": '{"city":"Paris","date":"2026-11-25"}'}
    assert second[-1]["role"] == "tool" and second[-1]["tool_call_id"] == "call_w1"
    assert orjson.loads(second[-1]["content"]) == result
    first_tools = upstream.requests[0].body["tools"]
    assert {t["function"]["name"] for t in first_tools} == {"mock_city_weather", "city_datetime"}


async def test_react_several_steps(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "react", agent("REACT", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(
        tool_call_script("c1", "city_datetime", ['{"city":"Tokyo"}'], text=["Checking the time. "]),
        tool_call_script("c2", "mock_city_weather", ['{"city":"Tokyo","date":"{{city_datetime.date}}"}']),
        text_script(["Done."]),
    )
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "react", "message": "Tokyo?"})
    results = [e["result"] for e in events if e["type"] == "tool.result"]
    assert len(results) == 2
    # the template resolved to the date the first tool returned
    assert results[1]["date"] == results[0]["date"]
    assert len(upstream.requests) == 3
    assert events[-1] == {**events[-1], "type": "run.complete", "finishReason": "stop"}


async def test_react_hits_max_steps(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "loop", agent("REACT", tools=WEATHER, max_steps=2))
    gw = start_gateway()
    upstream.enqueue(
        tool_call_script("c1", "city_datetime", ['{"city":"Paris"}']),
        tool_call_script("c2", "city_datetime", ['{"city":"Berlin"}']),
    )
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "loop", "message": "loop"})
    assert events[-1]["type"] == "run.complete" and events[-1]["finishReason"] == "max_steps"
    assert len(upstream.requests) == 2


async def test_react_parallel_calls_get_one_at_a_time_error(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "react", agent("REACT", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(
        parallel_tool_calls_script([("p1", "city_datetime", ['{"city":"Paris"}']),
                                    ("p2", "city_datetime", ['{"city":"Oslo"}'])]),
        text_script(["ok"]),
    )
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "react", "message": "two"})
    results = {e["toolId"]: e["result"] for e in events if e["type"] == "tool.result"}
    assert results["p1"]["city"] == "Paris"
    assert results["p2"]["ok"] is False and "one at a time" in results["p2"]["error"]
    replayed = upstream.requests[1].body["messages"]
    assistant = next(m for m in replayed if m.get("tool_calls"))
    assert [c["id"] for c in assistant["tool_calls"]] == ["p1", "p2"]  # one response, merged for the model


async def test_oneshot_runs_several_calls_of_one_turn(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "multi", agent("ONESHOT", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(
        parallel_tool_calls_script([("p1", "city_datetime", ['{"city":"Paris"}']),
                                    ("p2", "mock_city_weather", ['{"city":"Oslo","date":"2026-01-01"}'])]),
        text_script(["both done"]),
    )
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "multi", "message": "two"})
    results = {e["toolId"]: e["result"] for e in events if e["type"] == "tool.result"}
    assert results["p1"]["city"] == "Paris" and results["p2"]["city"] == "Oslo"
    assert upstream.requests[1].body["tool_choice"] == "none"


async def test_a_tool_called_when_none_may_be_gets_its_result_and_the_chat_stays_valid(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """ONESHOT's second model call says ``tool_choice: none``; many OpenAI-compatible servers
    ignore it. The call was streamed (``tool.start`` … ``tool.end``, a frontend one opening its
    wait), written to memory, and never answered: a dialog nothing waits for, and a history
    whose tool call has no result. It is now refused with a result, like any call not run."""
    tools = {"backends": ["city_datetime"], "frontends": ["confirm_dialog"], "actions": []}
    write_agent(deploy, "once", agent("ONESHOT", tools=tools))
    gw = start_gateway()
    upstream.enqueue(tool_call_script("c1", "city_datetime", ['{"city":"Paris"}']),
                     tool_call_script("c2", "confirm_dialog", ['{"question":"Sure?"}']),
                     text_script(["next"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "once", "message": "time?"})
    assert upstream.requests[1].body["tool_choice"] == "none"
    starts = [e["toolId"] for e in events if e["type"] == "tool.start"]
    results = {e["toolId"]: e["result"] for e in events if e["type"] == "tool.result"}
    assert len(starts) == 2 and set(results) == set(starts)
    assert results[starts[1]]["ok"] is False and "not run" in results[starts[1]]["error"]
    assert events[-1]["type"] == "run.complete"
    chat_id = events[0]["chatId"]
    await collect(client, f"{gw.url}/api/ap/query", {"chatId": chat_id, "message": "again"})
    replayed = upstream.requests[2].body["messages"]
    called = {c["id"] for m in replayed if m["role"] == "assistant" for c in m.get("tool_calls") or []}
    answered = {m["tool_call_id"] for m in replayed if m["role"] == "tool"}
    assert called == answered == {"c1", "c2"}


async def test_attack_two_calls_under_one_id_each_keep_their_own_result(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """An upstream that gives two calls of one response the same id: both ran under that id as
    their ``toolId``, and the chat's replay paired both calls with the first one's result (the
    second result lost, the model told Paris twice). The second call now gets an id of its own."""
    write_agent(deploy, "multi", agent("ONESHOT", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(
        parallel_tool_calls_script([("dup", "city_datetime", ['{"city":"Paris"}']),
                                    ("dup", "city_datetime", ['{"city":"Tokyo"}'])]),
        text_script(["both done"]), text_script(["again"]),
    )
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "multi", "message": "two"})
    starts = [e["toolId"] for e in events if e["type"] == "tool.start"]
    results = {e["toolId"]: e["result"]["city"] for e in events if e["type"] == "tool.result"}
    assert len(set(starts)) == 2 and sorted(results.values()) == ["Paris", "Tokyo"]
    await collect(client, f"{gw.url}/api/ap/query", {"chatId": events[0]["chatId"], "message": "again"})
    replayed = upstream.requests[2].body["messages"]
    [assistant] = [m for m in replayed if m.get("tool_calls")]
    ids = [c["id"] for c in assistant["tool_calls"]]
    answers = {m["tool_call_id"]: orjson.loads(m["content"])["city"] for m in replayed if m["role"] == "tool"}
    assert len(set(ids)) == 2 and [answers[i] for i in ids] == ["Paris", "Tokyo"]


async def test_anthropic_protocol_text_reasoning_and_tool(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "claude", agent("REACT", model="fake-anthropic", tools=WEATHER, reasoning=True))
    gw = start_gateway()
    upstream.enqueue(
        [Reasoning("hmm"), Reasoning("..."), ToolCall(0, "toolu_1", "city_datetime"),
         ToolArgs(0, '{"ci'), ToolArgs(0, 'ty":"Lon'), ToolArgs(0, 'don"}'), Usage(20, 4), Finish("tool_calls")],
        text_script(["It is ", "late."], usage=(30, 5)),
    )
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "claude", "message": "time in London"})
    assert _deltas(events, "reasoning.delta") == ["hmm", "..."]
    assert _deltas(events, "tool.args") == ['{"ci', 'ty":"Lon', 'don"}']
    assert next(e for e in events if e["type"] == "tool.result")["result"]["city"] == "London"
    assert _deltas(events, "content.delta") == ["It is ", "late."]
    assert events[-1]["usage"]["promptTokens"] == 50
    assert upstream.requests[0].path.endswith("/v1/messages")
    second = upstream.requests[1].body
    assert second["messages"][-1]["content"][0]["type"] == "tool_result"
    assert upstream.requests[0].headers["x-api-key"] == "sk-test-secret-key-123"


async def test_anthropic_thinking_goes_back_signed_with_its_tool_use_and_never_to_a_later_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """With extended thinking on, Anthropic answers 400 ("expected thinking or redacted_thinking")
    to a tool loop whose assistant turn comes back without its signed thinking block: an
    Anthropic agent with reasoning could not finish any tool call. The run now sends the block
    back, first in that turn, with its signature; a later run still gets no reasoning (SPEC §8).
    And a call that forces tool use goes without thinking, which Anthropic refuses there."""
    write_agent(deploy, "claude", agent("REACT", model="fake-anthropic", tools=WEATHER, reasoning=True))
    gw = start_gateway()
    upstream.enqueue(
        [Reasoning("hmm"), ToolCall(0, "toolu_1", "city_datetime"), ToolArgs(0, '{"city":"London"}'),
         Usage(20, 4), Finish("tool_calls")],
        text_script(["It is ", "late."], usage=(30, 5)),
        text_script(["Still late."], usage=(30, 5)),
    )
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "claude", "message": "time in London"})
    assert events[-1]["type"] == "run.complete"
    second = upstream.requests[1].body
    assert second["thinking"]["type"] == "enabled"
    [turn] = [m for m in second["messages"] if m["role"] == "assistant"]
    assert [block["type"] for block in turn["content"]] == ["thinking", "tool_use"]
    assert turn["content"][0] == {"type": "thinking", "thinking": "hmm", "signature": "fake-signature"}
    assert not any(e.get("signature") for e in events)  # never shown to the client
    await collect(client, f"{gw.url}/api/ap/query", {"chatId": events[0]["chatId"], "message": "and now?"})
    later = upstream.requests[2].body["messages"]
    assert not [block for m in later if m["role"] == "assistant" and isinstance(m["content"], list)
                for block in m["content"] if block["type"] in ("thinking", "redacted_thinking")]


async def test_anthropic_forced_tool_use_goes_without_thinking(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "claude", agent("REACT", model="fake-anthropic", tools=WEATHER, reasoning=True,
                                        toolChoice="REQUIRED"))
    gw = start_gateway()
    upstream.enqueue(tool_call_script("toolu_1", "city_datetime", ['{"city":"London"}']), text_script(["late"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "claude", "message": "time in London"})
    assert events[-1]["type"] == "run.complete"
    first, second = upstream.requests[0].body, upstream.requests[1].body
    assert first["tool_choice"] == {"type": "any"} and "thinking" not in first
    assert second["tool_choice"] == {"type": "auto"} and second["thinking"]["type"] == "enabled"


async def test_newapi_protocol_uses_its_path(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "newapi", agent("ONESHOT", model="fake-newapi"))
    gw = start_gateway()
    upstream.enqueue(text_script(["ok"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "newapi", "message": "hi"})
    assert events[-1]["type"] == "run.complete"
    assert upstream.requests[0].path == "/api/paas/v4/chat/completions"
    assert upstream.requests[0].headers["authorization"] == "Bearer sk-test-newapi-key"


async def test_zero_buffering_each_delta_reaches_client_before_next_is_sent(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """The upstream withholds delta k+1 until the client has received delta k (no clocks)."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    n = 8
    upstream.enqueue(gated_text_script(n))
    received: list[str] = []

    async def consume() -> None:
        async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "plain", "message": "go"}):
            if event["type"] == "content.delta":
                received.append(event["delta"])
                # acknowledge delta k: only now may the upstream send delta k+1
                upstream.release(f"g{len(received) - 1}")

    # a buffering gateway deadlocks here; the bound only turns a hang into a failure
    await asyncio.wait_for(consume(), timeout=60)
    assert received == [f"d{k} " for k in range(n)]


async def test_a_client_that_stops_reading_never_holds_the_run_up_and_then_gets_every_delta_in_order(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer]
) -> None:
    """The run's producer never waits for its client: a client that stops reading after the first
    events (its window and the gateway's socket buffer far smaller than the answer, so the rest
    backs up into uvicorn's flow control and the run's log) still sees the run end meanwhile, and
    then receives every delta, once, in order."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    # fixed socket buffers (no autotuning to megabytes); accepted connections get the listener's
    gw._sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    pieces = [f"{k:03d}" + "x" * 2000 for k in range(400)]  # 800 KB, many times what the buffers hold
    upstream.enqueue(text_script(pieces))
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)])
    async with httpx.AsyncClient(transport=transport, timeout=60) as slow:
        events = stream_events(slow, f"{gw.url}/api/ap/query", {"agentKey": "plain", "message": "go"})
        received = [await anext(events) for _ in range(3)]  # request.query, chat.start, run.start
        run = gw.gateway.runs.get(received[2]["runId"], "anonymous")
        for _ in range(600):  # the client reads nothing while the run goes on to its end
            if run.outcome is not None:
                break
            await asyncio.sleep(0.05)
        assert run.outcome is not None and run.outcome.status == "completed", "the run waited for its client"
        received += [event async for event in events]
    _check_envelope_order(received)
    assert _deltas(received, "content.delta") == pieces
    assert received[-1]["type"] == "run.complete"


async def test_non_stream_variant_returns_envelope(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue(text_script(["a", "b", "c"]))
    response = await client.post(f"{gw.url}/api/ap/query", json={"agentKey": "plain", "message": "x", "stream": False})
    assert response.status_code == 200
    data = response.json()
    assert data["code"] == 0
    assert data["data"]["answer"] == "abc" and data["data"]["finishReason"] == "stop"
    assert [e["type"] for e in data["data"]["events"]][-1] == "run.complete"


@pytest.mark.parametrize(
    ("script", "code"),
    [
        (http_error_script(500, "upstream exploded"), "upstream_http_error"),
        (http_error_script(429, "slow down"), "upstream_http_error"),
        ([Text("partial "), Malformed("{not json")], "upstream_malformed_chunk"),
        ([Text("partial "), Disconnect()], "upstream_disconnected"),
        ([Text("partial "), Stall()], "upstream_timeout"),
    ],
    ids=["http500", "http429", "malformed", "disconnect", "stall"],
)
async def test_upstream_faults_end_with_run_error_and_chat_stays_usable(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    script: list, code: str,
) -> None:
    body = agent("ONESHOT", budget={"model": {"maxCalls": 5, "timeoutMs": 1000, "retryCount": 0}})
    write_agent(deploy, "fragile", body)
    gw = start_gateway()
    upstream.enqueue(script)
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "fragile", "message": "first"})
    assert events[-1]["type"] == "run.error"
    assert events[-1]["error"]["code"] == code and events[-1]["error"]["message"]
    assert "run.complete" not in types(events)
    chat_id = events[0]["chatId"]
    upstream.enqueue(text_script(["recovered"]))
    again = await collect(client, f"{gw.url}/api/ap/query", {"chatId": chat_id, "message": "second"})
    assert again[-1]["type"] == "run.complete" and _deltas(again, "content.delta") == ["recovered"]
    history = (await client.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id})).json()["data"]
    ends = [e["type"] for e in history["events"] if e["type"].startswith("run.") and e["type"] != "run.start"]
    assert ends == ["run.error", "run.complete"]


@pytest.mark.parametrize(
    ("script", "streamed"),
    [
        ([Text("a" * 40), Text("b" * 40), Text("c" * 40), Gate("end"), Finish()], "content.delta"),
        ([Reasoning("r" * 60), Reasoning("s" * 60), Gate("end"), Text("never")], "reasoning.delta"),
        ([ToolCall(0, "call_1", "city_datetime"), ToolArgs(0, '{"city":"' + "x" * 50),
          ToolArgs(0, "y" * 50), Gate("end"), Finish("tool_calls")], "tool.args"),
        ([Text("t")] * 30 + [Gate("end"), Finish()], "content.delta"),
        # 30,000 calls in one response held the event loop for 20 s (a quadratic id check) and the run
        # for minutes, though the tool budget could never run them
        ([ToolCall(i, f"call_{i}", "city_datetime") for i in range(6)] + [Gate("end"), Finish("tool_calls")],
         "tool.start"),
    ],
    ids=["content", "reasoning", "endless-tool-arguments", "many-tiny-deltas", "many-tool-calls"],
)
async def test_attack_an_endless_model_response_ends_the_run_instead_of_filling_the_memory(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    script: list, streamed: str,
) -> None:
    """A model stuck in a loop, or a hostile upstream streaming one endless tool argument, grew
    the run's text and its retained event log until the run timeout: nothing bounded one response.
    Past ``agent.llm.max-response-chars`` / ``-deltas`` / ``-tool-calls`` the run ends with a clear error, the
    upstream connection is closed, what was streamed is kept, and the chat goes on."""
    write_agent(deploy, "fragile", agent("ONESHOT", tools=WEATHER,
                                         budget={"model": {"maxCalls": 5, "timeoutMs": 5000, "retryCount": 1}}))
    gw = start_gateway(overrides={"agent": {"llm": {"max-response-chars": 100, "max-response-deltas": 20,
                                                    "max-response-tool-calls": 5}}})
    upstream.enqueue(script)
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "fragile", "message": "first"})
    assert events[-1]["type"] == "run.error"
    assert events[-1]["error"]["code"] == "upstream_response_too_large"
    assert "agent.llm.max-response-chars" in events[-1]["error"]["message"]
    assert streamed in types(events) and "run.complete" not in types(events)
    assert len(upstream.requests) == 1  # forwarded deltas: never retried
    assert upstream.wait_disconnect(0)  # the gateway hung up: the upstream was still streaming
    chat_id = events[0]["chatId"]
    upstream.enqueue(text_script(["recovered"]))
    again = await collect(client, f"{gw.url}/api/ap/query", {"chatId": chat_id, "message": "second"})
    assert again[-1]["type"] == "run.complete" and _deltas(again, "content.delta") == ["recovered"]


async def test_a_non_streamed_query_says_which_upstream_failure_ended_it(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
) -> None:
    write_agent(deploy, "fragile", agent("ONESHOT"))
    gw = start_gateway(overrides={"agent": {"llm": {"max-response-chars": 10}}})
    upstream.enqueue([Text("a" * 20), Finish()], [Text("partial "), Disconnect()])
    for code, kind in ((5025, "upstream_response_too_large"), (5023, "upstream_disconnected")):
        response = await client.post(f"{gw.url}/api/ap/query",
                                     json={"agentKey": "fragile", "message": "x", "stream": False})
        assert response.status_code == 502
        assert response.json()["code"] == code and kind in response.json()["msg"]


async def test_retry_before_first_delta(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "retry", agent("ONESHOT", budget={"model": {"maxCalls": 5, "timeoutMs": 5000, "retryCount": 1}}))
    gw = start_gateway()
    upstream.enqueue(http_error_script(503, "busy"), text_script(["second try"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "retry", "message": "x"})
    assert events[-1]["type"] == "run.complete" and _deltas(events, "content.delta") == ["second try"]
    assert len(upstream.requests) == 2


async def test_no_retry_after_a_delta_was_forwarded(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "retry", agent("ONESHOT", budget={"model": {"maxCalls": 5, "timeoutMs": 5000, "retryCount": 3}}))
    gw = start_gateway()
    upstream.enqueue([Text("half"), Disconnect()], text_script(["never"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "retry", "message": "x"})
    assert events[-1]["type"] == "run.error" and len(upstream.requests) == 1


async def test_model_call_budget_exceeded(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "tight", agent("REACT", tools=WEATHER,
                                       budget={"model": {"maxCalls": 1, "timeoutMs": 5000, "retryCount": 0}}))
    gw = start_gateway()
    upstream.enqueue(tool_call_script("c1", "city_datetime", ['{"city":"Paris"}']), text_script(["never"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "tight", "message": "x"})
    assert events[-1]["type"] == "run.error" and events[-1]["error"]["code"] == "budget_model_calls"


async def test_tool_call_budget_exceeded(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "tight", agent("REACT", tools=WEATHER,
                                       budget={"tool": {"maxCalls": 1, "timeoutMs": 5000, "retryCount": 0}}))
    gw = start_gateway()
    upstream.enqueue(tool_call_script("c1", "city_datetime", ['{"city":"Paris"}']),
                     tool_call_script("c2", "city_datetime", ['{"city":"Rome"}']), text_script(["never"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "tight", "message": "x"})
    assert events[-1]["type"] == "run.error" and events[-1]["error"]["code"] == "budget_tool_calls"


async def test_a_tool_result_nested_too_deep_to_encode_is_an_error_result_and_the_run_goes_on(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """An HTTP tool's body nested 300 deep (orjson reads 1024 levels, writes 254) became the
    result: ``tool.result`` could not be framed, the SSE stream was cut with no terminal event and
    the chat's step line was refused. It is now an error result the model sees, like any failure."""
    class Deep(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"[" * 300 + b"]" * 300
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Deep)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        (deploy / "tools" / "deep.backend").write_bytes(orjson.dumps({"tools": [{
            "type": "function", "name": "deep_tool", "description": "nests", "parameters": {"type": "object"},
            "toolApi": f"http://127.0.0.1:{server.server_address[1]}/deep"}]}))
        write_agent(deploy, "deep", agent("REACT", tools={"backends": ["deep_tool"], "frontends": [], "actions": []}))
        gw = start_gateway()
        upstream.enqueue(tool_call_script("c1", "deep_tool", ["{}"]), text_script(["told"]))
        events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "deep", "message": "x"})
    finally:
        server.shutdown()
        server.server_close()
    assert events[-1]["type"] == "run.complete", events[-1]
    result = next(e["result"] for e in events if e["type"] == "tool.result")
    assert result["ok"] is False and "nested deeper" in result["error"]
    told = [m for m in upstream.requests[1].body["messages"] if m["role"] == "tool"]
    assert orjson.loads(told[0]["content"]) == result
    chat = (await client.get(f"{gw.url}/api/ap/chat", params={"chatId": events[0]["chatId"]})).json()["data"]
    assert [e["type"] for e in chat["events"]][-1] == "run.complete"


async def test_run_timeout_budget(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "slow", agent("ONESHOT", budget={"runTimeoutMs": 300,
                                                         "model": {"maxCalls": 3, "timeoutMs": 60000}}))
    gw = start_gateway()
    upstream.enqueue([Text("start"), Stall()])
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "slow", "message": "x"})
    assert events[-1]["type"] == "run.error" and events[-1]["error"]["code"] == "budget_run_timeout"


async def test_client_disconnect_cancels_run_and_closes_upstream(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue([Text("first"), Gate("never-released"), Text("second"), Finish("stop")])
    chat_id = None
    async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "plain", "message": "x"}):
        if event["type"] == "request.query":
            chat_id = event["chatId"]
        if event["type"] == "content.delta":
            break  # the client goes away mid-stream
    assert chat_id is not None
    assert await asyncio.to_thread(upstream.wait_disconnect, 0, 20.0), "upstream connection was not closed"
    for _ in range(200):
        lines = gw.gateway.chats.read_lines(chat_id)
        if any(line.get("_type") == "run" for line in lines):
            break
        await asyncio.sleep(0.05)
    run_line = next(line for line in lines if line.get("_type") == "run")
    assert run_line["status"] == "cancel"
    history = (await client.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id})).json()["data"]
    assert history["events"][-1]["type"] == "run.cancel"
    snapshots = [e for e in history["events"] if e["type"] == "content.snapshot"]
    assert snapshots and snapshots[0]["text"] == "first"  # what was streamed is not lost


async def test_a_non_streamed_query_whose_client_leaves_cancels_its_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """SPEC §6: the client leaving cancels the run (``onDisconnect: cancel``, the default) with
    ``stream: false`` too. Nothing listened for the disconnect there: the run went on to its end,
    holding the upstream call and the user's concurrent-run slot."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue([Text("first"), Gate("never-released"), Text("second"), Finish("stop")])
    try:
        async with httpx.AsyncClient() as leaving:
            answering = asyncio.create_task(leaving.post(f"{gw.url}/api/ap/query",
                                                         json={"agentKey": "plain", "message": "x", "stream": False}))
            run_id = None
            for _ in range(2000):  # bounded poll until the run streams (held at the gate)
                runs = (await client.get(f"{gw.url}/api/ap/runs")).json()["data"]
                if runs and runs[0]["lastSeq"] > 2:
                    run_id = runs[0]["runId"]
                    break
                await asyncio.sleep(0.01)
            assert run_id is not None
            answering.cancel()  # the client goes away before the answer
            await asyncio.gather(answering, return_exceptions=True)
        assert await asyncio.to_thread(upstream.wait_disconnect, 0, 20.0), "upstream connection was not closed"
        for _ in range(2000):  # bounded poll: the run ends as cancelled
            run = (await client.get(f"{gw.url}/api/ap/run", params={"runId": run_id})).json()["data"]
            if run["status"] != "running":
                break
            await asyncio.sleep(0.01)
        assert run["status"] == "cancelled"
    finally:
        upstream.release("never-released")


async def test_model_settings_reach_the_upstream_request(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    body = agent("REACT", tools=WEATHER, toolChoice="REQUIRED")
    body["modelConfig"] = {"modelKey": "fake-openai", "reasoning": {"enabled": True, "effort": "HIGH"},
                           "temperature": 0.2, "top_p": 0.9, "max_tokens": 256}
    write_agent(deploy, "tuned", body)
    gw = start_gateway()
    upstream.enqueue(tool_call_script("c1", "city_datetime", ['{"city":"Paris"}']), text_script(["ok"]))
    await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "tuned", "message": "hi"})
    first, second = (r.body for r in upstream.requests)
    assert (first["temperature"], first["top_p"], first["max_tokens"]) == (0.2, 0.9, 256)
    assert first["enable_thinking"] is True and first["reasoning_effort"] == "high"
    assert first["tool_choice"] == "required" and second["tool_choice"] == "auto"
    assert upstream.requests[0].headers["authorization"] == "Bearer sk-test-secret-key-123"
