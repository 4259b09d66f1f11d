"""Usage totals over a date range (SPEC §19 ``GET /api/ap/usage``, sidecar ``llm.usage``).

``parse_usage_query`` validates the parameters both edges take (``from``, ``to``: UTC dates
``YYYY-MM-DD``, both default to today, ``from`` alone runs to today; ``groupBy``:
``day | agent | model | user``, default ``day``) and raises ``RequestError`` for anything else.
``summarize`` streams the ledger files of the range — never another day's — and adds the lines
up per group: ``calls``, ``errors``, ``promptTokens``, ``completionTokens``, ``totalTokens``,
``points``. A caller that is not an admin passes its ``user`` and sees only its own lines.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal, cast, get_args

from app.errors import RequestError
from app.usage.ledger import UsageLedger

GroupBy = Literal["day", "agent", "model", "user"]
GROUP_BY: tuple[str, ...] = get_args(GroupBy)
#: the longest range one query may read, in days
MAX_RANGE_DAYS = 366
#: the ledger field each ``groupBy`` groups on (``day`` uses the file's date)
_GROUP_FIELD: Mapping[str, str] = {"agent": "agentKey", "model": "modelKey", "user": "user"}


@dataclass(frozen=True, slots=True)
class UsageQuery:
    start: date
    end: date
    group_by: GroupBy

    def days(self) -> Iterable[date]:
        # counted, not stepped past ``end``: the day after 9999-12-31 is an OverflowError
        for offset in range((self.end - self.start).days + 1):
            yield self.start + timedelta(days=offset)


def _parse_date(value: str, name: str) -> date:
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise RequestError(f"invalid {name}: {value[:40]!r} (expected a date YYYY-MM-DD)") from None


def parse_usage_query(params: Mapping[str, Any], today: date | None = None) -> UsageQuery:
    """The validated query of ``params`` (``from``, ``to``, ``groupBy``); ``RequestError`` when bad."""
    today = today or datetime.now(UTC).date()
    for name in ("from", "to", "groupBy"):
        value = params.get(name)
        if value is not None and not isinstance(value, str):
            raise RequestError(f"invalid {name}: expected a string")
    end = _parse_date(params["to"], "to") if params.get("to") else today
    start = _parse_date(params["from"], "from") if params.get("from") else (end if params.get("to") else today)
    if start > end:
        raise RequestError(f"invalid range: from {start.isoformat()} is after to {end.isoformat()}")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise RequestError(f"invalid range: at most {MAX_RANGE_DAYS} days per query")
    group_by = params.get("groupBy") or "day"
    if group_by not in GROUP_BY:
        raise RequestError(f"invalid groupBy: {str(group_by)[:40]!r} (expected one of {', '.join(GROUP_BY)})")
    return UsageQuery(start, end, cast(GroupBy, group_by))


class _Totals:
    __slots__ = ("calls", "completion", "errors", "points", "prompt")

    def __init__(self) -> None:
        self.calls = self.errors = self.prompt = self.completion = 0
        self.points = 0.0

    def add(self, line: Mapping[str, Any]) -> None:
        self.calls += 1
        self.errors += line.get("status") != "ok"
        self.prompt += _int(line.get("promptTokens"))
        self.completion += _int(line.get("completionTokens"))
        self.points += _float(line.get("points"))

    def payload(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "errors": self.errors,
            "promptTokens": self.prompt,
            "completionTokens": self.completion,
            "totalTokens": self.prompt + self.completion,
            "points": round(self.points, 4),
        }


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _float(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0.0


def summarize(ledger: UsageLedger, query: UsageQuery, user: str | None) -> dict[str, Any]:
    """Totals of the range per group (``user=None``: every user's lines). Blocking: reads files."""
    groups: dict[str, _Totals] = {}
    totals = _Totals()
    field = _GROUP_FIELD.get(query.group_by)
    for day in query.days():
        for line in ledger.lines(day):
            if user is not None and line.get("user") != user:
                continue
            key = day.isoformat() if field is None else str(line.get(field) or "")
            groups.setdefault(key, _Totals()).add(line)
            totals.add(line)
    return {
        "from": query.start.isoformat(),
        "to": query.end.isoformat(),
        "groupBy": query.group_by,
        "groups": [{"key": key, **groups[key].payload()} for key in sorted(groups)],
        "totals": totals.payload(),
    }


async def usage_report(ledger: UsageLedger, params: Mapping[str, Any], user: str | None) -> dict[str, Any]:
    """``parse_usage_query`` + ``summarize`` off the event loop, after the queued lines are written."""
    query = parse_usage_query(params)
    await ledger.flush()
    return await asyncio.to_thread(summarize, ledger, query, user)
