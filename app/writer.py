"""The gateway's writer thread: file work in the order it was handed over, the result back on the event loop.

``ChatStore`` writes its chat files here and ``UsageLedger`` its usage lines, so the event loop
never waits for the disk (issue 13). The gateway gives both the same thread: a run's usage line
and its last chat lines are handed over moments apart, so one wake-up of the thread writes
both (a thread of its own for the ledger cost about 0.2 ms of CPU per run: docs/DECISIONS.md).
The sidecar writes its protocol stream on one when the event loop cannot drive that stream
(``app.sidecar.protocol.LineWriter``), and closes it with a timeout: a write nobody reads never ends.
It is what ``ThreadPoolExecutor(max_workers=1)`` with ``loop.run_in_executor`` does, at a
lower cost per trip, which a run pays two or three times: about 50 µs of CPU against about 80
(micro-benchmark: 5,000 trips × 4, uvloop, one 200-byte ``os.write`` per trip;
docs/DECISIONS.md). The executor's trip carries a ``concurrent.futures.Future`` (a condition
and its lock), a work item, the executor's idle semaphore and the chaining of that future to an
asyncio one; here a job is a tuple on a ``queue.SimpleQueue`` (C), and the result goes back
with one ``call_soon_threadsafe``.

A job handed over always runs, in order, even when the caller that awaits it is cancelled
meanwhile (a chat line handed over is written; the executor would have dropped a job that had
not started). ``close`` runs what is queued, then stops the thread; a process that exits without
calling it still runs what is queued first (``atexit``, as the executor's own exit hook did).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: a job: the function, its arguments, and the loop and future to settle (``None``: nobody waits)
_Job = tuple[Callable[..., Any], tuple[Any, ...], asyncio.AbstractEventLoop | None, asyncio.Future[Any] | None]


class WriterThread:
    """A daemon thread running jobs one at a time, in the order they were handed over (started
    with the first job: a store that never writes has no thread)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        self._thread: threading.Thread | None = None
        #: closes the thread when the interpreter exits (a weak reference: it keeps nothing alive)
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))

    @property
    def started(self) -> bool:
        """True once a job was handed over (the thread exists)."""
        return self._thread is not None

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(*args)`` on the thread after the jobs before it; its result, or its exception.
        ``RuntimeError`` once the thread is closed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put((function, args, loop, future))
        return await future

    async def drain(self) -> None:
        """Wait until every job handed over before this call is done. ``RuntimeError`` once the
        thread is closed."""
        await self.run(_nothing)

    def submit(self, function: Callable[..., Any], *args: Any) -> None:
        """Run ``function(*args)`` on the thread after the jobs before it, awaited by nobody (an
        exception is logged). ``RuntimeError`` once the thread is closed."""
        self._put((function, args, None, None))

    def close(self, timeout: float | None = None) -> bool:
        """Run the jobs already handed over, then stop the thread: returns when it has (``True``),
        or after ``timeout`` seconds with the thread still busy (``False``; a daemon thread, so
        the interpreter does not wait for a job that never ends, e.g. a write nobody reads)."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            atexit.unregister(self._at_exit)
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _put(self, job: _Job) -> None:
        if self._closed:
            raise RuntimeError("the writer thread is closed")
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
            self._thread.start()
            atexit.register(self._at_exit)
        self._queue.put(job)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            function, args, loop, future = job
            try:
                result = function(*args)
            except BaseException as exc:  # every waiter is told, and the thread goes on
                if future is None:
                    logger.exception("%s failed on the writer thread", getattr(function, "__qualname__", function))
                else:
                    _settle(loop, future, None, exc)
            else:
                if future is not None:
                    _settle(loop, future, result, None)


def _nothing() -> None:
    """The job ``drain`` waits for: it runs after every job handed over before it."""


def _close_at_exit(writer: weakref.ref[WriterThread]) -> None:
    alive = writer()
    if alive is not None:
        alive.close()


def _settle(loop: asyncio.AbstractEventLoop | None, future: asyncio.Future[Any], result: Any,
            error: BaseException | None) -> None:
    assert loop is not None
    try:
        loop.call_soon_threadsafe(_set, future, result, error)
    except RuntimeError:  # the loop is closed: nobody is left to await it
        pass


def _set(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.done():  # the caller was cancelled meanwhile: a failure is still told, in the log
        if error is not None:
            logger.error("a job on the writer thread failed after its caller had left", exc_info=error)
        return
    if error is not None:
        if isinstance(error, StopIteration):  # a future cannot hold one (its waiter would hang)
            wrapped = RuntimeError(f"StopIteration raised on the writer thread: {error}")
            wrapped.__cause__ = error
            error = wrapped
        future.set_exception(error)
    else:
        future.set_result(result)


__all__ = ["WriterThread"]
