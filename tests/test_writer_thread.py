"""``WriterThread`` (``app.writer``): the writer thread of the chat store and the usage ledger — order, results and
errors back on the loop, a cancelled caller, a closed loop, and closing."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from app.writer import WriterThread


async def test_jobs_run_in_order_on_the_thread_and_their_results_come_back() -> None:
    writer = WriterThread("test-writer")
    done: list[int] = []
    threads: set[str] = set()

    def job(n: int) -> int:
        threads.add(threading.current_thread().name)
        done.append(n)
        return n * 10

    try:
        results = await asyncio.gather(*(writer.run(job, n) for n in range(50)))
        writer.submit(job, 50)
        assert await writer.run(job, 51) == 510
    finally:
        writer.close()
    assert results == [n * 10 for n in range(50)]
    assert done == list(range(52)) and threads == {"test-writer"}


async def test_an_error_reaches_the_caller_and_the_thread_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    writer = WriterThread("test-writer")

    def broken() -> None:
        raise TypeError("not serialisable")

    try:
        with pytest.raises(TypeError, match="not serialisable"):
            await writer.run(broken)
        with caplog.at_level(logging.ERROR, logger="app.writer"):
            writer.submit(broken)  # nobody awaits it: logged
            assert await writer.run(lambda: "still here") == "still here"
    finally:
        writer.close()
    assert any("failed on the writer thread" in r.getMessage() for r in caplog.records)


async def test_a_job_handed_over_runs_even_when_its_caller_is_cancelled() -> None:
    writer = WriterThread("test-writer")
    gate, ran = threading.Event(), threading.Event()
    try:
        blocked = asyncio.ensure_future(writer.run(gate.wait, 30))
        waiting = asyncio.ensure_future(writer.run(ran.set))  # queued behind the blocked job
        await asyncio.sleep(0.01)
        waiting.cancel()
        gate.set()
        await blocked
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert await asyncio.to_thread(ran.wait, 30)  # the line is written all the same
        assert await writer.run(lambda: 1) == 1
    finally:
        writer.close()


async def test_a_failure_after_its_caller_was_cancelled_is_still_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The user stops a run while its step line waits behind another job, and that write then fails
    (a full disk): nobody awaits the result any more, but the failure must reach the log."""
    writer = WriterThread("test-writer")
    gate = threading.Event()

    def full_disk() -> None:
        raise OSError(28, "No space left on device")

    try:
        blocked = asyncio.ensure_future(writer.run(gate.wait, 30))
        waiting = asyncio.ensure_future(writer.run(full_disk))  # queued behind the blocked job
        await asyncio.sleep(0.01)
        waiting.cancel()
        with caplog.at_level(logging.ERROR, logger="app.writer"):
            gate.set()
            await blocked
            assert await writer.run(lambda: "after") == "after"  # its result came back before this one
            await asyncio.sleep(0)
    finally:
        writer.close()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    failures = [r for r in caplog.records if "after its caller had left" in r.getMessage()]
    assert failures and "No space left on device" in str(failures[0].exc_info[1])  # type: ignore[index]


async def test_a_job_that_raises_stop_iteration_fails_its_caller_instead_of_hanging() -> None:
    """``Future.set_exception(StopIteration())`` raises inside the loop's callback and leaves the future
    pending: a job calling ``next`` on an empty iterator would hang its caller for ever."""
    writer = WriterThread("test-writer")
    try:
        with pytest.raises(RuntimeError, match="StopIteration") as raised:
            await asyncio.wait_for(writer.run(next, iter(())), 30)
        assert isinstance(raised.value.__cause__, StopIteration)
        assert await writer.run(lambda: "still here") == "still here"
    finally:
        writer.close()


def test_a_caller_whose_loop_has_closed_does_not_stop_the_thread() -> None:
    writer = WriterThread("test-writer")
    gate = threading.Event()
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(writer.run(gate.wait, 30))
        loop.run_until_complete(asyncio.sleep(0.01))
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    finally:
        loop.close()
    gate.set()  # the job ends and finds its loop closed
    try:
        assert asyncio.run(writer.run(lambda: "next")) == "next"
    finally:
        writer.close()


async def test_close_runs_what_is_queued_then_refuses_more() -> None:
    writer = WriterThread("test-writer")
    done: list[int] = []
    gate = threading.Event()
    writer.submit(gate.wait, 30)
    for n in range(5):
        writer.submit(done.append, n)
    gate.set()
    await asyncio.to_thread(writer.close)
    assert done == [0, 1, 2, 3, 4]
    with pytest.raises(RuntimeError):
        writer.submit(done.append, 5)
    with pytest.raises(RuntimeError):
        await writer.run(done.append, 6)
    writer.close()  # twice: nothing more
    assert done == [0, 1, 2, 3, 4]


def test_no_thread_until_the_first_job_and_closing_an_unused_one_is_immediate() -> None:
    before = threading.active_count()
    writer = WriterThread("test-writer")
    assert threading.active_count() == before
    writer.close()
    with pytest.raises(RuntimeError):
        writer.submit(print)
    assert threading.active_count() == before


def test_a_process_that_exits_without_closing_still_runs_what_was_handed_over(tmp_path: Path) -> None:
    marker = tmp_path / "written"
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from app.writer import WriterThread\n"
        "writer = WriterThread('exit-test')\n"
        "writer.submit(time.sleep, 0.3)\n"
        f"writer.submit(Path({str(marker)!r}).write_text, 'line')\n"
        # no close(): the interpreter exits with both jobs still queued
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert marker.read_text() == "line"


def test_a_closed_writer_leaves_no_exit_hook_behind() -> None:
    # stores come and go in one process (tests, the sidecar's restarts): a closed writer's hook
    # must not run (nor hold a slot) at exit
    script = (
        "import time\n"
        "from app.writer import WriterThread\n"
        "writer = WriterThread('exit-test')\n"
        "writer.submit(time.sleep, 0)\n"
        "writer.close()\n"
        "writer.close = lambda: print('closed at exit')\n"  # what the hook would call
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""


def test_close_with_a_timeout_returns_while_a_job_never_ends_and_the_thread_is_a_daemon() -> None:
    """A write nobody reads blocks for ever: ``close(timeout)`` says so instead of waiting with it,
    and the daemon thread does not keep the interpreter alive."""
    writer = WriterThread("test-writer")
    gate = threading.Event()
    writer.submit(gate.wait, 60)
    try:
        assert writer.close(timeout=0.05) is False
        assert writer._thread is not None and writer._thread.daemon and writer._thread.is_alive()
    finally:
        gate.set()
    assert writer.close(timeout=30) is True  # the job ended: the stop marker behind it ends the thread
