"""Frontend tools over real HTTP (SPEC §3.3 FRONTEND, §4 ``POST /api/ap/submit``, §6).

The run emits ``tool.start`` (with ``toolType``/``toolKey``/``toolTimeout``), waits for
the browser's ``POST /api/ap/submit``, and the *same* SSE stream goes on to
``run.complete``. The submitted params are the tool result the model gets next.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.devtools import FakeUpstream
from app.devtools.script import Step, text_script
from tests.engine.helpers import call, chat_lines, first, of_type, step_messages, tool_message
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect, stream_events, types

CONFIRM = {"backends": ["city_datetime"], "frontends": ["confirm_dialog"], "actions": []}
QUESTION = {"question": "Which city?", "options": ["Paris", "Rome"], "allowFreeText": False}
#: a generous bound that only turns a hang into a failure
HANG = 60


async def _submit(client: httpx.AsyncClient, gw: GatewayServer, run_id: str, tool_id: str,
                  params: Any) -> dict[str, Any]:
    response = await client.post(f"{gw.url}/api/ap/submit", json={"runId": run_id, "toolId": tool_id, "params": params})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 0
    data: dict[str, Any] = body["data"]
    assert set(data) == {"accepted", "status", "detail"} and data["detail"]
    return data


async def _run_answering(client: httpx.AsyncClient, gw: GatewayServer, query: dict[str, Any],
                         params: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Stream a query; on ``tool.start`` of a frontend tool POST the answer, keep reading the same stream."""
    events: list[dict[str, Any]] = []
    outcome: dict[str, Any] = {}

    async def consume() -> None:
        async for event in stream_events(client, f"{gw.url}/api/ap/query", query):
            events.append(event)
            if event["type"] == "tool.start" and event.get("toolType"):
                outcome.update(await _submit(client, gw, event["runId"], event["toolId"], params))

    await asyncio.wait_for(consume(), timeout=HANG)
    return events, outcome


async def test_submit_continues_the_same_stream_to_run_complete(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """THE acceptance test of issue 5 (2)."""
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION, text=("Let me ask. ",)), text_script(["You chose ", "Rome."]))
    answer = {"selected": "Rome", "freeText": ""}
    events, outcome = await _run_answering(client, gw, {"agentKey": "confirm", "message": "trip"}, answer)
    assert outcome["accepted"] is True and outcome["status"] == "accepted"
    kinds = types(events)
    assert kinds[-1] == "run.complete"
    start = first(events, "tool.start")
    assert start["toolName"] == "confirm_dialog"
    assert start["toolType"] == "html" and start["toolKey"] == "confirm_dialog" and start["toolTimeout"] == 300000
    tool_id = start["toolId"]
    assert tool_id.startswith("t_") and len(tool_id) == 10 and tool_id != "c1"
    submit = first(events, "request.submit")
    assert submit["toolId"] == tool_id and submit["payload"] == answer and submit["runId"] == start["runId"]
    assert submit["chatId"] == events[0]["chatId"] and submit["requestId"] == events[0]["requestId"]
    result = first(events, "tool.result")
    assert result["toolId"] == tool_id and result["result"] == answer
    assert kinds.index("tool.end") < kinds.index("request.submit") < kinds.index("tool.result")
    assert "".join(e["delta"] for e in of_type(events, "content.delta")).endswith("You chose Rome.")
    # what the model got next: the submitted params as the tool message of its own call id
    assert orjson.loads(tool_message(upstream.requests[1].body, "c1")["content"]) == answer
    # answered once: a second submit is expired
    again = await _submit(client, gw, start["runId"], tool_id, {"selected": "Paris"})
    assert again == {**again, "accepted": False, "status": "expired"}


