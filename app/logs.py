"""Log output format (SPEC §22 "Logging"; ``logging.format``): human text or one JSON object per line.

Logs always go to stderr (the sidecar's stdout carries protocol lines only). ``apply_format``
swaps the formatter of the root logger's handlers; the records themselves are unchanged, so
secrets masked before logging stay masked in either format.
"""

from __future__ import annotations

import logging
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
