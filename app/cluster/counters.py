"""The request and token windows of SPEC §19 in Redis, shared by every instance (SPEC §16).

``RedisCounters`` implements ``app.engine.limits.Counters``: one sorted set per counter key
(``agw:rl:<key>``), one member per ``add`` (``<amount>:<instance>:<n>``, scored by its time).

* ``add`` is counted at once in this process and written to Redis in the background: its
  ``ZADD`` goes out in the instance's next outbox pipeline, with the run events queued meanwhile.
  A model call counts four or five keys; a round trip each would double what the gateway spends
  per delta.
* ``total(key, since)`` drops what is not after ``since`` and sums the rest in one Lua script,
  plus this instance's adds not yet in Redis; ``oldest`` likewise (for ``Retry-After``).

Every key expires a day and an hour after its last write (the longest window is a UTC day).
``RateLimiter`` keeps its decisions: the counts are simply the cluster's. Another instance's
adds are seen once written (a round trip later). Redis unreachable → ``total``/``oldest`` raise
``ServiceUnavailable`` (503 before a run starts, ``run.error`` between model calls): limits are
never silently skipped.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

from redis.exceptions import RedisError

from app.cluster.node import ClusterNode
from app.errors import ServiceUnavailable

PREFIX = "agw:rl:"
#: a day (the daily-tokens window) and an hour of clock skew
KEY_TTL_SECONDS = 90_000

_TOTAL = """
redis.call('zremrangebyscore', KEYS[1], '-inf', ARGV[1])
local sum = 0
for _, member in ipairs(redis.call('zrange', KEYS[1], 0, -1)) do
  sum = sum + tonumber(string.match(member, '^(%d+):'))
end
return sum
"""

#: one add: (Redis key, member, time, amount)
_Add = tuple[str, str, float, int]


class RedisCounters:
    """``Counters`` on the cluster's Redis — see the module docstring."""

    def __init__(self, node: ClusterNode) -> None:
        self._node = node
        self._ids = itertools.count()
        #: adds not yet written, oldest first (they are written, and confirmed, in this order)
        self._unsent: deque[_Add] = deque()
        self._total: Any = node.redis.register_script(_TOTAL)  # sent by SHA (EVALSHA)

    async def add(self, key: str, amount: int, now: float) -> None:
        add = (PREFIX + key, f"{int(amount)}:{self._node.instance_id}:{next(self._ids)}", now, int(amount))
        while self._unsent and self._unsent[0][2] < now - KEY_TTL_SECONDS:  # given up during a long outage
            self._unsent.popleft()
        self._unsent.append(add)

        def write(pipe: Any) -> None:
            pipe.zadd(add[0], {add[1]: add[2]})
            pipe.expire(add[0], KEY_TTL_SECONDS)

        self._node.outbox.enqueue_ops(write, self._written)

    def _written(self) -> None:
        if self._unsent:
            self._unsent.popleft()

    def _unwritten(self, key: str, since: float) -> list[_Add]:
        name = PREFIX + key
        return [add for add in self._unsent if add[0] == name and add[2] > since]

    async def total(self, key: str, since: float) -> int:
        try:
            stored = int(await self._total(keys=[PREFIX + key], args=[repr(since)]))
        except (RedisError, OSError) as exc:
            raise _unreachable(exc) from exc
        return stored + sum(add[3] for add in self._unwritten(key, since))

    async def oldest(self, key: str, since: float) -> float | None:
        try:
            found = await self._node.redis.zrangebyscore(PREFIX + key, f"({since!r}", "+inf", start=0, num=1,
                                                         withscores=True)
        except (RedisError, OSError) as exc:
            raise _unreachable(exc) from exc
        times = [float(found[0][1])] if found else []
        times += [add[2] for add in self._unwritten(key, since)]
        return min(times) if times else None


def _unreachable(exc: BaseException) -> ServiceUnavailable:
    return ServiceUnavailable(f"the cluster store (Redis) is unreachable; limits cannot be checked: {exc}")
