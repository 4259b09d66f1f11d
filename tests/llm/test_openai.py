"""The OpenAI adapter over real HTTP against the fake upstream (SPEC §7)."""

from __future__ import annotations

import asyncio
import logging
import socket

import httpx
import orjson
import pytest

from app.catalog.definitions import ReasoningConfig
from app.devtools import (
    Disconnect,
    FakeUpstream,
    Finish,
    Gate,
    HttpError,
    Malformed,
    Pause,
    Stall,
    StreamError,
    Text,
    ToolArgs,
    ToolCall,
    Usage,
    parallel_tool_calls_script,
    text_script,
    tool_call_script,
)
from app.errors import UpstreamDisconnected, UpstreamError, UpstreamHTTPError, UpstreamProtocolError, UpstreamTimeout
from app.llm.client import stream_chat
from app.llm.deltas import (
    ContentDelta,
    Delta,
    FinishDelta,
    ReasoningDelta,
    ToolCallArgs,
    ToolCallStart,
    UsageDelta,
)

from app.llm.openai import StreamTranslator

from .support import API_KEY, make_request, translate

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "w", "parameters": {"type": "object", "properties": {}}},
}
CLOCK_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "description": "t", "parameters": {"type": "object", "properties": {}}},
}


async def collect(http: httpx.AsyncClient, fake: FakeUpstream, **overrides: object) -> list[Delta]:
    request = make_request(fake.url, **overrides)  # type: ignore[arg-type]
    return [delta async for delta in stream_chat(http, request)]


async def test_text_deltas_one_for_one(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["Hel", "lo", " world"], usage=(10, 3)))
    deltas = await collect(http, fake)
    assert deltas == [
        ContentDelta("Hel"),
        ContentDelta("lo"),
        ContentDelta(" world"),
        FinishDelta("stop"),
        UsageDelta(10, 3, 13),
    ]


async def test_reasoning_then_content(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["Answer"], reasoning=["Let", " me", " think"], usage=None))
    assert await collect(http, fake) == [
        ReasoningDelta("Let"),
        ReasoningDelta(" me"),
        ReasoningDelta(" think"),
        ContentDelta("Answer"),
        FinishDelta("stop"),
    ]


