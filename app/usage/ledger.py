"""The usage ledger: one JSON line per model call in ``data/.agw/usage/<YYYY-MM-DD>.jsonl`` (SPEC §19).

A line: ``ts`` (epoch ms, when the call ended; its UTC date names the file), ``runId``,
``chatId``, ``agentKey``, ``modelKey`` (the provider model that answered or failed),
``groupKey`` (when the agent's model is a group), ``provider``, ``user``, ``promptTokens``,
``completionTokens``, ``reasoningTokens`` (when the provider reports them), ``points``,
``durationMs``, ``ttftMs`` (``null`` when no delta arrived), ``status`` (``ok`` | ``error``)
and, for errors, ``errorCode``.

Writing: ``record`` only puts the dict on a queue (no future, no lock: it is on every model
call's path) and, unless one is already on its way, hands the writer thread (``app.writer``; the
gateway's, shared with the chat store, or the ledger's own) a job that writes everything queued
by then, so the engine never waits for the disk and lines never interleave. A run's usage line
and its last chat lines are handed over moments apart, so one wake-up of the shared thread
writes both. The job writes with one ``write`` per day file on an ``O_APPEND`` descriptor that
stays open (no user-space buffer to flush; reopened when the day changes). A crash can still
leave a torn last line: the reader skips it with a warning, and the first append after opening
the file ends it with a newline. ``flush()`` waits for every line recorded so far (a query made
after a run ended sees that run's calls). A process that exits without ``close()`` still writes
what was recorded first (the writer thread's ``atexit`` hook runs the jobs handed over).

Reading: ``lines(day)`` streams one day's file; a query reads only the files of its range.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson

from app.writer import WriterThread

logger = logging.getLogger(__name__)

SUFFIX = ".jsonl"


def day_of(ts_ms: int) -> date:
    """The UTC date of an epoch-millisecond timestamp."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).date()


class UsageLedger:
    """Append-only daily JSONL files under ``directory`` (``data/.agw/usage``). Call ``close()`` when done.

    ``writer``: the thread to write on (its owner closes it after ``close()``); without one the
    ledger starts its own, which ``close()`` stops."""

    def __init__(self, directory: Path, writer: WriterThread | None = None) -> None:
        self._dir = Path(directory)
        self._writer = writer if writer is not None else WriterThread("usage-ledger")
        self._owns_writer = writer is None
        #: lines recorded and not yet written (the event loop puts, the writer thread takes)
        self._queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        #: a ``_write_queued`` job is handed over and has not started taking lines yet
        self._job_on_its_way = False
        self._closed = False
        self._fd: int | None = None  # writer thread only, like ``_fd_path``
        self._fd_path: Path | None = None

    @property
    def directory(self) -> Path:
        return self._dir

    def path_for(self, day: date) -> Path:
        return self._dir / f"{day.isoformat()}{SUFFIX}"

    # -- writing -------------------------------------------------------------------------

    def record(self, entry: dict[str, Any]) -> None:
        """Queue one line for the writer thread; returns at once and never raises."""
        if self._closed:  # a call that ended after the gateway closed
            logger.warning("usage ledger closed: the model call of run %s is not recorded", entry.get("runId"))
            return
        self._queue.put(entry)
        if not self._job_on_its_way:  # else the job handed over earlier takes this line too
            self._job_on_its_way = True
            try:
                self._writer.submit(self._write_queued)
            except RuntimeError:  # the shared thread is closed (the gateway is stopping)
                self._job_on_its_way = False  # the next refused line is told about too
                logger.warning("usage ledger: the writer thread is closed; the call of run %s is not recorded",
                               entry.get("runId"))

    async def flush(self) -> None:
        """Wait until every line recorded before this call is written."""
        if self._closed:  # the last lines are queued on the thread: wait for them if it still runs
            with contextlib.suppress(RuntimeError):
                await self._writer.drain()
            return
        await self._writer.run(self._write_queued)

    def close(self) -> None:
        """Write what is queued and close the day file; with a writer thread of its own, stop it
        (returns when all is written). A shared thread's owner closes it afterwards."""
        if not self._closed:
            self._closed = True
            try:
                self._writer.submit(self._write_queued, True)
            except RuntimeError:  # the shared thread was closed first: its exit ran our last job
                pass
        if self._owns_writer:
            self._writer.close()

    def _write_queued(self, last: bool = False) -> None:
        """On the writer thread: write every line queued so far (one write per day file)."""
        # first: a line recorded from here on hands over a job of its own (this one may take it too)
        self._job_on_its_way = False
        batch: list[dict[str, Any]] = []
        while True:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        try:
            lines: dict[Path, list[bytes]] = {}
            for entry in batch:
                self._encode(entry, lines)
            for path, chunks in lines.items():
                self._append(path, b"".join(chunks))
        except Exception:  # a bug here must never stop the writer: flush() would wait forever
            logger.exception("usage ledger: a batch of %d lines was not written", len(batch))
        finally:
            if last and self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = self._fd_path = None

    def _encode(self, entry: dict[str, Any], lines: dict[Path, list[bytes]]) -> None:
        try:
            path = self.path_for(day_of(int(entry["ts"])))
            lines.setdefault(path, []).append(orjson.dumps(entry) + b"\n")
        except Exception as exc:  # one bad entry (no ts, a ts out of range, not JSON-able) loses only itself
            logger.error("usage ledger: could not record a call of run %s: %s", entry.get("runId"), exc)

    def _append(self, path: Path, data: bytes) -> None:
        try:
            if self._fd is not None and not _still_named(self._fd, self._fd_path):
                logger.warning("%s was removed or moved while open; writing a new file", path.name)
                os.close(self._fd)
                self._fd = None
            if self._fd_path != path or self._fd is None:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
                self._fd, self._fd_path = fd, path
                size = os.fstat(fd).st_size
                if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                    logger.warning("%s: last line was cut short (crash?); starting a new line", path.name)
                    data = b"\n" + data
            while data:  # a regular file takes it in one write; loop only for the pathological case
                data = data[os.write(self._fd, data):]
        except OSError as exc:
            logger.error("usage ledger: could not write %s: %s", path.name, exc)
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
            self._fd = self._fd_path = None

    # -- reading -------------------------------------------------------------------------

    def lines(self, day: date) -> Iterator[dict[str, Any]]:
        """The well-formed lines of one day, streamed in file order; nothing when the day has no file.

        A torn or malformed line is skipped with a warning, never raised for.
        """
        path = self.path_for(day)
        try:
            fp = path.open("rb")
        except FileNotFoundError:
            return
        with fp:
            for number, raw in enumerate(fp, start=1):
                if not raw.strip():
                    continue
                try:
                    value = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    logger.warning("%s: line %d skipped (torn or malformed)", path.name, number)
                    continue
                if isinstance(value, dict):
                    yield value
                else:
                    logger.warning("%s: line %d skipped (not an object)", path.name, number)


def _still_named(fd: int, path: Path | None) -> bool:
    """True when ``path`` still names the file open as ``fd`` (not removed, not moved away: a log
    rotation's ``mv`` leaves the descriptor on the old file)."""
    if path is None:
        return False
    try:
        named, open_file = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (named.st_dev, named.st_ino) == (open_file.st_dev, open_file.st_ino)