async def test_history_after_a_frontend_run(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["ok"]))
    events, _ = await _run_answering(client, gw, {"agentKey": "confirm", "message": "trip"}, {"selected": "Paris"})
    tool_id = first(events, "tool.start")["toolId"]
    response = await client.get(f"{gw.url}/api/ap/chat", params={"chatId": events[0]["chatId"]})
    history = response.json()["data"]["events"]
    snapshot = first(history, "tool.snapshot")
    assert snapshot["toolId"] == tool_id and snapshot["toolName"] == "confirm_dialog"
    assert snapshot["toolType"] == "html" and snapshot["toolKey"] == "confirm_dialog"
    assert orjson.loads(snapshot["arguments"]) == QUESTION
    submit = first(history, "request.submit")
    assert submit["toolId"] == tool_id and submit["payload"] == {"selected": "Paris"}
    result = first(history, "tool.result")
    assert result["toolId"] == tool_id and result["result"] == {"selected": "Paris"}
    kinds = types(history)
    assert kinds.index("tool.snapshot") < kinds.index("request.submit") < kinds.index("tool.result")
    assert kinds[-1] == "run.complete"


async def test_null_params_become_an_empty_object(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "confirm", agent("ONESHOT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["ok"]))
    events, outcome = await _run_answering(client, gw, {"agentKey": "confirm", "message": "x"}, None)
    assert outcome["status"] == "accepted"
    assert first(events, "tool.result")["result"] == {}
    assert tool_message(upstream.requests[1].body, "c1")["content"] == "{}"


async def test_unmatched_submissions(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["ok"]))
    events: list[dict[str, Any]] = []
    wrong: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "confirm", "message": "x"}):
            events.append(event)
            if event["type"] == "tool.start":
                run_id, tool_id = event["runId"], event["toolId"]
                wrong.append(await _submit(client, gw, run_id, "t_00000000", {"x": 1}))
                wrong.append(await _submit(client, gw, "run_nope", tool_id, {"x": 2}))
                wrong.append(await _submit(client, gw, run_id, "c1", {"x": 3}))  # the upstream call id is not it
                await _submit(client, gw, run_id, tool_id, {"x": 4})

    await asyncio.wait_for(consume(), timeout=HANG)
    assert [w["status"] for w in wrong] == ["unmatched"] * 3 and not any(w["accepted"] for w in wrong)
    assert first(events, "tool.result")["result"] == {"x": 4}
    bad = await client.post(f"{gw.url}/api/ap/submit", json={"runId": "r"})
    assert bad.status_code == 400 and bad.json()["code"] > 0


async def test_submit_timeout_gives_an_error_result_and_a_late_submit_is_expired(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway({"agent": {"tools": {"frontend": {"submit-timeout-ms": 200}}}})
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["nobody answered"]))
    events = await asyncio.wait_for(collect(client, f"{gw.url}/api/ap/query",
                                            {"agentKey": "confirm", "message": "x"}), timeout=HANG)
    assert events[-1]["type"] == "run.complete"
    start = first(events, "tool.start")
    assert start["toolTimeout"] == 200
    result = first(events, "tool.result")["result"]
    assert result["ok"] is False and "did not answer" in result["error"]
    assert "request.submit" not in types(events)
    assert orjson.loads(tool_message(upstream.requests[1].body, "c1")["content"]) == result
    late = await _submit(client, gw, start["runId"], start["toolId"], {"selected": "Rome"})
    assert late["accepted"] is False and late["status"] == "expired"


def _two_run_responder(body: dict[str, Any]) -> list[Step]:
    """Each run asks its own question; after the answer, the model repeats the tool message it got."""
    last = body["messages"][-1]
    if last["role"] == "tool":
        return text_script([f"got {last['content']}"])
    return call(f"call_{last['content']}", "confirm_dialog", {"question": f"for {last['content']}"})


