"""The usage ledger: one JSON line per model call in ``data/.agw/usage/<YYYY-MM-DD>.jsonl`` (SPEC §19).

A line: ``ts`` (epoch ms, when the call ended; its UTC date names the file), ``runId``,
``chatId``, ``agentKey``, ``modelKey`` (the provider model that answered or failed),
``groupKey`` (when the agent's model is a group), ``provider``, ``user``, ``promptTokens``,
``completionTokens``, ``reasoningTokens`` (when the provider reports them), ``points``,
``durationMs``, ``ttftMs`` (``null`` when no delta arrived), ``status`` (``ok`` | ``error``)
and, for errors, ``errorCode``.

Writing: ``record`` only hands the dict to the ledger's one writer thread, so the engine never
waits for the disk and lines never interleave. Each line reaches the file with a single
``write`` on an ``O_APPEND`` descriptor (no user-space buffer to flush). A crash can still
leave a torn last line: the reader skips it with a warning, and the next append first ends
it with a newline. ``flush()`` waits for every line recorded so far (a query made after a
run ended sees that run's calls).

Reading: ``lines(day)`` streams one day's file; a query reads only the files of its range.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="usage-ledger")

    @property
    def directory(self) -> Path:
        return self._dir

    def path_for(self, day: date) -> Path:
        return self._dir / f"{day.isoformat()}{SUFFIX}"

    # -- writing -------------------------------------------------------------------------

    def record(self, entry: dict[str, Any]) -> None:
        """Queue one line for the writer thread; returns at once and never raises."""
        try:
            self._writer.submit(self._append_sync, entry)
        except RuntimeError:  # shut down: a call that ended after the gateway closed
            logger.warning("usage ledger closed: the model call of run %s is not recorded", entry.get("runId"))

    async def flush(self) -> None:
        """Wait until every line recorded before this call is written."""
        try:
            future = self._writer.submit(_nothing)
        except RuntimeError:
            return
        await asyncio.wrap_future(future)

    def close(self) -> None:
        """Write what is queued and stop the writer thread."""
        self._writer.shutdown(wait=True)

    def _append_sync(self, entry: dict[str, Any]) -> None:
        try:
            data = orjson.dumps(entry) + b"\n"
            path = self.path_for(day_of(int(entry["ts"])))
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size > 0 and os.pread(fd, 1, size - 1) != b"\n":
                    logger.warning("%s: last line was cut short (crash?); starting a new line", path.name)
                    data = b"\n" + data
                while data:  # a regular file takes it in one write; loop only for the pathological case
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
        except (OSError, TypeError, ValueError, KeyError) as exc:
            logger.error("usage ledger: could not record a call of run %s: %s", entry.get("runId"), exc)

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


def _nothing() -> None:
    return None
