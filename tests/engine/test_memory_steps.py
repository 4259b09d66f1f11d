"""The ``step`` lines a run leaves in chat memory (SPEC §8), over real HTTP.

A ONESHOT or REACT run's last step is written together with its ``run`` line (issue 13: one
trip to the chat writer's thread instead of two). These tests pin what that must not change:
the lines' order and numbering, the system prompt on the run's first step, and a chat file
that is closed once the run's end is streamed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.engine.helpers import call, chat_lines
from tests.support.deployment import agent, write_agent
from tests.support.descriptors import open_descriptors
from tests.support.server import GatewayServer
from tests.support.sse import collect


def text_of(message: dict[str, Any]) -> str:
    """The text of a memory message (its content is a list of blocks, SPEC §8)."""
    return "".join(block.get("text", "") for block in message["content"])


def upstream_system(upstream: FakeUpstream, index: int) -> str:
    messages = upstream.requests[index].body["messages"]
    assert messages[0]["role"] == "system"
    return messages[0]["content"]


async def test_a_oneshot_runs_only_step_carries_the_system_prompt_the_model_got(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    upstream.enqueue(text_script(["Hello", " there"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "plain", "message": "hi"})
    assert events[-1]["type"] == "run.complete"
    chat_id = events[0]["chatId"]
    lines = chat_lines(deploy, chat_id)
    assert [line["_type"] for line in lines] == ["query", "step", "run"]
    step = lines[1]
    assert step["_seq"] == 1 and step["system"] == upstream_system(upstream, 0)
    assert "You are a test agent." in step["system"]
    assert [m["role"] for m in step["messages"]] == ["user", "assistant"]
    assert text_of(step["messages"][1]) == "Hello there"
    assert lines[2]["status"] == "complete" and lines[2]["runId"] == step["runId"]
    # the run's end closed the chat's file: nothing of it is held once the end was streamed
    assert open_descriptors(deploy / "chats" / f"{chat_id}.json") == []


async def test_a_react_runs_last_step_follows_its_tool_step_and_the_next_run_appends_after_it(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "react", agent("REACT", tools={"backends": ["city_datetime"], "frontends": [], "actions": []}))
    gw = start_gateway()
    upstream.enqueue(call("call_1", "city_datetime", {"city": "Paris"}), text_script(["It is noon."]),
                     text_script(["Again."]))
    first_run = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "react", "message": "time?"})
    assert first_run[-1]["type"] == "run.complete"
    chat_id = first_run[0]["chatId"]
    second_run = await collect(client, f"{gw.url}/api/ap/query",
                               {"agentKey": "react", "message": "again", "chatId": chat_id})
    assert second_run[-1]["type"] == "run.complete"
    lines = chat_lines(deploy, chat_id)
    assert [line["_type"] for line in lines] == ["query", "step", "step", "run", "query", "step", "run"]
    first_step, last_step, next_step = lines[1], lines[2], lines[5]
    assert [first_step["_seq"], last_step["_seq"]] == [1, 2]
    assert first_step["system"] == upstream_system(upstream, 0)
    assert "system" not in last_step  # unchanged since the first step: written once
    assert text_of(last_step["messages"][-1]) == "It is noon."
    assert next_step["_seq"] == 1 and next_step["system"] == upstream_system(upstream, 2)
    assert text_of(next_step["messages"][-1]) == "Again."
    # the second run's model saw the first run's answer: the deferred step was written before it began
    assert any(m.get("content") == "It is noon." for m in upstream.requests[2].body["messages"])
    assert open_descriptors(deploy / "chats" / f"{chat_id}.json") == []
