"""The W3C Trace Context ``traceparent`` header (https://www.w3.org/TR/trace-context/), SPEC §19.

``version-traceid-parentid-flags``, lower-case hex: ``00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01``.
A header that does not parse is ignored (the run gets a fresh trace id), as the recommendation
says: version ``ff``, an all-zero trace or parent id, upper-case or missing digits, or a version
``00`` header with anything after the flags. A later version may append fields after a ``-``;
its first four fields are used.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

#: longest header value looked at (a later version may append fields; nothing legitimate is longer)
MAX_HEADER_CHARS = 512

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A valid incoming ``traceparent``: the caller's trace, and its span that becomes the run's parent."""

    trace_id: str
    parent_id: str
    flags: int

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)

    def header(self) -> str:
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags:02x}"


def parse_traceparent(value: str | None) -> TraceParent | None:
    """The header's trace context, or ``None`` when it is absent or malformed."""
    if not value or len(value) > MAX_HEADER_CHARS:
        return None
    match = _TRACEPARENT.fullmatch(value.strip(" \t"))
    if match is None:
        return None
    version, trace_id, parent_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        return None
    if trace_id == _ZERO_TRACE or parent_id == _ZERO_SPAN:
        return None
    return TraceParent(trace_id=trace_id, parent_id=parent_id, flags=int(flags, 16))


def new_trace_id() -> str:
    """A fresh random trace id: 32 lower-case hex digits, never all zeros."""
    while True:
        trace_id = secrets.token_hex(16)
        if trace_id != _ZERO_TRACE:
            return trace_id
