"""Request and token limits (SPEC §19): per model ``limits.rpm|tpm``; per user
``agent.limits.user.rpm|tpm|daily-tokens``.

``RateLimiter`` decides; ``Counters`` counts. Counting is behind the ``Counters`` interface
(``add(key, amount, now)``, ``total(key, since)``, ``oldest(key, since)``) so a cluster (SPEC §16)
backs it with Redis without touching the decisions. ``MemoryCounters`` keeps sliding
windows in this process.

* ``admit(owner, models)`` — before a run starts: raises ``RateLimited`` (HTTP 429 with
  ``Retry-After``) when the user is over a limit, or every candidate model of the agent's first
  call is;
* ``usable(model)`` — whether a provider model is under its own limits (a group skips members
  that are not);
* ``before_call(owner, model)`` — between model calls of a running run: raises ``RateLimited``
  (``run.error`` ``rate_limited``) or counts the request;
* ``after_call(owner, model, tokens)`` — counts the tokens the call used.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Protocol

from app.catalog.definitions import ModelDefinition
from app.config import UserLimitSettings
from app.errors import RateLimited

WINDOW_SECONDS = 60.0


class Counters(Protocol):
    """Async so a cluster can keep the windows in Redis (SPEC §16)."""

    async def add(self, key: str, amount: int, now: float) -> None: ...

    async def total(self, key: str, since: float) -> int: ...

    async def oldest(self, key: str, since: float) -> float | None:
        """When the oldest amount still counted after ``since`` was added (for ``Retry-After``)."""
        ...


class MemoryCounters:
    """Sliding windows in this process: per key, ``(time, amount)`` entries newer than the window.

    Each key also keeps the running sum of its entries, so ``total`` costs the entries it
    drops, not the entries it counts: a busy model's minute or a user's whole day of calls
    is not summed again on every check.
    """

    def __init__(self) -> None:
        self._entries: dict[str, deque[tuple[float, int]]] = {}
        self._sums: dict[str, int] = {}

    async def add(self, key: str, amount: int, now: float) -> None:
        self._entries.setdefault(key, deque()).append((now, amount))
        self._sums[key] = self._sums.get(key, 0) + amount

    def _prune(self, key: str, since: float) -> deque[tuple[float, int]] | None:
        entries = self._entries.get(key)
        if entries is None:
            return None
        dropped = 0
        while entries and entries[0][0] <= since:
            dropped += entries.popleft()[1]
        if not entries:
            del self._entries[key], self._sums[key]
            return None
        if dropped:
            self._sums[key] -= dropped
        return entries

    async def total(self, key: str, since: float) -> int:
        return self._sums[key] if self._prune(key, since) is not None else 0

    async def oldest(self, key: str, since: float) -> float | None:
        entries = self._prune(key, since)
        return entries[0][0] if entries else None


class RateLimiter:
    """The limit decisions of SPEC §19 over a ``Counters`` store."""

    def __init__(self, user: UserLimitSettings, counters: Counters | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._user = user
        self._counters: Counters = counters or MemoryCounters()
        self._clock = clock

    # -- checks -----------------------------------------------------------------------------

    async def _window(self, key: str, limit: int, amount_needed: int, what: str, setting: str) -> None:
        if limit <= 0:
            return
        now = self._clock()
        since = now - WINDOW_SECONDS
        used = await self._counters.total(key, since)
        if used + amount_needed > limit:
            oldest = await self._counters.oldest(key, since) or now
            retry = max(1, math.ceil(oldest + WINDOW_SECONDS - now))
            raise RateLimited(f"rate limited: {what} is over {setting} = {limit} per minute; retry in {retry} s",
                              limit=setting, retry_after_seconds=retry)

    async def _daily(self, owner: str) -> None:
        limit = self._user.daily_tokens
        if limit <= 0:
            return
        now = self._clock()
        used = await self._counters.total(_daily_key(owner, now), _day_start(now) - 1e-6)
        if used >= limit:
            retry = max(1, math.ceil(_day_start(now) + 86400 - now))
            raise RateLimited(f"rate limited: today's tokens are over agent.limits.user.daily-tokens = {limit}",
                              limit="agent.limits.user.daily-tokens", retry_after_seconds=retry)

    async def _check_user(self, owner: str, requests: int) -> None:
        await self._window(f"user:{owner}:req", self._user.rpm, requests, "this user's model calls",
                     "agent.limits.user.rpm")
        await self._window(f"user:{owner}:tok", self._user.tpm, 0 if requests == 0 else 1, "this user's tokens",
                     "agent.limits.user.tpm")
        await self._daily(owner)

    async def _check_model(self, model: ModelDefinition, requests: int) -> None:
        await self._window(f"model:{model.key}:req", model.limits.rpm, requests, f"model {model.key}'s calls",
                     f"models/{model.key}.json limits.rpm")
        await self._window(f"model:{model.key}:tok", model.limits.tpm, 1, f"model {model.key}'s tokens",
                     f"models/{model.key}.json limits.tpm")

    async def usable(self, model: ModelDefinition) -> bool:
        try:
            await self._check_model(model, 1)
        except RateLimited:
            return False
        return True

    async def admit(self, owner: str, model: ModelDefinition | None, members: Iterable[ModelDefinition] = ()) -> None:
        """Before a run starts: the user's limits, then the model (a group: any member) must be usable."""
        await self._check_user(owner, 1)
        if model is None:
            return
        await self._check_model(model, 1)  # the group's own limits (a plain model: its limits)
        candidates = list(members) or [model]
        if model.group is not None and not any([await self.usable(member) for member in candidates]):
            await self._check_model(candidates[0], 1)  # raises with that member's reason

    async def before_call(self, owner: str, group: ModelDefinition, model: ModelDefinition) -> None:
        """A model call is about to start: check, then count it (the group's and the member's)."""
        await self._check_user(owner, 1)
        if group.key != model.key:
            await self._check_model(group, 1)
        await self._check_model(model, 1)
        now = self._clock()
        await self._counters.add(f"user:{owner}:req", 1, now)
        await self._counters.add(f"model:{model.key}:req", 1, now)
        if group.key != model.key:
            await self._counters.add(f"model:{group.key}:req", 1, now)

    async def after_call(self, owner: str, group: ModelDefinition, model: ModelDefinition, tokens: int) -> None:
        if tokens <= 0:
            return
        now = self._clock()
        await self._counters.add(f"user:{owner}:tok", tokens, now)
        await self._counters.add(f"model:{model.key}:tok", tokens, now)
        if group.key != model.key:
            await self._counters.add(f"model:{group.key}:tok", tokens, now)
        if self._user.daily_tokens > 0:
            await self._counters.add(_daily_key(owner, now), tokens, now)


def _day_start(now: float) -> float:
    day = datetime.fromtimestamp(now, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def _daily_key(owner: str, now: float) -> str:
    return f"user:{owner}:day:{datetime.fromtimestamp(now, UTC):%Y-%m-%d}"
