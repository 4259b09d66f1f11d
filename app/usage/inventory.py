"""What the LLM layer is made of right now: providers and models (sidecar ``llm.providers``,
``llm.models``; SPEC §19). No API key ever leaves here — only whether one is set."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from app.catalog.definitions import ModelDefinition
from app.config import ProviderSettings


def _without_userinfo(url: str) -> str:
    """``url`` minus any ``user:password@`` part (a credential must not leave with the address)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def provider_list(providers: Mapping[str, ProviderSettings], api_key_for: Callable[[str], str]) -> list[dict[str, Any]]:
    """``[{providerKey, baseUrl, hasKey}]``, sorted by key."""
    return [
        {"providerKey": key, "baseUrl": _without_userinfo(providers[key].base_url), "hasKey": bool(api_key_for(key))}
        for key in sorted(providers)
    ]


def model_entry(model: ModelDefinition, breaker_state: Callable[[str], str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "modelKey": model.key,
        "provider": model.provider,
        "protocol": model.protocol,
        "modelId": model.model_id,
        "limits": {"rpm": model.limits.rpm, "tpm": model.limits.tpm},
        "breaker": breaker_state(model.key),
    }
    if model.group is not None:
        entry["group"] = {
            "strategy": model.group.strategy,
            "members": [{"modelKey": m.model.key, "weight": m.weight} for m in model.group.members],
        }
    return entry


def model_list(models: Mapping[str, ModelDefinition], breaker_state: Callable[[str], str]) -> list[dict[str, Any]]:
    """One entry per model of the catalog, sorted by key; ``breaker`` is closed | open | half-open."""
    return [model_entry(models[key], breaker_state) for key in sorted(models)]
