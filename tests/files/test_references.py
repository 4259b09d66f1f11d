"""Query ``references`` (SPEC §23): the model sees the uploads, tools read them in the sandbox,
vision models receive images — checked in the requests the fake upstream recorded."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.engine.helpers import call, first, of_type
from tests.files.support import FILE_TOOLS, PNG, envelope, upload
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect

BASH = {"agent": {"tools": {"bash": {"allowed-commands": "cat,ls"}}}}
NOTES = "Shipment 42 leaves on Friday.\n".encode()


def user_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m.get("role") == "user"]


def vision_models(deploy: Path) -> None:
    for key, protocol in (("vision-openai", "OPENAI"), ("vision-anthropic", "ANTHROPIC")):
        body = {"key": key, "provider": "fake", "protocol": protocol, "modelId": key, "isVision": True,
                "maxOutputTokens": 1024}
        (deploy / "models" / f"{key}.json").write_bytes(orjson.dumps(body))


async def test_scripted_bash_reads_the_uploaded_file_inside_the_sandbox(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "analyst", agent("REACT", tools=FILE_TOOLS))
    gw = start_gateway(BASH)
    assert gw.settings.agent.tools.sandbox.mode == "bwrap"
    data = envelope(await upload(client, gw, "notes.txt", NOTES, content_type="text/plain"))
    chat_id, reference = data["chatId"], data["reference"]
    upstream.enqueue(call("c1", "_bash_", {"command": f"cat {reference['path']}"}), text_script(["Friday."]))
    events = await collect(client, f"{gw.url}/api/ap/query", {
        "agentKey": "analyst", "chatId": chat_id, "message": "When does it leave?", "references": [{"id": "r01"}]})
    assert events[-1]["type"] == "run.complete", events[-1]
    # request.query carries the whole reference
    assert first(events, "request.query")["references"] == [reference]
    # the sandboxed command ran in the chat's workspace and read the upload
    result = first(events, "tool.result")["result"]
    assert result["exitCode"] == 0 and result["stdout"] == NOTES.decode(), result
    assert result["workingDirectory"].endswith(f"/workspaces/{chat_id}")
    # the model was told what is attached and where
    user = user_messages(upstream.requests[0].body)[-1]
    assert isinstance(user["content"], str) and user["content"].startswith("When does it leave?")
    assert "[r01] notes.txt" in user["content"] and "path: uploads/notes.txt" in user["content"]
    assert f"{len(NOTES)} bytes" in user["content"]
    # the history shows the question with its reference, and the chat's uploads
    history = envelope(await client.get(f"{gw.url}/api/ap/chat", params={"chatId": chat_id}))
    assert first(history["events"], "request.query")["references"] == [reference]
    assert history["references"] == [reference]
    assert [e["type"] for e in history["events"]][:4] == ["request.upload", "request.query", "chat.start", "run.start"]


@pytest.mark.parametrize("model", ["vision-openai", "vision-anthropic"])
async def test_image_upload_reaches_a_vision_model_as_an_image_part(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    model: str,
) -> None:
    vision_models(deploy)
    write_agent(deploy, "looker", agent(model=model))
    gw = start_gateway()
    chat_id = envelope(await upload(client, gw, "dot.png", PNG, content_type="image/png"))["chatId"]
    upstream.enqueue(text_script(["A dot."]), text_script(["Still a dot."]))
    query = {"agentKey": "looker", "chatId": chat_id, "message": "What is this?", "references": [{"id": "r01"}]}
    assert (await collect(client, f"{gw.url}/api/ap/query", query))[-1]["type"] == "run.complete"
    # a later run of the chat without references: the replayed question still carries its image
    follow_up = {"chatId": chat_id, "agentKey": "looker", "message": "And now?"}
    assert (await collect(client, f"{gw.url}/api/ap/query", follow_up))[-1]["type"] == "run.complete"
    encoded = base64.b64encode(PNG).decode()
    for request in upstream.requests:
        question = user_messages(request.body)[0]
        parts = question["content"]
        if model == "vision-openai":
            assert parts[0]["type"] == "text" and parts[0]["text"].startswith("What is this?")
            assert parts[1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{encoded}"}}
        else:
            assert parts[0]["type"] == "text" and parts[0]["text"].startswith("What is this?")
            assert parts[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                           "data": encoded}}
        assert "[r01] dot.png (image, image/png" in parts[0]["text"]
    assert len(upstream.requests) == 2


async def test_a_model_without_vision_gets_the_listing_but_no_image(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent())
    gw = start_gateway()
    chat_id = envelope(await upload(client, gw, "dot.png", PNG))["chatId"]
    upstream.enqueue(text_script(["I cannot see it."]))
    query = {"agentKey": "plain", "chatId": chat_id, "message": "What is this?", "references": [{"id": "r01"}]}
    assert (await collect(client, f"{gw.url}/api/ap/query", query))[-1]["type"] == "run.complete"
    question = user_messages(upstream.requests[0].body)[-1]
    assert isinstance(question["content"], str) and "[r01] dot.png (image, image/png" in question["content"]
    assert "_references" not in question  # extension fields never reach a provider


async def test_unknown_reference_ends_the_run_with_invalid_reference(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent())
    gw = start_gateway()
    mine = envelope(await upload(client, gw, "a.txt", b"a"))["chatId"]
    other = envelope(await upload(client, gw, "b.txt", b"b"))["chatId"]
    assert envelope(await upload(client, gw, "c.txt", b"c", chat_id=other))["reference"]["id"] == "r02"
    url = f"{gw.url}/api/ap/query"
    cases = [
        {"agentKey": "plain", "chatId": mine, "message": "hi", "references": [{"id": "r09"}]},
        {"agentKey": "plain", "chatId": mine, "message": "hi", "references": [{"id": "r02"}]},  # the other chat's
        {"agentKey": "plain", "message": "new chat", "references": [{"id": "r01"}]},  # no uploads there
        {"agentKey": "plain", "chatId": mine, "message": "hi", "references": [{"name": "x"}]},
    ]
    for query in cases:
        events = await collect(client, url, query)
        error = events[-1]
        assert error["type"] == "run.error" and error["error"]["code"] == "invalid_reference", error
        assert not of_type(events, "content.delta")
    assert upstream.requests == []  # no model was asked
