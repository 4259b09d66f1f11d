"""``/mcp`` (SPEC §18): every agent as the MCP tool ``ask_<agentKey>``, driven by the official ``mcp``
SDK client over streamable HTTP against the real gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from app.devtools import FakeUpstream
from app.devtools.script import HttpError, text_script
from tests.security.support import ISSUER, mint, rsa_pair
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer

Start = Callable[..., GatewayServer]


@asynccontextmanager
async def mcp_client(gw: GatewayServer, token: str | None = None, mode: str = "auto") -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with create_mcp_http_client(headers=headers) as http:
        async with Client(streamable_http_client(f"{gw.url}/mcp", http_client=http), mode=mode, cache=None) as client:
            yield client


def text_of(result: Any) -> str:
    return "".join(part.text for part in result.content if part.type == "text")


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_agents_are_tools_and_progress_streams_the_answer_before_the_result(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, mode: str
) -> None:
    write_agent(deploy, "helper", agent("ONESHOT", description="Answers questions"))
    write_agent(deploy, "other", agent("REACT"))
    gw = start_gateway()
    seen: list[tuple[str, Any]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(("progress", (progress, message)))

    async with mcp_client(gw, mode=mode) as client:
        listed = {tool.name: tool for tool in (await client.list_tools()).tools}
        assert set(listed) == {"ask_helper", "ask_other"}
        assert listed["ask_helper"].input_schema["required"] == ["message"]
        assert set(listed["ask_helper"].input_schema["properties"]) == {"message", "chatId"}
        assert "Answers questions" in (listed["ask_helper"].description or "")

        upstream.enqueue(text_script(["Hel", "lo ", "world"]))
        result = await client.call_tool("ask_helper", {"message": "say hello"}, progress_callback=on_progress)
        seen.append(("result", text_of(result)))

    assert result.is_error is not True
    assert seen == [("progress", (3, "Hel")), ("progress", (6, "lo ")), ("progress", (11, "world")),
                    ("result", "Hello world")]
    ids = result.structured_content or {}
    assert ids["chatId"] and ids["runId"].startswith("run")
    sent = upstream.requests[0].body["messages"]
    assert sent[-1] == {"role": "user", "content": "say hello"}


async def test_chat_id_continues_the_chat(deploy: Path, upstream: FakeUpstream, start_gateway: Start) -> None:
    write_agent(deploy, "helper", agent("ONESHOT"))
    gw = start_gateway()
    async with mcp_client(gw) as client:
        upstream.enqueue(text_script(["The code word is tangerine."]))
        first = await client.call_tool("ask_helper", {"message": "remember a code word"})
        chat_id = (first.structured_content or {})["chatId"]
        upstream.enqueue(text_script(["tangerine"]))
        second = await client.call_tool("ask_helper", {"message": "which word?", "chatId": chat_id})
    assert text_of(second) == "tangerine"
    assert (second.structured_content or {})["chatId"] == chat_id
    assert (second.structured_content or {})["runId"] != (first.structured_content or {})["runId"]
    history = upstream.requests[1].body["messages"]
    assert {"role": "assistant", "content": "The code word is tangerine."} in history
    assert {"role": "user", "content": "remember a code word"} in history


async def test_failures_are_error_results(deploy: Path, upstream: FakeUpstream, start_gateway: Start) -> None:
    write_agent(deploy, "helper", agent("ONESHOT"))
    gw = start_gateway()
    async with mcp_client(gw) as client:
        upstream.enqueue([HttpError(400, '{"error": {"message": "no such model"}}')])
        failed = await client.call_tool("ask_helper", {"message": "hi"})
        assert failed.is_error is True and "the run failed" in text_of(failed)
        assert (failed.structured_content or {}).get("runId")

        unknown_chat = await client.call_tool("ask_helper", {"message": "hi", "chatId": "no-such-chat"})
        assert unknown_chat.is_error is True and "unknown chat" in text_of(unknown_chat)

        blank = await client.call_tool("ask_helper", {"message": "   "})
        assert blank.is_error is True and "message" in text_of(blank)


def _auth(pair: Any) -> dict[str, Any]:
    return {"agent": {"auth": {"enabled": True, "local-public-key": pair.public_pem, "issuer": ISSUER}}}


async def test_auth_on_refuses_mcp_without_a_token(deploy: Path, upstream: FakeUpstream, start_gateway: Start) -> None:
    pair = rsa_pair()
    write_agent(deploy, "helper", agent("ONESHOT"))
    gw = start_gateway(_auth(pair))
    async with httpx.AsyncClient() as http:
        refused = await http.post(f"{gw.url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                                  headers={"Accept": "application/json, text/event-stream"})
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith("Bearer")
    with pytest.raises(BaseExceptionGroup) as caught:  # the SDK client cannot even connect
        async with mcp_client(gw) as client:
            await client.list_tools()
    leaf: BaseException = caught.value
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, MCPError) and leaf.message == "Server returned an error response"
    async with mcp_client(gw, mint(pair, "alice")) as client:
        assert [tool.name for tool in (await client.list_tools()).tools] == ["ask_helper"]
    assert not upstream.requests


async def test_attack_mcp_chat_id_continues_another_users_chat(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    pair = rsa_pair()
    write_agent(deploy, "helper", agent("ONESHOT"))
    gw = start_gateway(_auth(pair))
    async with mcp_client(gw, mint(pair, "alice")) as alice:
        upstream.enqueue(text_script(["alice's secret answer"]))
        mine = await alice.call_tool("ask_helper", {"message": "alice's question"})
    chat_id = (mine.structured_content or {})["chatId"]
    async with mcp_client(gw, mint(pair, "mallory")) as mallory:
        stolen = await mallory.call_tool("ask_helper", {"message": "what did alice ask?", "chatId": chat_id})
    assert stolen.is_error is True and "another user" in text_of(stolen)
    assert len(upstream.requests) == 1  # mallory's question never reached the model


LEGACY = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
          "MCP-Protocol-Version": "2025-06-18"}


async def test_a_handshake_era_client_that_cancels_a_call_cancels_its_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    """A client on the 2025-06-18 protocol cancels ``tools/call`` with ``notifications/cancelled``
    in a POST of its own and keeps the call's stream open. The endpoint is stateless, so the SDK
    answered 202 and did nothing: the run went on spending tokens and holding the user's run slot.
    The notification now cancels the caller's run with that id (and another id cancels nothing)."""
    from app.devtools.script import Stall, Text

    write_agent(deploy, "helper", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue([Text("partial "), Stall()])
    call = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "ask_helper", "arguments": {"message": "hi"}, "_meta": {"progressToken": 1}}}
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream("POST", f"{gw.url}/mcp", json=call, headers=LEGACY) as answer:
            assert answer.status_code == 200
            lines = answer.aiter_lines()
            async for line in lines:  # the first progress: the run is streaming
                if line.startswith("data:"):
                    break
            [run_id] = gw.gateway.runs.active_run_ids()
            other = await http.post(f"{gw.url}/mcp", headers=LEGACY, json={
                "jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"requestId": 8}})
            assert other.status_code == 202 and gw.gateway.runs.active_run_ids() == {run_id}
            cancelled = await http.post(f"{gw.url}/mcp", headers=LEGACY, json={
                "jsonrpc": "2.0", "method": "notifications/cancelled",
                "params": {"requestId": 7, "reason": "the user pressed stop"}})
            assert cancelled.status_code == 202
            for hostile in ('["notifications/cancelled"]', '{"method":"notifications/cancelled","params":[7]}',
                            '"notifications/cancelled"'):  # malformed: the SDK's 4xx, never a 500
                refused = await http.post(f"{gw.url}/mcp", headers=LEGACY, content=hostile)
                assert 400 <= refused.status_code < 500, (hostile, refused.status_code)
            async for line in lines:  # the call ends with the cancelled run's error result
                if line.startswith("data:") and '"id":7' in line.replace(" ", ""):
                    assert "cancelled" in line
                    break
    assert not gw.gateway.runs.active_run_ids()
    assert await asyncio.to_thread(upstream.wait_disconnect, 0, 20.0), "the upstream call went on"


async def test_attack_an_oversize_mcp_body_is_refused_before_it_is_parsed(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start
) -> None:
    """``/mcp`` handed any body to the SDK, which reads and parses all of it: ``server.max-body-bytes``
    bounded every other endpoint but not this one, so one request could hold tens of MB and start
    a run with a message past the limit. Past the limit it is now a 413 with a JSON-RPC error,
    nothing started; at the limit a call still runs."""
    write_agent(deploy, "helper", agent("ONESHOT"))
    gw = start_gateway(overrides={"server": {"max-body-bytes": 4000}})

    def call(message: str) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "ask_helper", "arguments": {"message": message}}}

    async with httpx.AsyncClient(timeout=30) as http:
        big = await http.post(f"{gw.url}/mcp", headers=LEGACY, json=call("x" * 5000))
        assert big.status_code == 413
        assert big.json()["error"]["code"] == -32600 and "server.max-body-bytes" in big.json()["error"]["message"]

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit still holds
            for _ in range(10):
                yield b" " * 1000

        streamed = await http.post(f"{gw.url}/mcp", headers=LEGACY, content=chunks())
        assert streamed.status_code == 413
        assert upstream.requests == [] and not gw.gateway.runs.active_run_ids()
        upstream.enqueue(text_script(["fine"]))
        small = await http.post(f"{gw.url}/mcp", headers=LEGACY, json=call("x" * 3000))
        assert small.status_code == 200 and "fine" in small.text