async def test_reasoning_field_alias(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    """Some vendors call it ``delta.reasoning``; fed through a raw malformed-free line."""
    lines = [
        'data: {"choices":[{"index":0,"delta":{"reasoning":"r1"}}]}',
        "",
        'data: {"choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop"}]}',
        "data: [DONE]",
    ]
    assert translate(StreamTranslator(), lines) == [ReasoningDelta("r1"), FinishDelta("stop")]


async def test_tool_call_arguments_in_three_fragments(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(tool_call_script("call_1", "get_weather", ['{"ci', 'ty":', '"Paris"}'], usage=(5, 7)))
    assert await collect(http, fake, tools=[WEATHER_TOOL]) == [
        ToolCallStart(0, "call_1", "get_weather"),
        ToolCallArgs(0, '{"ci'),
        ToolCallArgs(0, 'ty":'),
        ToolCallArgs(0, '"Paris"}'),
        FinishDelta("tool_calls"),
        UsageDelta(5, 7, 12),
    ]


async def test_arguments_in_the_start_chunk_are_kept() -> None:
    lines = [
        'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function",'
        '"function":{"name":"f","arguments":"{\\"a\\""}}]}}]}',
        'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":1}"}}]}}]}',
        'data: {"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}',
        "data: [DONE]",
    ]
    assert translate(StreamTranslator(), lines) == [
        ToolCallStart(0, "c1", "f"),
        ToolCallArgs(0, '{"a"'),
        ToolCallArgs(0, ":1}"),
        FinishDelta("tool_calls"),
    ]


async def test_two_parallel_tool_calls(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(
        parallel_tool_calls_script(
            [("call_a", "get_weather", ['{"city":', '"Paris"}']), ("call_b", "get_time", ["{}"])], usage=None
        )
    )
    assert await collect(http, fake, tools=[WEATHER_TOOL, CLOCK_TOOL]) == [
        ToolCallStart(0, "call_a", "get_weather"),
        ToolCallArgs(0, '{"city":'),
        ToolCallArgs(0, '"Paris"}'),
        ToolCallStart(1, "call_b", "get_time"),
        ToolCallArgs(1, "{}"),
        FinishDelta("tool_calls"),
    ]


async def test_interleaved_parallel_fragments(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(
        [ToolCall(0, "a", "get_weather"), ToolCall(1, "b", "get_time"), ToolArgs(1, "{}"), ToolArgs(0, "{}"),
         Finish("tool_calls")]
    )  # fmt: skip
    assert await collect(http, fake) == [
        ToolCallStart(0, "a", "get_weather"),
        ToolCallStart(1, "b", "get_time"),
        ToolCallArgs(1, "{}"),
        ToolCallArgs(0, "{}"),
        FinishDelta("tool_calls"),
    ]


async def test_request_body_and_headers(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["ok"]))
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": [{"type": "text", "text": "hi "}, {"type": "text", "text": "there"}], "ts": 1},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
            "_msgId": "m_1",
        },
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": "sunny", "_toolId": "c1"},
    ]
    await collect(
        http, fake, model_id="qwen-max", messages=messages, tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice="auto",
        temperature=0.7, top_p=0.9, max_tokens=256,
    )  # fmt: skip
    recorded = fake.requests[0]
    assert recorded.path == "/v1/chat/completions"
    assert recorded.headers["authorization"] == f"Bearer {API_KEY}"
    assert recorded.headers["content-type"] == "application/json"
    assert recorded.headers["accept"] == "text/event-stream"
    body = recorded.body
    assert body["model"] == "qwen-max"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["tools"] == [WEATHER_TOOL, CLOCK_TOOL] and body["tool_choice"] == "auto"
    assert (body["temperature"], body["top_p"], body["max_tokens"]) == (0.7, 0.9, 256)
    assert body["messages"] == [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "hi there"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "content": "sunny", "name": "get_weather", "tool_call_id": "c1"},
    ]
    assert "enable_thinking" not in body and "reasoning_effort" not in body


async def test_tool_choice_and_allowed_tools(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["a"]), text_script(["b"]), text_script(["c"]))
    await collect(http, fake, tools=[WEATHER_TOOL, CLOCK_TOOL], tool_choice="required", allowed_tools=["get_time"])
    await collect(http, fake, tools=[WEATHER_TOOL], tool_choice="none")
    await collect(http, fake, tools=[], tool_choice="required")
    first, second, third = (r.body for r in fake.requests)
    assert first["tools"] == [CLOCK_TOOL] and first["tool_choice"] == "required"
    assert second["tool_choice"] == "none"
    assert "tools" not in third and "tool_choice" not in third
    fake.enqueue(text_script(["d"]))
    await collect(http, fake, tools=[WEATHER_TOOL])
    assert "tool_choice" not in fake.requests[3].body


async def test_reasoning_flags(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["a"]), text_script(["b"]), text_script(["c"]))
    await collect(http, fake, reasoning=ReasoningConfig(enabled=True, effort="HIGH"))
    await collect(http, fake, reasoning=ReasoningConfig(enabled=False), is_reasoner=True)
    await collect(http, fake, reasoning=ReasoningConfig(enabled=True))
    first, second, third = (r.body for r in fake.requests)
    assert first["enable_thinking"] is True and first["reasoning_effort"] == "high"
    assert second["enable_thinking"] is False and "reasoning_effort" not in second
    assert third["enable_thinking"] is True and "reasoning_effort" not in third


async def test_newapi_path_and_provider_default_model(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["a"]))
    request = make_request(
        fake.url, "NEWAPI_OPENAI_COMPATIBLE", model_id="", new_api_path="/api/paas/v4/chat/completions"
    )
    provider = request.provider.model_copy(update={"model": "glm-5"})
    from dataclasses import replace

    deltas = [d async for d in stream_chat(http, replace(request, provider=provider))]
    assert deltas[0] == ContentDelta("a")
    assert fake.requests[0].path == "/api/paas/v4/chat/completions"
    assert fake.requests[0].body["model"] == "glm-5"