async def test_two_concurrent_runs_never_receive_each_others_submissions(
    tmp_path: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    with FakeUpstream(_two_run_responder) as fake:
        root = make_deployment(tmp_path / "two", fake.url)
        write_agent(root, "confirm", agent("REACT", tools=CONFIRM))
        gw = start_gateway(root=root)
        waiting: dict[str, dict[str, Any]] = {}
        both_waiting = asyncio.Event()
        streams: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}

        async def consume(name: str) -> None:
            async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "confirm", "message": name}):
                streams[name].append(event)
                if event["type"] == "tool.start":
                    waiting[name] = event
                    if len(waiting) == 2:
                        both_waiting.set()

        async def answer() -> None:
            await both_waiting.wait()
            a, b = waiting["A"], waiting["B"]
            crossed = await _submit(client, gw, b["runId"], a["toolId"], {"answer": "for A via B"})
            assert crossed["status"] == "unmatched" and crossed["accepted"] is False
            crossed = await _submit(client, gw, a["runId"], b["toolId"], {"answer": "for B via A"})
            assert crossed["status"] == "unmatched"
            assert (await _submit(client, gw, b["runId"], b["toolId"], {"answer": "B"}))["status"] == "accepted"
            assert (await _submit(client, gw, a["runId"], a["toolId"], {"answer": "A"}))["status"] == "accepted"

        await asyncio.wait_for(asyncio.gather(consume("A"), consume("B"), answer()), timeout=HANG)
        for name in ("A", "B"):
            events = streams[name]
            assert events[-1]["type"] == "run.complete"
            assert first(events, "tool.result")["result"] == {"answer": name}
            assert first(events, "request.submit")["payload"] == {"answer": name}
            said = "".join(e["delta"] for e in of_type(events, "content.delta"))
            assert said == f'got {{"answer":"{name}"}}'
        tool_bodies = [r.body for r in fake.requests if r.body["messages"][-1]["role"] == "tool"]
        seen = {m["tool_call_id"]: orjson.loads(m["content"]) for b in tool_bodies for m in b["messages"]
                if m["role"] == "tool"}
        assert seen == {"call_A": {"answer": "A"}, "call_B": {"answer": "B"}}


async def test_regression_an_answer_sent_while_the_turn_still_streams_is_not_lost(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """The submit lands between ``tool.start`` and the end of the model's turn (held by a gate): the
    answer used to be dropped — the engine then opened a fresh wait and hung until the timeout."""
    from app.devtools.script import Finish, Gate, ToolArgs, ToolCall, Usage

    write_agent(deploy, "asker", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(
        [ToolCall(0, "f1", "confirm_dialog"), ToolArgs(0, orjson.dumps(QUESTION).decode()), Gate("turn-end"),
         Usage(5, 5), Finish("tool_calls")],
        text_script(["Rome it is."]),
    )
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "asker", "message": "go"}):
            events.append(event)
            if event["type"] == "tool.start":
                outcome = await _submit(client, gw, event["runId"], event["toolId"], {"selected": "Rome"})
                assert outcome["accepted"] is True
                status = (await client.get(f"{gw.url}/api/ap/run", params={"runId": event["runId"]})).json()
                assert status["data"]["pendingTools"] == []  # answered, no longer waiting
                upstream.release("turn-end")  # only now does the turn end and the engine start waiting

    await asyncio.wait_for(consume(), timeout=HANG)
    assert events[-1]["type"] == "run.complete"
    assert first(events, "tool.result")["result"] == {"selected": "Rome"}


async def test_a_frontend_call_whose_arguments_are_broken_leaves_no_wait_open(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """The wait opens at ``tool.start`` (a client may answer while the turn streams). A call whose
    arguments then fail (here cut short by ``finish_reason: length``) got its error result, but
    its wait stayed open: the run said ``waiting`` with a pending tool while the model was on its
    next turn, and the user's answer was accepted, then thrown away."""
    from app.devtools.script import Finish, Gate, Text, ToolArgs, ToolCall

    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue([ToolCall(0, "c1", "confirm_dialog"), ToolArgs(0, '{"question":"Which ci'), Finish("length")],
                     [Text("thinking"), Gate("g"), Text(" done"), Finish("stop")])
    events: list[dict[str, Any]] = []
    seen: dict[str, Any] = {}

    async def consume() -> None:
        async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "confirm", "message": "x"}):
            events.append(event)
            if event["type"] == "content.delta" and event["delta"] == "thinking":
                run_id, tool_id = first(events, "run.start")["runId"], first(events, "tool.start")["toolId"]
                seen["run"] = (await client.get(f"{gw.url}/api/ap/run", params={"runId": run_id})).json()["data"]
                seen["submit"] = await _submit(client, gw, run_id, tool_id, {"selected": "Paris"})
                upstream.release("g")

    await asyncio.wait_for(consume(), timeout=HANG)
    assert "not valid JSON" in first(events, "tool.result")["result"]["error"]
    assert seen["run"]["status"] == "running" and not seen["run"]["pendingTools"]
    assert seen["submit"]["accepted"] is False
    assert types(events)[-1] == "run.complete" and "request.submit" not in types(events)


