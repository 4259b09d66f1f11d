"""A run's event log: every event with its ``seq``, replayable from any point, live to its end (SPEC §15).

``RunLog`` is the interface the run service depends on; ``MemoryRunLog`` keeps the log in
this process. A cluster (SPEC §16) swaps in a log backed by a Redis Stream with the same
four operations — ``append`` (the run's producer, one event at a time), ``read(after)`` (any
number of watchers, each from any ``seq``: the retained events, then the live ones, until
the terminal event), ``last_seq`` and ``ended`` — and nothing above it changes.

Zero buffering: ``append`` wakes every waiting reader at once (each waits on its own future: no
``shield``, so a wake-up is one loop step, and a reader that is cancelled affects no other); a
reader yields each event as soon as it is in the log, never in batches it has to wait for.
``read_batches`` yields what is there when the reader looks, up to ``MAX_BATCH`` events at once
(the SSE run stream writes such a batch with one write).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Protocol

from app.contract.events import Stamped


#: the most events ``read_batches`` hands over at once (about 50 KB of SSE frames): a reader that
#: replays a long run writes it in bounded pieces, so the client's flow control still applies
MAX_BATCH = 256


class LogEvent(Protocol):
    """One event as a log yields it: ``Stamped`` on the instance that produced it, a wire-only
    event read back from a cluster store elsewhere. The edges need only these members."""

    @property
    def seq(self) -> int: ...

    @property
    def terminal(self) -> bool: ...

    def wire(self) -> dict[str, Any]: ...

    def wire_json(self) -> bytes:
        """``wire()`` as JSON bytes."""
        ...


class RunLog(Protocol):
    """The ordered events of one run."""

    @property
    def last_seq(self) -> int: ...

    @property
    def ended(self) -> bool:
        """True once the terminal event (``run.complete|error|cancel``) is in the log."""
        ...

    def append(self, event: Stamped) -> None:
        """Add the next event (``seq`` = ``last_seq + 1``); after the terminal one nothing is added."""
        ...

    def read(self, after: int = 0, on_leave: Callable[[], object] | None = None) -> AsyncIterator[LogEvent]:
        """Every event with ``seq > after`` in order, then each new one as it is appended,
        until the terminal event (included). Ends at once when ``after`` is already past it.
        ``on_leave`` runs when the reader stops before the end (closed, cancelled, failed)."""
        ...

    def read_batches(self, after: int = 0,
                     on_leave: Callable[[], object] | None = None) -> AsyncIterator[Sequence[LogEvent]]:
        """The events of ``read``, grouped: each list holds the events that were in the log when
        the reader looked (at least one, at most ``MAX_BATCH``). A batch never waits for more
        events, so this adds no delay; it lets a consumer write what is already there at once
        (one write, not one each)."""
        ...


class MemoryRunLog:
    """``RunLog`` in this process's memory."""

    __slots__ = ("_events", "_waiters", "_ended")

    def __init__(self) -> None:
        self._events: list[Stamped] = []
        self._waiters: list[asyncio.Future[None]] = []  # one per reader waiting for the next event
        self._ended = False

    @property
    def last_seq(self) -> int:
        return len(self._events)

    @property
    def ended(self) -> bool:
        return self._ended

    def append(self, event: Stamped) -> None:
        if self._ended:
            return
        assert event.seq == len(self._events) + 1, f"seq {event.seq} after {len(self._events)}"
        self._events.append(event)
        if event.terminal:
            self._ended = True
        if self._waiters:
            waiters, self._waiters = self._waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    async def read(self, after: int = 0, on_leave: Callable[[], object] | None = None) -> AsyncIterator[Stamped]:
        index = max(after, 0)
        events = self._events
        finished = False
        try:
            while True:
                while index < len(events):
                    event = events[index]
                    index += 1
                    yield event
                    if event.terminal:
                        finished = True
                        return
                if self._ended:
                    finished = True
                    return
                await self._next()
        finally:
            if not finished and on_leave is not None:
                on_leave()

    async def read_batches(self, after: int = 0,
                           on_leave: Callable[[], object] | None = None) -> AsyncIterator[list[Stamped]]:
        index = max(after, 0)
        events = self._events
        finished = False
        try:
            while True:
                if index < len(events):
                    # nothing follows the terminal event: it is always last
                    batch = events[index:index + MAX_BATCH]
                    index += len(batch)
                    yield batch
                    if batch[-1].terminal:
                        finished = True
                        return
                    continue
                if self._ended:
                    finished = True
                    return
                await self._next()
        finally:
            if not finished and on_leave is not None:
                on_leave()

    async def _next(self) -> None:
        """Wait for the next append. Each reader waits on its own future: cancelling one reader
        touches no other one."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter in self._waiters:  # a reader that leaves a quiet run leaves nothing behind
                self._waiters.remove(waiter)
            raise
