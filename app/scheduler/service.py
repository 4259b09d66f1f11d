"""Scheduled agent runs on APScheduler 3 (SPEC §11).

``ScheduleService`` owns one ``AsyncIOScheduler`` (in-memory job store) plus the
``schedules.json`` file (``app.scheduler.jobs``) that makes jobs survive restarts:
``start()`` re-adds every unfinished spec, every change is written at once.

A firing job runs through the same engine as HTTP and the sidecar
(``RunService.start`` + ``Run.finished()`` for its typed outcome), so its run lands in chat memory:
in ``chatId`` when the job names one, else in a new chat per firing. The outcome is
recorded on the job (``lastRunAt, lastStatus, lastError, lastChatId, lastRunId``);
``lastStatus`` is ``running | complete | error | cancelled | missed | interrupted``.
Misfires follow ``settings.scheduler``: ``misfire-grace-seconds`` and ``coalesce``
(a job whose time passed while the gateway was down runs at start when it is within
the grace time, otherwise it is recorded as ``missed``).

Every firing, and every miss, ends with one ``ScheduledRunEvent`` handed to the listeners
registered with ``on_outcome`` (the sidecar's ``scheduler.event`` notification, SPEC §10
"Desktop additions"): ``completed`` when the run completed, else ``failed`` with the error
(a run error, a cancelled run, an agent gone since the job was added, a missed run time).

In a cluster (SPEC §16, ``ScheduleCluster``) every instance schedules every job: a firing is
claimed in Redis so that one instance runs it, ``schedules.json`` is written merged under a
lock, and each instance ``reload()``s it when another one changed it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

from apscheduler.events import EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED, JobExecutionEvent, JobSubmissionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from pydantic import ValidationError

from app.catalog.definitions import Catalog
from app.config import Settings
from app.contract.events import now_ms
from app.contract.bodies import QueryRequest
from app.runs import RunService
from app.errors import (
    ConflictError,
    ForbiddenError,
    GatewayError,
    NotFoundError,
    RequestError,
    ServiceUnavailable,
    describe_validation_error,
)
from app.memory.store import ChatStore
from app.paths import check_key
from app.scheduler.jobs import (
    FILE_NAME,
    CronTriggerSpec,
    DateTriggerSpec,
    JobRecord,
    ScheduleFile,
    ScheduleRequest,
    build_trigger,
    epoch_ms,
    job_key,
)

logger = logging.getLogger(__name__)

#: a run's outcome → the job's ``lastStatus``
_JOB_STATUS = {"completed": "complete", "error": "error", "cancelled": "cancelled"}


@dataclass(frozen=True, slots=True)
class ScheduledRunEvent:
    """One scheduled run's outcome: the params of the sidecar's ``scheduler.event`` (SPEC §10).

    ``run_id`` is ``None`` when no run started (the agent is gone, the run time was missed)."""

    job_id: str
    run_id: str | None
    chat_id: str | None
    status: Literal["completed", "failed"]
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"jobId": self.job_id, "runId": self.run_id, "chatId": self.chat_id,
                                "status": self.status}
        if self.error is not None:
            data["error"] = self.error
        return data


#: called with every ``ScheduledRunEvent`` (``ScheduleService.on_outcome``)
OutcomeListener = Callable[[ScheduledRunEvent], Awaitable[None]]


class ScheduleCluster(Protocol):
    """Several instances share ``schedules.json`` and fire each job once (SPEC §16, ``app.cluster.schedules``)."""

    def shared_file(self, path: Path) -> ScheduleFile:
        """The file, written so that concurrent writers merge instead of overwriting each other."""
        ...

    async def claim(self, record: JobRecord, firing: str) -> bool:
        """True for exactly one of the instances firing ``record`` at ``firing``; False for every instance
        once the job was removed anywhere. ``ServiceUnavailable`` when that cannot be known now."""
        ...

    def removed(self, record: JobRecord) -> None:
        """``record`` was removed here: no instance fires it any more, even one that has not reloaded yet."""
        ...

    def watch(self, reload: Callable[[], Awaitable[None]]) -> None:
        """Await ``reload`` whenever another instance may have changed the file."""
        ...


def parse_schedule_request(data: Any) -> ScheduleRequest:
    """Validate a create body; problems → ``RequestError`` (400 / JSON-RPC -32602)."""
    if not isinstance(data, dict):
        raise RequestError("a schedule must be a JSON object")
    try:
        return ScheduleRequest.model_validate(data)
    except ValidationError as exc:
        raise RequestError(f"invalid schedule: {describe_validation_error(exc, 'body')}") from exc


class ScheduleService:
    """Create, list, remove and fire scheduled runs (SPEC §11). ``start``/``stop`` in the lifespan."""

    def __init__(self, settings: Settings, runs: RunService, catalog: Callable[[], Catalog],
                 chats: ChatStore, *, cluster: ScheduleCluster | None = None) -> None:
        self._settings = settings
        self._runs = runs
        self._catalog = catalog
        self._chats = chats
        #: SPEC §16: other instances share the file and the firings (None = this process alone)
        self._cluster = cluster
        path = settings.data_dir / FILE_NAME
        self._file = ScheduleFile(path) if cluster is None else cluster.shared_file(path)
        #: ``JobRecord.key`` (owner and job id) → the job
        self._records: dict[str, JobRecord] = {}
        self._scheduler: AsyncIOScheduler | None = None
        self._firing: set[asyncio.Task[Any]] = set()
        self._listeners: list[OutcomeListener] = []
        #: job id → the scheduled run times APScheduler submitted and ``_fire`` has not taken yet
        self._due: dict[str, deque[dt.datetime]] = {}
        #: the file is read and written in a thread (never blocking the loop), one access at a time
        self._io = asyncio.Lock()

    @property
    def enabled(self) -> bool:
        return self._settings.scheduler.enabled

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if not self.enabled:
            logger.info("scheduler disabled (scheduler.enabled=false)")
            return
        config = self._settings.scheduler
        scheduler = AsyncIOScheduler(job_defaults={
            "misfire_grace_time": config.misfire_grace_seconds, "coalesce": config.coalesce, "max_instances": 1,
        })
        scheduler.add_listener(self._on_missed, EVENT_JOB_MISSED)
        scheduler.add_listener(self._on_submitted, EVENT_JOB_SUBMITTED)
        self._scheduler = scheduler
        records = await self._load()
        for record in records:
            if record.last_status == "running" and not await self._running_elsewhere(record):
                record.last_status, record.last_error = "interrupted", "the gateway stopped during this run"
            self._records[record.key] = record
            if not record.finished:
                self._add_to_scheduler(record, validate_past=False)
        scheduler.start()
        await self._save()
        if self._cluster is not None:
            self._cluster.watch(self.reload)
        logger.info("scheduler started with %d job(s) from %s", len(self._records), self._file.path)

    async def stop(self) -> None:
        """Stop firing, cancel runs that jobs started, and wait for them to record themselves."""
        if self._scheduler is None:
            return
        scheduler, self._scheduler = self._scheduler, None
        scheduler.pause()
        tasks = list(self._firing)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        scheduler.shutdown(wait=False)
        await self._save()

    # -- API -------------------------------------------------------------------------

    def on_outcome(self, listener: OutcomeListener) -> Callable[[], None]:
        """Await ``listener`` with the outcome of every firing and every miss; returns its remover.

        Register before ``start()`` to also hear about jobs that are due at start-up."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    async def add(self, request: ScheduleRequest, owner: str) -> dict[str, Any]:
        """Validate and schedule a job; returns its view. 400 on bad input, 409 on an id ``owner`` already uses
        (ids are per user: another user's jobs are never revealed), 409 beyond ``scheduler.max-jobs-per-user``
        or ``scheduler.max-jobs``."""
        if self._scheduler is None:
            raise ConflictError("the scheduler is not running (scheduler.enabled=false)")
        config = self._settings.scheduler
        if len(request.message) > config.max_message_chars:
            raise RequestError(f"the job's message has {len(request.message)} characters; the limit "
                               f"scheduler.max-message-chars is {config.max_message_chars}")
        job_id = check_key(request.jobId, "jobId") if request.jobId else f"job_{uuid.uuid4().hex[:12]}"
        if job_key(owner, job_id) in self._records:
            raise ConflictError(f"a job with jobId {job_id!r} already exists")
        agent_key = check_key(request.agentKey, "agentKey")
        if agent_key not in self._catalog().agents:
            raise RequestError(f"unknown agent: {agent_key}")
        chat_id = None
        if request.chatId:
            chat_id = check_key(request.chatId, "chatId")
            meta = await asyncio.to_thread(self._chats.chat_meta, chat_id)  # file I/O: off the event loop
            if meta is None:
                raise RequestError(f"unknown chat: {chat_id}")
            if meta.owner not in (None, owner):
                raise ForbiddenError(f"chat {chat_id} belongs to another user")
        record = JobRecord(
            job_id=job_id, agent_key=agent_key, message=request.message, chat_id=chat_id,
            trigger=request.trigger.model_dump(), owner=owner, created_at=now_ms(),
        )
        async with self._io:  # one add at a time: the checks below hold until the job is in
            if record.key in self._records:
                raise ConflictError(f"a job with jobId {job_id!r} already exists")
            self._check_room([r.owner for r in self._records.values()], owner)
            self._add_to_scheduler(record, validate_past=True)
            try:
                reserved = await asyncio.to_thread(self._file.reserve, record, functools.partial(self._check_room,
                                                                                                owner=owner))
            except GatewayError:
                self._unschedule(record.key)
                raise
            except OSError as exc:
                self._unschedule(record.key)
                logger.exception("scheduler: could not write %s", self._file.path)
                raise ServiceUnavailable("the schedules file could not be written; the job was not added") from exc
            if not reserved:
                self._unschedule(record.key)
                raise ConflictError(f"a job with jobId {job_id!r} already exists")
            self._records[record.key] = record
        await self._save()
        logger.info("scheduled job %s (%s) for agent %s", job_id, record.trigger, agent_key)
        return self._view(record)

    def list(self, owner: str) -> list[dict[str, Any]]:
        records = sorted((r for r in self._records.values() if r.owner == owner), key=lambda r: r.created_at)
        return [self._view(r) for r in records]

    def get(self, job_id: str, owner: str) -> dict[str, Any]:
        return self._view(self._owned(job_id, owner))

    async def remove(self, job_id: str, owner: str) -> dict[str, Any]:
        record = self._owned(job_id, owner)
        if self._scheduler is not None:
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(record.key)
        del self._records[record.key]
        self._due.pop(record.key, None)
        if self._cluster is not None:
            self._cluster.removed(record)
        await self._save()
        return {"jobId": record.job_id, "removed": True}

    async def reload(self) -> None:
        """Another instance changed ``schedules.json`` (SPEC §16): write what changed here, then take
        the file's jobs — new ones are scheduled, removed and finished ones unscheduled, outcomes updated."""
        if self._scheduler is None:
            return
        await self._save()
        on_disk = {record.key: record for record in await self._load()}
        if self._scheduler is None:
            return
        for key in [key for key in self._records if key not in on_disk]:
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(key)
            del self._records[key]
            self._due.pop(key, None)
        for key, fresh in on_disk.items():
            record = self._records.get(key)
            if record is None:
                self._records[key] = fresh
                if not fresh.finished:
                    self._add_to_scheduler(fresh, validate_past=False)
                continue
            was_finished = record.finished
            for name in JobRecord.__slots__:  # in place: a firing in progress holds this object
                setattr(record, name, getattr(fresh, name))
            if record.finished and not was_finished:
                with contextlib.suppress(JobLookupError):
                    self._scheduler.remove_job(key)

    # -- internals -------------------------------------------------------------------

    async def _running_elsewhere(self, record: JobRecord) -> bool:
        """In a cluster, a job recorded as running may be running on another instance right now."""
        if self._cluster is None or record.last_run_id is None:
            return False
        try:
            return (await self._runs.locate(record.last_run_id, record.owner)).live
        except GatewayError:
            return False

    @staticmethod
    def _firing_name(record: JobRecord, scheduled: dt.datetime | None) -> str:
        """The same name on every instance for one firing of ``record``: its scheduled run time, however
        late this instance fires it (a cron job fires on minute boundaries; without a submitted time,
        the current minute)."""
        when = record.trigger.get("runAt") if record.trigger.get("type") == "date" \
            else f"{(scheduled or dt.datetime.now(dt.UTC)).astimezone(dt.UTC):%Y-%m-%dT%H:%M}"
        return str(when)

    def _on_submitted(self, event: JobSubmissionEvent) -> None:
        """APScheduler hands a job to its executor (the ``_fire`` task starts after this): keep the
        scheduled run times, which ``_fire`` itself is not told."""
        self._due.setdefault(event.job_id, deque()).extend(event.scheduled_run_times)

    def _take_due(self, key: str) -> dt.datetime | None:
        """The scheduled run time of the firing ``_fire`` is running; run times APScheduler skipped as
        missed before it (``coalesce: false``) are dropped."""
        due = self._due.get(key)
        if not due:
            return None
        grace = dt.timedelta(seconds=self._settings.scheduler.misfire_grace_seconds)
        now = dt.datetime.now(dt.UTC)
        while len(due) > 1 and now - due[0] > grace:
            due.popleft()
        scheduled = due.popleft()
        if not due:
            del self._due[key]
        return scheduled

    def _unschedule(self, key: str) -> None:
        if self._scheduler is not None:
            with contextlib.suppress(JobLookupError):
                self._scheduler.remove_job(key)

    def _owned(self, job_id: str, owner: str) -> JobRecord:
        record = self._records.get(job_key(owner, check_key(job_id, "jobId")))
        if record is None:
            raise NotFoundError(f"unknown job: {job_id}")
        return record

    def _add_to_scheduler(self, record: JobRecord, *, validate_past: bool) -> None:
        assert self._scheduler is not None, "the scheduler is not started"
        spec = record.trigger
        trigger_spec = CronTriggerSpec.model_validate(spec) if spec.get("type") == "cron" \
            else DateTriggerSpec.model_validate(spec)
        now = dt.datetime.now(dt.UTC)
        if not validate_past and isinstance(trigger_spec, DateTriggerSpec):
            now = dt.datetime.min.replace(tzinfo=dt.UTC)  # a past date still goes in: misfire rules decide
        try:
            trigger = build_trigger(trigger_spec, self._scheduler.timezone, now)
        except RequestError as exc:
            if validate_past:
                raise
            logger.error("scheduler: job %s has an unusable trigger: %s", record.job_id, exc.message)
            record.last_status, record.last_error, record.finished = "error", exc.message, True
            return
        self._scheduler.add_job(
            self._fire, trigger, args=[record.key], id=record.key, name=f"agent:{record.agent_key}",
            replace_existing=True,
        )

    def _view(self, record: JobRecord) -> dict[str, Any]:
        next_run = None
        if self._scheduler is not None and not record.finished:
            job = self._scheduler.get_job(record.key)
            next_run = epoch_ms(getattr(job, "next_run_time", None)) if job is not None else None
        return {
            "jobId": record.job_id, "agentKey": record.agent_key, "message": record.message,
            "chatId": record.chat_id, "trigger": record.trigger, "createdAt": record.created_at,
            "nextRunAt": next_run, "lastRunAt": record.last_run_at, "lastStatus": record.last_status,
            "lastError": record.last_error, "lastChatId": record.last_chat_id, "lastRunId": record.last_run_id,
            "runs": record.runs,
        }

    def _check_room(self, owners: Sequence[str], owner: str) -> None:
        """``ConflictError`` when ``owners`` (one per job) leave no room for another job of ``owner``."""
        config = self._settings.scheduler
        mine = sum(1 for known in owners if known == owner)
        if mine >= config.max_jobs_per_user:
            raise ConflictError(f"you have {mine} jobs, the limit scheduler.max-jobs-per-user; delete one first "
                                "(finished date jobs count until deleted)")
        if len(owners) >= config.max_jobs:
            raise ConflictError(f"the gateway has {len(owners)} jobs, the limit scheduler.max-jobs")

    async def _load(self) -> Sequence[JobRecord]:
        async with self._io:
            return await asyncio.to_thread(self._file.load)

    async def _save(self) -> None:
        """Write the records (copies taken now) in a thread, after any write before it."""
        records = [dataclasses.replace(record) for record in self._records.values()]
        async with self._io:
            try:
                await asyncio.to_thread(self._file.save, records)
            except OSError:
                logger.exception("scheduler: could not write %s", self._file.path)

    def _save_soon(self) -> None:
        """``_save`` from a synchronous callback (APScheduler's listeners)."""
        task = asyncio.get_running_loop().create_task(self._save())
        self._firing.add(task)
        task.add_done_callback(self._firing.discard)

    async def _claim(self, record: JobRecord, scheduled: dt.datetime | None) -> bool:
        """The cluster's claim on this firing; while Redis is unreachable it is retried (backing off) until
        the misfire grace time after the run time is over, then the firing is recorded as missed."""
        assert self._cluster is not None
        firing = self._firing_name(record, scheduled)
        grace = dt.timedelta(seconds=self._settings.scheduler.misfire_grace_seconds)
        deadline = (scheduled or dt.datetime.now(dt.UTC)) + grace
        delay = 0.1
        while True:
            try:
                return await self._cluster.claim(record, firing)
            except ServiceUnavailable as exc:
                if dt.datetime.now(dt.UTC) + dt.timedelta(seconds=delay) > deadline:
                    logger.error("scheduler: job %s missed its run time %s: %s", record.job_id, firing, exc.message)
                    await self._missed(record, f"missed its run time {firing}: {exc.message} until "
                                               f"misfire-grace-seconds={self._settings.scheduler.misfire_grace_seconds} had passed")
                    return False
                logger.warning("scheduler: job %s at %s: %s; retrying", record.job_id, firing, exc.message)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _missed(self, record: JobRecord, error: str) -> None:
        """A firing that did not happen: recorded on the job (a date job is then finished), listeners told."""
        record.last_status, record.last_error = "missed", error
        if record.trigger.get("type") == "date":
            record.finished = True
            self._unschedule(record.key)
        await self._save()
        await self._emit(ScheduledRunEvent(record.job_id, None, record.chat_id, "failed", error))

    def _on_missed(self, event: JobExecutionEvent) -> None:
        due = self._due.get(event.job_id)
        if due is not None:
            with contextlib.suppress(ValueError):
                due.remove(event.scheduled_run_time)
            if not due:
                del self._due[event.job_id]
        record = self._records.get(event.job_id)
        if record is None:
            return
        record.last_status = "missed"
        record.last_error = (f"missed its run time {event.scheduled_run_time.isoformat()} "
                             f"by more than misfire-grace-seconds={self._settings.scheduler.misfire_grace_seconds}")
        if record.trigger.get("type") == "date":
            record.finished = True
        self._save_soon()
        if self._listeners:  # called in the event loop (APScheduler's asyncio scheduler processes jobs there)
            event = ScheduledRunEvent(record.job_id, None, record.chat_id, "failed", record.last_error)
            task = asyncio.get_running_loop().create_task(self._emit(event))
            self._firing.add(task)
            task.add_done_callback(self._firing.discard)

    async def _emit(self, event: ScheduledRunEvent) -> None:
        for listener in list(self._listeners):
            try:
                await listener(event)
            except Exception:  # a listener's failure must not lose the job's record or other listeners
                logger.exception("scheduler: an outcome listener failed for job %s", event.job_id)

    async def _fire(self, key: str) -> None:
        """One firing of the job ``key`` (``JobRecord.key``): start the run, consume its events, record the outcome."""
        scheduled = self._take_due(key)
        record = self._records.get(key)
        if record is None:
            return
        job_id = record.job_id
        if self._cluster is not None and not await self._claim(record, scheduled):
            return  # SPEC §16: another instance fires this one (or the firing was recorded as missed)
        task = asyncio.current_task()
        assert task is not None
        self._firing.add(task)
        record.last_run_at, record.last_status, record.last_error = now_ms(), "running", None
        record.last_run_id = None
        record.runs += 1
        if record.trigger.get("type") == "date":
            record.finished = True
        await self._save()
        run_id, chat_id = None, record.chat_id
        try:
            query = QueryRequest.model_validate(
                {"agentKey": record.agent_key, "message": record.message, "chatId": record.chat_id})
            run = await self._runs.start(query, record.owner)
            record.last_run_id, record.last_chat_id = run.run_id, run.chat_id
            run_id, chat_id = run.run_id, run.chat_id
            if self._cluster is not None:
                await self._save()  # the run id tells other instances that this job is running (SPEC §16)
            outcome = await run.finished()
            record.last_status = _JOB_STATUS[outcome.status]
            if outcome.status == "error":
                record.last_error = str((outcome.error or {}).get("message") or "the run failed")
        except asyncio.CancelledError:
            # the gateway is stopping; the run recorded itself as cancelled. Not re-raised: this
            # task is a leaf owned by the scheduler, and ending normally keeps shutdown quiet.
            record.last_status, record.last_error = "cancelled", "the gateway stopped during this run"
        except (GatewayError, ValidationError) as exc:
            record.last_status = "error"
            record.last_error = exc.message if isinstance(exc, GatewayError) else str(exc)
            logger.warning("scheduled job %s failed: %s", job_id, record.last_error)
        except Exception:  # a bug must still be recorded on the job, not lost in the scheduler
            logger.exception("scheduled job %s failed unexpectedly", job_id)
            record.last_status, record.last_error = "error", "internal error while running the job"
        finally:
            if key in self._records:
                await self._save()
        try:
            if record.last_status == "complete":
                await self._emit(ScheduledRunEvent(job_id, run_id, chat_id, "completed"))
            else:
                error = record.last_error or f"the run ended with status {record.last_status}"
                await self._emit(ScheduledRunEvent(job_id, run_id, chat_id, "failed", error))
        finally:
            self._firing.discard(task)
