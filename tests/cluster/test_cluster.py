"""Several instances on one Redis (SPEC §16), for real: redis-server, three ``python -m app serve``
processes (``a``, ``b``, ``c``) on one deployment folder, haproxy in front (round robin, no stickiness).

The processes are shared by the whole module (see ``conftest.py``); each test has its own users,
scripts and gates. Order is proven with gates, chat-file lines and upstream requests, never with
clocks; polls are bounded only to turn a hang into a failure. The instance-killing and
Redis-stopping tests come last: they leave the cluster with one instance less.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
import orjson

from app.devtools.script import Finish, Gate, Step, Text, Usage, text_script
from tests.agui.support import answer_input, collect_agui, kinds, stream_agui, user_input
from tests.cluster.conftest import USER_CONCURRENT_RUNS, USER_RPM, Cluster
from tests.cluster.support import HANG, chat_lines, query_all, sse, watch_all
from tests.engine.helpers import call

ANSWER = ["Once ", "upon ", "a ", "time ", "there ", "was ", "a ", "cluster."]
QUESTION = {"question": "Which city?", "options": ["Paris", "Rome"], "allowFreeText": False}
T = TypeVar("T")


def gated(gate: str, before: int = 3) -> list[Step]:
    """The answer's first ``before`` deltas, then ``gate``, then the rest."""
    steps: list[Step] = [Text(d) for d in ANSWER[:before]]
    steps.append(Gate(gate))
    steps += [Text(d) for d in ANSWER[before:]]
    return steps + [Usage(10, 8), Finish("stop")]


def answer_text(events: list[dict[str, Any]]) -> str:
    return "".join(e["delta"] for e in events if e["type"] == "content.delta")


def assert_contiguous(events: list[dict[str, Any]]) -> None:
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))


