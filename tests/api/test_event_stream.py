"""The SSE response itself (``app.api.sse.EventStream``, issue 13): server stop with its grace
period, disconnect, heartbeat, an outside cancellation, and the one-poller shutdown signal.

Disconnects, heartbeats and SIGTERM on the real server are tested where each endpoint is
(``test_query_stream``, ``test_runs_resume``, ``test_openai_compat``, ``tests/agui``,
``test_sse_wire``, ``tests/reliability``). Here: the server-stop path over real HTTP (the
gateway's own ``StreamShutdown`` told that the server stops), and at the ASGI level the one
case a real run cannot produce on demand, a stream that does not end within the grace period.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.api import sse
from app.api.sse import EventStream, StreamShutdown
from app.devtools import FakeUpstream
from app.devtools.script import Finish, Gate, Text
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import stream_events


async def test_server_stop_cancels_the_run_and_the_client_still_receives_run_cancel(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    stopping = threading.Event()
    gw.app.state.streams.exiting = stopping.is_set  # what uvicorn's SIGTERM sets, told directly
    upstream.enqueue([Text("first"), Gate("never-released"), Text("second"), Finish("stop")])
    seen: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(60):  # without the shutdown path the stream would wait forever
            async for event in stream_events(client, f"{gw.url}/api/ap/query", {"agentKey": "plain", "message": "x"}):
                seen.append(event)
                if event["type"] == "content.delta":
                    stopping.set()
    finally:
        upstream.release("never-released")
    assert seen[-1]["type"] == "run.cancel"  # the stream ended by itself, with the run's end
    assert [e["delta"] for e in seen if e["type"] == "content.delta"] == ["first"]


@pytest.mark.parametrize("endpoint", ["query", "openai"])
async def test_server_stop_ends_a_non_streamed_run_with_its_cancelled_answer(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    endpoint: str,
) -> None:
    """``stream: false`` waits for the run's end with nothing sent. The server stopping did not
    reach it: uvicorn waited for the run to end by itself (up to its run timeout, or forever on a
    frontend tool) and the process did not exit. Now the run is cancelled as for a stream, and the
    client gets the cancelled run's answer."""
    write_agent(deploy, "plain", agent("ONESHOT"))
    gw = start_gateway()
    stopping = threading.Event()
    gw.app.state.streams.exiting = stopping.is_set  # what uvicorn's SIGTERM sets, told directly
    upstream.enqueue([Text("first"), Gate("never-released"), Text("second"), Finish("stop")])
    if endpoint == "query":
        url, body = f"{gw.url}/api/ap/query", {"agentKey": "plain", "message": "x", "stream": False}
    else:
        url, body = f"{gw.url}/v1/chat/completions", {"model": "plain", "messages": [{"role": "user", "content": "x"}]}
    try:
        answering = asyncio.create_task(client.post(url, json=body, timeout=60))
        for _ in range(2000):  # bounded poll until the run streams (held at the gate)
            if upstream.requests and any(run["lastSeq"] > 2 for run in
                                         (await client.get(f"{gw.url}/api/ap/runs")).json()["data"]):
                break
            await asyncio.sleep(0.01)
        stopping.set()
        async with asyncio.timeout(60):  # without the shutdown path the answer waits for the gate
            reply = await answering
    finally:
        upstream.release("never-released")
    assert reply.status_code == 409 if endpoint == "query" else reply.status_code >= 400
    if endpoint == "query":
        data = reply.json()["data"]
        assert data["status"] == "cancelled" and data["events"][-1]["type"] == "run.cancel"


# -- at the ASGI level --------------------------------------------------------------------------


class _Harness:
    """An ``EventStream`` over ``_endless`` frames, served to an ASGI client that stays connected
    until ``gone`` is set; records what it was sent and whether the frames were closed."""

    def __init__(self, *, exiting: bool = False) -> None:
        self.sent: list[dict[str, Any]] = []
        self.gone = asyncio.Event()
        self.closed: list[str] = []
        self.shutdown = StreamShutdown(exiting=lambda: exiting)

    async def receive(self) -> dict[str, Any]:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)

    def bodies(self) -> list[tuple[bytes, bool]]:
        return [(m["body"], m["more_body"]) for m in self.sent if m["type"] == "http.response.body"]

    def serve(self, *, heartbeat: bytes = b"", heartbeat_seconds: float = 0,
              on_shutdown: Callable[[], object] | None = None) -> Coroutine[Any, Any, None]:
        response = EventStream(_endless(self.closed), shutdown=self.shutdown, heartbeat=heartbeat,
                               heartbeat_seconds=heartbeat_seconds, on_shutdown=on_shutdown)
        return response({"type": "http", "method": "POST"}, self.receive, self.send)

    async def first_frame(self) -> None:
        while not self.bodies():
            await asyncio.sleep(0)


