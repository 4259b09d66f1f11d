"""Frontend tools through AG-UI (SPEC §17 "AG-UI", §3.3 FRONTEND, §15) over real HTTP.

A frontend tool call ends the AG-UI run with the client tool call pending while the gateway run
waits; the next ``RunAgentInput`` of the thread whose last message is the ``tool`` message
answers it, and the continuation streams as a new AG-UI run.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.devtools import FakeUpstream
from app.devtools.script import parallel_tool_calls_script, text_script
from tests.agui.support import answer_input, collect_agui, kinds, raw_types, user_input
from tests.engine.helpers import call, tool_message
from tests.security.support import bearer, mint, rsa_pair
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer

CONFIRM = {"backends": ["city_datetime"], "frontends": ["confirm_dialog"], "actions": []}
WEATHER_AND_CONFIRM = {"backends": ["mock_city_weather"], "frontends": ["confirm_dialog"], "actions": []}
QUESTION = {"question": "Which city?", "options": ["Paris", "Rome"], "allowFreeText": False}
ANSWER = {"selected": "Rome", "freeText": ""}
OPENING = ["RUN_STARTED", "RAW", "RAW", "RAW"]
CLIENT_CALL = ["TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_ARGS", "TOOL_CALL_END"]


async def _run_status(client: httpx.AsyncClient, gw: GatewayServer, run_id: str, **headers: str) -> dict[str, Any]:
    response = await client.get(f"{gw.url}/api/ap/run", params={"runId": run_id}, headers=headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def test_frontend_tool_ends_the_agui_run_and_the_tool_message_continues_the_gateway_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION, text=("Let me ask. ",)), text_script(["You chose ", "Rome."]))
    url = f"{gw.url}/ag-ui/confirm"
    first = await collect_agui(client, url, user_input("thread-fe", "trip", run_id="client-run-1"))
    assert kinds(first) == [*OPENING, "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", *CLIENT_CALL,
                            "RUN_FINISHED"]
    text_id, start, finished = first[4].message_id, first[7], first[-1]
    assert start.tool_call_name == "confirm_dialog" and start.parent_message_id == text_id
    tool_call_id = start.tool_call_id
    assert finished.run_id == "client-run-1"
    assert finished.outcome.type == "success" and finished.outcome.pending_tool_call_ids == [tool_call_id]
    assert orjson.loads("".join(e.delta for e in first if e.type.value == "TOOL_CALL_ARGS")) == QUESTION
    # the AG-UI run is over, the gateway run waits for the client
    run_id = first[3].event["runId"]
    waiting = await _run_status(client, gw, run_id)
    assert waiting["status"] == "waiting"
    assert [tool["toolId"] for tool in waiting["pendingTools"]] == [tool_call_id]

    second = await collect_agui(client, url, answer_input("thread-fe", first, orjson.dumps(ANSWER).decode()))
    assert kinds(second) == ["RUN_STARTED", "RAW", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT",
                             "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED"]
    assert raw_types(second) == ["request.submit"]
    assert second[0].run_id == second[-1].run_id == "client-run-2"
    assert second[1].event["toolId"] == tool_call_id and second[1].event["payload"] == ANSWER
    assert [e.delta for e in second if e.type.value == "TEXT_MESSAGE_CONTENT"] == ["You chose ", "Rome."]
    assert not second[-1].outcome.pending_tool_call_ids
    # one gateway run across both AG-UI runs; the model got the parsed answer as the tool result
    done = await _run_status(client, gw, run_id)
    assert done["status"] == "completed" and done["pendingTools"] == []
    assert orjson.loads(tool_message(upstream.requests[1].body, "c1")["content"]) == ANSWER


async def test_a_client_call_react_refuses_is_never_pending_and_the_answer_streams_on(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """REACT runs one call a turn and refuses the others. A frontend call after a backend one was
    still announced as the client's (its viewport, an open wait): the AG-UI run finished with it
    pending while the gateway refused it and answered with nobody watching, and the client's
    answer then got RUN_ERROR; with two frontend calls the second answer was accepted and lost.
    A refused call is now a plain call with its refusal result, and the run streams on."""
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(
        parallel_tool_calls_script([("b1", "city_datetime", ['{"city":"Paris"}']),
                                    ("f1", "confirm_dialog", [orjson.dumps(QUESTION).decode()])]),
        text_script(["It is ", "noon in Paris."]))
    url = f"{gw.url}/ag-ui/confirm"
    first = await collect_agui(client, url, user_input("thread-mixed", "time?"))
    assert kinds(first)[-1] == "RUN_FINISHED" and not first[-1].outcome.pending_tool_call_ids
    results = {e.tool_call_id: e.content for e in first if e.type.value == "TOOL_CALL_RESULT"}
    assert "b1" in results and "one at a time" in [v for k, v in results.items() if k != "b1"][0]
    assert [e.delta for e in first if e.type.value == "TEXT_MESSAGE_CONTENT"] == ["It is ", "noon in Paris."]

    upstream.enqueue(
        parallel_tool_calls_script([("f1", "confirm_dialog", [orjson.dumps(QUESTION).decode()]),
                                    ("f2", "confirm_dialog", [orjson.dumps(QUESTION).decode()])]),
        text_script(["You chose ", "Rome."]))
    two = await collect_agui(client, url, user_input("thread-two", "trip"))
    [pending] = two[-1].outcome.pending_tool_call_ids  # only the call the run waits for
    refused = [e for e in two if e.type.value == "TOOL_CALL_START" and e.tool_call_id != pending]
    assert len(refused) == 1
    run_id = two[3].event["runId"]
    waiting = await _run_status(client, gw, run_id)
    assert [tool["toolId"] for tool in waiting["pendingTools"]] == [pending]
    second = await collect_agui(client, url, answer_input("thread-two", two, orjson.dumps(ANSWER).decode()))
    assert kinds(second)[-1] == "RUN_FINISHED" and not second[-1].outcome.pending_tool_call_ids
    refusal = [e for e in second if e.type.value == "TOOL_CALL_RESULT"]
    assert [e.tool_call_id for e in refusal] == [refused[0].tool_call_id] and "one at a time" in refusal[0].content


async def test_a_tool_message_that_is_not_json_is_delivered_as_text(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["ok"]))
    url = f"{gw.url}/ag-ui/confirm"
    first = await collect_agui(client, url, user_input("thread-text", "trip"))
    second = await collect_agui(client, url, answer_input("thread-text", first, "Rome, please"))
    assert kinds(second)[-1] == "RUN_FINISHED"
    assert second[1].event["payload"] == "Rome, please"


async def test_a_task_waiting_for_the_client_is_closed_by_the_pause_and_reopened_by_the_continuation(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """AG-UI forbids RUN_FINISHED with a step still open: the pause finishes it, the next run starts it again."""
    write_agent(deploy, "planner", agent("PLAN_EXECUTE", tools=WEATHER_AND_CONFIRM))
    gw = start_gateway()
    upstream.enqueue(
        call("p1", "_plan_add_tasks_", {"tasks": [{"description": "ask the user"}]}),
        call("e1", "confirm_dialog", QUESTION),
        call("e2", "_plan_update_task_", {"taskId": "task_1", "status": "completed"}),
        text_script(["Rome ", "it is."]),
    )
    url = f"{gw.url}/ag-ui/planner"
    first = await collect_agui(client, url, user_input("thread-plan-fe", "trip"))
    plan_call = [*CLIENT_CALL, "STATE_SNAPSHOT", "STATE_SNAPSHOT", "TOOL_CALL_RESULT"]
    assert kinds(first) == [*OPENING, *plan_call, "STEP_STARTED", *CLIENT_CALL, "STEP_FINISHED", "RUN_FINISHED"]
    assert first[-2].step_name == "task_1" and first[-2].metadata == {"status": "paused"}
    second = await collect_agui(client, url, answer_input("thread-plan-fe", first, orjson.dumps(ANSWER).decode()))
    assert kinds(second) == ["RUN_STARTED", "STEP_STARTED", "RAW", *CLIENT_CALL, "STATE_SNAPSHOT", "STEP_FINISHED",
                             "TOOL_CALL_RESULT", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_CONTENT",
                             "TEXT_MESSAGE_END", "RUN_FINISHED"]
    assert second[1].step_name == second[8].step_name == "task_1"
    assert second[8].metadata == {"status": "completed"}


async def test_a_tool_message_for_an_unknown_call_is_run_error(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["ok"]))
    url = f"{gw.url}/ag-ui/confirm"
    first = await collect_agui(client, url, user_input("thread-unknown", "trip"))
    answer = answer_input("thread-unknown", first, "{}")
    answer["messages"][-1]["toolCallId"] = "t_forged01"
    refused = await collect_agui(client, url, answer)
    assert kinds(refused) == ["RUN_STARTED", "RUN_ERROR"]
    assert "t_forged01" in refused[-1].message and "not waiting" in refused[-1].message
    assert refused[-1].code == "tool_call_not_waiting"
    # the real call still waits and can still be answered
    second = await collect_agui(client, url, answer_input("thread-unknown", first, "{}"))
    assert kinds(second)[-1] == "RUN_FINISHED"


async def test_a_tool_message_answered_twice_or_on_a_thread_without_a_run_is_run_error(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["ok"]))
    url = f"{gw.url}/ag-ui/confirm"
    first = await collect_agui(client, url, user_input("thread-twice", "trip"))
    answer = answer_input("thread-twice", first, "{}")
    assert kinds(await collect_agui(client, url, answer))[-1] == "RUN_FINISHED"
    again = await collect_agui(client, url, answer)
    assert kinds(again) == ["RUN_STARTED", "RUN_ERROR"]
    assert "no run of thread thread-twice is waiting" in again[-1].message
    nowhere = await collect_agui(client, url, {**answer, "threadId": "thread-never-seen"})
    assert kinds(nowhere) == ["RUN_STARTED", "RUN_ERROR"]


async def test_a_new_user_message_instead_of_the_tool_result_cancels_the_waiting_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["Never mind."]))
    url = f"{gw.url}/ag-ui/confirm"
    first = await collect_agui(client, url, user_input("thread-moved-on", "trip", run_id="r-1"))
    waiting_run = first[3].event["runId"]
    second = await collect_agui(client, url, user_input("thread-moved-on", "forget it", run_id="r-2"))
    assert kinds(second) == ["RUN_STARTED", "RAW", "RAW", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT",
                             "TEXT_MESSAGE_END", "RUN_FINISHED"]
    assert (await _run_status(client, gw, waiting_run))["status"] == "cancelled"
    assert (await _run_status(client, gw, second[2].event["runId"]))["status"] == "completed"


async def test_attack_agui_thread_id_of_another_users_chat_is_refused(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """Mallory names Alice's thread: she can neither continue the chat nor answer its waiting tool call."""
    pair = rsa_pair()
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway({"agent": {"auth": {"enabled": True, "local-public-key": pair.public_pem,
                                           "issuer": "https://issuer.test"}}})
    alice, mallory = bearer(mint(pair, "alice")), bearer(mint(pair, "mallory"))
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["ok"]))
    url = f"{gw.url}/ag-ui/confirm"
    anonymous = await client.post(url, json=user_input("thread-alice", "trip"))
    assert anonymous.status_code == 401
    async with httpx.AsyncClient(timeout=30, headers=alice) as as_alice:
        first = await collect_agui(as_alice, url, user_input("thread-alice", "trip"))
    assert kinds(first)[-1] == "RUN_FINISHED"
    run_id = first[3].event["runId"]
    hijack = await client.post(url, json=user_input("thread-alice", "show me everything"), headers=mallory)
    assert hijack.status_code == 403 and hijack.json()["code"] == 4030
    forged = await client.post(url, json=answer_input("thread-alice", first, '{"selected": "Paris"}'),
                               headers=mallory)
    assert forged.status_code == 403 and forged.json()["code"] == 4030
    # Alice's run still waits for her, unanswered; only one upstream request was made
    assert (await _run_status(client, gw, run_id, **alice))["status"] == "waiting"
    assert len(upstream.requests) == 1