async def first_events(client: httpx.AsyncClient, url: str, headers: dict[str, str], body: dict[str, Any],
                       until: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
    """POST a query, read until ``until(event)``, then drop the connection."""
    seen: list[dict[str, Any]] = []
    async for event in sse(client, "POST", f"{url}/api/ap/query", headers, json=body):
        seen.append(event)
        if until(event):
            break
    return seen


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll ``probe`` until it returns something (bounded: only turns a hang into a failure)."""
    deadline = time.monotonic() + HANG
    while time.monotonic() < deadline:
        found = await probe()
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def run_status(client: httpx.AsyncClient, url: str, headers: dict[str, str], run_id: str) -> dict[str, Any]:
    reply = await client.get(f"{url}/api/ap/run", params={"runId": run_id}, headers=headers)
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()["data"]
    return data


def is_delta(text: str) -> Callable[[dict[str, Any]], bool]:
    return lambda e: e["type"] == "content.delta" and e["delta"] == text


# -- attach, submit, interrupt anywhere ------------------------------------------------------------


async def test_a_run_resumes_on_another_instance_with_every_event_once(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    user = cluster.auth("resume-user")
    tag = cluster.book.add("resume", gated("resume-gate"))
    body = {"agentKey": "plain", "message": f"tell me {tag}", "onDisconnect": "continue"}
    first = await first_events(client, cluster.a.url, user, body, until=is_delta(ANSWER[2]))
    run_id, chat_id = first[0]["requestId"], first[0]["chatId"]
    # the client is gone from a; b describes the run (asking a) and c serves the chat's active run
    assert (await run_status(client, cluster.b.url, user, run_id))["status"] == "running"
    by_chat = sse(client, "GET", f"{cluster.c.url}/api/ap/chat/stream", user, params={"chatId": chat_id})
    head = [await by_chat.__anext__()]  # attached (the first event replayed) before the run goes on
    cluster.upstream.release("resume-gate")
    rest = await watch_all(client, cluster.b.url, user, run_id, after=first[-1]["seq"])
    combined = first + rest
    assert_contiguous(combined)
    assert answer_text(combined) == "".join(ANSWER)  # every delta exactly once, in order
    assert [e["type"] for e in combined].count("run.complete") == 1 and combined[-1]["type"] == "run.complete"
    assert head + [event async for event in by_chat] == combined
    # replay after the end, through the proxy (any instance), with Last-Event-ID: the same events
    replay = [event async for event in sse(client, "GET", f"{cluster.proxy.url}/api/ap/run/stream",
                                           {**user, "Last-Event-ID": "0"}, params={"runId": run_id})]
    assert replay == combined
    # a resume from the terminal event on (a browser's EventSource reconnecting after run.complete)
    # ends at once on an instance that did not run it, as it does on the one that did
    async with asyncio.timeout(HANG):
        for url in (cluster.a.url, cluster.b.url):
            assert await watch_all(client, url, user, run_id, after=combined[-1]["seq"]) == []
            assert await watch_all(client, url, user, run_id, after=combined[-1]["seq"] + 5) == []
        last = {**user, "Last-Event-ID": str(combined[-1]["seq"])}
        assert [e async for e in sse(client, "GET", f"{cluster.proxy.url}/api/ap/run/stream", last,
                                     params={"runId": run_id})] == []
    status = await run_status(client, cluster.c.url, user, run_id)
    assert status["status"] == "completed" and status["lastSeq"] == combined[-1]["seq"]
    listed = (await client.get(f"{cluster.proxy.url}/api/ap/runs", headers=user)).json()["data"]
    assert [r["runId"] for r in listed] == [run_id]
    # another user sees none of it, on any instance
    stranger = cluster.auth("resume-stranger")
    assert (await client.get(f"{cluster.b.url}/api/ap/run", params={"runId": run_id},
                             headers=stranger)).status_code == 403


async def test_a_frontend_tool_waiting_on_one_instance_is_answered_through_another(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    user = cluster.auth("submit-user")
    tag = cluster.book.add("submit", call("c1", "confirm_dialog", QUESTION), text_script(["Paris it is."]))
    body = {"agentKey": "asker", "message": f"ask me {tag}"}
    stream = sse(client, "POST", f"{cluster.a.url}/api/ap/query", user, json=body)
    first: list[dict[str, Any]] = []
    async for event in stream:
        first.append(event)
        if event["type"] == "tool.end":
            break
    run_id = first[0]["requestId"]
    tool_id = next(e for e in first if e["type"] == "tool.start")["toolId"]

    async def waiting() -> dict[str, Any] | None:
        status = await run_status(client, cluster.c.url, user, run_id)
        return status if status["status"] == "waiting" else None

    status = await eventually(waiting, "the run waits for its frontend tool (seen from c)")
    assert [p["toolId"] for p in status["pendingTools"]] == [tool_id]
    # the same answers as on one instance: unmatched, then accepted, then expired
    submit = f"{cluster.b.url}/api/ap/submit"
    wrong = await client.post(submit, headers=user, json={"runId": run_id, "toolId": "t_nope", "params": {}})
    assert wrong.json()["data"]["status"] == "unmatched"
    stranger = await client.post(submit, headers=cluster.auth("submit-stranger"),
                                 json={"runId": run_id, "toolId": tool_id, "params": {"choice": "Rome"}})
    assert stranger.status_code == 403
    accepted = await client.post(submit, headers=user,
                                 json={"runId": run_id, "toolId": tool_id, "params": {"choice": "Paris"}})
    assert accepted.status_code == 200
    assert accepted.json()["data"] == {"accepted": True, "status": "accepted",
                                       "detail": f"delivered to tool {tool_id} of run {run_id}"}
    rest = [event async for event in stream]
    assert_contiguous(first + rest)
    assert any(e["type"] == "tool.result" and e["result"] == {"choice": "Paris"} for e in rest)
    assert rest[-1]["type"] == "run.complete" and answer_text(rest) == "Paris it is."
    again = await client.post(f"{cluster.c.url}/api/ap/submit", headers=user,
                              json={"runId": run_id, "toolId": tool_id, "params": {}})
    assert again.json()["data"]["status"] == "expired"


async def test_an_agui_client_tool_waiting_on_one_instance_is_answered_through_another(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    """AG-UI (SPEC §17) in a cluster: the tool message may reach any instance; it finds the run,
    answers it and streams the continuation from Redis, like the native submit and watch."""
    user = cluster.auth("agui-user")
    tag = cluster.book.add("agui", call("c1", "confirm_dialog", QUESTION), text_script(["Rome ", "it is."]))
    thread = f"thread-{uuid.uuid4().hex[:12]}"
    first = await asyncio.wait_for(collect_agui(
        client, f"{cluster.a.url}/ag-ui/asker", user_input(thread, f"trip {tag}", run_id="client-run-1"), user), HANG)
    assert kinds(first)[-1] == "RUN_FINISHED" and first[-1].outcome.pending_tool_call_ids
    run_id = next(e.event for e in first if kinds([e]) == ["RAW"] and e.event["type"] == "run.start")["runId"]

    async def waiting() -> dict[str, Any] | None:
        status = await run_status(client, cluster.b.url, user, run_id)
        return status if status["status"] == "waiting" else None

    await eventually(waiting, "the run waits for the client's tool call (seen from b)")
    answer = orjson.dumps({"selected": "Rome"}).decode()
    # attack: another user answers the waiting call through another instance; refused, still waiting
    forged = await client.post(f"{cluster.c.url}/ag-ui/asker", headers=cluster.auth("agui-mallory"),
                               json=answer_input(thread, first, orjson.dumps({"selected": "Paris"}).decode()))
    assert forged.status_code == 403 and forged.json()["code"] == 4030
    assert (await run_status(client, cluster.b.url, user, run_id))["status"] == "waiting"
    second = await asyncio.wait_for(collect_agui(
        client, f"{cluster.b.url}/ag-ui/asker", answer_input(thread, first, answer), user), HANG)
    assert kinds(second) == ["RUN_STARTED", "RAW", "TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT",
                             "TEXT_MESSAGE_CONTENT", "TEXT_MESSAGE_END", "RUN_FINISHED"], second
    assert second[1].event["type"] == "request.submit" and second[1].event["payload"] == {"selected": "Rome"}
    assert [e.delta for e in second if kinds([e]) == ["TEXT_MESSAGE_CONTENT"]] == ["Rome ", "it is."]
    assert second[0].run_id == second[-1].run_id == "client-run-2" and not second[-1].outcome.pending_tool_call_ids
    done = await run_status(client, cluster.c.url, user, run_id)
    assert done["status"] == "completed"
    # the same thread's answer again, through c: nothing waits any more
    again = await asyncio.wait_for(collect_agui(
        client, f"{cluster.c.url}/ag-ui/asker", answer_input(thread, first, answer, run_id="client-run-3"), user), HANG)
    assert kinds(again) == ["RUN_STARTED", "RUN_ERROR"]


async def test_an_agui_client_leaving_a_continuation_on_another_instance_cancels_the_run(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    """A client that leaves an AG-UI stream cancels its run (SPEC §17), also when the continuation
    streams through an instance the run does not live on: that instance interrupts it on its own."""
    user = cluster.auth("agui-leaver")
    tag = cluster.book.add("agui-leave", call("c1", "confirm_dialog", QUESTION),
                           [Text("Rome "), Gate("agui-leave-gate-never-released"), Text("it is."), Finish("stop")])
    thread = f"thread-{uuid.uuid4().hex[:12]}"
    first = await asyncio.wait_for(collect_agui(
        client, f"{cluster.a.url}/ag-ui/asker", user_input(thread, f"trip {tag}", run_id="client-run-1"), user), HANG)
    run_id = next(e.event for e in first if kinds([e]) == ["RAW"] and e.event["type"] == "run.start")["runId"]

    async def waiting() -> dict[str, Any] | None:
        status = await run_status(client, cluster.b.url, user, run_id)
        return status if status["status"] == "waiting" else None

    await eventually(waiting, "the run on a waits for the client's tool call")
    answer = answer_input(thread, first, orjson.dumps({"selected": "Rome"}).decode())
    seen = []
    async with contextlib.aclosing(stream_agui(client, f"{cluster.b.url}/ag-ui/asker", answer, user)) as stream:
        async for event in stream:
            seen.append(event)
            if kinds([event]) == ["TEXT_MESSAGE_CONTENT"]:
                break  # the continuation is under way on a, streamed through b: the client leaves
    assert seen[-1].delta == "Rome "

    async def cancelled() -> dict[str, Any] | None:
        status = await run_status(client, cluster.c.url, user, run_id)
        return status if status["status"] == "cancelled" else None

    await eventually(cancelled, "b interrupted the run on a when its client left")


async def test_an_interrupt_through_another_instance_reaches_every_watcher(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    user = cluster.auth("interrupt-user")
    tag = cluster.book.add("interrupt", gated("interrupt-gate-never-released"))
    body = {"agentKey": "plain", "message": f"go {tag}"}
    stream = sse(client, "POST", f"{cluster.a.url}/api/ap/query", user, json=body)
    first = [await stream.__anext__()]
    while not is_delta(ANSWER[0])(first[-1]):
        first.append(await stream.__anext__())
    run_id = first[0]["requestId"]
    watcher = sse(client, "GET", f"{cluster.c.url}/api/ap/run/stream", user, params={"runId": run_id})
    watched = [await watcher.__anext__()]
    reply = await client.post(f"{cluster.b.url}/api/ap/interrupt", headers=user, json={"runId": run_id})
    assert reply.json() == {"code": 0, "msg": "success", "data": {"cancelled": True}}
    own = first + [event async for event in stream]
    watched += [event async for event in watcher]
    assert own[-1]["type"] == "run.cancel" and watched == own
    assert_contiguous(own)
    again = await client.post(f"{cluster.c.url}/api/ap/interrupt", headers=user, json={"runId": run_id})
    assert again.json()["data"] == {"cancelled": False}
    assert (await run_status(client, cluster.b.url, user, run_id))["status"] == "cancelled"


# -- one run per chat, cluster-wide ------------------------------------------------------------------


async def test_two_queries_on_one_chat_through_two_instances_run_one_after_the_other(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    user = cluster.auth("chat-user")
    opening = await query_all(client, cluster.c.url, user, {
        "agentKey": "plain", "message": f"hello {cluster.book.add('chat-open', text_script(['Hi.']))}"})
    chat_id = opening[0]["chatId"]
    first_tag = cluster.book.add("chat-first", gated("chat-gate"))
    second_tag = cluster.book.add("chat-second", text_script(["Second answer."]))
    first_stream = sse(client, "POST", f"{cluster.a.url}/api/ap/query", user,
                       json={"chatId": chat_id, "message": f"first {first_tag}"})
    first = [await first_stream.__anext__()]
    while not is_delta(ANSWER[2])(first[-1]):
        first.append(await first_stream.__anext__())
    # the second query goes to b while the first is held in the middle of its answer on a
    second = asyncio.create_task(query_all(client, cluster.b.url, user,
                                           {"chatId": chat_id, "message": f"second {second_tag}"}))

    async def second_started() -> list[dict[str, Any]] | None:
        runs = (await client.get(f"{cluster.c.url}/api/ap/runs", params={"chatId": chat_id},
                                 headers=user)).json()["data"]
        return runs if len(runs) == 3 else None  # the opening, the first and the second

    await eventually(second_started, "the second run of the chat started (on b)")
    cluster.upstream.release("chat-gate")
    first += [event async for event in first_stream]
    second_events = await second
    assert first[-1]["type"] == second_events[-1]["type"] == "run.complete"
    first_run, second_run = first[0]["requestId"], second_events[0]["requestId"]
    # the chat file: every line of the first run, then every line of the second
    lines = [line for line in chat_lines(cluster.deploy, chat_id) if line.get("runId") in (first_run, second_run)]
    owners = [line["runId"] for line in lines]
    assert owners == sorted(owners, key=lambda run: run != first_run), owners
    assert lines[0]["_type"] == "query" and lines[0]["runId"] == first_run
    assert lines[-1]["_type"] == "run" and lines[-1]["runId"] == second_run
    # ...and the second run's model call saw the first run's whole answer
    [request] = [r for r in cluster.upstream.requests if second_tag in orjson.dumps(r.body).decode()]
    history = [m.get("content") for m in request.body["messages"] if m.get("role") == "assistant"]
    assert "".join(ANSWER) in history


async def test_attack_submit_run_id_cannot_address_other_redis_keys(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    """``runId`` names ``agw:run:<runId>``: ``<id>:events`` would address another run's Stream (a
    WRONGTYPE 503 telling any user whether that run exists). It is refused like a bad key, on every edge."""
    victim = f"run_{uuid.uuid4().hex[:20]}"
    with cluster.redis.client() as redis_client:
        redis_client.xadd(f"agw:run:{victim}:events", {"e": "{}"})
    mallory = cluster.auth("submit-key-attacker")
    for run_id in (f"{victim}:events", "run_doesnotexist:events", "../../x"):
        reply = await client.post(f"{cluster.b.url}/api/ap/submit", headers=mallory,
                                  json={"runId": run_id, "toolId": "t", "params": {}})
        assert reply.status_code == 400 and "invalid runId" in reply.json()["msg"], (run_id, reply.text)
    assert (await client.get(f"{cluster.b.url}/healthz")).status_code == 200


# -- limits hold cluster-wide -------------------------------------------------------------------------


async def test_a_users_concurrent_runs_are_capped_across_instances(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    assert USER_CONCURRENT_RUNS == 2
    user = cluster.auth("busy-user")
    tag = cluster.book.add("busy", gated("busy-gate"))
    body = {"agentKey": "plain", "message": f"work {tag}", "onDisconnect": "continue"}
    held = [await first_events(client, gw.url, user, body, until=is_delta(ANSWER[0]))
            for gw in (cluster.a, cluster.b)]
    # c runs nothing of this user, yet refuses: the cap counts every instance's runs
    refused = await client.post(f"{cluster.c.url}/api/ap/query", headers=user, json=body)
    assert refused.status_code == 429 and refused.headers["Retry-After"].isdigit()
    assert "agent.limits.user.concurrent-runs" in refused.json()["msg"] and "cluster" in refused.json()["msg"]
    other = cluster.auth("busy-neighbour")  # another user is not affected
    assert (await query_all(client, cluster.c.url, other, {
        "agentKey": "plain", "message": cluster.book.add("neighbour", text_script(["fine"]))}))[-1]["type"] \
        == "run.complete"
    cluster.upstream.release("busy-gate")
    for events in held:
        rest = await watch_all(client, cluster.c.url, user, events[0]["requestId"], after=events[-1]["seq"])
        assert rest[-1]["type"] == "run.complete"
    # the slots are free again, cluster-wide, as soon as the runs ended
    done = await query_all(client, cluster.c.url, user, {**body, "onDisconnect": "cancel"})
    assert done[-1]["type"] == "run.complete"


async def test_a_users_requests_per_minute_are_counted_across_instances(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    assert USER_RPM == 3
    user = cluster.auth("rpm-user")
    body = {"agentKey": "plain", "message": cluster.book.add("rpm", text_script(["counted"]))}
    for gw in cluster.gateways:  # one model call on each instance
        assert (await query_all(client, gw.url, user, body))[-1]["type"] == "run.complete"
    refused = await client.post(f"{cluster.a.url}/api/ap/query", headers=user, json=body)
    assert refused.status_code == 429, refused.text
    assert "agent.limits.user.rpm" in refused.json()["msg"] and int(refused.headers["Retry-After"]) >= 1


# -- the scheduler ------------------------------------------------------------------------------------


async def test_a_date_schedule_fires_once_across_the_cluster(cluster: Cluster, client: httpx.AsyncClient) -> None:
    user = cluster.auth("sched-user")
    tag = cluster.book.add("sched", text_script(["Good morning."]))
    job_id = f"once-{uuid.uuid4().hex[:8]}"
    run_at = int((time.time() + 4) * 1000)
    created = await client.post(f"{cluster.proxy.url}/api/ap/schedules", headers=user, json={
        "jobId": job_id, "agentKey": "plain", "message": f"wake up {tag}",
        "trigger": {"type": "date", "runAt": run_at}})
    assert created.status_code == 200, created.text

    async def job_on(url: str) -> dict[str, Any] | None:
        jobs = (await client.get(f"{url}/api/ap/schedules", headers=user)).json()["data"]
        return next((job for job in jobs if job["jobId"] == job_id), None)

    # every instance has the job scheduled (it reloaded the shared file) before it is due
    for gw in cluster.gateways:
        job = await eventually(functools.partial(job_on, gw.url), f"instance {gw.name} lists the job")
        assert job["nextRunAt"] is not None and abs(job["nextRunAt"] - run_at) <= 1, (gw.name, job)

    async def done_on(url: str) -> dict[str, Any] | None:
        job = await job_on(url)
        return job if job is not None and job["lastStatus"] == "complete" and job["nextRunAt"] is None else None

    finished = [await eventually(functools.partial(done_on, gw.url), f"instance {gw.name} sees the job done")
                for gw in cluster.gateways]
    assert {job["runs"] for job in finished} == {1} and len({job["lastRunId"] for job in finished}) == 1
    fired = [r for r in cluster.upstream.requests if tag in orjson.dumps(r.body).decode()]
    assert len(fired) == 1, f"the job fired {len(fired)} times"
    runs = (await client.get(f"{cluster.proxy.url}/api/ap/runs", headers=user)).json()["data"]
    assert [r["runId"] for r in runs] == [finished[0]["lastRunId"]] and runs[0]["status"] == "completed"


async def test_jobs_added_at_once_on_every_instance_are_all_kept_and_a_removal_reaches_all(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    user = cluster.auth("jobs-user")
    later = int((time.time() + 3600) * 1000)
    ids = [f"job-{gw.name}-{uuid.uuid4().hex[:6]}" for gw in cluster.gateways]
    replies = await asyncio.gather(*(client.post(f"{gw.url}/api/ap/schedules", headers=user, json={
        "jobId": job_id, "agentKey": "plain", "message": "later", "trigger": {"type": "date", "runAt": later}})
        for gw, job_id in zip(cluster.gateways, ids, strict=True)))
    assert [reply.status_code for reply in replies] == [200, 200, 200]

    async def listed(url: str, wanted: set[str]) -> set[str] | None:
        jobs = {job["jobId"] for job in (await client.get(f"{url}/api/ap/schedules", headers=user)).json()["data"]}
        return jobs if jobs == wanted else None

    for gw in cluster.gateways:  # the shared file kept all three; every instance reloaded it
        await eventually(functools.partial(listed, gw.url, set(ids)), f"instance {gw.name} lists the three jobs")
    removed = await client.delete(f"{cluster.c.url}/api/ap/schedules", headers=user, params={"jobId": ids[0]})
    assert removed.json()["data"] == {"jobId": ids[0], "removed": True}
    for gw in cluster.gateways:
        await eventually(functools.partial(listed, gw.url, set(ids[1:])), f"instance {gw.name} dropped the job")
    on_disk = orjson.loads((cluster.deploy / "data" / ".agw" / "schedules.json").read_bytes())
    assert {job["jobId"] for job in on_disk["jobs"]} >= set(ids[1:]) and ids[0] not in str(on_disk)


# -- through haproxy, at scale ------------------------------------------------------------------------


async def test_200_concurrent_streams_through_haproxy_lose_nothing(cluster: Cluster) -> None:
    streams, deltas = 200, [f"d{i} " for i in range(10)]
    tag = cluster.book.add("crowd", [Text(deltas[0]), Gate("crowd-gate"), *(Text(d) for d in deltas[1:]),
                                     Usage(10, 10), Finish("stop")])
    opened = 0
    all_open = asyncio.Event()

    async def one(index: int, http: httpx.AsyncClient) -> list[dict[str, Any]]:
        nonlocal opened
        seen: list[dict[str, Any]] = []
        user = cluster.auth(f"crowd-{index}")  # one user each: the per-user caps stay out of the way
        async for event in sse(http, "POST", f"{cluster.proxy.url}/api/ap/query", user,
                               json={"agentKey": "plain", "message": f"{tag} #{index}"}):
            seen.append(event)
            if is_delta(deltas[0])(event):
                opened += 1
                if opened == streams:
                    all_open.set()
        return seen

    limits = httpx.Limits(max_connections=streams + 20, max_keepalive_connections=streams + 20)
    async with httpx.AsyncClient(timeout=httpx.Timeout(HANG), limits=limits) as http:
        tasks = [asyncio.create_task(one(i, http)) for i in range(streams)]
        await asyncio.wait_for(all_open.wait(), HANG)  # every stream is open at once, held at the gate
        cluster.upstream.release("crowd-gate")
        results = await asyncio.gather(*tasks)
    lost = 0
    for events in results:
        assert_contiguous(events)
        assert events[0]["type"] == "request.query" and events[-1]["type"] == "run.complete", events[-1]
        got = [e["delta"] for e in events if e["type"] == "content.delta"]
        lost += len(deltas) - len(got)
        assert got == deltas
    assert lost == 0
    # the proxy spread them over the three instances (round robin, no stickiness)
    with cluster.redis.client() as store:
        instances = {store.hget(f"agw:run:{events[0]['requestId']}", "instance") for events in results}
    assert {raw.decode().split("-")[0] for raw in instances if raw} == {"a", "b", "c"}


# -- losing an instance, losing Redis (last: they change the cluster) ---------------------------------


async def test_a_killed_instances_run_ends_for_its_watchers_with_instance_lost(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    assert cluster.c.alive
    user = cluster.auth("kill-user")
    tag = cluster.book.add("doomed", gated("doomed-gate-never-released"))
    body = {"agentKey": "plain", "message": f"long story {tag}", "onDisconnect": "continue"}
    first = await first_events(client, cluster.c.url, user, body, until=is_delta(ANSWER[2]))
    run_id, chat_id = first[0]["requestId"], first[0]["chatId"]
    watcher = sse(client, "GET", f"{cluster.a.url}/api/ap/run/stream", user, params={"runId": run_id})
    watched = [await watcher.__anext__()]
    cluster.c.kill()  # SIGKILL: no shutdown, no last word to Redis
    watched += [event async for event in watcher]
    assert watched[: len(first)] == first and watched[-1]["type"] == "run.error"
    assert watched[-1]["error"]["code"] == "instance_lost" and watched[-1]["seq"] == watched[-2]["seq"] + 1
    assert_contiguous(watched)
    status = await run_status(client, cluster.b.url, user, run_id)
    assert status["status"] == "error" and status["error"]["code"] == "instance_lost"
    # the chat file is valid JSONL and ends the run
    lines = chat_lines(cluster.deploy, chat_id)
    assert [line["_type"] for line in lines][0] == "query" and lines[-1]["_type"] == "run"
    assert lines[-1]["runId"] == run_id and lines[-1]["error"]["code"] == "instance_lost"
    # the chat is free again: the next query on it runs at once on another instance
    after = await query_all(client, cluster.b.url, user, {
        "chatId": chat_id, "message": f"again {cluster.book.add('after-kill', text_script(['Back.']))}"})
    assert after[-1]["type"] == "run.complete"
    assert chat_lines(cluster.deploy, chat_id)[-1]["runId"] == after[0]["requestId"]


async def test_without_redis_health_and_new_queries_answer_503_then_recover(
    cluster: Cluster, client: httpx.AsyncClient
) -> None:
    user = cluster.auth("outage-user")
    live = [gw for gw in cluster.gateways if gw.alive]
    body = {"agentKey": "plain", "message": cluster.book.add("outage", text_script(["still here"]))}
    cluster.redis.stop()
    try:
        for gw in live:
            async def down(url: str = gw.url) -> dict[str, Any] | None:
                reply = await client.get(f"{url}/healthz")
                return reply.json() if reply.status_code == 503 else None

            health = await eventually(down, f"instance {gw.name} reports Redis down")
            assert health["data"]["status"] == "DOWN" and health["data"]["cluster"]["redis"] == "down"
            refused = await client.post(f"{gw.url}/api/ap/query", headers=user, json=body)
            assert refused.status_code == 503 and refused.json()["code"] == 5031, refused.text
            assert "Redis" in refused.json()["msg"]
    finally:
        cluster.redis.start()  # same port, empty (nothing persisted)
    for gw in live:
        async def up(url: str = gw.url) -> dict[str, Any] | None:
            reply = await client.get(f"{url}/healthz")
            return reply.json() if reply.status_code == 200 else None

        health = await eventually(up, f"instance {gw.name} reconnects")
        assert health["data"]["cluster"]["redis"] == "up"
        events = await query_all(client, gw.url, user, body)
        assert events[-1]["type"] == "run.complete" and answer_text(events) == "still here", events[-1]
