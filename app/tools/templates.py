"""Tool argument templates (SPEC §3.3 "Tool argument templates").

In every string of a tool's arguments, ``{{toolName.field}}``, ``{{toolName.field+Nd}}``
and ``{{toolName.field-Nd}}`` are replaced by ``field`` (a dotted path; list indexes
are numbers) of the most recent result of ``toolName`` in this run. ``±Nd`` adds days
to a date (``YYYY-MM-DD``, also ``YYYY/MM/DD``) or a datetime starting with one,
keeping the rest of the value (time, offset) exactly as it was. A string that is
exactly one template (without ``±Nd``) takes the value itself, whatever its type.
Anything unresolvable raises ``ToolError`` naming the template.

What the templates of one call's arguments put in is bounded (``MAX_RESOLVED_CHARS``, counted
as text; a whole-value template counts its value's JSON text): a few kilobytes of arguments
repeating a template over a large result would otherwise expand to gigabytes in the gateway.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

from app.errors import ToolError
from app.paths import ascii_int

#: one ``\s*`` between the path and ``}}``, the optional offset's own inside its group: two in a row
#: (``\s*(…)?\s*``) backtrack quadratically over a run of blanks, and 30 KB of arguments froze the loop
_TEMPLATE = re.compile(
    r"\{\{\s*(?P<tool>[A-Za-z0-9_\-]+)\.(?P<path>[^{}+\s]+?)(?:\s*(?P<sign>[+-])\s*(?P<days>\d{1,6})\s*[dD])?\s*\}\}"
)
#: most characters the templates of one call's arguments may put in, all together
MAX_RESOLVED_CHARS = 4 * 1024 * 1024
_DATE_PREFIX = re.compile(r"^(\d{4})([-/])(\d{1,2})\2(\d{1,2})((?:[T ]\d{1,2}:\d{2}.*)?)$")
_MISSING = object()


def resolve_templates(args: Any, results: Mapping[str, Any]) -> Any:
    """Return ``args`` with every template replaced (a new structure; ``args`` is untouched)."""
    return _Resolution(results).resolve(args)


class _Resolution:
    """One call's resolution: the results, and how much the templates have put in so far."""

    def __init__(self, results: Mapping[str, Any]) -> None:
        self.results = results
        self.room = MAX_RESOLVED_CHARS
        #: ``id`` of a whole value → the length of its JSON text (the same value repeated is sized once)
        self.sizes: dict[int, int] = {}

    def resolve(self, args: Any) -> Any:
        if isinstance(args, str):
            return self._string(args)
        if isinstance(args, Mapping):
            return {key: self.resolve(value) for key, value in args.items()}
        if isinstance(args, (list, tuple)):
            return [self.resolve(value) for value in args]
        return args

    def _string(self, text: str) -> Any:
        if "{{" not in text:
            return text
        whole = _TEMPLATE.fullmatch(text)
        if whole is not None and whole.group("sign") is None:
            value = _value(whole, self.results)
            if isinstance(value, str):
                self._spend(len(value))
            elif isinstance(value, (Mapping, list)):
                if id(value) not in self.sizes:
                    self.sizes[id(value)] = len(_as_text(value))
                self._spend(self.sizes[id(value)])
            return value
        return _TEMPLATE.sub(self._text_of, text)

    def _text_of(self, match: re.Match[str]) -> str:
        text = _as_text(_value(match, self.results))
        self._spend(len(text))
        return text

    def _spend(self, chars: int) -> None:
        self.room -= chars
        if self.room < 0:
            raise ToolError(
                f"the templates in these arguments put in more than {MAX_RESOLVED_CHARS} characters; "
                "refer to a large result once, or pass less of it"
            )


def _value(match: re.Match[str], results: Mapping[str, Any]) -> Any:
    template = match.group(0)
    tool = match.group("tool")
    if tool not in results:
        raise ToolError(f"cannot resolve {template}: no result of tool {tool!r} in this run")
    value = _lookup(results[tool], match.group("path"))
    if value is _MISSING:
        raise ToolError(f"cannot resolve {template}: the result of {tool!r} has no field {match.group('path')!r}")
    if match.group("sign") is None:
        return value
    days = int(match.group("days")) * (1 if match.group("sign") == "+" else -1)
    shifted = _shift_days(value, days)
    if shifted is None:
        raise ToolError(f"cannot resolve {template}: {value!r} is not a date (YYYY-MM-DD) or datetime")
    return shifted


def _lookup(value: Any, path: str) -> Any:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):  # not JSON, or nested past the interpreter's limit
            return _MISSING
    for part in path.split("."):
        if isinstance(value, Mapping):
            if part not in value:
                return _MISSING
            value = value[part]
        elif isinstance(value, list) and (magnitude := ascii_int(part.removeprefix("-"))) is not None:
            index = -magnitude if part.startswith("-") else magnitude
            if not -len(value) <= index < len(value):
                return _MISSING
            value = value[index]
        else:
            return _MISSING
    return value


def _shift_days(value: Any, days: int) -> str | None:
    if not isinstance(value, str):
        return None
    m = _DATE_PREFIX.match(value.strip())
    if m is None:
        return None
    year, sep, month, day, rest = m.groups()
    try:
        shifted = date(int(year), int(month), int(day)) + timedelta(days=days)
    except (ValueError, OverflowError):
        return None
    width_m, width_d = len(month), len(day)
    return (
        f"{shifted.year:04d}{sep}{shifted.month:0{width_m}d}{sep}{shifted.day:0{width_d}d}{rest}"
    )


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
