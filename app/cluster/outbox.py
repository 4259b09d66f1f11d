"""The outbox of a cluster instance (SPEC §16): run events, run ends, slot releases and counter
updates are queued in order and written to Redis by one publisher task.

The publisher drains the queue at once: the events and ops queued meanwhile go out in one
pipeline (one round trip, however many runs), so the busier the instance, the fewer round trips
per event. A write that fails on the connection is retried (about three minutes of Redis being
away, with backoff); a command Redis refuses is logged and dropped; ``join()`` waits until
everything queued so far is written (shutdown).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from redis.exceptions import RedisError, ResponseError

from app.cluster.keys import STREAM_MAXLEN, events_key

logger = logging.getLogger(__name__)

#: adds commands to the publisher's pipeline (plain commands, safe to apply again when a write is retried)
PipelineOps = Callable[[Any], None]
#: what the outbox carries, in order: ``("event", run id, seq, wire json)``, ``("ops", apply, done, locked)``
#: (commands written in the same pipeline as the events before them; ``done`` once written) or
#: ``("action", coroutine factory)`` (its own round trips, after everything queued before it is written)
OutboxItem = tuple[Any, ...]


class Outbox:
    """Ordered writes of one instance (see the module docstring)."""

    def __init__(self, redis: Any, counts_lock: asyncio.Lock, on_failure: Callable[[BaseException], None]) -> None:
        self._redis = redis
        #: count writes go out one at a time, so Redis always ends with this instance's latest counts
        self._counts_lock = counts_lock
        #: a connection failure: the instance reports itself unhealthy
        self._on_failure = on_failure
        self._queue: asyncio.Queue[OutboxItem] = asyncio.Queue()

    async def join(self) -> None:
        """Until everything queued so far is written (or given up)."""
        await self._queue.join()

    def enqueue_event(self, run_id: str, seq: int, data: bytes) -> None:
        self._queue.put_nowait(("event", run_id, seq, data))

    def enqueue_ops(self, apply: PipelineOps, done: Callable[[], None] | None = None, *, locked: bool = False) -> None:
        """Queue commands for the pipeline that writes the events queued before them; ``locked``: write it
        under the counts lock."""
        self._queue.put_nowait(("ops", apply, done, locked))

    def enqueue_action(self, action: Callable[[], Awaitable[None]]) -> None:
        """Queue a coroutine to run once everything queued before it is written."""
        self._queue.put_nowait(("action", action))

    async def run(self) -> None:
        """The publisher task (until cancelled)."""
        while True:
            items = [await self._queue.get()]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                batch: list[Any] = []
                for item in items:
                    if item[0] != "action":
                        batch.append(item)
                        continue
                    await self._flush(batch)  # what was queued before an action is in Redis first
                    batch = []
                    await self._retrying(item[1])
                await self._flush(batch)
            finally:
                for _ in items:
                    self._queue.task_done()

    async def _flush(self, batch: list[Any]) -> None:
        if batch:
            await self._retrying(functools.partial(self._write, batch))

    async def _write(self, batch: list[Any]) -> None:
        """One pipeline: the counts, one Stream entry per run for its events of the batch, then the other ops."""
        per_run: dict[str, list[tuple[int, bytes]]] = {}
        ops = [item for item in batch if item[0] == "ops"]
        for item in batch:
            if item[0] == "event":
                per_run.setdefault(item[1], []).append((item[2], item[3]))
        lock = self._counts_lock if any(op[3] for op in ops) else contextlib.nullcontext()
        async with lock, self._redis.pipeline(transaction=False) as pipe:
            for op in ops:  # the counts first: a slot is free before anyone sees the end of its run
                if op[3]:
                    op[1](pipe)
            first = len(pipe)
            for run_id, events in per_run.items():
                xadd(pipe, run_id, events)
            for op in ops:
                if not op[3]:
                    op[1](pipe)
            results = await pipe.execute(raise_on_error=False)
        check_written([""] * first + list(per_run), results)
        for op in ops:
            if op[2] is not None:
                op[2]()

    async def _retrying(self, action: Callable[[], Awaitable[None]]) -> None:
        delay = 0.05
        for _ in range(200):  # bounded: about three minutes of Redis being away
            try:
                await action()
                return
            except ResponseError as exc:  # the command itself was refused: retrying cannot help
                logger.error("cluster: Redis refused a write: %s", exc)
                return
            except (RedisError, OSError) as exc:
                self._on_failure(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
            except Exception:  # a bug in one action must not stop the publisher
                logger.exception("cluster: a write to Redis failed")
                return
        logger.error("cluster: gave up writing to Redis after repeated failures")

    async def publish(self, run_id: str, events: Sequence[tuple[int, bytes]]) -> None:
        """Write ``(seq, wire json)`` events of a run now (the reaper's terminal event)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            xadd(pipe, run_id, events)
            results = await pipe.execute(raise_on_error=False)
        check_written([run_id], results)


def xadd(pipe: Any, run_id: str, events: Sequence[tuple[int, bytes]]) -> None:
    """One Stream entry for ``events``: id = the ``seq`` of the last, the events' JSON one per line."""
    pipe.xadd(events_key(run_id), {b"d": b"\n".join(data for _, data in events)}, id=f"{events[-1][0]}-0",
              maxlen=STREAM_MAXLEN, approximate=True)


def check_written(run_ids: list[str], results: list[Any]) -> None:
    """Raise a connection failure (the write is retried); an entry already written (a retried write) is
    fine; any other refusal is logged. ``run_ids[i]``: the run whose XADD is command ``i`` ("" for others)."""
    for index, result in enumerate(results):
        if not isinstance(result, Exception):
            continue
        if not isinstance(result, ResponseError):
            raise result
        run_id = run_ids[index] if index < len(run_ids) else ""
        if run_id and "equal or smaller" in str(result):
            continue
        logger.warning("cluster: %s not written: %s", f"events of run {run_id}" if run_id else "a write", result)