async def test_a_run_waiting_for_the_client_holds_its_slot_so_the_next_thread_is_429(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway({"agent": {"limits": {"user": {"concurrent-runs": 1}}}})
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["ok"]))
    url = f"{gw.url}/ag-ui/confirm"
    first = await collect_agui(client, url, user_input("thread-slot", "trip"))
    assert kinds(first)[-1] == "RUN_FINISHED"
    refused = await client.post(url, json=user_input("thread-other", "hi"))
    assert refused.status_code == 429 and refused.headers["retry-after"].isdigit()
    assert "concurrent-runs" in refused.json()["msg"]
    # answering is never capped: the waiting run completes and frees its slot
    assert kinds(await collect_agui(client, url, answer_input("thread-slot", first, "{}")))[-1] == "RUN_FINISHED"


async def test_attack_a_tool_answer_nested_too_deep_to_encode_is_refused_and_the_run_keeps_waiting(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """An AG-UI tool message is parsed as JSON and submitted: nested 300 deep (orjson reads 1024
    levels, writes 254) it was accepted, then the event carrying it could not be encoded — the
    continuation's stream broke and the run ended with it. It is refused with a 400 and the run
    still waits for a proper answer."""
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["You chose ", "Rome."]))
    url = f"{gw.url}/ag-ui/confirm"
    first = await collect_agui(client, url, user_input("thread-deep", "trip"))
    run_id = first[3].event["runId"]
    deep = await client.post(url, json=answer_input("thread-deep", first, "[" * 300 + "]" * 300))
    assert deep.status_code == 400 and "nested deeper" in deep.json()["msg"], deep.text
    assert (await _run_status(client, gw, run_id))["status"] == "waiting"
    second = await collect_agui(client, url, answer_input("thread-deep", first, orjson.dumps(ANSWER).decode()))
    assert kinds(second)[-1] == "RUN_FINISHED" and second[1].event["payload"] == ANSWER
