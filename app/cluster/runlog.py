"""Run logs in a cluster (SPEC §16): local readers stay in memory, every event also goes to Redis.

* ``ClusterRunLog`` — the log of a run THIS instance executes: a ``MemoryRunLog`` (local
  watchers keep the zero-buffer path) whose every appended event is also queued, in order, for
  the run's Redis Stream; the run's end is written in the same pipeline as its terminal event.
* ``StreamRunLog`` — the log of a run another instance executes (or executed), read from its
  Redis Stream: replay after a seq, then live, until the terminal event.
* ``WireEvent`` — an event read back from Redis: ``seq``, ``wire()``, ``terminal``, like
  ``Stamped`` for the encoders (the typed event stays on the instance that produced it).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import orjson

from app.cluster.node import ClusterNode
from app.cluster.outbox import PipelineOps
from app.contract.events import TERMINAL_TYPES, Stamped
from app.runs.log import MemoryRunLog


class WireEvent:
    """An event as stored in Redis (its wire dict), with the members the edges use."""

    __slots__ = ("seq", "_wire")

    def __init__(self, seq: int, wire: dict[str, Any]) -> None:
        self.seq = seq
        self._wire = wire

    @property
    def type(self) -> str:
        return str(self._wire.get("type", ""))

    @property
    def terminal(self) -> bool:
        return self.type in TERMINAL_TYPES

    def wire(self) -> dict[str, Any]:
        return self._wire

    def wire_json(self) -> bytes:
        return orjson.dumps(self._wire, option=orjson.OPT_NON_STR_KEYS)


class ClusterRunLog(MemoryRunLog):
    """A local run's log, mirrored to its Redis Stream."""

    __slots__ = ("_node", "_run_id", "on_end")

    def __init__(self, node: ClusterNode, run_id: str) -> None:
        super().__init__()
        self._node = node
        self._run_id = run_id
        #: set by the directory: the commands that record the run's end, written with its terminal event
        self.on_end: PipelineOps | None = None

    def wire_events(self) -> list[tuple[int, bytes]]:
        """``(seq, wire JSON)`` of every event so far (to write the Stream again after Redis lost it)."""
        return [(event.seq, event.wire_json()) for event in self._events]

    def append(self, event: Stamped) -> None:
        if self.ended:
            return
        super().append(event)
        self._node.outbox.enqueue_event(self._run_id, event.seq, event.wire_json())
        if event.terminal and self.on_end is not None:
            self._node.outbox.enqueue_ops(self.on_end)


class StreamRunLog:
    """A remote run's log, read from Redis (``append`` is never called on it)."""

    def __init__(self, node: ClusterNode, run_id: str, last_seq: int, ended: bool) -> None:
        self._node = node
        self._run_id = run_id
        self._last_seq = last_seq
        self._ended = ended

    @property
    def last_seq(self) -> int:
        return self._last_seq

    @property
    def ended(self) -> bool:
        return self._ended

    def append(self, event: Stamped) -> None:
        raise AssertionError("a remote run's log is written by its own instance")

    async def read(self, after: int = 0, on_leave: Callable[[], object] | None = None) -> AsyncGenerator[WireEvent, None]:
        if self._ended and after >= self._last_seq:
            return  # a resume from at or past the end (a client reconnecting after the terminal event)
        finished = False
        try:
            # aclosing: a reader that leaves early releases its Redis read now, not when collected
            async with contextlib.aclosing(self._node.read_events(self._run_id, after)) as events:
                async for seq, wire in events:
                    self._last_seq = max(self._last_seq, seq)
                    yield WireEvent(seq, wire)
            finished = True
        finally:
            if not finished and on_leave is not None:
                on_leave()

    async def read_batches(self, after: int = 0,
                           on_leave: Callable[[], object] | None = None) -> AsyncIterator[list[WireEvent]]:
        """One event per batch: a remote run's events come from Redis as they are read."""
        finished = False
        try:
            async with contextlib.aclosing(self.read(after)) as events:
                async for event in events:
                    yield [event]
            finished = True
        finally:
            if not finished and on_leave is not None:
                on_leave()
