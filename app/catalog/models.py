"""Model definitions, ``models/<modelKey>.json`` (SPEC §3.1)."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt

from app.catalog._edge import read_object, validate
from app.catalog.definitions import ModelDefinition, Pricing, PricingTier, Protocol
from app.errors import DefinitionError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class RawPricingTier(_Strict):
    min_input_tokens: int = Field(0, alias="minInputTokens", ge=0)
    max_input_tokens: int | None = Field(None, alias="maxInputTokens", ge=0)
    prompt_points_per_1k: NonNegativeFloat = Field(0.0, alias="promptPointsPer1k")
    completion_points_per_1k: NonNegativeFloat = Field(0.0, alias="completionPointsPer1k")
    per_call_points: NonNegativeFloat = Field(0.0, alias="perCallPoints")
    price_ratio: NonNegativeFloat = Field(1.0, alias="priceRatio")


class RawPricing(_Strict):
    prompt_points_per_1k: NonNegativeFloat = Field(0.0, alias="promptPointsPer1k")
    completion_points_per_1k: NonNegativeFloat = Field(0.0, alias="completionPointsPer1k")
    per_call_points: NonNegativeFloat = Field(0.0, alias="perCallPoints")
    price_ratio: NonNegativeFloat = Field(1.0, alias="priceRatio")
    tiers: list[RawPricingTier] = Field(default_factory=list)


class RawModel(_Strict):
    """The JSON shape of a model file; unknown fields are refused."""

    key: str = Field(min_length=1)
    provider: str = Field(min_length=1)
    protocol: Protocol
    model_id: str = Field(alias="modelId", min_length=1)
    is_reasoner: bool = Field(False, alias="isReasoner")
    is_function: bool = Field(True, alias="isFunction")
    max_tokens: PositiveInt | None = Field(None, alias="maxTokens")
    max_input_tokens: PositiveInt | None = Field(None, alias="maxInputTokens")
    max_output_tokens: PositiveInt | None = Field(None, alias="maxOutputTokens")
    pricing: RawPricing = RawPricing()


def _pricing(raw: RawPricing) -> Pricing:
    return Pricing(
        prompt_points_per_1k=raw.prompt_points_per_1k,
        completion_points_per_1k=raw.completion_points_per_1k,
        per_call_points=raw.per_call_points,
        price_ratio=raw.price_ratio,
        tiers=tuple(
            PricingTier(
                min_input_tokens=tier.min_input_tokens,
                max_input_tokens=tier.max_input_tokens,
                prompt_points_per_1k=tier.prompt_points_per_1k,
                completion_points_per_1k=tier.completion_points_per_1k,
                per_call_points=tier.per_call_points,
                price_ratio=tier.price_ratio,
            )
            for tier in raw.tiers
        ),
    )


def parse_model(data: object, stem: str, providers: Collection[str], source: Path | None = None) -> ModelDefinition:
    """Validate a parsed model file. ``stem`` is the file name without ``.json``."""
    raw = validate(RawModel, data)
    if raw.key != stem:
        raise DefinitionError(f"key {raw.key!r} does not match the file name {stem!r}")
    if raw.provider not in providers:
        known = ", ".join(sorted(providers)) or "none configured"
        raise DefinitionError(
            f"unknown provider {raw.provider!r} (agent.providers has: {known})"
        )
    for index, tier in enumerate(raw.pricing.tiers):
        if tier.max_input_tokens is not None and tier.max_input_tokens < tier.min_input_tokens:
            raise DefinitionError(f"pricing.tiers.{index}: maxInputTokens is below minInputTokens")
    return ModelDefinition(
        key=raw.key,
        provider=raw.provider,
        protocol=raw.protocol,
        model_id=raw.model_id,
        is_reasoner=raw.is_reasoner,
        is_function=raw.is_function,
        max_tokens=raw.max_tokens,
        max_input_tokens=raw.max_input_tokens,
        max_output_tokens=raw.max_output_tokens,
        pricing=_pricing(raw.pricing),
        source=source,
    )


def load_model(path: Path, providers: Collection[str]) -> ModelDefinition:
    """Read and validate ``models/<key>.json``; raises ``DefinitionError`` with the reason."""
    return parse_model(read_object(path), path.stem, providers, source=path)
