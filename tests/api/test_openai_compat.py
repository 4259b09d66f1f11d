"""The OpenAI-compatible endpoints (SPEC §17 "OpenAI") through the official ``openai`` client.

Real gateway over real HTTP, the fake upstream as the model, ``openai.AsyncOpenAI`` as the
client (``max_retries=0`` unless a test is about retries). Ordering is proven with events
(gates the test releases, watch streams), never with clocks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from httpx_sse import aconnect_sse

from app.devtools import FakeUpstream
from app.devtools.script import Disconnect, Finish, Gate, Text, Usage, gated_text_script, http_error_script, text_script
from tests.engine.helpers import call
from tests.security.support import ISSUER, mint, rsa_pair
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer

Start = Callable[..., GatewayServer]
#: a generous bound that only turns a hang into a failure
HANG = 60
#: how many times a poll asks before it fails (each attempt waits for a reply, not for a clock)
POLLS = 400


def sdk(gw: GatewayServer, api_key: str = "unused", *, max_retries: int = 0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key=api_key, max_retries=max_retries)


def shape(chunk: Any) -> tuple[Any, ...]:
    """One ``chat.completion.chunk`` as a comparable tuple: what it carries, nothing else."""
    if not chunk.choices:
        usage = chunk.usage
        return ("usage", usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)
    choice = chunk.choices[0]
    delta = choice.delta
    reasoning = (delta.model_extra or {}).get("reasoning_content")
    if delta.role is not None:
        return ("role", delta.role, delta.content)
    if reasoning is not None:
        return ("reasoning", reasoning)
    if delta.content is not None:
        return ("content", delta.content)
    return ("finish", choice.finish_reason)


async def watch_run(client: httpx.AsyncClient, gw: GatewayServer, run_id: str,
                    headers: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Every event of a run (``GET /api/ap/run/stream``), until its terminal event."""
    events: list[dict[str, Any]] = []
    async with aconnect_sse(client, "GET", f"{gw.url}/api/ap/run/stream", params={"runId": run_id},
                            headers=headers or {}) as source:
        assert source.response.status_code == 200
        async for sse in source.aiter_sse():
            if sse.data:
                events.append(orjson.loads(sse.data))
    return events


# ------------------------------------------------------------------------------- models


async def test_models_list_names_every_agent_by_its_key(deploy: Path, start_gateway: Start) -> None:
    write_agent(deploy, "alpha", agent("ONESHOT"))
    write_agent(deploy, "beta", agent("REACT"))
    gw = start_gateway()
    client = sdk(gw)
    models = await client.models.list()
    by_id = {model.id: model for model in models.data}
    assert {"alpha", "beta"} <= set(by_id)
    assert set(by_id) == set(gw.gateway.catalog.snapshot.agents)
    alpha = by_id["alpha"]
    assert alpha.object == "model" and alpha.owned_by == "agent-gateway" and alpha.created > 0
    assert (await client.models.retrieve("beta")).id == "beta"
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("gamma")


# ---------------------------------------------------------------------------- answers


async def test_non_stream_completion_carries_answer_reasoning_usage_and_ids(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    write_agent(deploy, "think", agent("ONESHOT", reasoning=True))
    gw = start_gateway()
    upstream.enqueue(text_script(["Hel", "lo"], reasoning=["Let ", "me think"], usage=(12, 6)))
    raw = await sdk(gw).chat.completions.with_raw_response.create(
        model="think", messages=[{"role": "user", "content": "hi"}])
    completion = raw.parse()
    run_id, chat_id = raw.headers["x-run-id"], raw.headers["x-chat-id"]
    assert completion.id == f"chatcmpl-{run_id}" and completion.object == "chat.completion"
    assert completion.model == "think"
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content == "Hello"
    assert (choice.message.model_extra or {}).get("reasoning_content") == "Let me think"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens, completion.usage.total_tokens) == (
        12, 6, 18)
    # the chat was stored under the id the header names
    assert (deploy / "chats" / f"{chat_id}.json").is_file()


