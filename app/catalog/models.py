"""Model definitions, ``models/<modelKey>.json`` (SPEC §3.1, §19).

A file is either a provider model (``provider``, ``protocol``, ``modelId`` …) or a group
(``{"key", "group": {"strategy": "fallback" | "round-robin" | "weighted", "members":
[{"modelKey", "weight"?}]}}``). Both may carry ``"limits": {"rpm", "tpm"}``. Groups are
resolved after every provider model loaded: a member must be a provider model (no nested
groups), listed once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, NonNegativeFloat, PositiveInt

from app.catalog._edge import read_object, validate
from app.catalog.definitions import (
    GroupMember,
    ModelDefinition,
    ModelGroup,
    ModelLimits,
    Pricing,
    PricingTier,
    Protocol,
)
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
    is_vision: bool = Field(False, alias="isVision")
    max_tokens: PositiveInt | None = Field(None, alias="maxTokens")
    max_input_tokens: PositiveInt | None = Field(None, alias="maxInputTokens")
    max_output_tokens: PositiveInt | None = Field(None, alias="maxOutputTokens")
    pricing: RawPricing = RawPricing()
    limits: RawLimits = Field(default_factory=lambda: RawLimits())


class RawLimits(_Strict):
    rpm: int = Field(0, ge=0)
    tpm: int = Field(0, ge=0)


class RawMember(_Strict):
    model_key: str = Field(alias="modelKey", min_length=1)
    weight: int = Field(1, ge=1, le=1000)


class RawGroupSpec(_Strict):
    strategy: Literal["fallback", "round-robin", "weighted"] = "fallback"
    members: list[RawMember] = Field(min_length=1, max_length=32)


class RawGroupModel(_Strict):
    """The JSON shape of a group model file."""

    key: str = Field(min_length=1)
    group: RawGroupSpec
    limits: RawLimits = RawLimits()
    description: str | None = None


RawModel.model_rebuild()


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
        is_vision=raw.is_vision,
        max_tokens=raw.max_tokens,
        max_input_tokens=raw.max_input_tokens,
        max_output_tokens=raw.max_output_tokens,
        pricing=_pricing(raw.pricing),
        source=source,
        limits=ModelLimits(rpm=raw.limits.rpm, tpm=raw.limits.tpm),
    )


def is_group_file(data: object) -> bool:
    return isinstance(data, dict) and "group" in data


def parse_group(data: object, stem: str, models: Mapping[str, ModelDefinition],
                source: Path | None = None, group_keys: Collection[str] = ()) -> ModelDefinition:
    """Validate a group model file against the provider models already loaded."""
    raw = validate(RawGroupModel, data)
    if raw.key != stem:
        raise DefinitionError(f"key {raw.key!r} does not match the file name {stem!r}")
    members: list[GroupMember] = []
    seen: set[str] = set()
    for index, member in enumerate(raw.group.members):
        model = models.get(member.model_key)
        if model is None and member.model_key in group_keys:
            raise DefinitionError(f"group.members.{index}: {member.model_key!r} is a group; groups do not nest")
        if model is None:
            known = ", ".join(sorted(models)) or "none"
            raise DefinitionError(f"group.members.{index}: unknown model {member.model_key!r} (models: {known})")
        if model.group is not None:
            raise DefinitionError(f"group.members.{index}: {member.model_key!r} is a group; groups do not nest")
        if member.model_key in seen:
            raise DefinitionError(f"group.members.{index}: {member.model_key!r} is listed twice")
        seen.add(member.model_key)
        members.append(GroupMember(model=model, weight=member.weight))
    first = members[0].model
    return dataclasses.replace(
        first, key=raw.key, source=source, limits=ModelLimits(rpm=raw.limits.rpm, tpm=raw.limits.tpm),
        is_reasoner=any(m.model.is_reasoner for m in members),
        is_function=all(m.model.is_function for m in members),
        group=ModelGroup(strategy=raw.group.strategy, members=tuple(members)),
    )


def load_model(path: Path, providers: Collection[str]) -> ModelDefinition:
    """Read and validate ``models/<key>.json``; raises ``DefinitionError`` with the reason."""
    return parse_model(read_object(path), path.stem, providers, source=path)