async def test_the_time_a_user_takes_to_answer_does_not_count_against_the_run_timeout(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """``runTimeoutMs`` bounds the run minus the frontend waits (docs/DECISIONS.md). The wait only
    pushed the deadline back once it was over, so a user slower than the run's budget ended the run
    mid-wait, and pushing back a deadline that had fired raised: ``run.error`` ``internal_error``.
    The clock starts again after the answer: a model that then stalls ends in ``budget_run_timeout``."""
    from app.devtools.script import Stall

    budget = 1500  # the user answers after twice as long
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM, budget={"runTimeoutMs": budget}))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["You chose Rome."]),
                     call("c2", "confirm_dialog", QUESTION), [Stall()])
    runs: list[list[dict[str, Any]]] = []
    for _ in range(2):
        events: list[dict[str, Any]] = []
        async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "confirm", "message": "x"}):
            events.append(event)
            if event["type"] == "tool.start":
                await asyncio.sleep(2 * budget / 1000)
                assert (await _submit(client, gw, event["runId"], event["toolId"], {"selected": "Rome"}))["accepted"]
        runs.append(events)
    answered, stalled = runs
    assert types(answered)[-1] == "run.complete", answered[-1]
    assert first(answered, "tool.result")["result"] == {"selected": "Rome"}
    assert "request.submit" in types(stalled) and stalled[-1]["type"] == "run.error"
    assert stalled[-1]["error"]["code"] == "budget_run_timeout"


async def test_attack_an_answer_nested_too_deep_to_encode_is_refused_and_the_run_goes_on(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """orjson reads 1024 levels of nesting but writes only 254: an answer nested 300 deep was
    accepted, then ``request.submit`` carrying it cut the SSE stream with no terminal event and
    the chat file's writer refused its line. It is refused with a 400; the tool keeps waiting
    for a proper answer."""
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["ok"]))
    events: list[dict[str, Any]] = []
    refused: list[httpx.Response] = []

    async def consume() -> None:
        async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "confirm", "message": "x"}):
            events.append(event)
            if event["type"] == "tool.start":
                ids = orjson.dumps({"runId": event["runId"], "toolId": event["toolId"]})[:-1]
                deep = ids + b',"params":' + b"[" * 300 + b"]" * 300 + b"}"
                refused.append(await client.post(f"{gw.url}/api/ap/submit", content=deep,
                                                 headers={"content-type": "application/json"}))
                assert (await _submit(client, gw, event["runId"], event["toolId"], {"selected": "Rome"}))["accepted"]

    await asyncio.wait_for(consume(), timeout=HANG)
    assert refused[0].status_code == 400 and "nested deeper" in refused[0].json()["msg"]
    assert types(events)[-1] == "run.complete"
    assert first(events, "request.submit")["payload"] == {"selected": "Rome"}


async def test_attack_a_template_cannot_carry_an_answer_nested_too_deep_into_an_action_event(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """An answer may be a string, and a template reads a string result as JSON: a string holding
    JSON nested 300 deep passed the answer's depth check, then ``{{confirm_dialog.a}}`` put the
    deep value into an action's arguments, ``action.param`` could not be framed and the stream was
    cut. Arguments are checked again once their templates are resolved: an error result."""
    write_agent(deploy, "confirm", agent("REACT", tools={**CONFIRM, "actions": ["switch_theme"]}))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), call("c2", "switch_theme", {"theme": "{{confirm_dialog.a}}"}),
                     text_script(["ok"]))
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "confirm", "message": "x"}):
            events.append(event)
            if event["type"] == "tool.start":
                answer = '{"a":' + "[" * 300 + "]" * 300 + "}"
                assert (await _submit(client, gw, event["runId"], event["toolId"], answer))["accepted"]

    await asyncio.wait_for(consume(), timeout=HANG)
    assert types(events)[-1] == "run.complete"
    assert "action.param" not in types(events)
    result = first(events, "action.result")["result"]
    assert result["ok"] is False and "nested deeper" in result["error"]