async def test_stream_chunks_are_role_then_one_per_delta_then_finish_then_usage(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    write_agent(deploy, "think", agent("ONESHOT", reasoning=True))
    gw = start_gateway()
    upstream.enqueue(text_script(["An", "swer", "."], reasoning=["Hm", "m"], usage=(7, 3)))
    raw = await sdk(gw).chat.completions.with_raw_response.create(
        model="think", messages=[{"role": "user", "content": "go"}], stream=True,
        stream_options={"include_usage": True})
    assert raw.headers["content-type"].startswith("text/event-stream")
    run_id = raw.headers["x-run-id"]
    assert raw.headers["x-chat-id"]
    chunks = [chunk async for chunk in raw.parse()]
    assert [shape(chunk) for chunk in chunks] == [
        ("role", "assistant", ""),
        ("reasoning", "Hm"), ("reasoning", "m"),
        ("content", "An"), ("content", "swer"), ("content", "."),
        ("finish", "stop"),
        ("usage", 7, 3, 10),
    ]
    assert {(c.id, c.created, c.model, c.object) for c in chunks} == {
        (f"chatcmpl-{run_id}", chunks[0].created, "think", "chat.completion.chunk")}


async def test_stream_without_include_usage_has_no_usage_chunk_and_ends_with_done(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    """The raw wire: ``data:`` lines only (no ``event:``), the finish chunk last, then ``[DONE]``."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue(text_script(["a", "b"]))
    async with client.stream("POST", f"{gw.url}/v1/chat/completions", json={
            "model": "plain", "messages": [{"role": "user", "content": "x"}], "stream": True}) as response:
        assert response.status_code == 200
        lines = [line async for line in response.aiter_lines() if line and not line.startswith(":")]
    assert all(line.startswith("data: ") for line in lines), lines
    payloads = [line.removeprefix("data: ") for line in lines]
    assert payloads[-1] == "[DONE]"
    chunks = [orjson.loads(p) for p in payloads[:-1]]
    assert [c["choices"][0]["delta"] for c in chunks] == [
        {"role": "assistant", "content": ""}, {"content": "a"}, {"content": "b"}, {}]
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in c for c in chunks)


async def test_backend_tool_calls_are_not_shown_only_the_answer_streams(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    tools = {"backends": ["mock_city_weather"], "frontends": [], "actions": []}
    write_agent(deploy, "weather", agent("REACT", tools=tools))
    gw = start_gateway()
    upstream.enqueue(call("call_1", "mock_city_weather", {"city": "Paris"}), text_script(["Sunny", "."]))
    stream = await sdk(gw).chat.completions.create(
        model="weather", messages=[{"role": "user", "content": "weather?"}], stream=True)
    chunks = [chunk async for chunk in stream]
    assert [shape(c) for c in chunks] == [("role", "assistant", ""), ("content", "Sunny"), ("content", "."),
                                          ("finish", "stop")]
    assert all(c.choices[0].delta.tool_calls is None for c in chunks)
    assert len(upstream.requests) == 2  # the tool really ran inside the gateway


async def test_non_stream_content_is_the_text_the_stream_sends_every_turn_included(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    """A REACT run whose first turn says something before its tool call: the streamed chunks
    carry both turns' text, and the non-streaming ``message.content`` must carry the same (it
    used to be the last turn's text only)."""
    tools = {"backends": ["mock_city_weather"], "frontends": [], "actions": []}
    write_agent(deploy, "weather", agent("REACT", tools=tools))
    gw = start_gateway()
    client = sdk(gw)
    texts: list[str] = []
    for stream in (True, False):
        upstream.enqueue(call("call_1", "mock_city_weather", {"city": "Paris"}, text=("Let me check. ",)),
                         text_script(["Sunny", "."]))
        if stream:
            chunks = [chunk async for chunk in await client.chat.completions.create(
                model="weather", messages=[{"role": "user", "content": "weather?"}], stream=True)]
            texts.append("".join(c.choices[0].delta.content or "" for c in chunks if c.choices))
        else:
            completion = await client.chat.completions.create(
                model="weather", messages=[{"role": "user", "content": "weather?"}])
            texts.append(completion.choices[0].message.content or "")
    assert texts == ["Let me check. Sunny.", "Let me check. Sunny."]


# ------------------------------------------------------------------------ conversation


async def test_earlier_messages_reach_the_upstream_as_history(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue(text_script(["12"]))
    completion = await sdk(gw).chat.completions.create(model="plain", messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "calc", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "4"},
        {"role": "assistant", "content": [{"type": "text", "text": "4"}]},
        {"role": "user", "content": [{"type": "text", "text": "And"},
                                     {"type": "image_url", "image_url": {"url": "https://example.test/a.png"}},
                                     {"type": "text", "text": "times 3?"}]},
    ])
    assert completion.choices[0].message.content == "12"
    sent = [(m["role"], m["content"]) for m in upstream.requests[0].body["messages"]]
    assert sent == [
        ("system", "You are a test agent."),
        ("system", "Be brief."),
        ("user", "What is 2+2?"),
        ("assistant", "4"),
        ("user", "And\ntimes 3?"),
    ]


async def test_x_chat_id_continues_the_stored_chat_and_ignores_earlier_messages(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    client = sdk(gw)
    upstream.enqueue(text_script(["first answer"]), text_script(["second answer"]))
    first = await client.chat.completions.with_raw_response.create(
        model="plain", messages=[{"role": "user", "content": "first question"}])
    chat_id = first.headers["x-chat-id"]
    second = await client.chat.completions.with_raw_response.create(
        model="plain", extra_headers={"X-Chat-Id": chat_id}, messages=[
            {"role": "system", "content": "IGNORED system"},
            {"role": "user", "content": "IGNORED question"},
            {"role": "assistant", "content": "IGNORED answer"},
            {"role": "user", "content": "second question"},
        ])
    assert second.parse().choices[0].message.content == "second answer"
    assert second.headers["x-chat-id"] == chat_id and second.headers["x-run-id"] != first.headers["x-run-id"]
    sent = [(m["role"], m["content"]) for m in upstream.requests[1].body["messages"]]
    assert sent == [
        ("system", "You are a test agent."),
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "second question"),
    ]


# ------------------------------------------------------------------------------ errors


async def test_unknown_model_raises_not_found_with_openai_error_shape(start_gateway: Start) -> None:
    gw = start_gateway()
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk(gw).chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    error = caught.value
    assert error.status_code == 404
    assert error.code == "model_not_found" and error.type == "not_found_error" and error.param == "model"
    assert "nope" in error.message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": "plain", "messages": []}, "messages"),
        ({"model": "plain", "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
         "last message must be a user message"),
        ({"model": "plain", "messages": [{"role": "user", "content": "   "}]}, "no text"),
        ({"model": "plain", "messages": [{"role": "user", "content": "q"}], "n": 2}, "n must be 1"),
        ({"model": "plain", "messages": [{"role": "wizard", "content": "q"}]}, "role"),
        ({"model": "plain", "messages": [{"role": "user", "content": "x" * 200_001}]}, "200000"),
    ],
    ids=["no-messages", "last-not-user", "blank-query", "n-2", "unknown-role", "oversize-content"],
)
async def test_bad_body_raises_bad_request(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, body: dict[str, Any], needle: str
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    extra = {k: v for k, v in body.items() if k not in ("model", "messages")}
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(gw).chat.completions.create(model=body["model"], messages=body["messages"], extra_body=extra)
    assert caught.value.type == "invalid_request_error" and caught.value.code == "invalid_request"
    assert needle in caught.value.message
    assert not upstream.requests


async def test_malformed_json_body_answers_openai_error_shape(
    start_gateway: Start, client: httpx.AsyncClient
) -> None:
    gw = start_gateway()
    response = await client.post(f"{gw.url}/v1/chat/completions", content=b"{not json",
                                 headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["type"] == "invalid_request_error" and "malformed JSON" in error["message"]


async def test_unknown_x_chat_id_raises_not_found(deploy: Path, start_gateway: Start) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    with pytest.raises(openai.NotFoundError) as caught:
        await sdk(gw).chat.completions.create(model="plain", messages=[{"role": "user", "content": "x"}],
                                              extra_headers={"X-Chat-Id": "chat_doesnotexist"})
    assert caught.value.code == "not_found"


async def test_attack_x_chat_id_path_traversal_is_refused(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    with pytest.raises(openai.BadRequestError) as caught:
        await sdk(gw).chat.completions.create(model="plain", messages=[{"role": "user", "content": "x"}],
                                              extra_headers={"X-Chat-Id": "../../application"})
    assert caught.value.code == "invalid_id"
    assert not upstream.requests


def _auth(pair: Any, **limits: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"auth": {"enabled": True, "local-public-key": pair.public_pem, "issuer": ISSUER}}
    if limits:
        settings["limits"] = limits
    return {"agent": settings}


async def test_auth_on_requires_a_bearer_token_and_accepts_the_jwt_as_api_key(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    pair = rsa_pair()
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway(_auth(pair))
    with pytest.raises(openai.AuthenticationError) as refused:
        await sdk(gw, "unused").models.list()
    # the 401 comes from the auth middleware, still in OpenAI's error shape
    assert refused.value.body == {"message": refused.value.body["message"], "type": "authentication_error",
                                  "code": "invalid_token", "param": None}
    with pytest.raises(openai.AuthenticationError):
        await sdk(gw, "unused").chat.completions.create(model="plain", messages=[{"role": "user", "content": "x"}])
    assert not upstream.requests
    upstream.enqueue(text_script(["ok"]))
    completion = await sdk(gw, mint(pair, "alice")).chat.completions.create(
        model="plain", messages=[{"role": "user", "content": "x"}])
    assert completion.choices[0].message.content == "ok"


async def test_attack_x_chat_id_continues_another_users_chat(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    pair = rsa_pair()
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway(_auth(pair))
    upstream.enqueue(text_script(["alice's secret answer"]))
    raw = await sdk(gw, mint(pair, "alice")).chat.completions.with_raw_response.create(
        model="plain", messages=[{"role": "user", "content": "alice's question"}])
    chat_id = raw.headers["x-chat-id"]
    with pytest.raises(openai.PermissionDeniedError) as caught:
        await sdk(gw, mint(pair, "mallory")).chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "what did alice ask?"}],
            extra_headers={"X-Chat-Id": chat_id})
    assert caught.value.type == "permission_error"
    assert len(upstream.requests) == 1  # mallory's run never reached the model


async def test_run_cap_raises_rate_limit_error_with_retry_after(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway({"agent": {"limits": {"retry-after-seconds": 7, "user": {"concurrent-runs": 1}}}})
    client = sdk(gw)
    upstream.enqueue([Text("held "), Gate("hold"), Usage(1, 1), Finish("stop")])
    holding = await client.chat.completions.create(
        model="plain", messages=[{"role": "user", "content": "hold"}], stream=True)
    # the stream's headers arrived: its run is admitted and holds the user's one slot
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="plain", messages=[{"role": "user", "content": "more"}])
    refusal = caught.value
    assert refusal.status_code == 429 and refusal.response.headers["retry-after"] == "7"
    assert refusal.type == "rate_limit_error" and refusal.code == "rate_limit_exceeded"
    assert "agent.limits.user.concurrent-runs" in refusal.message
    upstream.release("hold")
    assert [shape(c) for c in [c async for c in holding]][-1] == ("finish", "stop")
    assert len(upstream.requests) == 1


async def test_upstream_failure_mid_stream_raises_api_error_after_the_partial_answer(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    write_agent(deploy, "fragile", agent("ONESHOT", budget={"model": {"maxCalls": 2, "retryCount": 0}}))
    gw = start_gateway()
    upstream.enqueue([Text("partial "), Disconnect()])
    stream = await sdk(gw).chat.completions.create(
        model="fragile", messages=[{"role": "user", "content": "x"}], stream=True)
    received: list[tuple[Any, ...]] = []
    with pytest.raises(openai.APIError) as caught:
        async for chunk in stream:
            received.append(shape(chunk))
    assert type(caught.value) is openai.APIError  # an in-stream error, not an HTTP status
    assert caught.value.code == "upstream_disconnected" and caught.value.type == "server_error"
    assert received == [("role", "assistant", ""), ("content", "partial ")]


async def test_failed_run_answers_server_error_that_the_sdk_does_not_retry(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    write_agent(deploy, "fragile", agent("ONESHOT", budget={"model": {"maxCalls": 2, "retryCount": 0}}))
    gw = start_gateway()
    upstream.enqueue(http_error_script(500, "upstream exploded"), text_script(["a retry would get this"]))
    with pytest.raises(openai.InternalServerError) as caught:
        await sdk(gw, max_retries=2).chat.completions.create(
            model="fragile", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 502 and caught.value.code == "upstream_http_error"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.requests) == 1  # the agent ran once: its tools may already have acted


# ------------------------------------------------------------------- streaming is real


async def test_zero_buffering_each_chunk_reaches_client_before_next_delta_is_sent(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    """The upstream withholds delta k+1 until the SDK client has received chunk k (no clocks)."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    n = 8
    upstream.enqueue(gated_text_script(n))
    received: list[str] = []

    async def consume() -> None:
        stream = await sdk(gw).chat.completions.create(
            model="plain", messages=[{"role": "user", "content": "go"}], stream=True)
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)
                # acknowledge chunk k: only now may the upstream send delta k+1
                upstream.release(f"g{len(received) - 1}")

    # a buffering gateway deadlocks here; the bound only turns a hang into a failure
    await asyncio.wait_for(consume(), timeout=HANG)
    assert received == [f"d{k} " for k in range(n)]


async def test_stream_disconnect_cancels_the_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue([Text("first "), Gate("never"), Text("unreached"), Finish("stop")])
    raw = await sdk(gw).chat.completions.with_raw_response.create(
        model="plain", messages=[{"role": "user", "content": "go"}], stream=True)
    stream = raw.parse()
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content == "first ":
            break
    await stream.close()  # the client goes away while the upstream is still held
    events = await asyncio.wait_for(watch_run(client, gw, raw.headers["x-run-id"]), timeout=HANG)
    assert events[-1]["type"] == "run.cancel"


async def test_non_stream_disconnect_cancels_the_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue([Text("first "), Gate("never"), Text("unreached"), Finish("stop")])
    waiting = asyncio.create_task(sdk(gw).chat.completions.create(
        model="plain", messages=[{"role": "user", "content": "go"}]))
    run_id = await _first_run_id(client, gw)
    seen = asyncio.Event()
    events: list[dict[str, Any]] = []

    async def watch() -> None:
        async with aconnect_sse(client, "GET", f"{gw.url}/api/ap/run/stream", params={"runId": run_id}) as source:
            async for sse in source.aiter_sse():
                if sse.data:
                    events.append(orjson.loads(sse.data))
                    if events[-1]["type"] == "content.delta":
                        seen.set()

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(seen.wait(), timeout=HANG)  # the run is live and held at the gate
    waiting.cancel()  # the client goes away before the answer
    await asyncio.gather(waiting, return_exceptions=True)
    await asyncio.wait_for(watcher, timeout=HANG)
    assert events[-1]["type"] == "run.cancel"


async def _first_run_id(client: httpx.AsyncClient, gw: GatewayServer) -> str:
    """The id of the caller's first run, asking (bounded attempts) until the run service has it."""
    for _ in range(POLLS):
        runs = (await client.get(f"{gw.url}/api/ap/runs")).json()["data"]
        if runs:
            run_id: str = runs[0]["runId"]
            return run_id
        await asyncio.sleep(0.02)  # pacing only; the bound is the number of attempts
    raise AssertionError(f"no run appeared after {POLLS} attempts")


async def test_traceparent_makes_the_run_part_of_the_callers_trace(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient,
) -> None:
    """SPEC §19 on the OpenAI endpoint as on /api/ap/query: the caller's trace id is the run's."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    upstream.enqueue(text_script(["traced"]))
    raw = await sdk(gw).chat.completions.with_raw_response.create(
        model="plain", messages=[{"role": "user", "content": "hi"}],
        extra_headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
    assert raw.parse().choices[0].message.content == "traced"
    events = await asyncio.wait_for(watch_run(client, gw, raw.headers["x-run-id"]), HANG)
    run_start = next(event for event in events if event["type"] == "run.start")
    assert run_start["traceId"] == trace_id


async def test_the_conversation_a_chat_starts_with_is_replayed_on_its_next_turn(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    """The earlier messages of a new chat's first request reached the model for that run only: the
    next turn (``X-Chat-Id``) had forgotten them. They are now the chat's memory (the client's
    system messages still serve only the run they came with), and not events of its history."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    client = sdk(gw)
    upstream.enqueue(text_script(["You are Bob."]), text_script(["Still Bob."]))
    first = await client.chat.completions.with_raw_response.create(model="plain", messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Bob."},
        {"role": "assistant", "content": "Hi Bob!"},
        {"role": "user", "content": "Who am I?"},
    ])
    chat_id = first.headers["x-chat-id"]
    assert [(m["role"], m["content"]) for m in upstream.requests[0].body["messages"]] == [
        ("system", "You are a test agent."), ("system", "Be brief."), ("user", "My name is Bob."),
        ("assistant", "Hi Bob!"), ("user", "Who am I?")]
    await client.chat.completions.create(model="plain", extra_headers={"X-Chat-Id": chat_id},
                                         messages=[{"role": "user", "content": "And now?"}])
    assert [(m["role"], m["content"]) for m in upstream.requests[1].body["messages"]] == [
        ("system", "You are a test agent."), ("user", "My name is Bob."), ("assistant", "Hi Bob!"),
        ("user", "Who am I?"), ("assistant", "You are Bob."), ("user", "And now?")]
    async with httpx.AsyncClient() as http:
        history = (await http.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id})).json()["data"]["events"]
    texts = [e.get("text") for e in history if e["type"] == "content.snapshot"]
    assert texts == ["You are Bob.", "Still Bob."]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "non-stream"])
