"""The usage ledger: one JSON line per model call in ``data/.agw/usage/<YYYY-MM-DD>.jsonl`` (SPEC §19).

A line: ``ts`` (epoch ms, when the call ended; its UTC date names the file), ``runId``,
``chatId``, ``agentKey``, ``modelKey`` (the provider model that answered or failed),
``groupKey`` (when the agent's model is a group), ``provider``, ``user``, ``promptTokens``,
``completionTokens``, ``reasoningTokens`` (when the provider reports them), ``points``,
``durationMs``, ``ttftMs`` (``null`` when no delta arrived), ``status`` (``ok`` | ``error``)
and, for errors, ``errorCode``.

Writing: ``record`` only puts the dict on a queue (no future, no lock: it is on every model
call's path) for the ledger's one writer thread, so the engine never waits for the disk and
lines never interleave. The writer takes whatever is queued at once and writes it with one
``write`` per day file on an ``O_APPEND`` descriptor that stays open (no user-space buffer to
flush; reopened when the day changes). A crash can still leave a torn last line: the reader
skips it with a warning, and the first append after opening the file ends it with a newline.
``flush()`` waits for every line recorded so far (a query made after a run ended sees that
run's calls). The thread is a daemon; a process that exits without ``close()`` still writes
what was recorded first (``atexit``, as ``app.memory.writer.WriterThread`` does for chat lines).

Reading: ``lines(day)`` streams one day's file; a query reads only the files of its range.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import logging
import os
import queue
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import Future
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson

logger = logging.getLogger(__name__)

SUFFIX = ".jsonl"


def day_of(ts_ms: int) -> date:
    """The UTC date of an epoch-millisecond timestamp."""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).date()


class UsageLedger:
    """Append-only daily JSONL files under ``directory`` (``data/.agw/usage``). Call ``close()`` when done."""

    def __init__(self, directory: Path) -> None:
        self._dir = Path(directory)
        self._queue: queue.SimpleQueue[dict[str, Any] | Future[None] | None] = queue.SimpleQueue()
        self._closed = False
        self._fd: int | None = None
        self._fd_path: Path | None = None
        self._thread = threading.Thread(target=self._write_loop, name="usage-ledger", daemon=True)
        self._thread.start()
        #: writes what is queued when the interpreter exits (a weak reference: it keeps nothing alive)
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

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

    async def flush(self) -> None:
        """Wait until every line recorded before this call is written."""
        if self._closed:
            return
        done: Future[None] = Future()
        self._queue.put(done)
        await asyncio.wrap_future(done)

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
            atexit.unregister(self._at_exit)
        self._thread.join()

    def _write_loop(self) -> None:
        stop = False
        while not stop:
            batch = [self._queue.get()]
            while True:  # everything queued meanwhile goes out with the same write
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            waiting: list[Future[None]] = [item for item in batch if isinstance(item, Future)]
            stop = any(item is None for item in batch)
            try:
                lines: dict[Path, list[bytes]] = {}
                for item in batch:
                    if isinstance(item, dict):
                        self._encode(item, lines)
                for path, chunks in lines.items():
                    self._append(path, b"".join(chunks))
            except Exception:  # a bug here must never stop the writer: flush() would wait forever
                logger.exception("usage ledger: a batch of %d lines was not written", len(batch) - len(waiting))
            finally:
                for future in waiting:
                    if future.set_running_or_notify_cancel():  # False: the flush was cancelled meanwhile
                        future.set_result(None)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _encode(self, entry: dict[str, Any], lines: dict[Path, list[bytes]]) -> None:
        try:
            path = self.path_for(day_of(int(entry["ts"])))
            lines.setdefault(path, []).append(orjson.dumps(entry) + b"\n")
        except Exception as exc:  # one bad entry (no ts, a ts out of range, not JSON-able) loses only itself
            logger.error("usage ledger: could not record a call of run %s: %s", entry.get("runId"), exc)

    def _append(self, path: Path, data: bytes) -> None:
        try:
            if self._fd is not None and os.fstat(self._fd).st_nlink == 0:
                logger.warning("%s was removed while open; writing a new file", path.name)
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


def _close_at_exit(ledger: weakref.ref[UsageLedger]) -> None:
    alive = ledger()
    if alive is not None:
        alive.close()
