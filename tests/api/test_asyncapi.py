"""The run events documented as AsyncAPI (SPEC §22 "the SSE event types are documented"), and
the OpenAPI document that links to it.

The AsyncAPI document is generated from ``app/contract/events.py``; these tests hold it to
the code twice over: every event class, built with every field and with only its required
ones, turned into wire form by the real ``Stamped.wire()``, must validate against its message
schema (and fail it without a required field); and every event real runs send over SSE
(through the real gateway, against the fake upstream) must validate too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import types
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs  # schemathesis's JSON Schema validator (a test dependency)
import pytest

from app import __version__
from app.api.docs_routes import link_event_docs
from app.contract.asyncapi import asyncapi_document, payload_schema
from app.contract.events import EVENT_TYPES, TERMINAL_TYPES, Event, Stamped
from app.devtools import FakeUpstream
from app.devtools.script import http_error_script, text_script
from tests.engine.helpers import call
from tests.security.support import ISSUER, rsa_pair
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect, stream_events

DOC = asyncapi_document(__version__)
WEATHER = {"backends": ["mock_city_weather", "city_datetime"], "frontends": [], "actions": []}
EVERYTHING = {"backends": ["city_datetime"], "frontends": ["confirm_dialog"], "actions": ["switch_theme"]}
QUESTION = {"question": "Which city?", "options": ["Paris", "Rome"], "allowFreeText": False}
#: a generous bound that only turns a hang into a failure
HANG = 60


def resolve(document: dict[str, Any], ref: str) -> Any:
    """A local JSON pointer (``#/a/b``) of ``document``."""
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                yield value
            else:
                yield from refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from refs(item)


def message_payload(event_type: str) -> dict[str, Any]:
    """The payload schema of the event's message, found the way an AsyncAPI reader finds it."""
    message = resolve(DOC, DOC["channels"]["queryStream"]["messages"][event_type]["$ref"])
    payload: dict[str, Any] = resolve(DOC, message["payload"]["$ref"])
    return payload


def union_validator() -> Any:
    """A validator of ``RunEvent``, the closed union, resolving references inside the document
    (AsyncAPI 3.0 schemas are a superset of JSON Schema draft 07)."""
    return jsonschema_rs.Draft7Validator({"$ref": "#/components/schemas/RunEvent", "components": DOC["components"]})


def check_against_document(event: dict[str, Any]) -> None:
    """The event validates against its own message schema and against the union."""
    assert event.get("type") in EVENT_TYPES, event
    errors = [error.message for error in jsonschema_rs.Draft7Validator(message_payload(event["type"])).iter_errors(event)]
    assert errors == [], (event, errors)
    union_validator().validate(event)


# -- every class, every field -------------------------------------------------------------


def sample(hint: Any) -> Any:
    """A non-null value of a field type of ``events.py`` (``X | None`` → a value of ``X``)."""
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return sample(args[0])
    origin = typing.get_origin(hint)
    if origin is list:
        return [sample(args[0])]
    if origin is dict:
        return {"key": sample(args[1])}
    return {str: "text", int: 3, bool: True, float: 1.5}.get(hint, {"any": ["json", 1]})


def build(cls: type[Event], *, every_field: bool) -> Event:
    hints = typing.get_type_hints(cls)
    values = {
        field.name: sample(hints[field.name])
        for field in dataclasses.fields(cls)
        if every_field or (field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING)
    }
    return cls(**values)


@pytest.mark.parametrize("event_type", list(EVENT_TYPES))
def test_every_event_class_is_a_message_with_every_field(event_type: str) -> None:
    cls = EVENT_TYPES[event_type]
    full = Stamped(build(cls, every_field=True), seq=7, timestamp=1_700_000_000_000).wire()
    minimal = Stamped(build(cls, every_field=False), seq=1, timestamp=0).wire()
    payload = message_payload(event_type)
    # every wire field of the class (named as the real encoder names it), and nothing else
    assert set(payload["properties"]) == set(full)
    assert len(full) == len(dataclasses.fields(cls)) + 3  # + type, seq, timestamp
    assert payload["properties"]["type"] == {"const": event_type, "description": "the event type"}
    assert set(payload["required"]) <= set(minimal)
    check_against_document(full)
    check_against_document(minimal)
    validator = jsonschema_rs.Draft7Validator(payload)
    for name in payload["required"]:  # a required field missing is a contract break …
        assert not validator.is_valid({k: v for k, v in minimal.items() if k != name}), name
    assert not validator.is_valid({**full, "rawEvent": {}})  # … and so is a field of no class (SPEC §6)
    assert not validator.is_valid({**full, "type": "run.other"})
    assert not union_validator().is_valid({**full, "rawEvent": {}})
    message = resolve(DOC, f"#/components/messages/{event_type}")
    assert message["name"] == event_type and message["x-python-class"].endswith("." + cls.__name__)
    assert message.get("x-terminal", False) is (event_type in TERMINAL_TYPES)


def test_required_fields_follow_the_defaults_and_the_omitted_nulls() -> None:
    """Without a default a field is required — unless it may hold ``None``, which the wire omits."""
    assert set(payload_schema("tool.start")["required"]) == {"type", "seq", "timestamp", "toolId", "runId"}
    assert set(payload_schema("run.error")["required"]) == {"type", "seq", "timestamp", "runId", "error"}
    tool_result = payload_schema("tool.result")
    assert "result" in tool_result["properties"] and "result" not in tool_result["required"]  # typed Any
    assert "absent when its value is null" in tool_result["properties"]["result"]["description"]


def test_the_document_is_asyncapi_3_whose_references_all_resolve() -> None:
    assert DOC["asyncapi"] == "3.0.0" and DOC["info"]["version"] == __version__
    assert {channel["address"] for channel in DOC["channels"].values()} == {
        "/api/ap/query", "/api/ap/run/stream", "/api/ap/chat/stream"}
    for ref in refs(DOC):
        resolve(DOC, ref)
    for operation in DOC["operations"].values():
        assert operation["action"] == "send"
        channel = resolve(DOC, operation["channel"]["$ref"])
        assert [resolve(DOC, m["$ref"]) for m in operation["messages"]] == list(channel["messages"].values())
        assert set(channel["messages"]) == set(EVENT_TYPES)
    union = DOC["components"]["schemas"]["RunEvent"]
    assert union["discriminator"] == "type" and len(union["oneOf"]) == len(EVENT_TYPES)


# -- events of real runs ------------------------------------------------------------------


async def _answering(client: httpx.AsyncClient, gw: GatewayServer, query: dict[str, Any],
                     answer: Callable[[dict[str, Any]], Any]) -> list[dict[str, Any]]:
    """Stream a query; when a frontend tool starts, ``answer(event)`` (a submit or an interrupt)."""
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in stream_events(client, f"{gw.url}/api/ap/query", query):
            events.append(event)
            if event["type"] == "tool.start" and event.get("toolType"):
                await answer(event)

    await asyncio.wait_for(consume(), timeout=HANG)
    return events


async def test_events_of_real_runs_validate_against_their_messages(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """A plan with reasoning, tasks and tools; an action and a frontend tool answered; a frontend
    tool interrupted; an upstream failure; and the replay of a retained run — every event sent."""
    write_agent(deploy, "planner", agent("PLAN_EXECUTE", tools=WEATHER, deep_thinking=True, reasoning=True))
    write_agent(deploy, "ui", agent("REACT", tools=EVERYTHING))
    gw = start_gateway()
    url = f"{gw.url}/api/ap/query"
    upstream.enqueue(
        text_script(["First the time, ", "then the weather."], reasoning=["Let me ", "plan."]),
        call("p1", "_plan_add_tasks_", {"tasks": [{"description": "time"}, {"description": "weather"}]}),
        call("e1", "city_datetime", {"city": "Paris"}, text=("Checking. ",)),
        call("e2", "_plan_update_task_", {"taskId": "task_1", "status": "completed"}),
        call("e3", "mock_city_weather", {"city": "Paris", "date": "2026-01-01"}),
        call("e4", "_plan_update_task_", {"taskId": "task_2", "status": "completed"}),
        text_script(["Summary."]),
    )
    planned = await collect(client, url, {"agentKey": "planner", "message": "Paris?"})

    upstream.enqueue(call("a1", "switch_theme", {"theme": "dark"}), call("f1", "confirm_dialog", QUESTION),
                     text_script(["Rome it is."]))

    async def submit(event: dict[str, Any]) -> None:
        body = {"runId": event["runId"], "toolId": event["toolId"], "params": {"selected": "Rome"}}
        assert (await client.post(f"{gw.url}/api/ap/submit", json=body)).json()["data"]["accepted"] is True

    answered = await _answering(client, gw, {"agentKey": "ui", "message": "theme and trip"}, submit)

    upstream.enqueue(call("f2", "confirm_dialog", QUESTION))

    async def interrupt(event: dict[str, Any]) -> None:
        response = await client.post(f"{gw.url}/api/ap/interrupt", json={"runId": event["runId"]})
        assert response.json()["data"] == {"cancelled": True}

    interrupted = await _answering(client, gw, {"agentKey": "ui", "message": "ask me"}, interrupt)

    upstream.enqueue(http_error_script(500, "boom"))
    failed = await collect(client, url, {"agentKey": "ui", "message": "fail"})

    run_id = next(e["runId"] for e in planned if e["type"] == "run.start")
    async with client.stream("GET", f"{gw.url}/api/ap/run/stream", params={"runId": run_id, "after": 0}) as replay:
        assert replay.status_code == 200
        replayed = [line async for line in replay.aiter_lines() if line.startswith("data: ")]
    assert len(replayed) == len(planned)

    runs = [planned, answered, interrupted, failed]
    assert [run[-1]["type"] for run in runs] == ["run.complete", "run.complete", "run.cancel", "run.error"]
    for event in (event for run in runs for event in run):
        check_against_document(event)
    seen = {event["type"] for run in runs for event in run}
    # the runs above really exercised most of the union (a test that validates three events proves little)
    assert seen >= {
        "request.query", "request.submit", "chat.start", "plan.create", "plan.update", "run.start", "run.complete",
        "run.cancel", "run.error", "task.start", "task.complete", "reasoning.start", "reasoning.delta",
        "reasoning.end", "content.start", "content.delta", "content.end", "tool.start", "tool.args", "tool.end",
        "tool.result", "action.start", "action.args", "action.end", "action.param", "action.result",
    }, sorted(set(EVENT_TYPES) - seen)


# -- served documents ---------------------------------------------------------------------


async def test_asyncapi_and_openapi_are_public_and_linked(
    start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    key = rsa_pair()
    gw = start_gateway({"agent": {"auth": {"enabled": True, "local-public-key": key.public_pem, "issuer": ISSUER}}})
    assert (await client.get(f"{gw.url}/api/ap/agents")).status_code == 401
    served = await client.get(f"{gw.url}/asyncapi.json")
    assert served.status_code == 200 and served.headers["content-type"] == "application/json"
    assert served.json() == DOC
    openapi = (await client.get(f"{gw.url}/openapi.json")).json()
    assert "[/asyncapi.json](/asyncapi.json)" in openapi["info"]["description"]
    assert all(f"`{event_type}`" in openapi["info"]["description"] for event_type in EVENT_TYPES)
    for path, method in (("/api/ap/query", "post"), ("/api/ap/run/stream", "get"), ("/api/ap/chat/stream", "get")):
        ok = openapi["paths"][path][method]["responses"]["200"]
        assert "[/asyncapi.json](/asyncapi.json)" in ok["description"], path
        assert "text/event-stream" in ok["content"], path
    assert "/asyncapi.json" not in openapi["paths"] and "/docs" not in openapi["paths"]
    # request bodies given as pydantic schemas keep no dangling ``#/$defs`` reference
    for ref in refs(openapi):
        resolve(openapi, ref)


def test_link_event_docs_hoists_nested_defs_and_leaves_its_argument_alone() -> None:
    item = {"type": "object", "properties": {"x": {"type": "integer"}}}
    body = {"$defs": {"Item": item}, "type": "object", "properties": {
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}},
        "pick": {"oneOf": [{"$ref": "#/$defs/Item"}], "discriminator": {"propertyName": "x",
                                                                          "mapping": {"1": "#/$defs/Item"}}}}}
    document = {"openapi": "3.1.0", "info": {"title": "t", "version": "1"}, "paths": {"/api/ap/query": {"post": {
        "requestBody": {"content": {"application/json": {"schema": body}}}, "responses": {}}}}}
    before = repr(document)
    linked = link_event_docs(document)
    assert repr(document) == before
    assert linked["components"]["schemas"]["Item"] == item
    schema = linked["paths"]["/api/ap/query"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert "$defs" not in schema and schema["properties"]["items"]["items"] == {"$ref": "#/components/schemas/Item"}
    assert schema["properties"]["pick"]["discriminator"]["mapping"] == {"1": "#/components/schemas/Item"}
    assert "text/event-stream" in linked["paths"]["/api/ap/query"]["post"]["responses"]["200"]["content"]
    clash = {**document, "components": {"schemas": {"Item": {"type": "string"}}}}
    with pytest.raises(ValueError, match="'Item'"):
        link_event_docs(clash)