async def test_a_frontend_call_in_a_turn_that_may_call_no_tool_is_never_offered_to_the_client(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """ONESHOT's second call (also the plan draft and the summary's second call) asks for no tool
    call and refuses any it gets. A frontend call there was still announced with its viewport and
    opened a wait: a client that answered while the turn streamed was told ``accepted``, then the
    call was refused and the answer thrown away. It is now refused from its ``tool.start``."""
    from app.devtools.script import Finish, Gate, ToolArgs, ToolCall, Usage

    write_agent(deploy, "one", agent("ONESHOT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "city_datetime", {"city": "Paris"}),
                     [ToolCall(0, "f1", "confirm_dialog"), ToolArgs(0, orjson.dumps(QUESTION).decode()),
                      Gate("turn-end"), Usage(5, 5), Finish("tool_calls")])
    events: list[dict[str, Any]] = []
    answers: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "one", "message": "x"}):
            events.append(event)
            if event["type"] == "tool.start" and event["toolName"] == "confirm_dialog":
                answers.append(await _submit(client, gw, event["runId"], event["toolId"], {"selected": "Rome"}))
                upstream.release("turn-end")

    await asyncio.wait_for(consume(), timeout=HANG)
    start = [e for e in of_type(events, "tool.start") if e["toolName"] == "confirm_dialog"][0]
    assert "toolType" not in start and "toolKey" not in start and "toolTimeout" not in start
    assert answers[0]["accepted"] is False and answers[0]["status"] == "unmatched"
    refusal = [e for e in of_type(events, "tool.result") if e["toolId"] == start["toolId"]][0]["result"]
    assert refusal["ok"] is False and "request.submit" not in types(events)
    assert types(events)[-1] == "run.complete"


async def test_a_run_interrupted_while_a_frontend_tool_waits_gives_that_call_its_result(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    """A run cancelled during a frontend wait ended with the call's ``tool.start`` … ``tool.end``
    and no ``tool.result``, and its chat file held the call without a result line: rebuilt from
    history the form looked as if it were still waiting for an answer that could never land. The
    run's end now gives every unanswered call an error result, live and in the chat file."""
    write_agent(deploy, "confirm", agent("REACT", tools=CONFIRM))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", QUESTION), text_script(["never"]))
    events: list[dict[str, Any]] = []

    async def consume() -> None:
        async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "confirm", "message": "x"}):
            events.append(event)
            if event["type"] == "tool.end":
                run = {"runId": event["runId"]}
                while (await client.get(f"{gw.url}/api/ap/run", params=run)).json()["data"]["status"] != "waiting":
                    await asyncio.sleep(0.01)
                assert (await client.post(f"{gw.url}/api/ap/interrupt", json=run)).json()["data"]["cancelled"]

    await asyncio.wait_for(consume(), timeout=HANG)
    kinds = types(events)
    assert kinds[-2:] == ["tool.result", "run.cancel"]
    start, result = first(events, "tool.start"), first(events, "tool.result")
    assert result["toolId"] == start["toolId"] and result["result"]["ok"] is False
    assert "cancelled" in result["result"]["error"]
    lines = chat_lines(deploy, events[0]["chatId"])
    messages = step_messages(lines)
    calls = [m["tool_calls"][0]["id"] for m in messages if m.get("tool_calls")]
    answers = [m["tool_call_id"] for m in messages if m["role"] == "tool"]
    assert calls == answers == ["c1"]
    history = (await client.get(f"{gw.url}/api/ap/chat", params={"chatId": events[0]["chatId"]})).json()["data"]
    assert [e["type"] for e in history["events"]][-2:] == ["tool.result", "run.cancel"]
    late = await _submit(client, gw, start["runId"], start["toolId"], {"selected": "Rome"})
    assert late["status"] == "expired"