async def test_zero_buffer(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    """Each delta must be yielded before the fake even sends the next one."""
    fake.enqueue([Text("a"), Gate("g1"), Text("b"), Gate("g2"), Text("c"), Finish()])
    stream = stream_chat(http, make_request(fake.url))
    try:
        assert await asyncio.wait_for(anext(stream), 5) == ContentDelta("a")
        fake.release("g1")
        assert await asyncio.wait_for(anext(stream), 5) == ContentDelta("b")
        fake.release("g2")
        assert await asyncio.wait_for(anext(stream), 5) == ContentDelta("c")
        assert await asyncio.wait_for(anext(stream), 5) == FinishDelta("stop")
    finally:
        await stream.aclose()


async def test_closing_the_generator_closes_the_upstream(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Gate("never"), Text("b"), Finish()])
    stream = stream_chat(http, make_request(fake.url))
    assert await asyncio.wait_for(anext(stream), 5) == ContentDelta("a")
    await stream.aclose()
    assert await asyncio.to_thread(fake.wait_disconnect, 0, 5)


async def test_cancelling_the_consumer_closes_the_upstream(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Stall()])
    seen: list[Delta] = []

    async def consume() -> None:
        async for delta in stream_chat(http, make_request(fake.url)):
            seen.append(delta)

    task = asyncio.create_task(consume())
    while not seen:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.to_thread(fake.wait_disconnect, 0, 5)


@pytest.mark.parametrize("status", [500, 429])
async def test_http_error_before_streaming(http: httpx.AsyncClient, fake: FakeUpstream, status: int) -> None:
    fake.enqueue([HttpError(status, {"error": {"message": f"vendor says {status}", "type": "x"}})])
    with pytest.raises(UpstreamHTTPError) as caught:
        await collect(http, fake)
    assert caught.value.http_status == status
    assert f"vendor says {status}" in caught.value.message
    assert f"HTTP {status}" in caught.value.message


async def test_http_error_body_is_bounded(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([HttpError(502, "x" * 100_000)])
    with pytest.raises(UpstreamHTTPError) as caught:
        await collect(http, fake)
    assert caught.value.http_status == 502 and len(caught.value.body) <= 4096


async def test_malformed_chunk(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Malformed("{broken"), Text("b"), Finish()])
    seen: list[Delta] = []
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        async for delta in stream_chat(http, make_request(fake.url)):
            seen.append(delta)
    assert seen == [ContentDelta("a")]


async def test_error_object_in_stream(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), StreamError("quota exhausted")])
    with pytest.raises(UpstreamHTTPError, match="quota exhausted"):
        await collect(http, fake)


async def test_abrupt_disconnect(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Disconnect()])
    seen: list[Delta] = []
    with pytest.raises(UpstreamDisconnected):
        async for delta in stream_chat(http, make_request(fake.url)):
            seen.append(delta)
    assert seen == [ContentDelta("a")]


async def test_clean_end_without_done_or_finish_is_a_disconnect() -> None:
    seen: list[Delta] = []
    with pytest.raises(UpstreamDisconnected):
        translate(StreamTranslator(), ['data: {"choices":[{"index":0,"delta":{"content":"a"}}]}'], seen)
    assert seen == [ContentDelta("a")]


async def test_stall_past_the_read_timeout(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Stall()])
    with pytest.raises(UpstreamTimeout):
        await collect(http, fake, timeout_s=0.5)
    assert await asyncio.to_thread(fake.wait_disconnect, 0, 5)


async def test_slow_but_steady_stream_is_fine(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Pause(0.1), Text("b"), Pause(0.1), Text("c"), Finish()])
    deltas = await collect(http, fake, timeout_s=2)
    assert [d for d in deltas if isinstance(d, ContentDelta)] == [ContentDelta("a"), ContentDelta("b"), ContentDelta("c")]


