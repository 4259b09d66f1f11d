"""Admission pacing (``app.api.pacing.AdmissionPacer``, issue 13): a burst of new requests is let
in a few per loop iteration, in arrival order, so the loop reads its sockets (the live streams'
deltas) between them. Tested at the ASGI level with a loop-iteration counter and a real socket,
and over real HTTP: the gateway's app has the pacer outermost and a burst of queries all stream.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api.pacing import PER_ITERATION, AdmissionPacer
from app.devtools import FakeUpstream
from app.devtools.script import Finish, Text
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import stream_events


class _Iterations:
    """Counts loop iterations: a callback that schedules itself again runs once per iteration."""

    def __init__(self) -> None:
        self.count = 0
        self._stopped = False
        asyncio.get_running_loop().call_soon(self._tick)

    def _tick(self) -> None:
        if not self._stopped:
            self.count += 1
            asyncio.get_running_loop().call_soon(self._tick)

    def stop(self) -> None:
        self._stopped = True


def _recording_app(admitted: list[tuple[int, int]], iterations: _Iterations) -> Callable[..., Any]:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        admitted.append((scope["n"], iterations.count))

    return app


async def _noop_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}


async def _noop_send(message: dict[str, Any]) -> None:
    return None


async def test_a_burst_is_admitted_a_few_per_loop_iteration_in_arrival_order() -> None:
    iterations = _Iterations()
    admitted: list[tuple[int, int]] = []
    pacer = AdmissionPacer(_recording_app(admitted, iterations), per_iteration=3)
    try:
        await asyncio.gather(*(pacer({"type": "http", "n": n}, _noop_receive, _noop_send) for n in range(20)))
    finally:
        iterations.stop()
    assert [n for n, _ in admitted] == list(range(20))  # first come, first admitted
    per_iteration: dict[int, int] = {}
    for _, iteration in admitted:
        per_iteration[iteration] = per_iteration.get(iteration, 0) + 1
    assert max(per_iteration.values()) <= 3
    assert len(per_iteration) >= 7  # 20 requests, 3 at a time: spread over at least 7 iterations


async def test_a_request_that_finds_a_free_slot_goes_on_without_waiting() -> None:
    iterations = _Iterations()
    admitted: list[tuple[int, int]] = []
    pacer = AdmissionPacer(_recording_app(admitted, iterations))
    try:
        start = iterations.count
        await pacer({"type": "http", "n": 0}, _noop_receive, _noop_send)
    finally:
        iterations.stop()
    assert admitted == [(0, start)]  # admitted in the iteration it arrived in


async def test_a_burst_of_arrivals_cannot_stall_a_flowing_stream() -> None:
    """The attack: a client opens many requests at once to starve the streams already flowing.

    A "delta" is waiting on a real socket when 40 requests arrive together, each doing
    synchronous work in its first step. With the pacer the loop reads the socket after the
    first few requests; without it, all 40 first steps would run before the socket is read.
    """
    loop = asyncio.get_running_loop()
    order: list[str] = []
    upstream, gateway_side = socket.socketpair()
    gateway_side.setblocking(False)
    try:
        def on_delta() -> None:
            gateway_side.recv(100)
            order.append("delta")
            loop.remove_reader(gateway_side.fileno())

        async def busy_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            sum(range(20_000))  # a request's first step: CPU, no suspension
            order.append(f"request {scope['n']}")

        pacer = AdmissionPacer(busy_app)
        loop.add_reader(gateway_side.fileno(), on_delta)
        upstream.send(b"delta 1")
        await asyncio.gather(*(pacer({"type": "http", "n": n}, _noop_receive, _noop_send) for n in range(40)))
    finally:
        upstream.close()
        gateway_side.close()
    assert "delta" in order
    assert order.index("delta") <= 2 * PER_ITERATION, order


async def test_a_request_cancelled_while_waiting_its_turn_takes_no_slot() -> None:
    iterations = _Iterations()
    admitted: list[tuple[int, int]] = []
    pacer = AdmissionPacer(_recording_app(admitted, iterations), per_iteration=1)
    try:
        tasks = [asyncio.create_task(pacer({"type": "http", "n": n}, _noop_receive, _noop_send)) for n in range(6)]
        await asyncio.sleep(0)  # every task has arrived: 0 admitted, the others wait
        tasks[2].cancel()
        tasks[3].cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        iterations.stop()
    assert [n for n, _ in admitted] == [0, 1, 4, 5]
    assert isinstance(results[2], asyncio.CancelledError) and isinstance(results[3], asyncio.CancelledError)
    # the slots still come back: a later request is admitted
    await pacer({"type": "http", "n": 9}, _noop_receive, _noop_send)
    assert admitted[-1][0] == 9


async def test_lifespan_and_websocket_scopes_are_not_paced() -> None:
    seen: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    pacer = AdmissionPacer(app, per_iteration=1)
    # were they paced, the second and third would wait for the next iterations: gather in one step
    await asyncio.gather(*(pacer({"type": kind}, _noop_receive, _noop_send) for kind in ("lifespan", "websocket", "lifespan")))
    assert seen == ["lifespan", "websocket", "lifespan"]


def test_the_pacer_is_used_from_another_event_loop_too() -> None:
    """A semaphore belongs to one loop; an app served from a second loop (a test client's thread,
    a restarted server) gets its own gate instead of a RuntimeError."""
    admitted: list[int] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        admitted.append(scope["n"])

    pacer = AdmissionPacer(app, per_iteration=2)

    async def burst(first: int) -> None:
        await asyncio.gather(*(pacer({"type": "http", "n": first + n}, _noop_receive, _noop_send) for n in range(5)))

    asyncio.run(burst(0))
    asyncio.run(burst(10))
    assert admitted == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]


def test_a_pace_below_one_is_refused() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        return None

    with pytest.raises(ValueError, match="at least 1"):
        AdmissionPacer(app, per_iteration=0)


async def test_the_gateway_paces_a_burst_of_queries_and_every_one_streams_to_its_end(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    assert gw.app.user_middleware[0].cls is AdmissionPacer  # outermost: before CORS and auth
    burst = 3 * PER_ITERATION + 1
    for n in range(burst):
        upstream.enqueue([Text(f"answer {n}"), Finish("stop")])

    async def one(n: int) -> list[str]:
        url, body = f"{gw.url}/api/ap/query", {"agentKey": "plain", "message": f"q{n}"}
        return [event["type"] async for event in stream_events(client, url, body)]

    results = await asyncio.gather(*(one(n) for n in range(burst)))
    for types in results:
        assert types[-1] == "run.complete", types
        assert "content.delta" in types
