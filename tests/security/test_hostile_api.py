"""Hostile input against every JSON endpoint (SPEC §4 "Bad input always gets a clear 4xx").

Schemathesis generates requests from the app's own ``/openapi.json`` and sends them to a
real gateway on loopback; hypothesis throws arbitrary JSON at ``POST /api/ap/query``.
Properties: never a 5xx; a JSON answer is always the envelope with an integer ``code``
(``0`` only with a 2xx); a stream always ends with a terminal event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.server import GatewayServer

TERMINAL = ("run.complete", "run.error", "run.cancel")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture(scope="module")
def hostile_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with FakeUpstream(responder=lambda body: text_script(["fuzz ", "ok"])) as upstream:
        deploy = make_deployment(tmp_path_factory.mktemp("hostile") / "deploy", upstream.url)
        write_agent(deploy, "plain", agent("ONESHOT"))
        (deploy / "data" / "a.txt").write_text("data", encoding="utf-8")
        with GatewayServer(deploy) as server:
            yield server


def check_protocol_answer(path: str, status: int, content_type: str, body: bytes) -> None:
    """The protocol adapters (SPEC §17) answer in their protocol's own shapes: OpenAI's objects and
    ``{"error": {...}}`` under /v1, AG-UI events under /ag-ui (refusals there are our envelope)."""
    assert status < 500, (status, body[:500])
    assert b"Traceback" not in body
    if content_type.startswith("text/event-stream"):
        frames = [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]
        assert frames, body[:500]
        for frame in frames:
            if frame != "[DONE]":
                assert isinstance(orjson.loads(frame), dict)
    elif content_type.startswith("application/json"):
        data = orjson.loads(body)
        assert isinstance(data, dict), body[:500]
        if status >= 400:
            if path.startswith("/v1"):
                assert isinstance(data["error"]["message"], str), data
            else:
                assert isinstance(data.get("code"), int) and data["code"] > 0, data


def check_answer(status: int, content_type: str, body: bytes, path: str = "/api") -> None:
    """The properties every answer of the gateway has, whatever the input."""
    if path.startswith(("/v1", "/ag-ui")):
        check_protocol_answer(path, status, content_type, body)
        return
    assert status < 500, (status, body[:500])
    if content_type.startswith("text/event-stream"):
        assert status == 200
        events = [orjson.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")]
        assert events and events[-1]["type"] in TERMINAL, body[-500:]
        assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    elif content_type.startswith("application/json"):
        envelope = orjson.loads(body)
        assert isinstance(envelope, dict) and isinstance(envelope.get("code"), int), body[:500]
        assert isinstance(envelope.get("msg"), str)
        assert (envelope["code"] == 0) == (status < 300), (status, envelope)
        assert b"Traceback" not in body
    else:  # only a data file is served raw
        assert status == 200, (status, content_type)


def test_openapi_operations_never_fail_server_side(hostile_gateway: GatewayServer) -> None:
    """Every operation of ``/openapi.json``, valid (positive) and invalid (negative) inputs."""
    api = schemathesis.openapi.from_url(f"{hostile_gateway.url}/openapi.json")
    labels: list[str] = []
    for result in api.get_all_operations():
        operation = result.ok()
        labels.append(operation.label)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                      database=None)
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case: Any) -> None:
                response = case.call(timeout=30)
                content_type = (response.headers.get("content-type") or [""])[0]  # schemathesis: name → values
                check_answer(response.status_code, content_type, response.content, case.path)

            try:
                run()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE  # nothing to make invalid (no parameters)
    assert "POST /api/ap/query" in labels and "GET /api/ap/chat" in labels and "GET /api/ap/data" in labels


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"message": st.one_of(st.text(max_size=30), json_values)},
        optional={"agentKey": st.one_of(st.sampled_from(["plain", "../plain", "/etc/passwd", "pl\x00ain"]),
                                        json_values),
                  "chatId": st.one_of(st.sampled_from(["../x", "chat_0", "%2e%2e%2fx"]), json_values),
                  "stream": st.one_of(st.booleans(), json_values),
                  "role": st.one_of(st.sampled_from(["user", "tool"]), json_values),
                  "references": json_values, "params": json_values, "scene": json_values,
                  "requestId": json_values},
    ),
))
def test_random_query_bodies(hostile_gateway: GatewayServer, body: Any) -> None:
    with httpx.Client(timeout=30) as client:
        # stdlib json: an integer past 64 bits goes to the gateway as it is (orjson cannot write it)
        response = client.post(f"{hostile_gateway.url}/api/ap/query", content=json.dumps(body).encode(),
                               headers={"content-type": "application/json"})
    check_answer(response.status_code, response.headers.get("content-type", ""), response.content)


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"message": "x"' + b" " * 10, b"1e999999"])
def test_malformed_query_bytes(hostile_gateway: GatewayServer, raw: bytes) -> None:
    response = httpx.post(f"{hostile_gateway.url}/api/ap/query", content=raw,
                          headers={"content-type": "application/json"}, timeout=30)
    assert 400 <= response.status_code < 500
    check_answer(response.status_code, response.headers.get("content-type", ""), response.content)


def test_oversize_body_is_413(hostile_gateway: GatewayServer) -> None:
    big = orjson.dumps({"agentKey": "plain", "message": "x" * (hostile_gateway.settings.server.max_body_bytes + 1)})
    response = httpx.post(f"{hostile_gateway.url}/api/ap/query", content=big,
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 413 and response.json()["code"] == 4013