async def _endless(closed: list[str]) -> AsyncIterator[bytes]:
    try:
        yield b"data: 1\r\n\r\n"
        await asyncio.Event().wait()  # a run that does not react to being cancelled
        yield b"never"
    finally:
        closed.append("closed")


async def test_a_stream_that_outlives_the_shutdown_grace_period_is_ended_with_its_final_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "SHUTDOWN_GRACE_SECONDS", 0.05)
    told: list[str] = []
    stream = _Harness(exiting=True)
    await asyncio.wait_for(stream.serve(heartbeat=b": hb\r\n\r\n", on_shutdown=lambda: told.append("run.cancel")), 30)
    assert told == ["run.cancel"]
    assert stream.bodies() == [(b"data: 1\r\n\r\n", True), (b"", False)]
    assert stream.closed == ["closed"]
    await stream.shutdown.aclose()


async def test_attack_a_client_that_stops_reading_cannot_hold_the_servers_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A client that keeps its connection but reads nothing: once its socket's buffers are full,
    every send waits for it. After the grace period the stream's last chunk waited forever too,
    and with it the server's exit (and its lifespan shutdown: chats and usage flushed). The last
    chunk now waits ``FINAL_SEND_SECONDS`` at most; ``agw serve`` also bounds the whole shutdown."""
    monkeypatch.setattr(sse, "SHUTDOWN_GRACE_SECONDS", 0.05)
    monkeypatch.setattr(sse, "FINAL_SEND_SECONDS", 0.05)
    stream = _Harness(exiting=True)
    real_send = stream.send

    async def stuck_after_the_first_frame(message: dict[str, Any]) -> None:
        if stream.bodies():
            await asyncio.Event().wait()  # the client's buffers are full: this send never completes
        await real_send(message)

    stream.send = stuck_after_the_first_frame  # type: ignore[method-assign]
    await asyncio.wait_for(stream.serve(on_shutdown=lambda: None), 30)
    assert stream.bodies() == [(b"data: 1\r\n\r\n", True)] and stream.closed == ["closed"]
    await stream.shutdown.aclose()


def test_agw_serve_bounds_its_graceful_shutdown() -> None:
    from app.cli.serve import SHUTDOWN_TIMEOUT_SECONDS, uvicorn_config
    from app.config import load_settings

    config = uvicorn_config(object(), load_settings(Path("."), files=(), env={}), "INFO", "asyncio", "h11")
    assert config.timeout_graceful_shutdown == SHUTDOWN_TIMEOUT_SECONDS > sse.SHUTDOWN_GRACE_SECONDS


async def test_a_failing_shutdown_callback_still_ends_the_stream_after_the_grace_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sse, "SHUTDOWN_GRACE_SECONDS", 0.05)
    stream = _Harness(exiting=True)

    def broken() -> None:
        raise RuntimeError("cancelling the run failed")

    await asyncio.wait_for(stream.serve(on_shutdown=broken), 30)
    assert stream.bodies()[-1] == (b"", False) and stream.closed == ["closed"]
    await stream.shutdown.aclose()


async def test_a_client_that_leaves_stops_the_frames_at_once() -> None:
    stream = _Harness()
    call = asyncio.create_task(stream.serve(heartbeat=b": hb\r\n\r\n"))
    await stream.first_frame()
    stream.gone.set()
    await asyncio.wait_for(call, 30)  # returns normally: the cancellation was the stream's own
    assert stream.closed == ["closed"]
    assert stream.bodies() == [(b"data: 1\r\n\r\n", True)]
    await stream.shutdown.aclose()


async def test_heartbeats_flow_while_nothing_else_does() -> None:
    stream = _Harness()
    call = asyncio.create_task(stream.serve(heartbeat=b": hb\r\n\r\n", heartbeat_seconds=0.01))
    while sum(1 for body, _ in stream.bodies() if body == b": hb\r\n\r\n") < 3:
        await asyncio.sleep(0.01)
    stream.gone.set()
    await asyncio.wait_for(call, 30)
    await stream.shutdown.aclose()


async def test_an_outside_cancellation_is_not_swallowed() -> None:
    stream = _Harness()
    call = asyncio.create_task(stream.serve())
    await stream.first_frame()
    call.cancel()  # the server cancelling the request (e.g. its graceful-shutdown timeout)
    with pytest.raises(asyncio.CancelledError):
        await call
    assert stream.closed == ["closed"]
    await stream.shutdown.aclose()


async def test_shutdown_runs_each_callback_once_and_a_late_one_at_once() -> None:
    shutdown = StreamShutdown(exiting=lambda: False)
    calls: list[str] = []
    shutdown.register(lambda: calls.append("a"))
    unregister_b = shutdown.register(lambda: calls.append("b"))
    unregister_b()
    shutdown.begin()
    shutdown.begin()
    assert calls == ["a"]
    shutdown.register(lambda: calls.append("late"))
    await asyncio.sleep(0)
    assert calls == ["a", "late"]
    await shutdown.aclose()