async def test_an_agent_calling_a_frontend_tool_fails_at_once_instead_of_waiting_for_a_client(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, client: httpx.AsyncClient, stream: bool
) -> None:
    """A frontend tool waits for a client that shows it and answers; an OpenAI client cannot, and
    saw nothing: the request hung for the submit timeout (300 s by default), then the model went on
    with a timeout result. The call now ends the answer with a clear error and cancels the run."""
    write_agent(deploy, "confirm", agent("REACT", tools={"backends": [], "frontends": ["confirm_dialog"],
                                                         "actions": []}))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", {"question": "Paris?"}, text=("Let me ask. ",)))
    messages = [{"role": "user", "content": "trip"}]
    if stream:
        raw = await sdk(gw).chat.completions.with_raw_response.create(model="confirm", messages=messages, stream=True)
        seen: list[str] = []
        with pytest.raises(openai.APIError) as raised:
            async for chunk in raw.parse():
                if chunk.choices and chunk.choices[0].delta.content:
                    seen.append(chunk.choices[0].delta.content)
        assert seen == ["Let me ask. "]
        run_id = raw.headers["x-run-id"]
    else:
        with pytest.raises(openai.BadRequestError) as raised:
            await sdk(gw).chat.completions.create(model="confirm", messages=messages)
        assert raised.value.code == "frontend_tool_unsupported"
        run_id = raised.value.response.headers["x-run-id"]
    assert "confirm_dialog" in raised.value.message and "/ag-ui/confirm" in raised.value.message
    events = await asyncio.wait_for(watch_run(client, gw, run_id), timeout=HANG)
    assert events[-1]["type"] == "run.cancel"