async def test_connection_refused(http: httpx.AsyncClient) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    request = make_request(f"http://127.0.0.1:{port}")
    with pytest.raises(UpstreamError, match="cannot connect") as caught:
        [d async for d in stream_chat(http, request)]
    assert type(caught.value) is UpstreamError


async def test_api_key_never_logged(
    http: httpx.AsyncClient, fake: FakeUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    fake.enqueue(text_script(["a"]), [HttpError(401)])
    caplog.set_level(logging.DEBUG)
    await collect(http, fake, trace_id="tr-1", stage="react")
    with pytest.raises(UpstreamHTTPError) as caught:
        await collect(http, fake)
    assert "tr-1" in caplog.text and "react" in caplog.text
    assert API_KEY not in caplog.text
    assert API_KEY not in str(caught.value) and API_KEY not in repr(make_request(fake.url))


async def test_usage_only_chunk_and_trailing_usage(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("x"), Finish(), Usage(3, 4)])
    assert (await collect(http, fake))[-1] == UsageDelta(3, 4, 7)


@pytest.mark.parametrize(("details", "expected"), [
    ({"reasoning_tokens": 30}, 30),
    ({"reasoning_tokens": 0}, 0),
    ({"reasoning_tokens": -1}, None),
    ({"reasoning_tokens": "30"}, None),
    ("not an object", None),
    (None, None),
], ids=["reported", "zero", "negative", "string", "not-an-object", "absent"])
async def test_reasoning_tokens_only_when_the_provider_reports_a_count(details: object, expected: int | None) -> None:
    usage: dict[str, object] = {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52}
    if details is not None:
        usage["completion_tokens_details"] = details

    lines = [
        'data: {"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}',
        "data: " + orjson.dumps({"choices": [], "usage": usage}).decode(),
        "data: [DONE]",
    ]
    deltas = translate(StreamTranslator(), lines)
    assert deltas == [FinishDelta("stop"), UsageDelta(12, 40, 52, reasoning_tokens=expected)]


def test_deltas_before_an_error_object_in_the_same_read_are_handed_over_first() -> None:
    """One upstream read may hold a delta and then an error object: the delta still reaches the
    run (and the client) before the error ends the stream, as when each line was its own step."""
    from app.llm._sse import EventReader, deltas_of

    chunk = (b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
             b'data: {"error":{"message":"overloaded","code":503}}\n\n')
    seen: list[Delta] = []
    with pytest.raises(UpstreamHTTPError, match="overloaded"):
        for delta in deltas_of(EventReader().feed(chunk), StreamTranslator()):
            seen.append(delta)
    assert seen == [ContentDelta("a")]


def _chunk(delta: dict[str, object], finish: str | None = None) -> str:
    return "data: " + orjson.dumps({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}).decode()


def _call(call_id: str | None = None, name: str | None = None, arguments: object = None,
          index: int | None = None) -> dict[str, object]:
    call: dict[str, object] = {"type": "function", "function": {}}
    if index is not None:
        call["index"] = index
    if call_id is not None:
        call["id"] = call_id
    function: dict[str, object] = {}
    if name is not None:
        function["name"] = name
    if arguments is not None:
        function["arguments"] = arguments
    call["function"] = function
    return call


