"""Which model a call goes to: group strategies and per-model circuit breakers (SPEC §19).

``ModelRouter.candidates(model)`` is the ordered list of provider models one call may try:
for a plain model, the model itself; for a group, its members in the strategy's order —
``fallback`` as listed, ``round-robin`` rotating the starting member per call, ``weighted``
by smooth weighted round robin (deterministic: weights 3:1 give a, a, b, a, a, a, b, a …
over time) — with the members whose breaker is open moved out (or, when every member's
breaker is open, the one that closes soonest kept so the call still gets a try).

Breaker per provider model: ``agent.llm.breaker.failures`` consecutive failures open it for
``open-seconds``; after that one trial call is let through (half-open): success closes it,
failure opens it again. The router is gateway-wide state, built once in ``Gateway``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.catalog.definitions import ModelDefinition
from app.config import BreakerSettings

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Breaker:
    failures: int = 0
    open_until: float = 0.0
    #: a trial call is in flight after the open period (half-open)
    trial: bool = False


class ModelRouter:
    """Group member order and circuit breakers, shared by every run of one gateway."""

    def __init__(self, breaker: BreakerSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = breaker
        self._clock = clock
        self._breakers: dict[str, _Breaker] = {}
        self._rotation: dict[str, int] = {}
        self._weights: dict[str, dict[str, int]] = {}

    # -- order ------------------------------------------------------------------------------

    def candidates(self, model: ModelDefinition) -> list[ModelDefinition]:
        if model.group is None:
            return [model]
        members = list(model.group.members)
        strategy = model.group.strategy
        if strategy == "round-robin":
            start = self._rotation.get(model.key, 0) % len(members)
            self._rotation[model.key] = start + 1
            ordered = [m.model for m in members[start:] + members[:start]]
        elif strategy == "weighted":
            ordered = self._weighted(model.key, [(m.model, m.weight) for m in members])
        else:
            ordered = [m.model for m in members]
        closed = [m for m in ordered if self.available(m.key)]
        if closed:
            return closed
        return [min(ordered, key=lambda m: self._breakers[m.key].open_until)]

    def _weighted(self, group_key: str, members: list[tuple[ModelDefinition, int]]) -> list[ModelDefinition]:
        """Smooth weighted round robin (nginx): the chosen member first, the rest by weight."""
        current = self._weights.setdefault(group_key, {})
        total = sum(weight for _, weight in members)
        for member, weight in members:
            current[member.key] = current.get(member.key, 0) + weight
        chosen = max(members, key=lambda mw: current[mw[0].key])[0]
        current[chosen.key] -= total
        rest = sorted((m for m, _ in members if m.key != chosen.key),
                      key=lambda m: -next(w for mm, w in members if mm.key == m.key))
        return [chosen, *rest]

    # -- breakers ---------------------------------------------------------------------------

    def available(self, model_key: str) -> bool:
        breaker = self._breakers.get(model_key)
        if breaker is None or breaker.open_until == 0.0:
            return True
        if self._clock() < breaker.open_until:
            return False
        return not breaker.trial  # half-open: one trial call at a time

    def state(self, model_key: str) -> str:
        """``closed``, ``open`` or ``half-open`` (for status endpoints and tests)."""
        breaker = self._breakers.get(model_key)
        if breaker is None or breaker.open_until == 0.0:
            return "closed"
        return "open" if self._clock() < breaker.open_until else "half-open"

    def started(self, model_key: str) -> None:
        """A call to ``model_key`` begins (marks the half-open trial)."""
        breaker = self._breakers.get(model_key)
        if breaker is not None and breaker.open_until and self._clock() >= breaker.open_until:
            breaker.trial = True

    def succeeded(self, model_key: str) -> None:
        breaker = self._breakers.get(model_key)
        if breaker is not None:
            if breaker.open_until:
                logger.info("model %s: circuit breaker closed after a successful call", model_key)
            self._breakers.pop(model_key, None)

    def failed(self, model_key: str) -> None:
        breaker = self._breakers.setdefault(model_key, _Breaker())
        breaker.failures += 1
        half_open = breaker.trial
        breaker.trial = False
        if half_open or breaker.failures >= self._settings.failures:
            breaker.open_until = self._clock() + self._settings.open_seconds
            logger.warning("model %s: circuit breaker open for %gs after %d consecutive failures",
                           model_key, self._settings.open_seconds, breaker.failures)
