"""Easing functions: ``interpolate(start, end, t, easing)`` with t in [0, 1] (no Pillow needed)."""

from __future__ import annotations

import math
from collections.abc import Callable


def linear(t: float) -> float:
    return t


def ease_in(t: float) -> float:
    return t * t


def ease_out(t: float) -> float:
    return 1 - (1 - t) * (1 - t)


def ease_in_out(t: float) -> float:
    return 2 * t * t if t < 0.5 else 1 - (-2 * t + 2) ** 2 / 2


def bounce_out(t: float) -> float:
    n, d = 7.5625, 2.75
    if t < 1 / d:
        return n * t * t
    if t < 2 / d:
        t -= 1.5 / d
        return n * t * t + 0.75
    if t < 2.5 / d:
        t -= 2.25 / d
        return n * t * t + 0.9375
    t -= 2.625 / d
    return n * t * t + 0.984375


def elastic_out(t: float) -> float:
    if t in (0.0, 1.0):
        return t
    return 2 ** (-10 * t) * math.sin((t * 10 - 0.75) * (2 * math.pi) / 3) + 1


def back_out(t: float) -> float:
    c1 = 1.70158
    c3 = c1 + 1
    return 1 + c3 * (t - 1) ** 3 + c1 * (t - 1) ** 2


EASINGS: dict[str, Callable[[float], float]] = {
    "linear": linear,
    "ease_in": ease_in,
    "ease_out": ease_out,
    "ease_in_out": ease_in_out,
    "bounce_out": bounce_out,
    "elastic_out": elastic_out,
    "back_out": back_out,
}


def interpolate(start: float, end: float, t: float, easing: str = "linear") -> float:
    """The value between ``start`` and ``end`` at progress ``t`` (clamped to [0, 1])."""
    try:
        fn = EASINGS[easing]
    except KeyError:
        raise ValueError(f"unknown easing {easing!r}; available: {', '.join(EASINGS)}") from None
    t = min(max(t, 0.0), 1.0)
    return start + (end - start) * fn(t)
