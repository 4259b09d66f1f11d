"""One gateway instance's membership of a cluster on Redis (SPEC §16).

``ClusterNode`` is built in the gateway lifespan when ``agent.cluster.redis-url`` is set. It
owns the redis-py asyncio client and, per instance:

* a heartbeat (``agw:inst:<id>``, renewed every ``lease/4`` with a TTL of ``3/4 lease``) and the
  set of the runs it owns (``agw:inst:<id>:runs``);
* its live-run counts (``agw:inst:<id>:live``: ``*`` and ``u:<owner>``, expiring with the
  heartbeat): ``admit_run`` checks ``agent.limits.concurrent-runs`` and
  ``agent.limits.user.concurrent-runs`` against the sum over every live instance and registers
  the run, in one Lua script; a dead instance's counts expire with it;
* a command inbox (Redis list ``agw:inbox:<id>``, read with ``BLPOP``): other instances send
  ``submit`` / ``interrupt`` / ``describe`` for runs this instance owns and get the answer on a
  reply list — the same envelopes as on one instance;
* the run records: ``agw:run:<runId>`` (hash: owner, chat, agent, instance, status, times,
  outcome), ``agw:owner:<owner>:runs`` (a sorted set, the index of ``GET /api/ap/runs``) and
  ``agw:run:<runId>:events`` (a Stream: one entry per batch the publisher wrote, its id the
  ``seq`` of the batch's last event, the events' JSON one per line; bounded, expiring
  ``retention-seconds`` after the run ends);
* the chat lease (``agw:chat:<chatId>:lease``, TTL ``2 × lease``): one run per chat across the
  cluster; its token names the instance, so the reaper can take over a dead instance's lease;
* the reaper (every ``lease/8``): runs of an instance whose heartbeat expired end for their
  watchers with ``run.error`` ``instance_lost`` (and their chat file gets the matching end
  line) — exactly once, whoever notices first, and only by an instance that has itself been
  connected for a whole heartbeat TTL (after a Redis outage every heartbeat looks expired);
* the outbox (``outbox.py``): run events, run ends, slot releases and counter updates are queued
  in order and written by one publisher task, each drain in one pipeline (retried while Redis is
  away);
* health: a lost Redis connection is reported by ``/healthz`` and new runs are refused (503)
  until it is back; the client reconnects by itself.

The key names and Lua scripts are in ``keys.py``.

Timing: an instance that dies is noticed at most ``3/4 + 1/8`` of ``lease-seconds`` after its
last heartbeat, so its watchers hear ``instance_lost`` within the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections import Counter
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import orjson
import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from app.cluster.keys import (
    ADMIT,
    ENDED_STATUSES,
    INSTANCES,
    MAX_CONNECTIONS,
    OWNER_INDEX_MAX,
    OWNER_INDEX_SECONDS,
    REFUSED_GLOBAL,
    REFUSED_USER,
    RELEASE,
    RENEW,
    REREGISTER,
    TAKE_OVER,
    active_key,
    chat_lease_key,
    encode_fields,
    events_key,
    run_key,
    safe_url,
)
from app.cluster.outbox import Outbox
from app.config import ClusterSettings
from app.contract.events import now_ms
from app.errors import GatewayError, ServiceUnavailable

logger = logging.getLogger(__name__)

CommandHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]

__all__ = ["REFUSED_GLOBAL", "REFUSED_USER", "ClusterNode", "CommandHandler"]



class ClusterNode:
    """This instance in the cluster (see the module docstring)."""

    def __init__(self, settings: ClusterSettings, retention_seconds: float) -> None:
        self.settings = settings
        self.instance_id = f"{settings.instance_name or 'gw'}-{uuid.uuid4().hex[:10]}"
        self.retention_seconds = retention_seconds
        # a command waits for a free connection rather than failing; every remote watcher holds one while
        # it blocks on its stream (XREAD), so the bound is generous (Redis's own default maxclients is 10000)
        # a connection found dead (Redis restarted) is replaced and the command sent again: every command and
        # script here may run twice without harm (ids, members and written values are fixed by the caller)
        pool = redis.BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=MAX_CONNECTIONS, timeout=20, decode_responses=False,
            health_check_interval=5, socket_keepalive=True, socket_connect_timeout=5,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 3))
        # redis-py's annotations are loose (bytes | str for everything): treat replies as bytes here
        self.redis: Any = redis.Redis.from_pool(pool)
        # sent by SHA (EVALSHA), loaded on first use
        self._release: Any = self.redis.register_script(RELEASE)
        self._renew: Any = self.redis.register_script(RENEW)
        self._take_over: Any = self.redis.register_script(TAKE_OVER)
        self._admit: Any = self.redis.register_script(ADMIT)
        self._reregister: Any = self.redis.register_script(REREGISTER)
        #: called (through the outbox, after what is queued) when this instance's heartbeat key was gone at a
        #: beat: Redis lost its data (a restart without persistence), or this instance was away longer than
        #: its heartbeat lives; the directory registers its live runs again where their records are gone
        self.on_registration_lost: Callable[[], Awaitable[None]] | None = None
        self._beaten = False
        #: the event loop this instance runs in (set by ``start``), for callbacks from worker threads
        self.loop: asyncio.AbstractEventLoop | None = None
        self.healthy = False
        self.last_error: str | None = None
        self._healthy_since: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._answering: set[asyncio.Task[None]] = set()
        self._handler: CommandHandler | None = None
        self._on_lost_run: Callable[[str, dict[str, str]], Awaitable[None]] | None = None
        #: this instance's runs holding a slot of the cluster-wide caps: run id → owner
        self._live: dict[str, str] = {}
        self._live_per_owner: Counter[str] = Counter()
        #: owners whose count dropped to zero since the counts were last written, and whether a write is queued
        self._zeroed: set[str] = set()
        self._counts_queued = False
        #: count writes go out one at a time, so Redis always ends with this instance's latest counts
        self._counts_lock = asyncio.Lock()
        #: run events, run ends, slot releases and counter updates, written in order by one task
        self.outbox = Outbox(self.redis, self._counts_lock, self._unhealthy)

    # -- timing ---------------------------------------------------------------------------

    @property
    def lease_ms(self) -> int:
        return int(self.settings.lease_seconds * 1000)

    @property
    def beat_seconds(self) -> float:
        return max(self.settings.lease_seconds / 4, 0.02)

    @property
    def beat_ttl_ms(self) -> int:
        return max(int(self.lease_ms * 3 / 4), 10)

    @property
    def chat_lease_ms(self) -> int:
        return 2 * self.lease_ms

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, handler: CommandHandler,
                    on_lost_run: Callable[[str, dict[str, str]], Awaitable[None]]) -> None:
        self._handler = handler
        self._on_lost_run = on_lost_run
        self.loop = asyncio.get_running_loop()
        await self._beat()
        for coro in (self._heartbeat_loop(), self._inbox_loop(), self._reaper_loop(), self.outbox.run()):
            self.spawn(coro)
        logger.info("cluster: instance %s joined via %s", self.instance_id, safe_url(self.settings.redis_url))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` until ``stop()`` (a background loop of this instance)."""
        self._tasks.append(asyncio.create_task(coro))

    async def stop(self) -> None:
        # let the publisher write what the runs logged before shutdown (bounded)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.outbox.join(), timeout=max(2.0, self.settings.lease_seconds))
        for task in [*self._tasks, *self._answering]:
            task.cancel()
        for task in [*self._tasks, *self._answering]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(f"agw:inst:{self.instance_id}", f"agw:inst:{self.instance_id}:live")
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()

    def check_healthy(self) -> None:
        """Refuse new work while Redis is unreachable (503, not half-working)."""
        if not self.healthy:
            raise ServiceUnavailable(f"the cluster store (Redis) is unreachable: {self.last_error or 'not connected'}")

    def _unhealthy(self, exc: BaseException) -> None:
        if self.healthy or self.last_error is None:
            logger.error("cluster: Redis unreachable: %s", exc)
        self.healthy, self.last_error, self._healthy_since = False, str(exc) or type(exc).__name__, None

    async def _beat(self) -> None:
        """Heartbeat, and this instance's live counts rewritten whole (they survive a Redis restart)."""
        live = f"agw:inst:{self.instance_id}:live"
        try:
            async with self._counts_lock, self.redis.pipeline(transaction=True) as pipe:
                pipe.exists(f"agw:inst:{self.instance_id}")
                pipe.set(f"agw:inst:{self.instance_id}", now_ms(), px=self.beat_ttl_ms)
                pipe.sadd(INSTANCES, self.instance_id)
                pipe.delete(live)
                pipe.hset(live, mapping={"*": len(self._live),
                                         **{f"u:{owner}": n for owner, n in self._live_per_owner.items()}})
                pipe.pexpire(live, self.beat_ttl_ms)
                replies = await pipe.execute()
        except (RedisError, OSError) as exc:
            self._unhealthy(exc)
            return
        if not replies[0] and self._beaten and self.on_registration_lost is not None:
            logger.warning("cluster: this instance's heartbeat was gone from Redis (restarted without its data, "
                           "or this instance was away); registering its live runs again")
            self.outbox.enqueue_action(self.on_registration_lost)
        self._beaten = True
        if not self.healthy:
            if self.last_error is not None:
                logger.warning("cluster: Redis reachable again")
            self._healthy_since = time.monotonic()
        self.healthy, self.last_error = True, None

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.beat_seconds)
            await self._beat()

    def _settled(self) -> bool:
        """Connected for a whole heartbeat TTL: every live instance has beaten since."""
        return self._healthy_since is not None and \
            time.monotonic() - self._healthy_since >= self.beat_ttl_ms / 1000 + self.beat_seconds

    # -- admission and run records ----------------------------------------------------------

    async def admit_run(self, run_id: str, owner: str, chat_id: str, started_at: int, fields: dict[str, Any],
                        *, user_cap: int, global_cap: int) -> tuple[int, int]:
        """Count the run against the cluster-wide caps and register it, in one step.

        Returns ``(0, 0)`` when admitted, else ``(REFUSED_USER | REFUSED_GLOBAL, live runs counted)``.
        Redis unreachable → ``ServiceUnavailable``."""
        record = {**encode_fields(fields), "instance": self.instance_id, "status": "running"}
        async with self._counts_lock:
            self._hold(run_id, owner)
            argv: list[Any] = [self.instance_id, owner, len(self._live), self._live_per_owner[owner], global_cap,
                               user_cap, self.beat_ttl_ms, run_id, chat_id, started_at, OWNER_INDEX_SECONDS,
                               OWNER_INDEX_MAX]
            for name, value in record.items():
                argv += [name, value]
            try:
                code, counted = await self._admit(keys=[], args=argv)
            except BaseException as exc:
                self._unhold(run_id)
                # the script may have run before the reply was lost: undo it once Redis answers
                self.outbox.enqueue_action(functools.partial(self._discard_run, run_id, owner, chat_id))
                self._queue_counts()
                if isinstance(exc, RedisError | OSError):
                    self._unhealthy(exc)
                    raise ServiceUnavailable(f"the cluster store (Redis) is unreachable: {exc}") from exc
                raise
            if code:
                self._unhold(run_id)
        return int(code), int(counted)

    def release_run(self, run_id: str) -> None:
        """The run ended: its slot is free on this instance now, and in Redis once written (idempotent)."""
        if self._unhold(run_id) is not None:
            self._queue_counts()

    def _hold(self, run_id: str, owner: str) -> None:
        self._live[run_id] = owner
        self._live_per_owner[owner] += 1

    def _unhold(self, run_id: str) -> str | None:
        owner = self._live.pop(run_id, None)
        if owner is not None:
            self._live_per_owner[owner] -= 1
            if self._live_per_owner[owner] <= 0:
                del self._live_per_owner[owner]
                self._zeroed.add(owner)
        return owner

    def _queue_counts(self) -> None:
        if not self._counts_queued:
            self._counts_queued = True
            self.outbox.enqueue_ops(self._counts_ops, locked=True)

    def _counts_ops(self, pipe: Any) -> None:
        """This instance's counts as they are now (written under the counts lock): set, then drop the zeros
        (in between a dropped owner still shows its old count — on the safe side)."""
        self._counts_queued = False
        live = f"agw:inst:{self.instance_id}:live"
        pipe.hset(live, mapping={"*": len(self._live), **{f"u:{o}": n for o, n in self._live_per_owner.items()}})
        zeroed = [f"u:{owner}" for owner in self._zeroed if owner not in self._live_per_owner]
        self._zeroed.clear()
        if zeroed:
            pipe.hdel(live, *zeroed)
        pipe.pexpire(live, self.beat_ttl_ms)

    async def _discard_run(self, run_id: str, owner: str, chat_id: str) -> None:
        """Forget a run whose admission did not complete."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(run_key(run_id))
            pipe.srem(f"agw:inst:{self.instance_id}:runs", run_id)
            pipe.zrem(f"agw:owner:{owner}:runs", run_id)
            await self._release(keys=[active_key(chat_id)], args=[run_id], client=pipe)
            await pipe.execute()

    async def register_again(self, run_id: str, owner: str, chat_id: str, started_at: int, fields: dict[str, Any],
                             events: list[tuple[int, bytes]]) -> bool:
        """A live run of this instance whose record Redis lost: its record, its place in this instance's runs,
        the owner's index and the chat's active run, and its Stream from ``events``. False (nothing written)
        when the record is there."""
        record = {**encode_fields(fields), "instance": self.instance_id, "status": "running"}
        argv: list[Any] = [run_id, started_at, OWNER_INDEX_SECONDS, len(record)]
        for name, value in record.items():
            argv += [name, value]
        for start in range(0, len(events), 200):  # one Stream entry per 200 events, its id the seq of its last
            chunk = events[start:start + 200]
            argv += [f"{chunk[-1][0]}-0", b"\n".join(data for _, data in chunk)]
        keys = [run_key(run_id), f"agw:inst:{self.instance_id}:runs", f"agw:owner:{owner}:runs", active_key(chat_id),
                events_key(run_id)]
        return bool(await self._reregister(keys=keys, args=argv))

    def end_run_ops(self, pipe: Any, run_id: str, fields: dict[str, Any]) -> None:
        """The run ended: its record says how, and it and its Stream expire after the retention. ``fields``
        are the whole record (a record Redis lost in between is written whole again, never in part)."""
        seconds = max(int(self.retention_seconds), 1)
        pipe.hset(run_key(run_id), mapping={**encode_fields(fields), "instance": self.instance_id})
        pipe.expire(run_key(run_id), seconds)
        pipe.expire(events_key(run_id), seconds)
        pipe.srem(f"agw:inst:{self.instance_id}:runs", run_id)
        if "owner" in fields and "startedAt" in fields:  # listed again if Redis lost the index entry meanwhile
            pipe.zadd(f"agw:owner:{fields['owner']}:runs", {run_id: int(fields["startedAt"])})

    async def run_record(self, run_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(run_key(run_id))
        if not raw:
            return None
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def active_run_of_chat(self, chat_id: str) -> str | None:
        """The chat's newest run, live or not (the pointer is not cleared when a run ends)."""
        value = await self.redis.get(active_key(chat_id))
        return value.decode() if value else None

    async def runs_of(self, owner: str) -> list[dict[str, str]]:
        """Every run record of ``owner`` the cluster still keeps (live and retained)."""
        index = f"agw:owner:{owner}:runs"
        run_ids = [raw.decode() for raw in await self.redis.zrange(index, 0, -1)]
        if not run_ids:
            return []
        async with self.redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.hgetall(run_key(run_id))
            replies = await pipe.execute()
        found, gone = [], []
        for run_id, raw in zip(run_ids, replies, strict=True):
            if raw:
                found.append({k.decode(): v.decode() for k, v in raw.items()})
            else:
                gone.append(run_id)
        if gone:  # expired records: keep the index small
            await self.redis.zrem(index, *gone)
        return [record for record in found if record.get("owner") == owner]

    async def instance_alive(self, instance_id: str) -> bool:
        return bool(await self.redis.exists(f"agw:inst:{instance_id}"))

    # -- event streams ------------------------------------------------------------------

    async def last_event(self, run_id: str) -> dict[str, Any] | None:
        """The last event in the run's Stream (its wire dict), if any."""
        entries = await self.redis.xrevrange(events_key(run_id), count=1)
        if not entries:
            return None
        wire: dict[str, Any] = orjson.loads(entries[0][1][b"d"].rsplit(b"\n", 1)[-1])
        return wire

    async def read_events(self, run_id: str, after: int) -> AsyncGenerator[tuple[int, dict[str, Any]], None]:
        """``(seq, wire dict)`` of the run's stream after ``after``, then live until the terminal event.
        A Redis outage is waited out (bounded), then reported as ``ServiceUnavailable``."""
        key = events_key(run_id)
        last = f"{after}-0" if after > 0 else "0-0"  # an entry's id is the seq of its last event
        failures = 0
        missing_since: float | None = None
        while True:
            try:
                reply = await self.redis.xread({key: last}, count=500, block=1000)
                if not reply:
                    record = await self.run_record(run_id)
                    if record is None:
                        # expired while we waited — or Redis lost it, and its instance registers it again at
                        # its next heartbeat: given up only once it stays gone for a lease
                        missing_since = missing_since or time.monotonic()
                        if time.monotonic() - missing_since > self.settings.lease_seconds:
                            return
                        continue
                    missing_since = None
                    if record.get("status") in ENDED_STATUSES and int(record.get("lastSeq") or 0) <= after:
                        return  # ended, and its terminal event is at or before ``after``: nothing more comes
            except (RedisError, OSError) as exc:
                failures += 1
                if failures > 60:
                    raise ServiceUnavailable(f"the cluster store (Redis) is unreachable: {exc}") from exc
                await asyncio.sleep(0.5)
                continue
            failures = 0
            for _, entries in reply or ():
                for entry_id, values in entries:
                    last = entry_id.decode()
                    for line in values[b"d"].split(b"\n"):
                        wire = orjson.loads(line)
                        seq = int(wire["seq"])
                        if seq <= after:
                            continue
                        after = seq
                        yield seq, wire
                        if wire.get("type") in ("run.complete", "run.error", "run.cancel"):
                            return

    async def last_seq(self, run_id: str) -> int:
        entries = await self.redis.xrevrange(events_key(run_id), count=1)
        return int(entries[0][0].split(b"-", 1)[0]) if entries else 0

    # -- chat lease -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def chat_lease(self, chat_id: str) -> AsyncIterator[None]:
        """One run per chat across the cluster: wait for the chat's lease, renew it, release it.
        While Redis is unreachable the wait goes on (the run can still be interrupted). A renewal that
        finds the lease held by another instance cancels the task holding it (fencing)."""
        key, token = chat_lease_key(chat_id), f"{self.instance_id}/{uuid.uuid4().hex}"
        delay = 0.01
        while True:
            try:
                if await self.redis.set(key, token, nx=True, px=self.chat_lease_ms):
                    break
            except (RedisError, OSError) as exc:
                self._unhealthy(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.25)

        holder = asyncio.current_task()

        async def renew() -> None:
            while True:
                await asyncio.sleep(self.beat_seconds)
                try:
                    renewed = await self._renew(keys=[key], args=[token, self.chat_lease_ms])
                except (RedisError, OSError):
                    continue
                if not renewed and holder is not None:
                    # fencing: another instance holds the chat now (this one was declared lost while it
                    # was away, and the chat went on there): the run here must not go on beside it
                    logger.warning("cluster: the lease of chat %s is held by another instance; cancelling "
                                   "this instance's run of it", chat_id)
                    holder.cancel()
                    return

        renewer = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(RedisError, OSError):
                await asyncio.shield(self._release(keys=[key], args=[token]))

    async def take_over_chat_lease(self, chat_id: str, dead_instance: str) -> str | None:
        """The chat's lease for the reaper, when it is free or held by ``dead_instance``: its token."""
        token = f"{self.instance_id}/{uuid.uuid4().hex}"
        taken = await self._take_over(keys=[chat_lease_key(chat_id)],
                                      args=[f"{dead_instance}/", token, self.chat_lease_ms])
        return token if taken else None

    async def release_chat_lease(self, chat_id: str, token: str) -> None:
        await self._release(keys=[chat_lease_key(chat_id)], args=[token])

    # -- commands between instances --------------------------------------------------------

    async def call(self, instance_id: str, op: str, payload: dict[str, Any], timeout_s: float = 10.0) -> Any:
        """Ask ``instance_id`` to run ``op`` and wait for its answer (``GatewayError`` re-raised here)."""
        reply_key = f"agw:reply:{uuid.uuid4().hex}"
        message = orjson.dumps({"op": op, "payload": payload, "reply": reply_key})
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(f"agw:inbox:{instance_id}", message)
                pipe.expire(f"agw:inbox:{instance_id}", max(int(timeout_s) * 2, 5))
                await pipe.execute()
            answer = await self.redis.blpop([reply_key], timeout=timeout_s)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable(f"the cluster store (Redis) is unreachable: {exc}") from exc
        if answer is None:
            raise ServiceUnavailable(f"instance {instance_id} did not answer {op} in time")
        data = orjson.loads(answer[1])
        if "error" in data:
            error = GatewayError(data["error"]["message"])
            error.code, error.status = data["error"]["code"], data["error"]["status"]
            raise error
        return data["result"]

    async def _inbox_loop(self) -> None:
        inbox = f"agw:inbox:{self.instance_id}"
        while True:
            try:
                item = await self.redis.blpop([inbox], timeout=1)
            except (RedisError, OSError):
                await asyncio.sleep(0.2)
                continue
            if item is None:
                continue
            task = asyncio.create_task(self._answer(orjson.loads(item[1])))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    async def _answer(self, message: dict[str, Any]) -> None:
        assert self._handler is not None
        try:
            reply: dict[str, Any] = {"result": await self._handler(message["op"], message["payload"])}
        except GatewayError as exc:
            reply = {"error": {"message": exc.message, "code": exc.code, "status": exc.status}}
        except Exception as exc:  # answer the caller rather than leave it waiting
            logger.exception("cluster: command %s failed", message.get("op"))
            reply = {"error": {"message": f"internal error: {type(exc).__name__}", "code": 5000, "status": 500}}
        with contextlib.suppress(RedisError, OSError):
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.rpush(message["reply"], orjson.dumps(reply))
                pipe.expire(message["reply"], 30)
                await pipe.execute()

    # -- lost instances -------------------------------------------------------------------------

    async def _reaper_loop(self) -> None:
        interval = max(self.settings.lease_seconds / 8, 0.02)
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap()
            except (RedisError, OSError) as exc:
                logger.debug("cluster: reaper skipped a round: %s", exc)
            except Exception:  # keep reaping: a lost run left now is retried after its claim expires
                logger.exception("cluster: the reaper failed")

    async def reap(self) -> None:
        """End the runs of every instance whose heartbeat expired (once cluster-wide)."""
        assert self._on_lost_run is not None
        if not self._settled():
            return
        for raw in await self.redis.smembers(INSTANCES):
            instance = raw.decode()
            if instance == self.instance_id or await self.instance_alive(instance):
                continue
            for run_raw in await self.redis.smembers(f"agw:inst:{instance}:runs"):
                run_id = run_raw.decode()
                if not await self.redis.set(f"agw:reap:{run_id}", self.instance_id, nx=True, ex=300):
                    continue
                record = await self.run_record(run_id)
                if record is not None and record.get("status") == "running":
                    logger.warning("cluster: instance %s is gone; ending its run %s", instance, run_id)
                    await self._on_lost_run(run_id, record)
                await self.redis.srem(f"agw:inst:{instance}:runs", run_id)
            if not await self.redis.scard(f"agw:inst:{instance}:runs"):
                await self.redis.srem(INSTANCES, instance)
                await self.redis.delete(f"agw:inbox:{instance}")
