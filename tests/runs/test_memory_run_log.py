"""``MemoryRunLog`` (SPEC §15): replay from any seq, live after it, each reader on its own wake-up."""

from __future__ import annotations

import asyncio

from app.contract import events as ev
from app.runs.log import MAX_BATCH, MemoryRunLog


def _delta(numberer: ev.EventNumberer, text: str) -> ev.Stamped:
    return numberer.next(ev.ContentDeltaEvent(content_id="c", delta=text))


async def _read_all(log: MemoryRunLog, after: int = 0) -> list[int]:
    return [event.seq async for event in log.read(after)]


async def test_readers_replay_then_follow_live_until_the_terminal_event() -> None:
    log, numberer = MemoryRunLog(), ev.EventNumberer()
    log.append(_delta(numberer, "a"))
    from_start = asyncio.create_task(_read_all(log))
    from_one = asyncio.create_task(_read_all(log, after=1))
    await asyncio.sleep(0)
    log.append(_delta(numberer, "b"))
    await asyncio.sleep(0)
    log.append(numberer.next(ev.RunComplete(run_id="r")))
    log.append(_delta(numberer, "after the end"))  # ignored
    assert await from_start == [1, 2, 3]
    assert await from_one == [2, 3]
    assert await _read_all(log, after=3) == []


async def test_a_cancelled_reader_leaves_the_others_and_the_log_untouched() -> None:
    log, numberer = MemoryRunLog(), ev.EventNumberer()
    staying = asyncio.create_task(_read_all(log))
    leaving = asyncio.create_task(_read_all(log))
    await asyncio.sleep(0)
    assert len(log._waiters) == 2
    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    assert leaving.cancelled()
    assert len(log._waiters) == 1  # the reader that left waits on nothing any more
    log.append(_delta(numberer, "a"))
    log.append(numberer.next(ev.RunComplete(run_id="r")))
    assert await staying == [1, 2]
    assert log._waiters == []


async def _batches(log: MemoryRunLog, after: int = 0) -> list[list[int]]:
    return [[event.seq for event in batch] async for batch in log.read_batches(after)]


async def test_batches_hold_what_is_already_in_the_log_and_never_wait_for_more() -> None:
    log, numberer = MemoryRunLog(), ev.EventNumberer()
    for text in "abc":
        log.append(_delta(numberer, text))
    seen: list[list[int]] = []
    reader = log.read_batches()
    seen.append([event.seq for event in await anext(reader)])  # the three already there: one batch
    waiting = asyncio.ensure_future(anext(reader))
    await asyncio.sleep(0)
    assert not waiting.done()  # nothing new: the reader waits
    log.append(_delta(numberer, "d"))
    seen.append([event.seq for event in await waiting])  # handed over alone, not held for more
    log.append(_delta(numberer, "e"))
    log.append(numberer.next(ev.RunComplete(run_id="r")))
    log.append(_delta(numberer, "after the end"))  # ignored
    seen.append([event.seq for event in await anext(reader)])
    assert seen == [[1, 2, 3], [4], [5, 6]]
    assert [batch async for batch in reader] == []  # ended with the terminal event
    assert await _batches(log, after=4) == [[5, 6]]
    assert await _batches(log, after=6) == []


async def test_a_cancelled_batch_reader_leaves_no_waiter_behind() -> None:
    log, numberer = MemoryRunLog(), ev.EventNumberer()
    leaving = asyncio.create_task(_batches(log))
    await asyncio.sleep(0)
    assert len(log._waiters) == 1
    leaving.cancel()
    await asyncio.gather(leaving, return_exceptions=True)
    assert log._waiters == []
    log.append(numberer.next(ev.RunComplete(run_id="r")))
    assert await _batches(log) == [[1]]


async def test_a_long_replay_comes_in_bounded_batches_in_order() -> None:
    log, numberer = MemoryRunLog(), ev.EventNumberer()
    total = 2 * MAX_BATCH + 3
    for n in range(total - 1):
        log.append(_delta(numberer, str(n)))
    log.append(numberer.next(ev.RunComplete(run_id="r")))
    batches = await _batches(log)
    assert [len(batch) for batch in batches] == [MAX_BATCH, MAX_BATCH, 3]
    assert [seq for batch in batches for seq in batch] == list(range(1, total + 1))


async def test_on_leave_runs_once_for_a_reader_that_stops_before_the_end_and_never_for_one_that_reads_it() -> None:
    """``RunService.watch`` passes ``run.cancel`` here when leaving cancels the run (``onDisconnect``)."""
    log, numberer = MemoryRunLog(), ev.EventNumberer()
    left: list[str] = []
    log.append(_delta(numberer, "a"))
    closed = log.read(0, lambda: left.append("closed"))
    closed_batches = log.read_batches(0, lambda: left.append("closed batches"))
    await anext(closed)
    await anext(closed_batches)
    await closed.aclose()  # the consumer closed it between events
    await closed_batches.aclose()
    cancelled = asyncio.create_task(_read_all_leaving(log, left, "cancelled"))
    await asyncio.sleep(0)
    cancelled.cancel()  # the consumer was cancelled while the reader waited
    await asyncio.gather(cancelled, return_exceptions=True)
    assert left == ["closed", "closed batches", "cancelled"]
    log.append(numberer.next(ev.RunComplete(run_id="r")))
    assert [e.seq async for e in log.read(0, lambda: left.append("read to the end"))] == [1, 2]
    assert [[e.seq for e in b] async for b in log.read_batches(0, lambda: left.append("batches to the end"))] == [[1, 2]]
    assert [e.seq async for e in log.read(2, lambda: left.append("nothing after"))] == []
    assert left == ["closed", "closed batches", "cancelled"]


async def _read_all_leaving(log: MemoryRunLog, left: list[str], name: str) -> list[int]:
    return [event.seq async for event in log.read(0, lambda: left.append(name))]
