"""The benchmark's SSE client: one streaming request → one ``Sample``; many at a fixed concurrency.

A deliberately thin HTTP/1.1 client on asyncio streams (one fresh loopback connection per
request, chunked decoding, SSE ``data:`` lines): an httpx client saturated first (≈140 µs of
client CPU per delta and seconds of queueing at 200 streams, against ≈10 µs here), which
would have measured the load generator instead of the proxies. The same reader serves all
three paths; only the extraction of a text delta from a ``data:`` payload differs (OpenAI chunk ``choices[0].delta.content`` vs the gateway's
``content.delta`` event). Each delta's text is the upstream's send stamp
(``latency_upstream``); ``arrival − stamp`` is that delta's one-way latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

import orjson

Kind = Literal["openai", "gateway"]


@dataclass(frozen=True, slots=True)
class Target:
    """One path to the upstream: where to POST and how to read its deltas."""

    name: str
    url: str
    kind: Kind
    body: Callable[[str], dict[str, Any]]  # message → request body
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Sample:
    started_ns: int
    first_event_ns: int | None = None
    first_delta_ns: int | None = None
    frames: int = 0  # SSE messages that carried text
    lags_ns: list[int] = field(default_factory=list)  # arrival − upstream send stamp, per delta
    error: str | None = None

    @property
    def deltas(self) -> int:
        return len(self.lags_ns)


def _delta_text(kind: Kind, payload: str) -> str | None:
    if kind == "openai":
        if payload == "[DONE]":
            return None
        chunk = orjson.loads(payload)
        choices = chunk.get("choices") or []
        return (choices[0].get("delta") or {}).get("content") if choices else None
    event = orjson.loads(payload)
    return event.get("delta") if event.get("type") == "content.delta" else None


class Activity:
    """How many streams are open right now, and the most seen at once."""

    def __init__(self) -> None:
        self.active = 0
        self.peak = 0

    def enter(self) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)

    def leave(self) -> None:
        self.active -= 1


async def _read_body(reader: asyncio.StreamReader, chunked: bool) -> AsyncIterator[bytes]:
    """The response body as it arrives: chunked transfer decoding, or read until close."""
    while True:
        if not chunked:
            data = await reader.read(65536)
            if not data:
                return
            yield data
            continue
        size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
        if size == 0:
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


async def _exchange(target: Target, message: str, sample: Sample, activity: Activity) -> None:
    url = urlsplit(target.url)
    host, port = url.hostname or "127.0.0.1", url.port or 80
    body = orjson.dumps(target.body(message))
    extra = "".join(f"{name}: {value}\r\n" for name, value in target.headers.items())
    head = (f"POST {url.path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
            f"accept: text/event-stream\r\nconnection: close\r\ncontent-length: {len(body)}\r\n{extra}\r\n")
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(head.encode() + body)
        status = (await reader.readline()).decode("latin-1").split(" ", 2)
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if len(status) < 2 or status[1] != "200":
            sample.error = f"HTTP {' '.join(status[1:]).strip()}: {(await reader.read(300))!r}"
            return
        activity.enter()
        try:
            pending = b""
            async for data in _read_body(reader, chunked):
                now = time.monotonic_ns()
                *lines, pending = (pending + data).split(b"\n")
                for raw in lines:
                    _on_line(target.kind, raw.rstrip(b"\r"), now, sample)
        finally:
            activity.leave()
    finally:
        writer.close()


def _on_line(kind: Kind, line: bytes, now: int, sample: Sample) -> None:
    if not line.startswith(b"data:"):
        return
    if sample.first_event_ns is None:
        sample.first_event_ns = now
    text = _delta_text(kind, line[5:].strip().decode())
    if not text:
        return
    if sample.first_delta_ns is None:
        sample.first_delta_ns = now
    sample.frames += 1
    sample.lags_ns.extend(now - int(stamp) for stamp in text.split())


async def one_request(target: Target, message: str, activity: Activity, timeout_s: float = 60.0) -> Sample:
    """One streaming POST over a fresh loopback connection (``connection: close``)."""
    sample = Sample(started_ns=time.monotonic_ns())
    try:
        await asyncio.wait_for(_exchange(target, message, sample, activity), timeout_s)
    except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError) as exc:
        sample.error = f"{type(exc).__name__}: {exc}"
    return sample


async def run_load(target: Target, message: str, *, concurrency: int, per_worker: int,
                   timeout_s: float) -> tuple[list[Sample], int]:
    """``concurrency`` workers, each sending ``per_worker`` requests back to back.

    Returns the samples and the peak number of streams open at once. The whole phase is
    bounded by ``timeout_s``; unfinished requests are cancelled and reported as errors.
    """
    activity = Activity()
    samples: list[Sample] = []

    async def worker() -> None:
        for _ in range(per_worker):
            samples.append(await one_request(target, message, activity))

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    done, pending = await asyncio.wait(tasks, timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        if task.exception() is not None:
            samples.append(Sample(started_ns=0, error=repr(task.exception())))
    missing = concurrency * per_worker - len(samples)
    samples.extend(Sample(started_ns=0, error="phase timeout") for _ in range(missing))
    return samples, activity.peak


async def run_crowd(target: Target, message: str, *, streams: int, probe_message: str, probes: int,
                    timeout_s: float) -> tuple[list[Sample], int, list[Sample]]:
    """``streams`` requests at once; while all of them are open, ``probes`` more, one at a time.

    The crowd's samples give per-delta latency under load and the time to first token of
    streams that all arrive together; the probes give the time to first token of a stream
    that arrives while ``streams`` others are already flowing (steady state). Returns the
    crowd's samples, its peak of open streams and the probes' samples.
    """
    activity, probe_activity = Activity(), Activity()
    crowd = [asyncio.create_task(one_request(target, message, activity)) for _ in range(streams)]
    probe_samples: list[Sample] = []

    async def probe() -> None:
        while activity.peak < streams and not all(task.done() for task in crowd):
            await asyncio.sleep(0.005)
        for _ in range(probes):
            if activity.active < streams * 9 // 10:  # the crowd is ending: no longer "streams open"
                break
            probe_samples.append(await one_request(target, probe_message, probe_activity))

    prober = asyncio.create_task(probe())
    done, pending = await asyncio.wait([*crowd, prober], timeout=timeout_s)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    samples = [task.result() if task in done and task.exception() is None else Sample(0, error="phase timeout")
               for task in crowd]
    return samples, activity.peak, probe_samples
