"""The fake upstream speaks both vendor dialects over real HTTP, and observes its clients."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import httpx
import orjson
import pytest

from app.devtools import (
    Disconnect,
    FakeUpstream,
    Finish,
    Gate,
    HttpError,
    Malformed,
    Pause,
    Reasoning,
    Stall,
    StreamError,
    Text,
    ToolArgs,
    ToolCall,
    Usage,
    script_to_json,
    text_script,
    tool_call_script,
)

OPENAI_BODY: dict[str, Any] = {
    "model": "m1",
    "messages": [{"role": "user", "content": "hi"}],
    "stream": True,
    "stream_options": {"include_usage": True},
}
ANTHROPIC_BODY: dict[str, Any] = {"model": "c1", "messages": [{"role": "user", "content": "hi"}], "stream": True, "max_tokens": 10}


def data_lines(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def openai_chunks(text: str) -> list[dict[str, Any]]:
    lines = data_lines(text)
    assert lines[-1] == "[DONE]"
    return [orjson.loads(line) for line in lines[:-1]]


def anthropic_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        assert lines[0].startswith("event: ") and lines[1].startswith("data: "), block
        events.append((lines[0][len("event: ") :], orjson.loads(lines[1][len("data: ") :])))
    return events


# -- OpenAI dialect -----------------------------------------------------------------------


def test_openai_text_reasoning_usage_and_done(fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["Hel", "lo"], reasoning=["hm"], usage=(10, 2)))
    response = httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = openai_chunks(response.text)
    deltas = [chunk["choices"][0]["delta"] for chunk in chunks if chunk["choices"]]
    assert deltas == [
        {"role": "assistant", "reasoning_content": "hm"},
        {"content": "Hel"},
        {"content": "lo"},
        {},
    ]
    assert all(chunk["object"] == "chat.completion.chunk" and chunk["model"] == "m1" for chunk in chunks)
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}


def test_openai_usage_chunk_only_when_asked(fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["x"], usage=(1, 1)))
    body = {**OPENAI_BODY, "stream_options": None}
    chunks = openai_chunks(httpx.post(f"{fake.url}/chat/completions", json=body).text)
    assert all("usage" not in chunk for chunk in chunks)


def test_openai_tool_calls(fake: FakeUpstream) -> None:
    fake.enqueue(tool_call_script("call_1", "get_weather", ['{"ci', 'ty":', '"Paris"}']))
    chunks = openai_chunks(httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY).text)
    calls = [chunk["choices"][0]["delta"].get("tool_calls") for chunk in chunks if chunk["choices"]]
    assert calls[0] == [
        {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
    ]
    assert [c[0]["function"]["arguments"] for c in calls[1:4]] == ['{"ci', 'ty":', '"Paris"}']
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"


def test_newapi_style_paths_are_openai(fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["ok"]))
    response = httpx.post(f"{fake.url}/api/paas/v4/chat/completions", json=OPENAI_BODY)
    assert openai_chunks(response.text)[0]["choices"][0]["delta"]["content"] == "ok"
    assert fake.requests[0].path == "/api/paas/v4/chat/completions"
    assert fake.requests[0].dialect == "openai"


def test_openai_malformed_and_stream_error(fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Malformed("{oops")], [StreamError("overloaded", "server_error")])
    first = httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY).text
    assert data_lines(first)[-2:] == ["{oops", "[DONE]"]
    second = httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY).text
    assert [orjson.loads(line) for line in data_lines(second)] == [
        {"error": {"message": "overloaded", "type": "server_error", "code": None}}
    ]


# -- Anthropic dialect --------------------------------------------------------------------


def test_anthropic_full_message(fake: FakeUpstream) -> None:
    fake.enqueue(
        [Reasoning("think"), Text("Hi"), Text("!"), ToolCall(0, "toolu_1", "calc"), ToolArgs(0, '{"x":'), ToolArgs(0, "1}"),
         Usage(7, 3), Finish("tool_calls")]
    )
    response = httpx.post(f"{fake.url}/v1/messages", json=ANTHROPIC_BODY)
    assert response.status_code == 200
    events = anthropic_events(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop",
    ]  # fmt: skip
    assert all(data["type"] == name for name, data in events)
    assert events[0][1]["message"]["usage"]["input_tokens"] == 7
    assert events[2][1] == {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}}
    assert events[3][1]["delta"] == {"type": "thinking_delta", "thinking": "think"}
    assert events[4][1]["delta"]["type"] == "signature_delta"
    assert events[6][1]["content_block"] == {"type": "text", "text": ""}
    assert [e[1]["delta"]["text"] for e in events[7:9]] == ["Hi", "!"]
    assert events[10][1] == {
        "type": "content_block_start", "index": 2,
        "content_block": {"type": "tool_use", "id": "toolu_1", "name": "calc", "input": {}},
    }  # fmt: skip
    assert [e[1]["delta"] for e in events[11:13]] == [
        {"type": "input_json_delta", "partial_json": '{"x":'},
        {"type": "input_json_delta", "partial_json": "1}"},
    ]
    assert all(e[1]["index"] == 2 for e in events[11:14])
    assert events[14][1]["delta"]["stop_reason"] == "tool_use"
    assert events[14][1]["usage"] == {"output_tokens": 3}


@pytest.mark.parametrize(("reason", "wire"), [("stop", "end_turn"), ("length", "max_tokens")])
def test_anthropic_stop_reasons(fake: FakeUpstream, reason: str, wire: str) -> None:
    fake.enqueue([Text("x"), Finish(reason)])  # type: ignore[arg-type]
    events = anthropic_events(httpx.post(f"{fake.url}/messages", json=ANTHROPIC_BODY).text)
    assert [data for name, data in events if name == "message_delta"][0]["delta"]["stop_reason"] == wire


def test_anthropic_malformed_and_error_event(fake: FakeUpstream) -> None:
    fake.enqueue([Malformed("nope")], [StreamError("Overloaded", "overloaded_error")])
    first = httpx.post(f"{fake.url}/v1/messages", json=ANTHROPIC_BODY).text
    assert "event: content_block_delta\ndata: nope\n\n" in first
    second = anthropic_events(httpx.post(f"{fake.url}/v1/messages", json=ANTHROPIC_BODY).text)
    assert second[-1] == ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})


# -- HTTP errors, routing, recording -----------------------------------------------------


def test_http_error_in_both_dialects(fake: FakeUpstream) -> None:
    fake.enqueue([HttpError(429)], [HttpError(500, {"error": {"message": "boom"}})], [HttpError(503)])
    first = httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY)
    assert first.status_code == 429 and first.json()["error"]["message"] == "fake upstream error 429"
    second = httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY)
    assert second.status_code == 500 and second.json() == {"error": {"message": "boom"}}
    third = httpx.post(f"{fake.url}/v1/messages", json=ANTHROPIC_BODY)
    assert third.status_code == 503 and third.json()["type"] == "error"


def test_http_error_must_come_first() -> None:
    with pytest.raises(ValueError, match="first step"):
        FakeUpstream().enqueue([Text("a"), HttpError(500)])


def test_recorded_requests(fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["a"]), text_script(["b"]))
    httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY, headers={"Authorization": "Bearer k1"})
    httpx.post(f"{fake.url}/v1/messages", json=ANTHROPIC_BODY, headers={"X-Api-Key": "k2"})
    first, second = fake.requests
    assert (first.index, first.method, first.path, first.dialect) == (0, "POST", "/v1/chat/completions", "openai")
    assert first.headers["authorization"] == "Bearer k1"
    assert first.body == OPENAI_BODY
    assert (second.path, second.dialect, second.headers["x-api-key"]) == ("/v1/messages", "anthropic", "k2")
    assert fake.finished(0) and not fake.disconnected(0)


def test_empty_queue_without_responder_is_a_clear_500(fake: FakeUpstream) -> None:
    response = httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY)
    assert response.status_code == 500
    assert "no script queued" in response.json()["error"]["message"]


def test_responder_answers_when_the_queue_is_empty() -> None:
    seen: list[dict[str, Any]] = []

    def responder(body: dict[str, Any]) -> list[Any]:
        seen.append(body)
        return text_script([f"echo {body['model']}"])

    with FakeUpstream(responder) as fake:
        fake.enqueue(text_script(["queued"]))
        first = openai_chunks(httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY).text)
        second = openai_chunks(httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY).text)
    assert first[0]["choices"][0]["delta"]["content"] == "queued"
    assert second[0]["choices"][0]["delta"]["content"] == "echo m1"
    assert len(seen) == 1


def test_non_streaming_and_unknown_paths(fake: FakeUpstream) -> None:
    fake.enqueue(text_script(["a"]))
    response = httpx.post(f"{fake.url}/v1/chat/completions", json={**OPENAI_BODY, "stream": False})
    assert response.status_code == 400 and "only streams" in response.json()["error"]["message"]
    assert fake.pending_scripts == 1
    assert httpx.post(f"{fake.url}/v1/embeddings", json={}).status_code == 404
    assert httpx.get(f"{fake.url}/v1/chat/completions").status_code == 405


def test_keep_alive_connection_serves_several_streams(fake: FakeUpstream) -> None:
    fake.enqueue(*(text_script([str(n)]) for n in range(3)))
    with httpx.Client() as client:
        texts = [openai_chunks(client.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY).text) for _ in range(3)]
    assert [chunks[0]["choices"][0]["delta"]["content"] for chunks in texts] == ["0", "1", "2"]


def test_control_enqueue_over_http(fake: FakeUpstream) -> None:
    script = script_to_json(text_script(["remote"]))
    assert httpx.post(f"{fake.url}/_control/enqueue", json={"script": script}).json() == {"queued": len(script)}
    chunks = openai_chunks(httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY).text)
    assert chunks[0]["choices"][0]["delta"]["content"] == "remote"
    bad = httpx.post(f"{fake.url}/_control/enqueue", json={"script": [{"type": "nope"}]})
    assert bad.status_code == 400


# -- time-shaped steps: gates, pauses, faults ---------------------------------------------


async def test_gate_released_by_method_and_by_control_endpoint(fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Gate("g1"), Text("b"), Gate("g/2"), Text("c"), Finish()])
    async with httpx.AsyncClient() as client:
        async with client.stream("POST", f"{fake.url}/v1/chat/completions", json=OPENAI_BODY) as response:
            contents: list[str] = []
            lines = response.aiter_lines()

            async def next_content() -> str:
                async for line in lines:
                    if line.startswith("data: {"):
                        return str(orjson.loads(line[6:])["choices"][0]["delta"]["content"])
                raise AssertionError("stream ended")

            contents.append(await asyncio.wait_for(next_content(), 5))
            waiting = asyncio.ensure_future(next_content())
            await asyncio.sleep(0.05)
            assert not waiting.done(), "the gate let the rest through before release"
            fake.release("g1")
            contents.append(await asyncio.wait_for(waiting, 5))
            control = await client.post(f"{fake.url}/_control/release/g%2F2")
            assert control.json() == {"released": "g/2"}
            contents.append(await asyncio.wait_for(next_content(), 5))
    assert contents == ["a", "b", "c"]


def test_gate_released_before_it_is_reached_stays_open(fake: FakeUpstream) -> None:
    fake.release("early")
    fake.enqueue([Gate("early"), Text("through"), Finish()])
    chunks = openai_chunks(httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY, timeout=5).text)
    assert chunks[0]["choices"][0]["delta"]["content"] == "through"


def test_pause_delays_without_breaking(fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Pause(0.05), Text("b"), Finish()])
    chunks = openai_chunks(httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY).text)
    assert [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"]][:2] == ["a", "b"]


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_disconnect_breaks_the_chunked_body(fake: FakeUpstream, path: str) -> None:
    fake.enqueue([Text("a"), Disconnect()])
    body = OPENAI_BODY if "chat" in path else ANTHROPIC_BODY
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(f"{fake.url}{path}", json=body)
    assert fake.finished(0) and not fake.disconnected(0)


def test_stall_holds_until_the_client_leaves(fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Stall()])
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY, timeout=httpx.Timeout(5, read=0.3))
    assert fake.wait_disconnect(0, timeout=5)
    assert not fake.finished(0)


async def test_client_closing_early_is_observed(fake: FakeUpstream) -> None:
    fake.enqueue([Text("a"), Gate("never"), Text("b"), Finish()])
    async with httpx.AsyncClient() as client:
        async with client.stream("POST", f"{fake.url}/v1/messages", json=ANTHROPIC_BODY) as response:
            async for line in response.aiter_lines():
                if "text_delta" in line:
                    break
    assert await asyncio.to_thread(fake.wait_disconnect, 0, 5)
    assert not fake.finished(0)


def test_stop_closes_a_stalled_stream() -> None:
    fake = FakeUpstream().start()
    fake.enqueue([Stall()])
    errors: list[BaseException] = []

    def call() -> None:
        try:
            httpx.post(f"{fake.url}/v1/chat/completions", json=OPENAI_BODY, timeout=10)
        except httpx.HTTPError as exc:
            errors.append(exc)

    thread = threading.Thread(target=call)
    thread.start()
    assert fake.wait_requests(1, 5)
    fake.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert errors and isinstance(errors[0], httpx.RemoteProtocolError | httpx.ReadError)


def test_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        _ = FakeUpstream().url


def test_binds_loopback_ephemeral_port(fake: FakeUpstream) -> None:
    assert fake.url.startswith("http://127.0.0.1:") and fake.port > 0
    with socket.create_connection(("127.0.0.1", fake.port), timeout=2):
        pass
