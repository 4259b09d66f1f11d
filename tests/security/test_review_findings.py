"""Regression tests for the findings of a security review (SPEC §9), one per attack, over real HTTP.

Each test is named after the attack it replays against a real gateway (uvicorn + FastAPI on
loopback, the fake upstream as the model provider) and fails on the code before the fix.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import StreamError, Text, text_script, tool_call_script
from app.memory import ANONYMOUS_OWNER
from app.security.data_tokens import signed_data_url
from tests.engine.helpers import chat_lines, deltas, first
from tests.security.support import ISSUER, AccessLoggedGateway, KeyPair, bearer, mint, mint_claims
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect

Start = Callable[..., GatewayServer]

API_KEY = "sk-test-secret-key-123"  # the fake provider's key in tests/support/deployment.py


def _auth(pair: KeyPair, **extra: Any) -> dict[str, Any]:
    return {"agent": {"auth": {"enabled": True, "local-public-key": pair.public_pem, "issuer": ISSUER, **extra}}}


def _assert_envelope(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == status * 10 or (status == 400 and body["code"] in (4000, 4003)), body
    assert body["data"] is None and body["msg"] and "Traceback" not in response.text
    return body


@pytest.fixture
def start_logged(caplog: pytest.LogCaptureFixture, start_gateway: Start) -> Iterator[Start]:
    """``start_gateway`` with every record captured at DEBUG, from the gateway's thread too.

    uvicorn's logging config keeps ``uvicorn.*`` records (its "Exception in ASGI
    application" tracebacks) away from the root logger and resets that logger's handlers
    when a server starts: ``caplog``'s handler is attached to it after each start.
    """
    caplog.set_level(logging.DEBUG)
    uvicorn_logger = logging.getLogger("uvicorn")

    def start(*args: Any, **kwargs: Any) -> GatewayServer:
        server = start_gateway(*args, **kwargs)
        uvicorn_logger.addHandler(caplog.handler)
        return server

    yield start
    uvicorn_logger.removeHandler(caplog.handler)


def _no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    for record in caplog.records:
        assert record.exc_info is None, f"{record.name}: {record.getMessage()} (logged with a traceback)"
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


# --------------------------------------------------------------------------- 1. long data file names


async def test_attack_data_file_name_5000_chars(
    deploy: Path, start_logged: Start, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    gw = start_logged()
    (deploy / "data" / "ok.txt").write_text("fine", encoding="utf-8")
    response = await client.get(f"{gw.url}/api/ap/data", params={"file": "a" * 5000})
    body = _assert_envelope(response, 400)
    assert "too long" in body["msg"]
    # a 5000-char name one component long under a folder that exists
    (deploy / "data" / "sub").mkdir()
    nested = await client.get(f"{gw.url}/api/ap/data", params={"file": "sub/" + "b" * 5000})
    assert "too long" in _assert_envelope(nested, 400)["msg"]
    # the route still serves a normal file
    assert (await client.get(f"{gw.url}/api/ap/data", params={"file": "ok.txt"})).text == "fine"
    _no_traceback(caplog)


async def test_attack_data_file_deep_path_x_slash_3000(
    deploy: Path, start_logged: Start, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    gw = start_logged()
    response = await client.get(f"{gw.url}/api/ap/data", params={"file": "x/" * 3000})
    assert response.status_code in (400, 404), response.text
    _assert_envelope(response, response.status_code)
    # the same depth under a folder that really exists (the lookups walk into it)
    (deploy / "data" / "x").mkdir()
    again = await client.get(f"{gw.url}/api/ap/data", params={"file": "x/" * 3000 + "f.txt"})
    assert again.status_code in (400, 404), again.text
    _assert_envelope(again, again.status_code)
    # a symlink loop is a 404, not a 500
    (deploy / "data" / "loop").symlink_to("loop")
    loop = await client.get(f"{gw.url}/api/ap/data", params={"file": "loop/a"})
    assert loop.status_code in (400, 404), loop.text
    _no_traceback(caplog)


async def test_attack_long_names_for_chat_and_viewport_keys(
    start_logged: Start, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    gw = start_logged()
    for path, params in (("/api/ap/chat", {"chatId": "c" * 5000}), ("/api/ap/viewport", {"viewportKey": "v" * 5000}),
                         ("/api/ap/agent", {"agentKey": "a" * 5000})):
        response = await client.get(gw.url + path, params=params)
        _assert_envelope(response, 400)
    query = await client.post(f"{gw.url}/api/ap/query", json={"chatId": "c" * 200, "message": "hi"})
    _assert_envelope(query, 400)
    _no_traceback(caplog)


# --------------------------------------------------------------------------- 2. the anonymous owner


async def test_attack_jwt_sub_anonymous_reads_ownerless_chats(
    deploy: Path, upstream: FakeUpstream, start_gateway: Start, rsa_key: KeyPair
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    # a chat written while auth was off: its owner is the anonymous user of auth-off mode
    upstream.enqueue(text_script(["open ", "chat"]))
    off = start_gateway()
    async with httpx.AsyncClient(timeout=30) as anyone:
        events = await collect(anyone, f"{off.url}/api/ap/query", {"agentKey": "plain", "message": "secret plans"})
        ownerless = events[0]["chatId"]
        assert events[-1]["type"] == "run.complete"
    off.stop()
    # a legacy chat file written before owners were recorded
    legacy = "chat_legacy01"
    (deploy / "chats" / f"{legacy}.json").write_bytes(orjson.dumps({
        "_type": "query", "chatId": legacy, "runId": "run_legacy", "updatedAt": 1,
        "query": {"agentKey": "plain", "message": "old secret"}}) + b"\n")

    on = start_gateway(_auth(rsa_key))
    url = on.url
    async with httpx.AsyncClient(timeout=30) as http:
        # the attack: a token claiming the owner of auth-off chats
        claimed = bearer(mint(rsa_key, ANONYMOUS_OWNER))
        _assert_envelope(await http.get(f"{url}/api/ap/chats", headers=claimed), 401)
        _assert_envelope(await http.get(f"{url}/api/ap/chat", params={"chatId": ownerless}, headers=claimed), 401)
        _assert_envelope(await http.post(f"{url}/api/ap/query", headers=claimed,
                                         json={"chatId": ownerless, "message": "mine"}), 401)
        for claims in ({"sub": ""}, {"sub": "   "}, {}, {"sub": 7}):
            token = mint_claims(rsa_key, claims)
            _assert_envelope(await http.get(f"{url}/api/ap/chats", headers=bearer(token)), 401)

        # a real user sees none of them, cannot read them, cannot query into them
        real = bearer(mint(rsa_key, "alice"))
        assert (await http.get(f"{url}/api/ap/chats", headers=real)).json()["data"] == []
        for chat_id in (ownerless, legacy):
            read = await http.get(f"{url}/api/ap/chat", params={"chatId": chat_id}, headers=real)
            assert read.status_code in (403, 404), read.text
            into = await http.post(f"{url}/api/ap/query", headers=real, json={"chatId": chat_id, "message": "mine"})
            assert into.status_code in (403, 404), into.text
        assert len(upstream.requests) == 1  # only the auth-off run reached the model
    on.stop()

    # auth-off mode still works exactly as before: both chats are listed and readable
    back = start_gateway()
    async with httpx.AsyncClient(timeout=30) as anyone:
        listed = (await anyone.get(f"{back.url}/api/ap/chats")).json()["data"]
        assert {c["chatId"] for c in listed} == {ownerless, legacy}
        for chat_id in (ownerless, legacy):
            assert (await anyone.get(f"{back.url}/api/ap/chat", params={"chatId": chat_id})).status_code == 200


# --------------------------------------------------------------------------- 3. key echoed inside the stream


@pytest.mark.parametrize("model", ["fake-openai", "fake-anthropic"])
async def test_attack_upstream_stream_error_echoes_api_key(
    deploy: Path, upstream: FakeUpstream, start_logged: Start, client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture, model: str,
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT", model=model))
    gw = start_logged({"agent": {"llm": {"interaction-log": {"enabled": True}}}})
    upstream.enqueue([Text("partial "), StreamError(f"Incorrect API key provided: {API_KEY}. Check your key.")])
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "plain", "message": "hi"})
    error = events[-1]
    assert error["type"] == "run.error", error
    assert "Incorrect API key provided: ***" in error["error"]["message"], error
    assert not any(API_KEY in orjson.dumps(event).decode() for event in events)
    stored = orjson.dumps(chat_lines(deploy, events[0]["chatId"])).decode()
    assert "Incorrect API key provided: ***" in stored and API_KEY not in stored
    assert "Incorrect API key provided: ***" in caplog.text  # the error is logged, masked
    assert API_KEY not in caplog.text
    for record in caplog.records:
        assert API_KEY not in record.getMessage()


# --------------------------------------------------------------------------- 4. tokens in the access log


async def test_attack_access_log_records_data_link_token(
    deploy: Path, caplog: pytest.LogCaptureFixture, client: httpx.AsyncClient
) -> None:
    secret = "data-link-secret-0123456789"
    (deploy / "data" / "report.txt").write_text("report", encoding="utf-8")
    access = logging.getLogger("uvicorn.access")
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    try:
        with AccessLoggedGateway(deploy, overrides={"agent": {"chat-image-token": {"secret": secret}}}) as gw:
            # after uvicorn configured its loggers (which resets their handlers and stops propagation)
            access.addHandler(caplog.handler)
            link = signed_data_url(gw.settings, "report.txt")
            token = httpx.URL(link).params["token"]
            assert len(token) > 8
            assert (await client.get(gw.url + link)).text == "report"
            others = {"access_token": "at-VALUE-1", "api_key": "ak-VALUE-2", "key": "k-VALUE-3", "jwt": "jwt-VALUE-4",
                      "Token": "tk-VALUE-5"}
            await client.get(f"{gw.url}/api/ap/agents", params={**others, "agentKey": "plain"})
    finally:
        access.removeHandler(caplog.handler)
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert any("/api/ap/data?file=report.txt" in line for line in lines), lines
    assert any("/api/ap/agents?" in line and "agentKey=plain" in line for line in lines), lines
    text = "\n".join(lines)
    assert token not in text and "token=***" in text
    for value in others.values():
        assert value not in text


# --------------------------------------------------------------------------- 5. deeply nested tool arguments


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


async def test_attack_tool_arguments_nested_900_deep(
    deploy: Path, upstream: FakeUpstream, start_logged: Start, client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_agent(deploy, "react", agent("REACT", tools={"backends": ["city_datetime"], "frontends": [], "actions": []}))
    gw = start_logged()
    raw = '{"a":' * 900 + "{}" + "}" * 900
    assert orjson.loads(raw) == _nested(900)
    cut = len(raw) // 2  # the model streams it in two fragments (orjson cannot even write it: 255 levels max)
    upstream.enqueue(tool_call_script("call_deep", "city_datetime", [raw[:cut], raw[cut:]]),
                     text_script(["That was too deep."]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "react", "message": "go"})
    assert events[-1]["type"] == "run.complete", events[-1]
    result = first(events, "tool.result")["result"]
    assert result["ok"] is False and "nesting limit" in result["error"], result
    assert deltas(events, "content.delta") == "That was too deep."
    second = upstream.requests[1].body
    answer = next(m for m in second["messages"] if m.get("role") == "tool")
    assert "nesting limit" in answer["content"]
    _no_traceback(caplog)


# --------------------------------------------------------------------------- 6. audience


async def test_attack_jwt_for_another_audience(
    start_gateway: Start, client: httpx.AsyncClient, rsa_key: KeyPair
) -> None:
    gw = start_gateway(_auth(rsa_key, audience="agent-gateway"))
    url = f"{gw.url}/api/ap/agents"
    _assert_envelope(await client.get(url, headers=bearer(mint(rsa_key, aud="another-api"))), 401)
    _assert_envelope(await client.get(url, headers=bearer(mint(rsa_key))), 401)  # no aud at all
    _assert_envelope(await client.get(url, headers=bearer(mint(rsa_key, aud=["x", "y"]))), 401)
    assert (await client.get(url, headers=bearer(mint(rsa_key, aud="agent-gateway")))).status_code == 200
    listed = await client.get(url, headers=bearer(mint(rsa_key, aud=["other", "agent-gateway"])))
    assert listed.status_code == 200, listed.text


async def test_token_with_aud_accepted_when_no_audience_is_configured(
    start_gateway: Start, client: httpx.AsyncClient, rsa_key: KeyPair
) -> None:
    gw = start_gateway(_auth(rsa_key))
    url = f"{gw.url}/api/ap/agents"
    for aud in ("anything", ["a", "b"]):
        assert (await client.get(url, headers=bearer(mint(rsa_key, aud=aud)))).status_code == 200
    assert (await client.get(url, headers=bearer(mint(rsa_key)))).status_code == 200


async def test_audience_from_the_environment(
    start_gateway: Start, client: httpx.AsyncClient, rsa_key: KeyPair
) -> None:
    gw = start_gateway(_auth(rsa_key), env={"AGENT_AUTH_AUDIENCE": "from-env"})
    url = f"{gw.url}/api/ap/agents"
    _assert_envelope(await client.get(url, headers=bearer(mint(rsa_key, aud="agent-gateway"))), 401)
    assert (await client.get(url, headers=bearer(mint(rsa_key, aud="from-env")))).status_code == 200


# --------------------------------------------------------------------------- 7. disconnect mid-body


def _send_half_a_body(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /api/ap/query HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 10000\r\n\r\n" + b'{"message": "' + b"x" * 87
        )


async def test_attack_client_disconnects_mid_body(
    deploy: Path, upstream: FakeUpstream, start_logged: Start, client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_logged()
    for _ in range(3):
        await asyncio.to_thread(_send_half_a_body, gw.port)
    # the next request is answered, and by then every disconnect above has been handled
    upstream.enqueue(text_script(["still ", "here"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "plain", "message": "hello"})
    assert events[-1]["type"] == "run.complete"
    await _until_logged(caplog, "disconnected", 3)
    _no_traceback(caplog)
    assert len(upstream.requests) == 1


async def _until_logged(caplog: pytest.LogCaptureFixture, fragment: str, count: int) -> None:
    """Wait (event-driven by polling the captured records, bounded) until ``count`` lines mention ``fragment``."""
    for _ in range(1000):
        if sum(fragment in r.getMessage() for r in caplog.records) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"expected {count} log lines with {fragment!r}: {[r.getMessage() for r in caplog.records]}")
