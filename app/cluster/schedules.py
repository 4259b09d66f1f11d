"""Scheduled runs in a cluster (SPEC §11, §16): every instance schedules every job, one fires it.

``ClusterSchedules`` is the scheduler's ``ScheduleCluster`` (``app.scheduler.service``):

* ``claim(record, firing)`` — ``SET NX agw:sched:fire:<job ref>:<firing>`` (``job_ref``: job id, owner
  digest, ``createdAt``): of the instances whose APScheduler fires the same job at the same time, exactly
  one gets to run it; none does once ``removed`` set ``agw:sched:removed:<job ref>`` (an instance that has not reloaded
  the file yet still schedules a removed job); Redis unreachable → ``ServiceUnavailable`` (the scheduler
  retries within the misfire grace time, then records the firing as missed), never run twice;
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
import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from app.cluster.node import ClusterNode
from app.errors import ServiceUnavailable
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


def job_ref(record: JobRecord) -> str:
    """A job in Redis key names: ``<jobId>:<owner digest>:<createdAt>`` (job ids are per user)."""
    digest = hashlib.sha256(record.owner.encode()).hexdigest()[:12]
    return f"{record.job_id}:{digest}:{record.created_at}"


class SharedScheduleFile(ScheduleFile):
    """``schedules.json`` shared by several instances (see the module docstring)."""

    def __init__(self, path: Path, on_saved: Callable[[], None]) -> None:
        super().__init__(path)
        self._on_saved = on_saved
        #: ``JobRecord.key`` → its JSON as this instance last read or wrote it
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
        self._seen = {record.key: record.to_json() for record in records}
        return records

    def reserve(self, record: JobRecord, check_room: Callable[[list[str]], None]) -> bool:
        """Write a new job at once unless its owner has a job of that id on disk (created on another instance
        that this one has not reloaded yet): of two instances creating one id at once, one gets a 409; the
        caps are counted on the disk too."""
        with self._locked():
            on_disk = {known.key: known for known in super().load()}
            if record.key in on_disk:
                return False
            check_room([known.owner for known in on_disk.values()])
            on_disk[record.key] = record
            super().save(list(on_disk.values()))
        self._seen[record.key] = record.to_json()
        self._on_saved()
        return True

    def save(self, records: list[JobRecord]) -> None:
        mine = {record.key: record for record in records}
        removed = self._seen.keys() - mine.keys()
        changed = [record for key, record in mine.items() if self._seen.get(key) != record.to_json()]
        if not removed and not changed:
            return
        with self._locked():
            on_disk = {record.key: record for record in super().load()}
            for key in removed:
                on_disk.pop(key, None)
            for record in changed:
                if record.key in on_disk or record.key not in self._seen:
                    on_disk[record.key] = record
                # else another instance removed it since we read the file: it stays removed
            super().save(list(on_disk.values()))
        self._seen = {key: record.to_json() for key, record in mine.items()}
        self._on_saved()


class ClusterSchedules:
    """The scheduler's side of the cluster (see the module docstring)."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node
        self._claim: Any = node.redis.register_script(CLAIM)

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._node.loop
        assert loop is not None, "the cluster node is started before the scheduler"
        return loop

    def shared_file(self, path: Path) -> SharedScheduleFile:
        return SharedScheduleFile(path, self._changed)

    def _changed(self) -> None:
        """The file was written (in a worker thread: the scheduler never blocks its loop on the file)."""
        self._loop.call_soon_threadsafe(self._node.outbox.enqueue_action, self._bump)

    async def _bump(self) -> None:
        await self._node.redis.incr(VERSION_KEY)

    def removed(self, record: JobRecord) -> None:
        self._node.outbox.enqueue_action(functools.partial(self._mark_removed, job_ref(record)))

    async def _mark_removed(self, ref: str) -> None:
        await self._node.redis.set(f"agw:sched:removed:{ref}", self._node.instance_id, ex=CLAIM_SECONDS)

    async def claim(self, record: JobRecord, firing: str) -> bool:
        ref, job_id = job_ref(record), record.job_id
        try:
            won = await self._claim(keys=[f"agw:sched:fire:{ref}:{firing}", f"agw:sched:removed:{ref}"],
                                    args=[self._node.instance_id, CLAIM_SECONDS])
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"the cluster store (Redis) is unreachable: {exc}") from exc
        if not won:
            logger.debug("scheduler: job %s at %s is fired by another instance", job_id, firing)
        return bool(won)

    def watch(self, reload: Callable[[], Awaitable[None]]) -> None:
        self._node.spawn(self._watch(reload))

    async def _watch(self, reload: Callable[[], Awaitable[None]]) -> None:
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
                    await reload()
                except OSError:
                    logger.exception("scheduler: could not reload the shared schedules file")
