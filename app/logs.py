"""Log output format (SPEC §22 "Logging"; ``logging.format``): human text or one JSON object per line.

Logs always go to stderr (the sidecar's stdout carries protocol lines only). ``apply_format``
swaps the formatter of the root logger's handlers; the records themselves are unchanged, so
secrets masked before logging stay masked in either format. The sidecar writes them from a
thread (``queue_stderr_logging``), so a stderr nobody reads never stops the event loop.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import select
import sys
import threading
import time
from datetime import UTC, datetime

import orjson


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", "traceId"?, "exc"?}`` per record, one line, UTF-8."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        trace_id = getattr(record, "trace_id", None)  # SPEC §19: set on the records of a run
        if trace_id:
            data["traceId"] = trace_id
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(data, default=str).decode()


def apply_format(name: str) -> None:
    """Use ``name`` (``text`` | ``json``) for every handler of the root logger."""
    if name != "json":
        return
    formatter = JsonFormatter()
    for handler in logging.getLogger().handlers:
        handler.setFormatter(formatter)


#: log lines a sidecar keeps waiting for stderr before it drops new ones (and counts them)
STDERR_QUEUE_LINES = 10_000
#: after the queue's close (the sidecar's exit), how long one line may wait for stderr to take it
CLOSED_WRITE_PATIENCE_S = 0.5


class StderrQueue:
    """Log lines off the event loop (the sidecar, SPEC §10): a bounded queue and one daemon thread
    that writes them to stderr's descriptor.

    A host that pipes stderr but never reads it (Node's ``spawn`` default) filled the pipe, and the
    next record blocked the event loop in ``write``: no request was answered again. Now a full
    pipe blocks only this thread; when the queue is full too, new lines are dropped and counted,
    and the count is written as one WARNING line when the thread can write again (or at exit).
    A line logged after ``close`` (at exit, from a thread still winding down) is written at once,
    unless stderr has stayed full for ``CLOSED_WRITE_PATIENCE_S``: then it and later ones are lost.
    The thread never holds a lock of ``logging`` or of ``sys.stderr`` while it waits, so the exit
    is not held up by a stderr nobody reads (``close`` waits a bounded time).
    """

    def __init__(self, fd: int = 2, capacity: int = STDERR_QUEUE_LINES) -> None:
        self._fd = fd
        self._queue: queue.Queue[str | None] = queue.Queue(capacity)
        self._lock = threading.Lock()
        self._dropped = 0
        self._closed = False
        self._stuck = False
        self.formatter: logging.Formatter = logging.Formatter()
        self._thread = threading.Thread(target=self._run, name="stderr-log", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, line: str) -> None:
        """Queue one line (never blocks); a full queue drops it and counts it. Once closed (the
        sidecar's exit), the line is written at once if stderr can take it within a moment."""
        if self._closed:
            with self._lock:  # one line at a time; a stderr nobody reads costs the exit one wait only
                if not self._stuck:
                    self._stuck = not self._write(line, patience_s=CLOSED_WRITE_PATIENCE_S)
            return
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            with self._lock:
                self._dropped += 1

    def close(self, timeout_s: float = 2.0) -> None:
        """Write what is queued (and the drop count) within ``timeout_s``, then stop the thread."""
        if not self._thread.is_alive():
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout_s)
        self._thread.join(timeout_s)
        self._closed = not self._thread.is_alive()  # a thread still writing keeps the order: queue on

    def _run(self) -> None:
        while True:
            try:
                line = self._queue.get(timeout=1.0)
            except queue.Empty:
                line = ""  # idle: a good moment to report what was dropped
            with self._lock:
                dropped, self._dropped = self._dropped, 0
            if dropped:
                record = logging.makeLogRecord({
                    "name": __name__, "levelno": logging.WARNING, "levelname": "WARNING",
                    "msg": f"{dropped} log record(s) dropped: stderr was not read fast enough"})
                self._write(self.formatter.format(record) + "\n")
            if line is None:
                return
            if line:
                self._write(line)

    def _write(self, line: str, patience_s: float | None = None) -> bool:
        """Write ``line`` whole; with ``patience_s``, give up (False) on a stderr that stays full that
        long (a write of at most ``PIPE_BUF`` bytes to a pipe that polls writable does not block)."""
        data = line.encode("utf-8", "backslashreplace")
        while data:
            try:
                if patience_s is not None:
                    if not select.select([], [self._fd], [], patience_s)[1]:
                        return False  # nobody reads stderr: the line is lost, never the exit
                    data = data[os.write(self._fd, data[:select.PIPE_BUF]):]
                else:
                    data = data[os.write(self._fd, data):]
            except BlockingIOError:  # a descriptor another holder left non-blocking
                time.sleep(0.05)
            except (OSError, ValueError):  # stderr closed: the logs are lost, never the sidecar
                return False
        return True


class StderrQueueHandler(logging.Handler):
    """Formats each record on the caller's thread and queues the line (``StderrQueue``)."""

    def __init__(self, sink: StderrQueue) -> None:
        super().__init__()
        self._sink = sink

    def setFormatter(self, fmt: logging.Formatter | None) -> None:  # noqa: N802 - logging's name
        super().setFormatter(fmt)
        if fmt is not None:  # the drop report looks like every other line (apply_format: JSON too)
            self._sink.formatter = fmt

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._sink.put(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def queue_stderr_logging() -> StderrQueue:
    """Route the root logger's stderr handlers through a ``StderrQueue`` (started); ``close`` it at exit."""
    sink = StderrQueue()
    handler = StderrQueueHandler(sink)
    root = logging.getLogger()
    for existing in list(root.handlers):
        if isinstance(existing, logging.StreamHandler) and existing.stream in (sys.stderr, sys.__stderr__):
            if existing.formatter is not None:
                handler.setFormatter(existing.formatter)
            root.removeHandler(existing)
    root.addHandler(handler)
    sink.start()
    return sink
