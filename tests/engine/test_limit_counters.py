"""``MemoryCounters``: the running sums agree with counting every entry again, at every step."""

from __future__ import annotations

import random

from app.engine.limits import MemoryCounters


def brute_total(log: list[tuple[str, float, int]], key: str, since: float) -> int:
    return sum(amount for k, at, amount in log if k == key and at > since)


async def test_running_sums_match_a_full_recount_over_random_adds_and_windows() -> None:
    rng = random.Random(1913)
    counters, log = MemoryCounters(), []
    now = 0.0
    for _ in range(3000):
        now += rng.choice((0.0, 0.5, 3.0, 20.0))
        key = rng.choice(("a", "b", "c"))
        if rng.random() < 0.6:
            amount = rng.randint(0, 50)
            await counters.add(key, amount, now)
            log.append((key, now, amount))
        else:
            since = now - 60.0  # windows only move forward, as the limiter uses them
            assert await counters.total(key, since) == brute_total(log, key, since)
            kept = [at for k, at, _ in log if k == key and at > since]
            assert await counters.oldest(key, since) == (kept[0] if kept else None)


async def test_an_emptied_window_forgets_its_key() -> None:
    counters = MemoryCounters()
    await counters.add("k", 5, 1.0)
    assert await counters.total("k", 0.0) == 5
    assert await counters.total("k", 1.0) == 0 and await counters.oldest("k", 1.0) is None
    await counters.add("k", 2, 70.0)
    assert await counters.total("k", 10.0) == 2
