"""``MemoryRunLog`` (SPEC §15): replay from any seq, live after it, each reader on its own wake-up."""

from __future__ import annotations

import asyncio

from app.contract import events as ev
from app.runs.log import MemoryRunLog


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
