"""Scheduled runs in a cluster (SPEC §11, §16): every instance schedules every job, one fires it.

``ClusterSchedules`` is the scheduler's ``ScheduleCluster`` (``app.scheduler.service``):

* ``claim(job_id, created_at, firing)`` — ``SET NX agw:sched:fire:<jobId>:<createdAt>:<firing>``: of the
  instances whose APScheduler fires the same job at the same time, exactly one gets to run it; none
  does once ``removed`` set ``agw:sched:removed:<jobId>:<createdAt>`` (an instance that has not reloaded
  the file yet still schedules a removed job); a firing that cannot be claimed (Redis unreachable) is
  skipped and logged, never run twice;
* ``shared_file(path)`` — a ``SharedScheduleFile``: ``schedules.json`` on the shared volume,
  written under an exclusive ``flock`` and merged: a save writes only the jobs this instance
  added, changed or removed since it last read or wrote the file, on top of what is on disk — a job
  gone from the disk since then was removed elsewhere and is not written back;
* ``watch(reload)`` — every save bumps ``agw:sched:version``; each instance polls that key and
  reloads the file when it moved (see docs/DECISIONS.md for polling vs pub/sub).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from app.cluster.node import ClusterNode
from app.scheduler.jobs import JobRecord, ScheduleFile

logger = logging.getLogger(__name__)

VERSION_KEY = "agw:sched:version"
#: a claim (and a removal marker) outlives any misfire grace time
CLAIM_SECONDS = 2 * 86400
# KEYS: the firing's claim, the job's removal marker; ARGV: this instance, the claim's TTL
CLAIM = """
if redis.call('exists', KEYS[2]) == 1 then return 0 end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 1 end
return 0
"""


class SharedScheduleFile(ScheduleFile):
    """``schedules.json`` shared by several instances (see the module docstring)."""

    def __init__(self, path: Path, on_saved: Callable[[], None]) -> None:
        super().__init__(path)
        self._on_saved = on_saved
        #: job id → its JSON as this instance last read or wrote it
        self._seen: dict[str, dict[str, Any]] = {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(f"{self.path.name}.lock"), "a+b") as lock:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock.fileno(), fcntl.LOCK_UN)

    def load(self) -> list[JobRecord]:
        with self._locked():
            records = super().load()
        self._seen = {record.job_id: record.to_json() for record in records}
        return records

    def save(self, records: list[JobRecord]) -> None:
        mine = {record.job_id: record for record in records}
        removed = self._seen.keys() - mine.keys()
        changed = [record for job_id, record in mine.items() if self._seen.get(job_id) != record.to_json()]
        if not removed and not changed:
            return
        with self._locked():
            on_disk = {record.job_id: record for record in super().load()}
            for job_id in removed:
                on_disk.pop(job_id, None)
            for record in changed:
                if record.job_id in on_disk or record.job_id not in self._seen:
                    on_disk[record.job_id] = record
                # else another instance removed it since we read the file: it stays removed
            super().save(list(on_disk.values()))
        self._seen = {job_id: record.to_json() for job_id, record in mine.items()}
        self._on_saved()


class ClusterSchedules:
    """The scheduler's side of the cluster (see the module docstring)."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node
        self._claim: Any = node.redis.register_script(CLAIM)

    def shared_file(self, path: Path) -> SharedScheduleFile:
        return SharedScheduleFile(path, self._changed)

    def _changed(self) -> None:
        self._node.outbox.enqueue_action(self._bump)

    async def _bump(self) -> None:
        await self._node.redis.incr(VERSION_KEY)

    def removed(self, job_id: str, created_at: int) -> None:
        self._node.outbox.enqueue_action(functools.partial(self._mark_removed, job_id, created_at))

    async def _mark_removed(self, job_id: str, created_at: int) -> None:
        await self._node.redis.set(f"agw:sched:removed:{job_id}:{created_at}", self._node.instance_id,
                                   ex=CLAIM_SECONDS)

    async def claim(self, job_id: str, created_at: int, firing: str) -> bool:
        try:
            won = await self._claim(keys=[f"agw:sched:fire:{job_id}:{created_at}:{firing}",
                                          f"agw:sched:removed:{job_id}:{created_at}"],
                                    args=[self._node.instance_id, CLAIM_SECONDS])
        except (RedisError, OSError) as exc:
            logger.error("scheduler: job %s not fired at %s: the cluster store (Redis) is unreachable: %s",
                         job_id, firing, exc)
            return False
        if not won:
            logger.debug("scheduler: job %s at %s is fired by another instance", job_id, firing)
        return bool(won)

    def watch(self, reload: Callable[[], None]) -> None:
        self._node.spawn(self._watch(reload))

    async def _watch(self, reload: Callable[[], None]) -> None:
        seen: bytes | None = b"?"
        interval = min(self._node.beat_seconds, 1.0)
        while True:
            await asyncio.sleep(interval)
            try:
                version = await self._node.redis.get(VERSION_KEY)
            except (RedisError, OSError):
                continue
            if version != seen:
                seen = version
                try:
                    reload()
                except OSError:
                    logger.exception("scheduler: could not reload the shared schedules file")
