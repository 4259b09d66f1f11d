"""The Anthropic adapter over real HTTP against the fake upstream (SPEC §7)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from app.catalog.definitions import ReasoningConfig
from app.devtools import (
    Disconnect,
    FakeUpstream,
    Finish,
    Gate,
    HttpError,
    Malformed,
    Stall,
    StreamError,
    Text,
    parallel_tool_calls_script,
    text_script,
    tool_call_script,
)
from app.errors import UpstreamDisconnected, UpstreamHTTPError, UpstreamProtocolError, UpstreamTimeout
from app.llm.anthropic import StreamTranslator, translate_messages
from app.llm.client import stream_chat
from app.llm.deltas import (
    ContentDelta,
    Delta,
    FinishDelta,
    ReasoningDelta,
    ReasoningSignature,
    RedactedReasoning,
    ToolCallArgs,
    ToolCallStart,
    UsageDelta,
)

from .support import API_KEY, make_request, translate

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


async def collect(http: httpx.AsyncClient, fake: FakeUpstream, **overrides: object) -> list[Delta]:
    request = make_request(fake.url, "ANTHROPIC", **overrides)  # type: ignore[arg-type]
    return [delta async for delta in stream_chat(http, request)]


async def test_text_deltas_one_for_one_with_usage(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["Hel", "lo"], usage=(12, 2)))
    assert await collect(http, fake) == [
        UsageDelta(12, 1, 13),  # message_start's, at once: the prompt is paid for even if the answer fails
        ContentDelta("Hel"),
        ContentDelta("lo"),
        FinishDelta("stop"),
        UsageDelta(12, 2, 14),
    ]


async def test_thinking_then_text(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["Answer"], reasoning=["Let", " me", " think"], usage=None))
    assert await collect(http, fake) == [
        ReasoningDelta("Let"),
        ReasoningDelta(" me"),
        ReasoningDelta(" think"),
        ReasoningSignature("fake-signature"),  # the thinking block's signature_delta
        ContentDelta("Answer"),
        FinishDelta("stop"),
        UsageDelta(0, 0, 0),
    ]


async def test_tool_use_arguments_in_three_fragments(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(tool_call_script("toolu_1", "get_weather", ['{"ci', 'ty":', '"Paris"}'], text=["Checking"], usage=(5, 9)))
    assert await collect(http, fake, tools=[WEATHER_TOOL]) == [
        UsageDelta(5, 1, 6),
        ContentDelta("Checking"),
        ToolCallStart(0, "toolu_1", "get_weather"),  # index = the response's first tool call (block 1)
        ToolCallArgs(0, '{"ci'),
        ToolCallArgs(0, 'ty":'),
        ToolCallArgs(0, '"Paris"}'),
        FinishDelta("tool_calls"),
        UsageDelta(5, 9, 14),
    ]


async def test_two_parallel_tool_uses(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(parallel_tool_calls_script([("toolu_a", "get_weather", ['{"city":"Paris"}']), ("toolu_b", "get_time", ["{}"])]))
    deltas = (await collect(http, fake))[1:]  # after message_start's usage
    assert deltas[:4] == [
        ToolCallStart(0, "toolu_a", "get_weather"),
        ToolCallArgs(0, '{"city":"Paris"}'),
        ToolCallStart(1, "toolu_b", "get_time"),
        ToolCallArgs(1, "{}"),
    ]
    assert deltas[4] == FinishDelta("tool_calls")


async def test_max_tokens_stop(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["trunc"], finish="length", usage=None))
    assert FinishDelta("length") in await collect(http, fake)


async def test_request_body_and_headers(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["ok"]))
    messages = [
        {"role": "system", "content": "be nice"},
        {"role": "user", "content": "weather in Paris?", "ts": 1},
        {"role": "assistant", "content": [{"type": "text", "text": "Let me check."}], "_msgId": "m_1"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
            ],
            "_msgId": "m_1",
        },
        {
            "role": "assistant",
            "tool_calls": [{"id": "c2", "type": "function", "function": {"name": "get_time", "arguments": ""}}],
        },
        {"role": "tool", "tool_call_id": "c1", "name": "get_weather", "content": [{"type": "text", "text": "sunny"}]},
        {"role": "tool", "tool_call_id": "c2", "name": "get_time", "content": "noon"},
        {"role": "system", "content": "second system"},
        {"role": "user", "content": "thanks"},
    ]
    await collect(
        http, fake, model_id="claude-x", messages=messages, tools=[WEATHER_TOOL], tool_choice="required",
        temperature=0.3, max_tokens=500,
    )  # fmt: skip
    recorded = fake.requests[0]
    assert recorded.path == "/v1/messages"
    assert recorded.headers["x-api-key"] == API_KEY
    assert recorded.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in recorded.headers
    body = recorded.body
    assert body["model"] == "claude-x" and body["stream"] is True and body["max_tokens"] == 500
    assert body["temperature"] == 0.3
    assert body["system"] == "be nice\n\nsecond system"
    assert body["tools"] == [
        {"name": "get_weather", "description": "weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}
    ]
    assert body["tool_choice"] == {"type": "any"}
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "weather in Paris?"}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "c1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "c2", "name": "get_time", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "c1", "content": "sunny"},
                {"type": "tool_result", "tool_use_id": "c2", "content": "noon"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]
    assert "thinking" not in body


@pytest.mark.parametrize(("choice", "wire"), [("auto", "auto"), ("none", "none"), ("required", "any")])
async def test_tool_choice_mapping(http: httpx.AsyncClient, fake: FakeUpstream, choice: str, wire: str) -> None:
    fake.enqueue(text_script(["a"]))
    await collect(http, fake, tools=[WEATHER_TOOL], tool_choice=choice)
    assert fake.requests[0].body["tool_choice"] == {"type": wire}


async def test_max_tokens_defaults(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["a"]), text_script(["b"]))
    await collect(http, fake, max_output_tokens=2048)
    await collect(http, fake)
    assert [r.body["max_tokens"] for r in fake.requests] == [2048, 4096]


@pytest.mark.parametrize(("effort", "budget"), [("LOW", 1024), ("MEDIUM", 4096), ("HIGH", 16384), (None, 2048)])
async def test_thinking_budget_by_effort(
    http: httpx.AsyncClient, fake: FakeUpstream, effort: str | None, budget: int
) -> None:
    fake.enqueue(text_script(["a"]))
    await collect(http, fake, reasoning=ReasoningConfig(enabled=True, effort=effort), temperature=0.5, max_tokens=2000)  # type: ignore[arg-type]
    body = fake.requests[0].body
    assert body["thinking"] == {"type": "enabled", "budget_tokens": budget}
    assert body["max_tokens"] > budget
    assert "temperature" not in body


async def test_zero_buffer(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Gate("g1"), Text("b"), Gate("g2"), Text("c"), Finish()])
    stream = stream_chat(http, make_request(fake.url, "ANTHROPIC"))
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
    fake.enqueue([Text("a"), Gate("never"), Finish()])
    stream = stream_chat(http, make_request(fake.url, "ANTHROPIC"))
    assert await asyncio.wait_for(anext(stream), 5) == ContentDelta("a")
    await stream.aclose()
    assert await asyncio.to_thread(fake.wait_disconnect, 0, 5)


@pytest.mark.parametrize("status", [500, 429])
async def test_http_error_before_streaming(http: httpx.AsyncClient, fake: FakeUpstream, status: int) -> None:
    fake.enqueue([HttpError(status, {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}})])
    with pytest.raises(UpstreamHTTPError, match="slow down") as caught:
        await collect(http, fake)
    assert caught.value.http_status == status


async def test_malformed_event(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Malformed("{nope")])
    with pytest.raises(UpstreamProtocolError):
        await collect(http, fake)


async def test_error_event(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), StreamError("Overloaded", "overloaded_error")])
    with pytest.raises(UpstreamHTTPError, match="Overloaded") as caught:
        await collect(http, fake)
    assert caught.value.http_status == 529


async def test_abrupt_disconnect(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Disconnect()])
    with pytest.raises(UpstreamDisconnected):
        await collect(http, fake)


async def test_end_without_message_stop_or_stop_reason() -> None:
    lines = [
        "event: message_start",
        'data: {"type":"message_start","message":{"usage":{"input_tokens":3,"output_tokens":1}}}',
        "",
        "event: content_block_delta",
        'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hi"}}',
    ]
    seen: list[Delta] = []
    with pytest.raises(UpstreamDisconnected):
        translate(StreamTranslator(), lines, seen)
    assert seen == [UsageDelta(3, 1, 4), ContentDelta("hi")]  # what was used before the end is told


async def test_stall_past_the_read_timeout(http: httpx.AsyncClient, fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Stall()])
    with pytest.raises(UpstreamTimeout):
        await collect(http, fake, timeout_s=0.5)
    assert await asyncio.to_thread(fake.wait_disconnect, 0, 5)


def test_translate_messages_leading_tool_results_and_empty_content() -> None:
    system, messages = translate_messages(
        [
            {"role": "user", "content": ""},
            {"role": "user", "content": "a"},
            {"role": "user", "content": [{"type": "text", "text": "b"}]},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "x", "function": {"name": "f", "arguments": "{bad"}}]},
        ]
    )
    assert system == ""
    assert messages == [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "x", "name": "f", "input": {}}]},
    ]


def _event(kind: str, **body: object) -> list[str]:
    import orjson

    return [f"event: {kind}", "data: " + orjson.dumps({"type": kind, **body}).decode(), ""]


def test_a_repeated_or_unknown_block_index_never_merges_or_loses_a_call() -> None:
    """Each ``tool_use`` block is its own call here, whatever block index the upstream gives it.
    A second start under an index already streaming replaced the first call (its ``tool.start``
    never ended, and it vanished from memory); a fragment for a block never started went to
    whatever call had that number."""
    lines = [
        *_event("message_start", message={"usage": {"input_tokens": 5}}),
        *_event("content_block_start", index=1, content_block={"type": "tool_use", "id": "toolu_1", "name": "w"}),
        *_event("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": '{"a":1}'}),
        *_event("content_block_start", index=1, content_block={"type": "tool_use", "id": "toolu_2", "name": "t"}),
        *_event("content_block_delta", index=1, delta={"type": "input_json_delta", "partial_json": "{}"}),
        *_event("content_block_delta", index=7, delta={"type": "input_json_delta", "partial_json": '{"x":2}'}),
        *_event("content_block_start", index=3, content_block={"type": "tool_use", "name": "v"}),
        *_event("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": "3"}),
        *_event("message_stop"),
    ]
    assert translate(StreamTranslator(), lines) == [
        UsageDelta(5, 0, 5), ToolCallStart(0, "toolu_1", "w"), ToolCallArgs(0, '{"a":1}'),
        ToolCallStart(1, "toolu_2", "t"), ToolCallArgs(1, "{}"),
        ToolCallArgs(2, '{"x":2}'),  # a block never started: the engine adopts it as a nameless call
        ToolCallStart(3, "", "v"),  # no id: the engine gives it a unique one
        FinishDelta("tool_calls"), UsageDelta(5, 3, 8),
    ]


def test_an_index_or_usage_that_is_not_a_number_is_no_crash() -> None:
    """``int()`` on the upstream's values raised ``ValueError``: the run ended as an internal error."""
    lines = [
        *_event("message_start", message={"usage": {"input_tokens": "lots", "cache_read_input_tokens": None}}),
        *_event("content_block_start", index="zero", content_block={"type": "tool_use", "id": "toolu_1", "name": "w"}),
        *_event("content_block_delta", index="zero", delta={"type": "input_json_delta", "partial_json": "{}"}),
        *_event("message_delta", delta={"stop_reason": "tool_use"}, usage={"output_tokens": 2.0}),
        *_event("message_stop"),
    ]
    assert translate(StreamTranslator(), lines) == [
        ToolCallStart(0, "toolu_1", "w"), ToolCallArgs(0, "{}"), FinishDelta("tool_calls"), UsageDelta(0, 2, 2)]


