"""Action tools over real HTTP (SPEC §3.3 ACTION, §6, §8 ``memory.chat.action-tools``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import orjson

from app.devtools import FakeUpstream
from app.devtools.script import parallel_tool_calls_script, text_script
from tests.engine.helpers import call, chat_lines, first, of_type, step_messages, tool_message
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect, types

ACTIONS = {"backends": ["city_datetime"], "frontends": [], "actions": ["switch_theme", "launch_fireworks", "show_modal"]}


async def test_action_events_and_the_model_gets_ok_without_waiting(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "ui", agent("ONESHOT", tools=ACTIONS))
    gw = start_gateway()
    upstream.enqueue(call("call_t", "switch_theme", {"theme": "dark"}), text_script(["Dark it is."]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "ui", "message": "dark please"})
    assert events[-1]["type"] == "run.complete"
    actions = [e for e in events if e["type"].startswith("action.")]
    kinds = [e["type"] for e in actions if e["type"] != "action.param"]
    assert kinds == ["action.start", "action.args", "action.args", "action.end", "action.result"]
    action_id = actions[0]["actionId"]
    assert action_id.startswith("a_") and len(action_id) == 10
    assert all(e["actionId"] == action_id for e in actions)
    assert actions[0]["actionName"] == "switch_theme" and actions[0]["runId"] == events[2]["runId"]
    assert orjson.loads("".join(e["delta"] for e in of_type(events, "action.args"))) == {"theme": "dark"}
    assert first(events, "action.result")["result"] == "OK"
    assert first(events, "action.param")["param"] == {"theme": "dark"}
    assert not any(kind.startswith("tool.") for kind in types(events))
    assert "request.submit" not in types(events)
    assert tool_message(upstream.requests[1].body, "call_t")["content"] == "OK"


async def test_several_actions_in_one_turn(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "ui", agent("ONESHOT", tools=ACTIONS))
    gw = start_gateway()
    upstream.enqueue(
        parallel_tool_calls_script([("c1", "launch_fireworks", ['{}']),
                                    ("c2", "show_modal", ['{"title":"Hi",', '"content":"Hello"}'])]),
        text_script(["Done."]),
    )
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "ui", "message": "party"})
    assert [e["actionName"] for e in of_type(events, "action.start")] == ["launch_fireworks", "show_modal"]
    assert [e["result"] for e in of_type(events, "action.result")] == ["OK", "OK"]
    second = upstream.requests[1].body
    assert tool_message(second, "c1")["content"] == "OK" and tool_message(second, "c2")["content"] == "OK"
    history = (await client.get(f"{gw.url}/api/ap/chat", params={"chatId": events[0]["chatId"]})).json()["data"]
    snapshots = of_type(history["events"], "action.snapshot")
    assert [s["actionName"] for s in snapshots] == ["launch_fireworks", "show_modal"]
    assert [e["result"] for e in of_type(history["events"], "action.result")] == ["OK", "OK"]


async def test_memory_action_tools_setting_records_action_ids(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """A backend tool listed in ``memory.chat.action-tools`` is recorded with ``_actionId`` in memory."""
    write_agent(deploy, "ui", agent("REACT", tools=ACTIONS))
    gw = start_gateway({"memory": {"chat": {"action-tools": ["city_datetime"]}}})
    upstream.enqueue(
        call("call_time", "city_datetime", {"city": "Paris"}),
        call("call_theme", "switch_theme", {"theme": "light"}),
        text_script(["ok"]),
    )
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "ui", "message": "x"})
    assert events[-1]["type"] == "run.complete"
    messages = step_messages(chat_lines(deploy, events[0]["chatId"]))
    by_name: dict[str, list[dict]] = {}
    for message in messages:
        name = message["tool_calls"][0]["function"]["name"] if message.get("tool_calls") else message.get("name")
        if name:
            by_name.setdefault(name, []).append(message)
    for name in ("city_datetime", "switch_theme"):
        call_message, result_message = by_name[name]
        assert "_actionId" in call_message and "_toolId" not in call_message
        assert result_message["role"] == "tool" and result_message["_actionId"] == call_message["_actionId"]
    assert by_name["city_datetime"][0]["_actionId"] == "call_time"
    assert by_name["switch_theme"][0]["_actionId"].startswith("a_")


async def test_a_refused_call_of_a_tool_kept_as_an_action_pairs_with_its_result_in_history(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """REACT refuses a second parallel call. Its call message was kept with ``_actionId`` (the tool
    is in ``memory.chat.action-tools``) but its refusal with ``_toolId``: history showed an
    ``action.snapshot`` answered by a ``tool.result`` of the same id."""
    write_agent(deploy, "ui", agent("REACT", tools=ACTIONS))
    gw = start_gateway({"memory": {"chat": {"action-tools": ["city_datetime"]}}})
    upstream.enqueue(parallel_tool_calls_script([("c1", "city_datetime", ['{"city":"Paris"}']),
                                                 ("c2", "city_datetime", ['{"city":"Rome"}'])]),
                     text_script(["ok"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "ui", "message": "x"})
    assert events[-1]["type"] == "run.complete"
    history = (await client.get(f"{gw.url}/api/ap/chat", params={"chatId": events[0]["chatId"]})).json()["data"]
    assert [s["actionId"] for s in of_type(history["events"], "action.snapshot")] == ["c1", "c2"]
    assert [r["actionId"] for r in of_type(history["events"], "action.result")] == ["c1", "c2"]
    assert of_type(history["events"], "tool.result") == []
