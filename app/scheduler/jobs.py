"""What a scheduled run is, and the JSON file that keeps them (SPEC §11).

``ScheduleRequest`` is the create body (``POST /api/ap/schedules``, sidecar
``scheduler.add``): ``{jobId?, agentKey, message, chatId?, trigger}`` where
``trigger`` is ``{type: "date", runAt}`` (ISO-8601 text — naive means UTC — or epoch
milliseconds) or ``{type: "cron", expr}`` (5-field crontab).

``ScheduleFile`` persists every job spec *and* its last outcome in
``<data folder>/schedules.json`` (written atomically). At startup the service re-adds
the specs to an in-memory APScheduler job store. We chose this over a custom
APScheduler ``BaseJobStore``: the file holds plain, human-readable specs (no pickled
callables), survives code changes, and also carries ``lastRunAt/lastStatus/…``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.combining import OrTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from pydantic import BaseModel, ConfigDict, Field

from app.errors import RequestError
from app.paths import ascii_int

logger = logging.getLogger(__name__)

#: inside the data folder, under the hidden ``.agw/`` that ``/api/ap/data`` never serves
FILE_NAME = ".agw/schedules.json"
FORMAT_VERSION = 1


class DateTriggerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["date"]
    runAt: str | int


class CronTriggerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["cron"]
    expr: str = Field(min_length=1, max_length=256)


TriggerSpec = Annotated[DateTriggerSpec | CronTriggerSpec, Field(discriminator="type")]


class ScheduleRequest(BaseModel):
    """The body that creates a job (SPEC §11)."""

    model_config = ConfigDict(extra="ignore")

    jobId: str | None = Field(None, max_length=128)
    agentKey: str = Field(min_length=1, max_length=128)
    message: str = Field(min_length=1, max_length=200_000)
    chatId: str | None = Field(None, max_length=128)
    trigger: TriggerSpec


def parse_run_at(value: str | int) -> dt.datetime:
    """``runAt`` as an aware UTC datetime; ``RequestError`` when it is not a time."""
    if isinstance(value, bool):
        raise RequestError("trigger.runAt must be ISO-8601 text or epoch milliseconds")
    if isinstance(value, int):
        try:
            return dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)
        except (OverflowError, OSError, ValueError) as exc:
            raise RequestError(f"trigger.runAt {value} is not a valid epoch-millisecond time") from exc
    text = value.strip()
    millis = ascii_int(text)
    if millis is not None:
        return parse_run_at(millis)
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError as exc:
        raise RequestError(f"trigger.runAt {value!r} is not an ISO-8601 date-time") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        return moment.astimezone(dt.UTC)
    except OverflowError as exc:  # year 1 / 9999 with an offset leaves the datetime range in UTC
        raise RequestError(f"trigger.runAt {value!r} is out of range") from exc


_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
#: a crontab field: (name, lowest, highest, names of lowest, lowest+1…)
_CRON_FIELDS: tuple[tuple[str, int, int, tuple[str, ...]], ...] = (
    ("minute", 0, 59, ()), ("hour", 0, 23, ()), ("day-of-month", 1, 31, ()),
    ("month", 1, 12, _MONTHS), ("day-of-week", 0, 7, _WEEKDAYS),
)
_CRON_ATOM = re.compile(r"(?:(?P<all>\*)|(?P<first>[0-9]{1,2}|[a-z]{3})(?:-(?P<last>[0-9]{1,2}|[a-z]{3}))?)"
                        r"(?:/(?P<step>[0-9]{1,2}))?", re.ASCII)


def _cron_value(text: str, name: str, low: int, high: int, names: tuple[str, ...]) -> int:
    value = names.index(text) + low if text in names else int(text) if text.isdigit() else None
    if value is None or not low <= value <= high:
        raise ValueError(f"{name} {text!r} is not in {low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else ""))
    return value


def check_crontab(expr: str) -> list[str]:
    """The five fields of a standard crontab, each checked whole: ``*``, ``n``, ``a-b``, any of them
    ``/step``, comma lists; month and weekday names. APScheduler matches a field's start only, so
    ``mon#1`` would have run every Monday; anything else → ``ValueError`` naming the field."""
    fields = expr.lower().split()
    if len(fields) != 5:
        raise ValueError("expected 5 fields (minute hour day-of-month month day-of-week)")
    for text, (name, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for atom in text.split(","):
            match = _CRON_ATOM.fullmatch(atom)
            if match is None:
                raise ValueError(f"{name} field {text!r}: {atom!r} is not *, n, a-b or one of them /step")
            if match["first"] is not None:
                first = _cron_value(match["first"], name, low, high, names)
                last = _cron_value(match["last"], name, low, high, names) if match["last"] else first
                if last < first:
                    raise ValueError(f"{name} field {text!r}: the range {atom!r} runs backwards")
            if match["step"] is not None and not 1 <= int(match["step"]) <= high:
                raise ValueError(f"{name} field {text!r}: the step of {atom!r} is not in 1-{high}")
    return fields


def _apscheduler_weekdays(text: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday, 1 = Monday) in APScheduler 3's numbering
    (0 = Monday, which its ``from_crontab`` passes through unchanged): the days listed one by one."""
    if text == "*":
        return text
    days: set[int] = set()
    for atom in text.split(","):
        match = _CRON_ATOM.fullmatch(atom)
        assert match is not None, "check_crontab passed it"
        step = int(match["step"] or 1)
        if match["all"]:
            first, last = 0, 7
        else:
            first = _cron_value(match["first"], "day-of-week", 0, 7, _WEEKDAYS)
            last = _cron_value(match["last"], "day-of-week", 0, 7, _WEEKDAYS) if match["last"] \
                else 7 if match["step"] else first
        days.update(day % 7 for day in range(first, last + 1, step))
    return ",".join(str((day + 6) % 7) for day in sorted(days, key=lambda day: (day + 6) % 7))


def _cron_trigger(fields: list[str], timezone: dt.tzinfo) -> BaseTrigger:
    """APScheduler's trigger for checked crontab fields. When day-of-month and day-of-week are both
    restricted (neither starts with ``*``), crontab runs on a day matching *either* of them
    (``0 9 1 * mon``: the 1st of each month and every Monday); APScheduler's ``CronTrigger`` wants
    both, so that case is an ``OrTrigger`` of the two."""
    minute, hour, day, month, weekdays = fields

    def cron(day: str, weekdays: str) -> CronTrigger:
        return CronTrigger(minute=minute, hour=hour, day=day, month=month,
                           day_of_week=_apscheduler_weekdays(weekdays), timezone=timezone)

    if day.startswith("*") or weekdays.startswith("*"):
        return cron(day, weekdays)
    return OrTrigger([cron(day, "*"), cron("*", weekdays)])


def build_trigger(spec: DateTriggerSpec | CronTriggerSpec, timezone: dt.tzinfo,
                  now: dt.datetime) -> BaseTrigger:
    """The APScheduler trigger of ``spec``; invalid cron or a past date → ``RequestError``."""
    if isinstance(spec, CronTriggerSpec):
        try:
            trigger = _cron_trigger(check_crontab(spec.expr), timezone)
        except ValueError as exc:
            raise RequestError(f"invalid cron expression {spec.expr!r}: {exc}") from exc
        if trigger.get_next_fire_time(None, now.astimezone(timezone)) is None:
            raise RequestError(f"cron expression {spec.expr!r} never fires (no such date)")
        return trigger
    moment = parse_run_at(spec.runAt)
    if moment <= now:
        raise RequestError(f"trigger.runAt {moment.isoformat()} is in the past")
    return DateTrigger(run_date=moment, timezone=dt.UTC)


def job_key(owner: str, job_id: str) -> str:
    """A job's identity: job ids are per user, so two users may both name a job ``daily`` and neither
    learns of the other's (APScheduler's job id, the key of the service's and the file's records)."""
    return orjson.dumps([owner, job_id]).decode()


def epoch_ms(moment: dt.datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


@dataclass(slots=True)
class JobRecord:
    """One job as persisted: the spec plus the outcome of its last run."""

    job_id: str
    agent_key: str
    message: str
    chat_id: str | None
    trigger: dict[str, Any]
    owner: str
    created_at: int
    #: a date job that already fired (or was missed) is kept for its outcome but never re-added
    finished: bool = False
    last_run_at: int | None = None
    last_status: str | None = None
    last_error: str | None = None
    last_chat_id: str | None = None
    last_run_id: str | None = None
    runs: int = 0

    @property
    def key(self) -> str:
        return job_key(self.owner, self.job_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "jobId": self.job_id, "agentKey": self.agent_key, "message": self.message, "chatId": self.chat_id,
            "trigger": self.trigger, "owner": self.owner, "createdAt": self.created_at, "finished": self.finished,
            "lastRunAt": self.last_run_at, "lastStatus": self.last_status, "lastError": self.last_error,
            "lastChatId": self.last_chat_id, "lastRunId": self.last_run_id, "runs": self.runs,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRecord:
        return cls(
            job_id=str(data["jobId"]), agent_key=str(data["agentKey"]), message=str(data["message"]),
            chat_id=data.get("chatId"), trigger=dict(data["trigger"]), owner=str(data.get("owner") or "anonymous"),
            created_at=int(data.get("createdAt") or 0), finished=bool(data.get("finished", False)),
            last_run_at=data.get("lastRunAt"), last_status=data.get("lastStatus"), last_error=data.get("lastError"),
            last_chat_id=data.get("lastChatId"), last_run_id=data.get("lastRunId"), runs=int(data.get("runs") or 0),
        )


class ScheduleFile:
    """``schedules.json``: ``{"version": 1, "jobs": [JobRecord JSON…]}``, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> list[JobRecord]:
        """Every record; a malformed file or record is logged and skipped, never fatal."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            data = orjson.loads(raw)
            items = data["jobs"]
            assert isinstance(items, list)
        except (orjson.JSONDecodeError, KeyError, TypeError, AssertionError):
            logger.error("scheduler: %s is malformed; starting with no jobs (the file is kept)", self.path)
            return []
        records: list[JobRecord] = []
        for item in items:
            try:
                records.append(JobRecord.from_json(item))
            except (KeyError, TypeError, ValueError):
                logger.error("scheduler: skipping a malformed job in %s: %r", self.path, item)
        return records

    def reserve(self, record: JobRecord, check_room: Callable[[list[str]], None]) -> bool:
        """False when ``record``'s id is taken in the file; ``check_room(owners of the file's jobs)`` raises
        when there is no room. One process: its own records tell (see the shared file)."""
        return True

    def save(self, records: list[JobRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        body = orjson.dumps({"version": FORMAT_VERSION, "jobs": [r.to_json() for r in records]},
                            option=orjson.OPT_INDENT_2)
        with open(tmp, "wb") as fp:
            fp.write(body)
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, self.path)
