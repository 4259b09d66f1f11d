"""Points from real usage and a model's pricing (SPEC §3.1). 10000 points = 1 RMB, per 1K tokens.

The gateway reports points; it does no billing.
"""

from __future__ import annotations

from app.catalog.definitions import Pricing, PricingTier


def _tier_for(pricing: Pricing, prompt_tokens: int) -> Pricing | PricingTier:
    for tier in pricing.tiers:
        upper = tier.max_input_tokens if tier.max_input_tokens is not None else float("inf")
        if tier.min_input_tokens <= prompt_tokens <= upper:
            return tier
    return pricing


def points_for(pricing: Pricing, prompt_tokens: int, completion_tokens: int) -> float:
    """Points of one model call: per-1K prices of the matching tier, plus per-call points, times the ratio."""
    rate = _tier_for(pricing, prompt_tokens)
    raw = (
        prompt_tokens / 1000 * rate.prompt_points_per_1k
        + completion_tokens / 1000 * rate.completion_points_per_1k
        + rate.per_call_points
    )
    return raw * rate.price_ratio
