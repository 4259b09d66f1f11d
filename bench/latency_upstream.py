"""The benchmark's upstream: the project's ``FakeUpstream`` with send-time stamps in every text delta.

Run as a subprocess (``python bench/latency_upstream.py``): prints ``READY <url>`` on stdout,
serves until its stdin closes (so it never outlives the benchmark), then stops.

Every ``Text`` step of the script is rendered as the decimal ``time.monotonic_ns()`` taken
right before the frame is written (``FakeUpstream._stream`` renders a step and writes its
frame immediately). Linux's ``CLOCK_MONOTONIC`` is system-wide, so the benchmark client, in
another process, subtracts the stamp from its own arrival time to get the one-way latency
of each delta — through whichever proxy sits in between.

The script is picked by the last user message: ``DELTAS`` deltas, with no pause when the
message contains the word ``burst`` (throughput), ``pace=<seconds>`` between them when it
contains such a word, else ``PACE_S`` between them (latency); ``deltas=<n>`` changes the count.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.devtools._render import Renderer  # noqa: E402
from app.devtools.fake_upstream import Dialect, FakeUpstream  # noqa: E402
from app.devtools.script import Finish, Pause, Script, Step, Text, Usage  # noqa: E402

DELTAS = 50
PACE_S = 0.01
PLACEHOLDER = "@stamp"


def _last_user_text(body: Mapping[str, Any]) -> str:
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else str(content)
    return ""


def _shape(message: str) -> tuple[float, int]:
    pace, deltas = PACE_S, DELTAS
    for word in message.split():
        if word == "burst":
            pace = 0.0
        elif word.startswith("pace="):
            pace = min(max(float(word[5:]), 0.0), 1.0)
        elif word.startswith("deltas="):
            deltas = min(max(int(word[7:]), 1), 1000)
    return pace, deltas


def bench_script(body: dict[str, Any]) -> Script:
    pace, deltas = _shape(_last_user_text(body))
    steps: list[Step] = []
    for index in range(deltas):
        if index and pace:
            steps.append(Pause(pace))
        steps.append(Text(PLACEHOLDER))
    return steps + [Usage(10, deltas), Finish("stop")]


class _StampingRenderer:
    """Wraps a dialect renderer; replaces each placeholder text delta with the send time."""

    def __init__(self, inner: Renderer) -> None:
        self._inner = inner

    def start(self) -> list[bytes]:
        return self._inner.start()

    def step(self, step: Step) -> list[bytes]:
        if isinstance(step, Text) and step.delta == PLACEHOLDER:
            step = Text(f"{time.monotonic_ns()} ")
        return self._inner.step(step)

    def end(self) -> list[bytes]:
        return self._inner.end()

    def error_body(self, status: int, body: Mapping[str, Any] | str | None) -> bytes:
        return self._inner.error_body(status, body)


class StampingUpstream(FakeUpstream):
    def _renderer(self, dialect: Dialect, body: dict[str, Any], script: Script, index: int) -> Renderer:
        return _StampingRenderer(super()._renderer(dialect, body, script, index))

    async def _stream(self, *args: Any, **kwargs: Any) -> bool:
        keep_alive = await super()._stream(*args, **kwargs)
        # FakeUpstream._stream cancels its disconnect watcher without awaiting it; the next
        # read_request on a kept-alive connection then races the dying watcher's read()
        # ("read() called while another coroutine is already waiting") and the connection
        # is dropped. Two loop turns let the cancellation land first, so keep-alive works.
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        return keep_alive


def main() -> int:
    # asyncio.start_server's default listen backlog (100) drops SYNs when 200 streams
    # connect at once (1 s retransmit); FakeUpstream has no backlog parameter.
    asyncio.start_server = functools.partial(asyncio.start_server, backlog=1024)  # type: ignore[assignment]
    with StampingUpstream(responder=bench_script) as upstream:
        print(f"READY {upstream.url}", flush=True)
        sys.stdin.read()  # returns at EOF: the parent closed the pipe or died
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
