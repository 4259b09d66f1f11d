"""The usage ledger's writer (SPEC §19): nothing lost, nothing interleaved, never stuck."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from app.usage.ledger import UsageLedger, day_of
from app.writer import WriterThread

DAY_MS = 86_400_000


def entry(n: int, ts: int | None = None) -> dict[str, object]:
    return {"ts": ts if ts is not None else int(time.time() * 1000), "runId": f"r{n}", "n": n}


def read_n(path: Path) -> list[int]:
    return [orjson.loads(line)["n"] for line in path.read_bytes().splitlines() if line]


async def test_many_records_land_in_order_as_whole_lines_after_flush(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path)
    try:
        for n in range(2000):
            ledger.record(entry(n))
        await ledger.flush()
        path = ledger.path_for(day_of(int(time.time() * 1000)))
        assert read_n(path) == list(range(2000))
    finally:
        ledger.close()


async def test_lines_go_to_the_file_of_their_own_day(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path)
    today = int(time.time() * 1000)
    try:
        for n, ts in enumerate((today - DAY_MS, today, today - DAY_MS, today)):
            ledger.record(entry(n, ts))
        await ledger.flush()
        assert read_n(ledger.path_for(day_of(today - DAY_MS))) == [0, 2]
        assert read_n(ledger.path_for(day_of(today))) == [1, 3]
    finally:
        ledger.close()


async def test_a_day_file_removed_while_open_is_written_anew(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path)
    try:
        ledger.record(entry(1))
        await ledger.flush()
        path = next(tmp_path.glob("*.jsonl"))
        path.unlink()  # an operator archived it
        ledger.record(entry(2))
        await ledger.flush()
        assert read_n(path) == [2]
    finally:
        ledger.close()


async def test_a_day_file_moved_away_while_open_is_written_anew_under_its_name(tmp_path: Path) -> None:
    """A log rotation's ``mv`` leaves the open descriptor on the moved file: the lines after it
    went on into the archive until the day changed."""
    ledger = UsageLedger(tmp_path)
    try:
        ledger.record(entry(1))
        await ledger.flush()
        path = next(tmp_path.glob("*.jsonl"))
        archived = path.rename(tmp_path / "archived.jsonl.1")
        ledger.record(entry(2))
        await ledger.flush()
        assert read_n(archived) == [1]
        assert read_n(path) == [2]
    finally:
        ledger.close()


async def test_a_bad_entry_is_logged_and_the_writer_keeps_going(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ledger = UsageLedger(tmp_path)
    try:
        with caplog.at_level(logging.ERROR, logger="app.usage.ledger"):
            ledger.record({"runId": "no-ts"})
            ledger.record(entry(7))
            await ledger.flush()
        assert "could not record a call of run no-ts" in caplog.text
        assert read_n(next(tmp_path.glob("*.jsonl"))) == [7]
    finally:
        ledger.close()


async def test_a_cancelled_flush_does_not_stop_the_writer(tmp_path: Path) -> None:
    ledger = UsageLedger(tmp_path)
    try:
        for n in range(50):
            ledger.record(entry(n))
        flushing = asyncio.ensure_future(ledger.flush())
        flushing.cancel()
        await asyncio.gather(flushing, return_exceptions=True)
        ledger.record(entry(50))
        await asyncio.wait_for(ledger.flush(), timeout=30)  # a bound that only turns a hang into a failure
        assert read_n(next(tmp_path.glob("*.jsonl"))) == list(range(51))
    finally:
        ledger.close()


def test_close_writes_what_is_queued_and_later_records_are_refused_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    ledger = UsageLedger(tmp_path)
    for n in range(100):
        ledger.record(entry(n))
    ledger.close()
    assert read_n(next(tmp_path.glob("*.jsonl"))) == list(range(100))
    with caplog.at_level(logging.WARNING, logger="app.usage.ledger"):
        ledger.record(entry(100))  # never raises
    assert "usage ledger closed" in caplog.text
    ledger.close()  # twice is harmless
    assert read_n(next(tmp_path.glob("*.jsonl"))) == list(range(100))


@pytest.mark.parametrize("bad", [{"runId": "far", "ts": 10**30}, {"runId": "nan", "ts": float("nan")},
                                 {"runId": "obj", "ts": 1, "x": object()}], ids=["ts-out-of-range", "ts-nan", "not-json"])
async def test_a_hostile_entry_loses_only_itself(tmp_path: Path, bad: dict[str, object],
                                                 caplog: pytest.LogCaptureFixture) -> None:
    ledger = UsageLedger(tmp_path)
    try:
        with caplog.at_level(logging.ERROR, logger="app.usage.ledger"):
            ledger.record(entry(1))
            ledger.record(bad)
            ledger.record(entry(2))
            await asyncio.wait_for(ledger.flush(), timeout=30)  # a bound that only turns a hang into a failure
        assert f"could not record a call of run {bad['runId']}" in caplog.text
        assert read_n(next(tmp_path.glob("*.jsonl"))) == [1, 2]
    finally:
        ledger.close()


def test_a_process_that_exits_without_closing_the_ledger_still_writes_what_it_recorded(tmp_path: Path) -> None:
    # The writer thread is a daemon: without the exit hook the interpreter stops it with the
    # lines still queued. The first write is held up so that both lines are still queued at exit.
    script = (
        "import time\n"
        "from pathlib import Path\n"
        "from app.usage.ledger import UsageLedger\n"
        f"ledger = UsageLedger(Path({str(tmp_path)!r}))\n"
        "slow = ledger._append\n"
        "ledger._append = lambda path, data: (time.sleep(0.3), slow(path, data))\n"
        "ledger.record({'ts': int(time.time() * 1000), 'runId': 'r0', 'n': 0})\n"
        "time.sleep(0.05)\n"  # the thread has taken line 0 and sleeps in its write
        "ledger.record({'ts': int(time.time() * 1000), 'runId': 'r1', 'n': 1})\n"
        # no close(): the interpreter exits with line 1 still queued
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    files = list(tmp_path.glob("*.jsonl"))
    assert len(files) == 1, files
    assert read_n(files[0]) == [0, 1]


async def test_on_a_shared_writer_thread_close_writes_the_lines_and_leaves_the_thread_to_its_owner(
        tmp_path: Path) -> None:
    # the gateway's arrangement: one writer thread for the chat store and the ledger
    writer = WriterThread("shared-writer")
    ledger = UsageLedger(tmp_path / "usage", writer=writer)
    ledger.record(entry(0))
    ledger.record(entry(1))
    ledger.close()
    ledger.record(entry(2))  # refused: the ledger is closed, not the thread
    done = await writer.run(lambda: "the thread still runs")
    assert done == "the thread still runs"
    writer.close()
    files = list((tmp_path / "usage").glob("*.jsonl"))
    assert len(files) == 1
    assert read_n(files[0]) == [0, 1]


async def test_on_a_shared_writer_thread_flush_after_close_waits_for_the_last_lines(tmp_path: Path) -> None:
    import threading

    writer = WriterThread("shared-writer")
    ledger = UsageLedger(tmp_path / "usage", writer=writer)
    gate = threading.Event()
    writer.submit(gate.wait, 30)  # the thread is busy: the ledger's last write queues behind
    ledger.record(entry(0))
    ledger.close()
    flushed = asyncio.ensure_future(ledger.flush())
    await asyncio.sleep(0.02)
    assert not flushed.done()  # it used to return at once, before the line was written
    gate.set()
    await flushed
    files = list((tmp_path / "usage").glob("*.jsonl"))
    assert len(files) == 1 and read_n(files[0]) == [0]
    writer.close()


def test_every_line_refused_by_a_closed_shared_thread_is_reported(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    writer = WriterThread("shared-writer")
    ledger = UsageLedger(tmp_path / "usage", writer=writer)
    writer.close()  # closed before the ledger (not the gateway's order, but nothing may go unsaid)
    with caplog.at_level(logging.WARNING, logger="app.usage.ledger"):
        ledger.record(entry(1))
        ledger.record(entry(2))
    refused = [r for r in caplog.records if "writer thread is closed" in r.getMessage()]
    assert [r.getMessage().split("run ")[1].split(" ")[0] for r in refused] == ["r1", "r2"]
