"""``StreamRunLog``, the log of a run another instance executes: a reader that leaves early
releases its Redis read at once (the blocking ``XREAD`` loop is closed, not left to the collector).

The node is a stand-in with only ``read_events``: what is under test is how the log's readers
close the reader below them; the Redis side is tested for real in ``test_cluster.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, cast

from app.cluster.node import ClusterNode
from app.cluster.runlog import StreamRunLog


class _Node:
    def __init__(self) -> None:
        self.closed: list[str] = []

    async def read_events(self, run_id: str, after: int) -> AsyncIterator[tuple[int, dict[str, Any]]]:
        try:
            for seq in range(after + 1, after + 100):
                yield seq, {"type": "content.delta", "seq": seq, "delta": "x"}
        finally:
            self.closed.append(run_id)


async def test_a_batch_reader_that_leaves_early_closes_the_redis_read_at_once() -> None:
    node = _Node()
    left: list[str] = []
    log = StreamRunLog(cast(ClusterNode, node), "run_1", last_seq=0, ended=False)
    reader = log.read_batches(0, lambda: left.append("left"))
    assert [event.seq for event in await anext(reader)] == [1]
    assert [event.seq for event in await anext(reader)] == [2]
    await reader.aclose()
    # no loop turn in between: the read below was closed by the close above, not by the collector
    assert node.closed == ["run_1"]
    assert left == ["left"]
    assert log.last_seq == 2


async def test_an_event_reader_that_leaves_early_closes_the_redis_read_at_once() -> None:
    node = _Node()
    log = StreamRunLog(cast(ClusterNode, node), "run_2", last_seq=0, ended=False)
    reader = log.read(5)
    assert (await anext(reader)).seq == 6
    await reader.aclose()
    assert node.closed == ["run_2"]


async def test_a_resume_from_the_end_of_an_ended_run_ends_at_once_without_reading_redis() -> None:
    """``after`` at or past the terminal seq of an ended remote run: nothing is read, nothing waits
    (the Redis read skips every entry up to ``after`` and would never see the terminal event)."""
    node = _Node()
    log = StreamRunLog(cast(ClusterNode, node), "run_3", last_seq=7, ended=True)
    for after in (7, 12):
        assert [event async for event in log.read(after)] == []
        assert [batch async for batch in log.read_batches(after, lambda: node.closed.append("left"))] == []
    assert node.closed == []  # no read was opened, and the readers did not "leave early"
    assert [event.seq async for event in log.read(5)][:2] == [6, 7]  # before the end: read as before