@pytest.mark.parametrize(("calls", "expected"), [
    pytest.param([[_call("call_a", "w", '{"city":"A"}', index=0)], [_call("call_b", "t", '{"city":"B"}', index=0)]],
                 [ToolCallStart(0, "call_a", "w"), ToolCallArgs(0, '{"city":"A"}'),
                  ToolCallStart(1, "call_b", "t"), ToolCallArgs(1, '{"city":"B"}')],
                 id="parallel_calls_all_under_index_0"),
    pytest.param([[_call("call_a", "w", '{"city":"A"}')], [_call("call_b", "t", '{"city":"B"}')], [_call(arguments="!")]],
                 [ToolCallStart(0, "call_a", "w"), ToolCallArgs(0, '{"city":"A"}'),
                  ToolCallStart(1, "call_b", "t"), ToolCallArgs(1, '{"city":"B"}'), ToolCallArgs(1, "!")],
                 id="no_index_a_new_id_is_a_new_call"),
    pytest.param([[_call("call_a", index=0)], [_call(name="w", arguments='{"a"', index=0)], [_call(arguments=":1}", index=0)]],
                 [ToolCallStart(0, "call_a", "w"), ToolCallArgs(0, '{"a"'), ToolCallArgs(0, ":1}")],
                 id="the_name_after_the_id"),
    pytest.param([[_call(arguments='{"a":', index=0)], [_call("call_a", "w", "1}", index=0)]],
                 [ToolCallStart(0, "call_a", "w"), ToolCallArgs(0, '{"a":'), ToolCallArgs(0, "1}")],
                 id="fragments_before_the_name_follow_the_start"),
    pytest.param([[_call("call_a", arguments="{}", index=0)]],
                 [ToolCallStart(0, "call_a", ""), ToolCallArgs(0, "{}")],
                 id="never_named_starts_nameless_at_the_finish"),
    pytest.param([[_call("call_a", "w", {"city": "A"}, index=0)]],
                 [ToolCallStart(0, "call_a", "w"), ToolCallArgs(0, '{"city":"A"}')],
                 id="arguments_sent_as_an_object"),
    pytest.param([[_call(name="w", arguments="{}", index=0)], [_call(name="t", arguments="{}", index=1)]],
                 [ToolCallStart(0, "", "w"), ToolCallArgs(0, "{}"), ToolCallStart(1, "", "t"), ToolCallArgs(1, "{}")],
                 id="no_id_the_engine_names_it"),
    pytest.param([[_call("call_a", "w", "{}", index=0)], [_call("call_a", "t", "{}", index=1)]],
                 [ToolCallStart(0, "call_a", "w"), ToolCallArgs(0, "{}"), ToolCallStart(1, "call_a", "t"),
                  ToolCallArgs(1, "{}")],
                 id="one_id_under_two_indexes_is_two_calls"),
])
def test_quirky_tool_call_streams_keep_each_call_whole(calls: list[list[dict[str, object]]],
                                                       expected: list[Delta]) -> None:
    """Servers differ in how they stream tool calls: every parallel call under index 0, no index
    at all, the name after the id, arguments as an object, no id. Each call now stays whole and
    apart; before, a second call's arguments were glued onto the first (invalid JSON, the second
    call lost), a late name was dropped, object arguments vanished, and a missing id became
    ``call_<index>``, the same in every turn."""
    lines = [_chunk({"tool_calls": chunk}) for chunk in calls]
    lines += [_chunk({}, "tool_calls"), "data: [DONE]"]
    assert translate(StreamTranslator(), lines) == [*expected, FinishDelta("tool_calls")]


def test_a_usage_that_is_not_a_number_is_no_crash() -> None:
    lines = [_chunk({"content": "hi"}, "stop"),
             'data: {"choices":[],"usage":{"prompt_tokens":"n/a","completion_tokens":3,"total_tokens":null}}',
             "data: [DONE]"]
    assert translate(StreamTranslator(), lines) == [ContentDelta("hi"), FinishDelta("stop"), UsageDelta(0, 3, 3)]


def test_an_emoji_split_between_two_chunks_does_not_end_the_run() -> None:
    """orjson refuses a JSON escape holding half a surrogate pair; the run died with "not JSON".
    The halves are now decoded (each lone half as U+FFFD, which any file or client can carry)."""
    lines = ['data: {"choices":[{"index":0,"delta":{"content":"a\\ud83d"}}]}',
             'data: {"choices":[{"index":0,"delta":{"content":"\\ude00b"}}]}',
             'data: {"choices":[{"index":0,"delta":{"content":"\\ud83d\\ude00"}}]}',
             _chunk({}, "stop"), "data: [DONE]"]
    assert translate(StreamTranslator(), lines) == [ContentDelta("a\ufffd"), ContentDelta("\ufffdb"),
                                                    ContentDelta("\U0001f600"), FinishDelta("stop")]
