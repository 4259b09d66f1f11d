"""The SSE wire format itself (SPEC §6, §7): framing, headers, heartbeat comments."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import orjson
from sse_starlette import ServerSentEvent

from app.api.openai_routes import _encode
from app.api.sse import encode_event, event_frame, heartbeat
from app.contract.events import ContentDeltaEvent, Stamped
from app.devtools import FakeUpstream
from app.devtools.script import text_script, tool_call_script
from tests.support.bodies import recording_gateway
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import stream_events

ASK = {"backends": [], "frontends": ["confirm_dialog"], "actions": []}


def test_one_event_is_one_message_with_one_data_line() -> None:
    wire = encode_event(Stamped(ContentDeltaEvent(content_id="r_c_1", delta="a\nb"), 7, 1))
    text = wire.encode().decode()
    assert text.startswith("id: 7\r\nevent: message\r\ndata: ") or text.startswith("id: 7\nevent: message\ndata: ")
    lines = [line for line in text.splitlines() if line]
    assert len([line for line in lines if line.startswith("data:")]) == 1  # the newline is escaped in JSON
    assert orjson.loads(lines[-1][len("data: "):])["delta"] == "a\nb"
    assert heartbeat().encode().decode().strip() == ": heartbeat"


async def test_headers_and_heartbeat_while_a_frontend_tool_waits(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "asker", agent("REACT", tools=ASK))
    gw = start_gateway(overrides={"server": {"sse-heartbeat-seconds": 0.2}})
    upstream.enqueue(tool_call_script("c1", "confirm_dialog", ['{"question":"Go?"}']), text_script(["done"]))

    async def read() -> list[str]:
        seen: list[str] = []
        tool: dict | None = None
        async with client.stream("POST", f"{gw.url}/api/ap/query", json={"agentKey": "asker", "message": "x"}) as r:
            assert r.headers["cache-control"] == "no-cache"
            assert r.headers["x-accel-buffering"] == "no"
            assert "content-encoding" not in r.headers
            async for line in r.aiter_lines():
                seen.append(line)
                if line.startswith("data:"):
                    event = orjson.loads(line[5:])
                    if event["type"] == "tool.start":
                        tool = event
                if line == ": heartbeat" and tool is not None and not any('"request.submit"' in s for s in seen):
                    # the run is idle, waiting for the browser: heartbeats keep the stream alive
                    answer = {"runId": tool["runId"], "toolId": tool["toolId"], "params": {"confirmed": True}}
                    assert (await client.post(f"{gw.url}/api/ap/submit", json=answer)).json()["data"]["accepted"]
        return seen

    seen = await asyncio.wait_for(read(), timeout=60)
    assert ": heartbeat" in seen
    assert any('"run.complete"' in line for line in seen)


def test_openai_frames_are_the_bytes_sse_starlette_would_write() -> None:
    """The OpenAI endpoint encodes its own frames (issue 13); they must stay what the SDK parses.
    (U+2028, U+2029 and U+0085 are escaped in the JSON: the same value, see the test below.)"""
    frames = ["[DONE]", {"id": "c1", "choices": [{"delta": {"content": "a\nb\ré"}}]}, {"x": None}]
    for frame in frames:
        expected = ServerSentEvent(data=frame if isinstance(frame, str) else orjson.dumps(frame).decode()).encode()
        assert _encode(frame) == expected


SEPARATORS = "a\u2028b\u2029c\x85d é ✓"


def test_frames_escape_the_characters_splitlines_clients_end_a_line_at() -> None:
    frame = _encode({"choices": [{"delta": {"content": SEPARATORS}}]})
    assert frame.decode().splitlines()[0].startswith("data: ")
    assert len([line for line in frame.decode().splitlines() if line]) == 1
    assert orjson.loads(frame.decode().splitlines()[0][6:])["choices"][0]["delta"]["content"] == SEPARATORS
    assert "é ✓".encode() in frame  # other non-ASCII text stays as it is
    wire = event_frame(Stamped(ContentDeltaEvent(content_id="r_c_1", delta=SEPARATORS), 3, 1)).decode()
    data = [line for line in wire.splitlines() if line.startswith("data: ")]
    assert len(data) == 1 and orjson.loads(data[0][6:])["delta"] == SEPARATORS


async def test_a_unicode_line_separator_reaches_a_client_that_splits_lines_like_splitlines(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """httpx's ``aiter_lines`` (and so httpx-sse before 0.4.3) splits at U+2028, U+2029 and U+0085,
    which JSON strings may carry raw: the upstream's raw ones reach such a client whole, on the
    run stream and on the OpenAI endpoint."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue(text_script([SEPARATORS]), text_script([SEPARATORS]))
    deltas: list[str] = []
    async with client.stream("POST", f"{gw.url}/api/ap/query", json={"agentKey": "plain", "message": "x"}) as r:
        async for line in r.aiter_lines():
            if line.startswith("data:"):
                event = orjson.loads(line[5:])
                if event["type"] == "content.delta":
                    deltas.append(event["delta"])
    assert deltas == [SEPARATORS]
    contents: list[str] = []
    async with client.stream("POST", f"{gw.url}/v1/chat/completions", json={
            "model": "plain", "messages": [{"role": "user", "content": "x"}], "stream": True}) as r:
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                contents.append(orjson.loads(line[6:])["choices"][0]["delta"].get("content", ""))
    assert "".join(contents) == SEPARATORS


async def test_events_already_in_the_log_go_out_in_one_write_each_still_its_own_message(
    deploy: Path, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    server, bodies = recording_gateway(deploy, upstream, "/api/ap/query", ["one"])
    with server:
        events = [event async for event in stream_events(
            client, f"{server.url}/api/ap/query", {"agentKey": "plain", "message": "hi"})]
    per_send = [body.count(b"\r\nevent: message\r\n") for body in bodies]
    assert sum(per_send) == len(events)  # every event, each its own SSE message
    assert max(per_send) >= 2, per_send  # the run's first events were there together: one write
    assert b"".join(bodies).startswith(b"id: 1\r\nevent: message\r\n")


async def test_openai_chunks_already_there_go_out_in_one_write_each_still_its_own_message(
    deploy: Path, upstream: FakeUpstream, client: httpx.AsyncClient
) -> None:
    # the run's end is several chunks at once (the finish chunk, then [DONE]): one write, and
    # every chunk still a message of its own, in order
    server, bodies = recording_gateway(deploy, upstream, "/v1/chat/completions", ["one ", "two"])
    with server:
        async with client.stream("POST", f"{server.url}/v1/chat/completions", json={
                "model": "plain", "messages": [{"role": "user", "content": "x"}], "stream": True}) as r:
            lines = [line async for line in r.aiter_lines() if line]
    messages = [line[6:] for line in lines if line.startswith("data: ")]
    per_send = [body.count(b"data: ") for body in bodies]
    assert sum(per_send) == len(messages)
    assert max(per_send) >= 2, per_send  # chunks that were there together: one write
    assert messages[-1] == "[DONE]"
    chunks = [orjson.loads(m) for m in messages[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]) == "one two"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert b"".join(bodies) == b"".join(f"data: {m}\r\n\r\n".encode() for m in messages)
