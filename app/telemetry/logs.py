"""Every log line of a run carries its trace id (SPEC §19).

``RunLogTracing.attach()`` (the gateway's start) puts one ``TraceLogFilter`` on each handler of the
root logger; ``detach()`` (its close) takes them off again. A record gets the trace id of the run
whose task logged it (``current_trace_id()``), or the one a caller passed as
``extra={"trace_id": …}`` (lines logged about a run from outside its task): as the attribute
``record.trace_id``, which the JSON format writes as ``traceId``, and — for every other format,
which knows nothing of it — as `` trace_id=<id>`` at the end of the message. Records logged
outside any run are untouched.
"""

from __future__ import annotations

import logging

from app.logs import JsonFormatter
from app.telemetry.scope import current_trace_id

#: the record attribute holding the trace id (and the ``extra=`` key that sets it)
TRACE_ATTRIBUTE = "trace_id"
_IN_MESSAGE = "_agw_trace_in_message"


class TraceLogFilter(logging.Filter):
    """The filter of one handler: adds the run's trace id to the records it handles (never drops one)."""

    def __init__(self, handler: logging.Handler) -> None:
        super().__init__()
        self._handler = handler

    def filter(self, record: logging.LogRecord) -> bool:
        trace_id = getattr(record, TRACE_ATTRIBUTE, None) or current_trace_id()
        if not trace_id:
            return True
        setattr(record, TRACE_ATTRIBUTE, trace_id)
        # a record goes through each handler in turn: the suffix is added once, and not for JSON
        if not getattr(record, _IN_MESSAGE, False) and not isinstance(self._handler.formatter, JsonFormatter):
            record.msg = f"{record.msg} trace_id={trace_id}"
            setattr(record, _IN_MESSAGE, True)
        return True


class RunLogTracing:
    """The trace-id filters of one gateway on the root logger's handlers."""

    def __init__(self) -> None:
        self._attached: list[tuple[logging.Handler, TraceLogFilter]] = []

    def attach(self) -> None:
        """Filter every handler the root logger has now (``agw serve``'s stderr handler, the sidecar's)."""
        for handler in logging.getLogger().handlers:
            if not any(h is handler for h, _ in self._attached):
                log_filter = TraceLogFilter(handler)
                handler.addFilter(log_filter)
                self._attached.append((handler, log_filter))

    def detach(self) -> None:
        for handler, log_filter in self._attached:
            handler.removeFilter(log_filter)
        self._attached.clear()
