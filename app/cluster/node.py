"""One gateway instance's membership of a cluster on Redis (SPEC §16).

``ClusterNode`` is built in the gateway lifespan when ``agent.cluster.redis-url`` is set. It
owns the redis-py asyncio client and, per instance:

* a heartbeat (``agw:inst:<id>`` with a TTL of ``lease-seconds``) and the set of the runs it
  owns (``agw:inst:<id>:runs``);
* a command inbox (Redis list ``agw:inbox:<id>``, read with ``BLPOP``): other instances send
  ``submit`` / ``interrupt`` / ``describe`` for runs this instance owns and get the answer on a
  reply list — the same envelopes as on one instance;
* the run records: ``agw:run:<runId>`` (hash: owner, chat, agent, instance, status, times,
  outcome) and ``agw:run:<runId>:events`` (a Stream, one entry per event, id ``<seq>-0``,
  bounded, expiring ``retention-seconds`` after the run ends);
* the chat lease (``agw:chat:<chatId>:lease``): one run per chat across the cluster;
* the reaper: runs of an instance whose heartbeat expired end for their watchers with
  ``run.error`` ``instance_lost`` (and their chat file gets the matching end line) — exactly
  once, whoever notices first;
* health: a lost Redis connection is reported by ``/healthz`` and new runs are refused (503)
  until it is back; the client reconnects by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import redis.asyncio as redis
from redis.exceptions import RedisError

from app.config import ClusterSettings
from app.contract.events import now_ms
from app.errors import GatewayError, ServiceUnavailable

logger = logging.getLogger(__name__)

#: bound of one run's event stream (approximate trimming)
STREAM_MAXLEN = 100_000
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_RENEW = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"

CommandHandler = Callable[[str, dict[str, Any]], Awaitable[Any]]


def run_key(run_id: str) -> str:
    return f"agw:run:{run_id}"


def events_key(run_id: str) -> str:
    return f"agw:run:{run_id}:events"


class ClusterNode:
    """This instance in the cluster (see the module docstring)."""

    def __init__(self, settings: ClusterSettings, retention_seconds: float) -> None:
        self.settings = settings
        self.instance_id = f"{settings.instance_name or 'gw'}-{uuid.uuid4().hex[:10]}"
        self.retention_seconds = retention_seconds
        # redis-py's annotations are loose (bytes | str for everything): treat replies as bytes here
        self.redis: Any = redis.Redis.from_url(settings.redis_url, decode_responses=False,
                                                       health_check_interval=5, socket_keepalive=True)
        self.healthy = False
        self.last_error: str | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._handler: CommandHandler | None = None
        self._on_lost_run: Callable[[str, dict[str, Any]], Awaitable[None]] | None = None
        self._outbox: asyncio.Queue[Any] = asyncio.Queue()

    @property
    def lease_ms(self) -> int:
        return int(self.settings.lease_seconds * 1000)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self, handler: CommandHandler,
                    on_lost_run: Callable[[str, dict[str, Any]], Awaitable[None]]) -> None:
        self._handler = handler
        self._on_lost_run = on_lost_run
        await self._beat()
        for coro in (self._heartbeat_loop(), self._inbox_loop(), self._reaper_loop(), self._publisher_loop()):
            self._tasks.append(asyncio.create_task(coro))
        logger.info("cluster: instance %s joined via %s", self.instance_id, _safe_url(self.settings.redis_url))

    async def stop(self) -> None:
        for _ in range(100):  # let the publisher write what the runs logged before shutdown
            if self._outbox.empty():
                break
            await asyncio.sleep(0.02)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(RedisError, OSError):
            await self.redis.delete(f"agw:inst:{self.instance_id}")
        with contextlib.suppress(RedisError, OSError):
            await self.redis.aclose()

    def check_healthy(self) -> None:
        """Refuse new work while Redis is unreachable (503, not half-working)."""
        if not self.healthy:
            raise ServiceUnavailable(f"the cluster store (Redis) is unreachable: {self.last_error or 'not connected'}")

    async def _beat(self) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                pipe.set(f"agw:inst:{self.instance_id}", now_ms(), px=self.lease_ms)
                pipe.sadd("agw:instances", self.instance_id)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            if self.healthy or self.last_error is None:
                logger.error("cluster: Redis unreachable: %s", exc)
            self.healthy, self.last_error = False, str(exc)
            return
        if not self.healthy and self.last_error is not None:
            logger.warning("cluster: Redis reachable again")
        self.healthy, self.last_error = True, None

    async def _heartbeat_loop(self) -> None:
        interval = max(self.settings.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            await self._beat()

    # -- run records ------------------------------------------------------------------------

    async def register_run(self, run_id: str, fields: dict[str, Any]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(run_key(run_id), mapping={**_encode(fields), "instance": self.instance_id, "status": "running"})
            pipe.sadd(f"agw:inst:{self.instance_id}:runs", run_id)
            pipe.set(f"agw:chat:{fields['chatId']}:active", run_id)
            await pipe.execute()

    async def end_run(self, run_id: str, chat_id: str, fields: dict[str, Any]) -> None:
        seconds = max(int(self.retention_seconds), 1)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(run_key(run_id), mapping=_encode(fields))
            pipe.expire(run_key(run_id), seconds)
            pipe.expire(events_key(run_id), seconds)
            pipe.srem(f"agw:inst:{self.instance_id}:runs", run_id)
            await pipe.execute()
        await self.redis.eval(_RELEASE, 1, f"agw:chat:{chat_id}:active", run_id)

    async def run_record(self, run_id: str) -> dict[str, str] | None:
        raw = await self.redis.hgetall(run_key(run_id))
        if not raw:
            return None
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def active_run_of_chat(self, chat_id: str) -> str | None:
        value = await self.redis.get(f"agw:chat:{chat_id}:active")
        return value.decode() if value else None

    async def runs_of(self, owner: str) -> list[dict[str, str]]:
        """Every run record of ``owner`` the cluster still keeps (live and retained)."""
        found = []
        async for key in self.redis.scan_iter(match=b"agw:run:*", count=500):
            if key.endswith(b":events"):
                continue
            record = await self.run_record(key.decode().removeprefix("agw:run:"))
            if record and record.get("owner") == owner:
                found.append(record)
        return found

    async def instance_alive(self, instance_id: str) -> bool:
        return bool(await self.redis.exists(f"agw:inst:{instance_id}"))

    # -- event streams ------------------------------------------------------------------

    def enqueue(self, item: tuple[str, int, bytes] | tuple[str, Callable[[], Awaitable[None]]]) -> None:
        """Queue an event ``(run_id, seq, wire json)`` — or a follow-up action ``(run_id, coroutine
        factory)`` — for Redis, in order; the publisher drains whatever is queued in one pipeline."""
        self._outbox.put_nowait(item)

    async def _publisher_loop(self) -> None:
        while True:
            items = [await self._outbox.get()]
            while not self._outbox.empty():
                items.append(self._outbox.get_nowait())
            batch: dict[str, list[tuple[int, bytes]]] = {}
            for item in items:
                if len(item) == 3:
                    run_id, seq, data = item
                    batch.setdefault(run_id, []).append((seq, data))
                    continue
                await self._flush(batch)  # events before an action are in Redis first
                batch = {}
                await self._retrying(item[1])
            await self._flush(batch)

    async def _flush(self, batch: dict[str, list[tuple[int, bytes]]]) -> None:
        for run_id, events in batch.items():
            await self._retrying(functools.partial(self.publish, run_id, events))

    async def _retrying(self, action: Callable[[], Awaitable[None]]) -> None:
        delay = 0.05
        for _ in range(200):  # bounded: about a minute of Redis being away
            try:
                await action()
                return
            except (RedisError, OSError) as exc:
                self.healthy, self.last_error = False, str(exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
        logger.error("cluster: gave up writing to Redis after repeated failures: %s", self.last_error)


    async def publish(self, run_id: str, batch: list[tuple[int, bytes]]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for seq, data in batch:
                pipe.xadd(events_key(run_id), {b"d": data}, id=f"{seq}-0", maxlen=STREAM_MAXLEN, approximate=True)
            await pipe.execute()

    async def read_events(self, run_id: str, after: int) -> AsyncIterator[tuple[int, bytes]]:
        """``(seq, wire json)`` of the run's stream after ``after``, then live until the terminal event."""
        key = events_key(run_id)
        last = f"{after}-0" if after > 0 else "0-0"
        while True:
            reply = await self.redis.xread({key: last}, count=500, block=1000)
            if not reply:
                record = await self.run_record(run_id)
                if record is None:
                    return  # expired while we waited
                continue
            for _, entries in reply:
                for entry_id, values in entries:
                    seq = int(entry_id.split(b"-", 1)[0])
                    last = entry_id.decode()
                    data = values[b"d"]
                    yield seq, data
                    if orjson.loads(data).get("type") in ("run.complete", "run.error", "run.cancel"):
                        return

    async def last_seq(self, run_id: str) -> int:
        entries = await self.redis.xrevrange(events_key(run_id), count=1)
        return int(entries[0][0].split(b"-", 1)[0]) if entries else 0

    # -- chat lease -----------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def chat_lease(self, chat_id: str) -> AsyncIterator[None]:
        """One run per chat across the cluster: wait for the chat's lease, renew it, release it."""
        key, token = f"agw:chat:{chat_id}:lease", uuid.uuid4().hex
        delay = 0.02
        while not await self.redis.set(key, token, nx=True, px=self.lease_ms):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.5)

        async def renew() -> None:
            while True:
                await asyncio.sleep(max(self.settings.lease_seconds / 3, 0.05))
                with contextlib.suppress(RedisError, OSError):
                    await self.redis.eval(_RENEW, 1, key, token, self.lease_ms)

        renewer = asyncio.create_task(renew())
        try:
            yield
        finally:
            renewer.cancel()
            with contextlib.suppress(RedisError, OSError):
                await asyncio.shield(self.redis.eval(_RELEASE, 1, key, token))

    # -- commands between instances --------------------------------------------------------

    async def call(self, instance_id: str, op: str, payload: dict[str, Any], timeout_s: float = 10.0) -> Any:
        """Ask ``instance_id`` to run ``op`` and wait for its answer (``GatewayError`` re-raised here)."""
        reply_key = f"agw:reply:{uuid.uuid4().hex}"
        message = orjson.dumps({"op": op, "payload": payload, "reply": reply_key})
        await self.redis.rpush(f"agw:inbox:{instance_id}", message)
        await self.redis.expire(f"agw:inbox:{instance_id}", max(int(timeout_s) * 2, 5))
        answer = await self.redis.blpop([reply_key], timeout=timeout_s)
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
        listener = redis.Redis(connection_pool=self.redis.connection_pool)
        while True:
            try:
                item = await listener.blpop([inbox], timeout=1)
            except (RedisError, OSError):
                await asyncio.sleep(0.2)
                continue
            if item is None:
                continue
            asyncio.create_task(self._answer(orjson.loads(item[1])))

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
            await self.redis.rpush(message["reply"], orjson.dumps(reply))
            await self.redis.expire(message["reply"], 30)

    # -- lost instances -------------------------------------------------------------------------

    async def _reaper_loop(self) -> None:
        interval = max(self.settings.lease_seconds / 3, 0.05)
        while True:
            await asyncio.sleep(interval)
            with contextlib.suppress(RedisError, OSError):
                await self.reap()

    async def reap(self) -> None:
        """End the runs of every instance whose heartbeat expired (once cluster-wide)."""
        assert self._on_lost_run is not None
        for raw in await self.redis.smembers("agw:instances"):
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
                await self.redis.srem("agw:instances", instance)


def _encode(fields: dict[str, Any]) -> dict[str, str]:
    return {k: v if isinstance(v, str) else orjson.dumps(v).decode() for k, v in fields.items() if v is not None}


def _safe_url(url: str) -> str:
    """The Redis URL without a password (for logs)."""
    if "@" in url:
        scheme, rest = url.split("://", 1) if "://" in url else ("redis", url)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url

