"""Secrets never reach logs or API responses (SPEC §2 interaction-log, §7, §9 "Logs")."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import http_error_script, text_script
from app.security.masking import MASK, is_sensitive_key, mask_text, mask_value
from tests.security.support import ISSUER, KeyPair, bearer, mint
from tests.engine.helpers import call
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.server import GatewayServer

API_KEY = "sk-test-secret-key-123"  # tests/support/deployment.py, provider "fake"


def test_sensitive_keys() -> None:
    for key in ("authorization", "Authorization", "api-key", "apiKey", "x-api-key", "api_key", "token",
                "access_token", "refreshToken", "secret", "client_secret", "password", "Proxy-Authorization"):
        assert is_sensitive_key(key), key
    for key in ("max_tokens", "maxTokens", "prompt_tokens", "model", "messages", "content", "tool_choice"):
        assert not is_sensitive_key(key), key


def test_mask_value_and_text() -> None:
    jwt_like = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJl"
    tree = {
        "headers": {"authorization": "Bearer abc.def", "x-api-key": "k-123", "content-type": "application/json"},
        "body": {"max_tokens": 100, "messages": [{"content": f"use {API_KEY} and Bearer {jwt_like} now"}],
                 "nested": [{"password": "hunter2", "apiKey": "AKIA123"}]},
        "url": "https://x.test/v1?api_key=abcdef&token=zzz&model=m",
    }
    masked = mask_value(tree)
    text = orjson.dumps(masked).decode()
    for secret in ("abc.def", "k-123", API_KEY, jwt_like, "hunter2", "AKIA123", "abcdef", "zzz"):
        assert secret not in text, secret
    assert masked["body"]["max_tokens"] == 100 and masked["headers"]["content-type"] == "application/json"
    assert "model=m" in masked["url"]
    assert mask_text('{"token": "t0ps3cret", "secret":"x1y2"}') == f'{{"token": "{MASK}", "secret":"{MASK}"}}'
    assert mask_text("literal my-own-key-value here", ["my-own-key-value"]) == f"literal {MASK} here"
    assert tree["headers"]["authorization"] == "Bearer abc.def"  # the input is not modified


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        self.lines.append(text)


@pytest.fixture
def debug_logs() -> Iterator[_Capture]:
    """Every log record of the process (the gateway runs in a thread of this process) at DEBUG."""
    root = logging.getLogger()
    capture = _Capture()
    previous = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(previous)


def test_the_user_and_password_of_a_url_are_masked() -> None:
    assert mask_text("to https://user:pa55@collector.test:4318/v1") == "to https://***@collector.test:4318/v1"
    assert mask_text("redis://:pw@cache:6379/0 and https://ghp_TOKEN@github.test/x") == (
        "redis://***@cache:6379/0 and https://***@github.test/x")
    for plain in ("https://x.test/p@q", "https://x.test/?a=b@c", "mail me at alice@example.test"):
        assert mask_text(plain) == plain


async def test_interaction_log_and_responses_carry_no_secrets(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], rsa_key: KeyPair,
    debug_logs: _Capture,
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway({"agent": {"auth": {"enabled": True, "local-public-key": rsa_key.public_pem, "issuer": ISSUER}}})
    token = mint(rsa_key, "alice")
    seen: list[str] = []
    async with httpx.AsyncClient(timeout=30, headers=bearer(token)) as client:
        upstream.enqueue(text_script(["The ", "answer."], reasoning=["thinking"]))
        stream = await client.post(f"{gw.url}/api/ap/query", json={"agentKey": "plain", "message": "hello"})
        seen.append(stream.text)
        chat_id = orjson.loads(stream.text.split("data: ", 2)[1].split("\n", 1)[0])["chatId"]
        # an upstream that echoes the key in its error body (some do) must not leak it either
        upstream.enqueue(http_error_script(401, f"Incorrect API key provided: {API_KEY}"))
        failed = await client.post(f"{gw.url}/api/ap/query",
                                   json={"chatId": chat_id, "message": "again", "stream": False})
        seen.append(failed.text)
        assert failed.json()["data"]["events"][-1]["type"] == "run.error"
        for path, params in [("/api/ap/agents", {}), ("/api/ap/agent", {"agentKey": "plain"}), ("/api/ap/chats", {}),
                             ("/api/ap/chat", {"chatId": chat_id, "includeRawMessages": "true"}),
                             ("/api/ap/catalog/rejections", {})]:
            response = await client.get(gw.url + path, params=params)
            assert response.status_code == 200, (path, response.text)
            seen.append(response.text)
        seen.append((await client.get(f"{gw.url}/api/ap/agents", headers={"Authorization": "Bearer x" + token})).text)
    assert len(upstream.requests) == 2
    assert upstream.requests[0].headers["authorization"] == f"Bearer {API_KEY}"  # it did travel upstream
    logs = debug_logs.lines
    request_lines = [line for line in logs if line.startswith("llm request ")]
    assert request_lines, "the interaction log has a request line"
    first = request_lines[0]
    run_id = next(e for e in _events(seen[0]) if e["type"] == "run.start")["runId"]
    assert f"trace={run_id}" in first and "stage=oneshot" in first and '"authorization":"***"' in first
    assert '"messages"' in first and "hello" in first  # the body is there, only the key is masked
    assert any(line.startswith("llm delta ") and "thinking" in line for line in logs)
    everything = "\n".join(logs + seen)
    for secret in (API_KEY, "sk-test-newapi-key", token, token.split(".")[2], f"Bearer {API_KEY}"):
        assert secret not in everything, secret


async def test_attack_credentials_in_a_provider_or_tool_url_never_reach_the_request_log(
    tmp_path: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """httpx logs every outgoing request's URL at INFO (the default level of ``agw serve``): a provider
    ``base-url`` with a password and a tool's ``toolApi`` with an ``api_key`` parameter were written to
    the log as they were, once per model call and per tool call."""
    root = make_deployment(tmp_path / "creds", upstream.url.replace("http://", "http://llm:PROVIDER-PASS-9@"))
    (root / "tools" / "lookup.backend").write_bytes(orjson.dumps({"tools": [{
        "type": "function", "name": "lookup", "description": "Look a thing up.",
        "parameters": {"type": "object", "properties": {}},
        "toolApi": f"{upstream.url}/lookup?api_key=TOOL-KEY-123&lang=en"}]}))
    write_agent(root, "plain", agent("REACT", tools={"backends": ["lookup"], "frontends": [], "actions": []}))
    gw = start_gateway(root=root)
    upstream.enqueue(call("c1", "lookup", {}), text_script(["done"]))
    with caplog.at_level(logging.INFO, logger="httpx"):
        async with httpx.AsyncClient(timeout=30) as client:
            events = _events((await client.post(f"{gw.url}/api/ap/query",
                                                json={"agentKey": "plain", "message": "hi"})).text)
        assert events[-1]["type"] == "run.complete"
    requests = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert any("http://***@127.0.0.1" in line and "/chat/completions" in line for line in requests), requests
    assert any("/lookup?api_key=***&lang=en" in line for line in requests), requests
    assert not [line for line in requests if "PROVIDER-PASS-9" in line or "TOOL-KEY-123" in line]


def _events(sse_text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line[6:]) for line in sse_text.splitlines() if line.startswith("data: ")]
