"""Garbage-collector settings while a gateway runs (issue 13).

A streaming gateway holds a large, long-lived heap from start-up (modules, pydantic models,
the catalog, FastAPI's routes: ~180,000 tracked objects) and allocates many short-lived
containers per event. With CPython's defaults every full collection walks the whole
start-up heap again — measured as a pause of over 100 ms in the middle of 200 streams,
i.e. the p99 of per-delta latency.

``CollectorTuning.apply()`` (the gateway calls it once start-up is done) moves everything
alive to the permanent generation (``gc.freeze()``), so later collections only walk what
was created since, and makes full collections ten times rarer (``GEN2_THRESHOLD``). The
young generations keep CPython's thresholds: measured at 200 paced streams, larger ones
(2,000 or 7,000) only made each young pass longer, since a stream's objects outlive a
young pass anyway. ``restore()`` (at the gateway's close) unfreezes and puts the previous
thresholds back, so a process that starts several gateways (the tests) keeps a collectable
heap. The measurements are in docs/DECISIONS.md ("Hot path").
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field

#: young-generation threshold: allocations net of frees (CPython's default, 700)
GEN0_THRESHOLD = 700
#: young collections before a middle one (CPython's default, 10)
GEN1_THRESHOLD = 10
#: middle collections before a full one (CPython's default: 10)
GEN2_THRESHOLD = 100


@dataclass(slots=True)
class CollectorTuning:
    """The collector settings of one running gateway; ``apply`` then ``restore``, each at most once."""

    thresholds: tuple[int, int, int] = (GEN0_THRESHOLD, GEN1_THRESHOLD, GEN2_THRESHOLD)
    _previous: tuple[int, int, int] | None = field(default=None, init=False)

    def apply(self) -> None:
        if self._previous is not None:
            return
        self._previous = gc.get_threshold()
        gc.freeze()
        gc.set_threshold(*self.thresholds)

    def restore(self) -> None:
        if self._previous is None:
            return
        gc.set_threshold(*self._previous)
        gc.unfreeze()
        self._previous = None


__all__ = ["GEN0_THRESHOLD", "GEN1_THRESHOLD", "GEN2_THRESHOLD", "CollectorTuning"]