def test_signed_and_redacted_thinking_are_read_and_sent_back_in_order() -> None:
    """A turn's thinking blocks come back to Anthropic as they came, signed or encrypted, first in
    the turn, and only while thinking is on for the call."""
    from app.memory import replay_messages

    lines = [
        *_event("message_start", message={"usage": {"input_tokens": 5}}),
        *_event("content_block_start", index=0, content_block={"type": "thinking", "thinking": ""}),
        *_event("content_block_delta", index=0, delta={"type": "thinking_delta", "thinking": "hmm"}),
        *_event("content_block_delta", index=0, delta={"type": "signature_delta", "signature": "SIG"}),
        *_event("content_block_start", index=1, content_block={"type": "redacted_thinking", "data": "ENC"}),
        *_event("message_delta", delta={"stop_reason": "end_turn"}, usage={"output_tokens": 3}),
        *_event("message_stop"),
    ]
    assert translate(StreamTranslator(), lines)[1:4] == [ReasoningDelta("hmm"), ReasoningSignature("SIG"),
                                                         RedactedReasoning("ENC")]
    step = {"_type": "step", "runId": "r1", "messages": [
        {"role": "user", "content": [{"type": "text", "text": "q"}]},
        {"role": "assistant", "reasoning_content": [{"type": "text", "text": "hmm"}], "_reasoningSignature": "SIG",
         "_msgId": "m1"},
        {"role": "assistant", "_redactedReasoning": "ENC", "_msgId": "m1"},
        {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function",
                                              "function": {"name": "w", "arguments": "{}"}}], "_msgId": "m1"},
        {"role": "tool", "tool_call_id": "t1", "name": "w", "content": [{"type": "text", "text": "ok"}]},
    ]}
    assert "_thinking" not in replay_messages([step], 1)[1]  # an earlier run: never
    messages = replay_messages([step], 1, signed_reasoning=True)
    _, with_thinking = translate_messages(messages, thinking=True)
    assert [block["type"] for block in with_thinking[1]["content"]] == ["thinking", "redacted_thinking", "tool_use"]
    assert with_thinking[1]["content"][:2] == [{"type": "thinking", "thinking": "hmm", "signature": "SIG"},
                                               {"type": "redacted_thinking", "data": "ENC"}]
    _, without = translate_messages(messages, thinking=False)
    assert [block["type"] for block in without[1]["content"]] == ["tool_use"]
