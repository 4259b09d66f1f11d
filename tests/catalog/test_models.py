"""Model definitions (SPEC §3.1)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.catalog.definitions import Pricing, PricingTier
from app.catalog.models import load_model, parse_model
from app.errors import DefinitionError

from .support import Deployment, model_file

PROVIDERS = frozenset({"bailian", "local"})


def test_minimal_model_gets_defaults() -> None:
    model = parse_model(model_file("m1"), "m1", PROVIDERS)
    assert (model.key, model.provider, model.protocol, model.model_id) == ("m1", "bailian", "OPENAI", "m1-id")
    assert model.is_reasoner is False and model.is_function is True
    assert model.pricing == Pricing()


def test_full_model_with_pricing_tiers() -> None:
    data = model_file(
        "m1",
        protocol="ANTHROPIC",
        isReasoner=True,
        isFunction=False,
        maxTokens=32768,
        maxInputTokens=30000,
        maxOutputTokens=8192,
        pricing={
            "promptPointsPer1k": 20,
            "completionPointsPer1k": 60,
            "perCallPoints": 1,
            "priceRatio": 1.5,
            "tiers": [
                {"minInputTokens": 0, "maxInputTokens": 8000, "promptPointsPer1k": 18, "completionPointsPer1k": 54},
                {"minInputTokens": 8001, "priceRatio": 1.1},
            ],
        },
    )
    model = parse_model(data, "m1", PROVIDERS)
    assert model.protocol == "ANTHROPIC" and model.is_reasoner and not model.is_function
    assert (model.max_tokens, model.max_input_tokens, model.max_output_tokens) == (32768, 30000, 8192)
    assert model.pricing.prompt_points_per_1k == 20 and model.pricing.price_ratio == 1.5
    assert model.pricing.tiers == (
        PricingTier(0, 8000, 18, 54, 0, 1.0),
        PricingTier(min_input_tokens=8001, price_ratio=1.1),
    )


@pytest.mark.parametrize("field", ["key", "provider", "protocol", "modelId"])
def test_required_fields(field: str) -> None:
    data = model_file("m1")
    del data[field]
    with pytest.raises(DefinitionError, match=field):
        parse_model(data, "m1", PROVIDERS)


def test_unknown_protocol_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="protocol"):
        parse_model(model_file("m1", protocol="GRPC"), "m1", PROVIDERS)


def test_unknown_provider_is_rejected_naming_it() -> None:
    with pytest.raises(DefinitionError, match="unknown provider 'nowhere'"):
        parse_model(model_file("m1", provider="nowhere"), "m1", PROVIDERS)


def test_key_must_match_file_stem() -> None:
    with pytest.raises(DefinitionError, match="'other' does not match the file name 'm1'"):
        parse_model(model_file("other"), "m1", PROVIDERS)


def test_unknown_field_is_rejected() -> None:
    with pytest.raises(DefinitionError, match="baseUrl: unknown field"):
        parse_model(model_file("m1", baseUrl="http://x"), "m1", PROVIDERS)


@pytest.mark.parametrize(
    "pricing",
    [{"promptPointsPer1k": -1}, {"tiers": [{"minInputTokens": 10, "maxInputTokens": 5}]}, {"tiers": {}}],
)
def test_invalid_pricing_is_rejected(pricing: dict[str, Any]) -> None:
    with pytest.raises(DefinitionError, match="pricing"):
        parse_model(model_file("m1", pricing=pricing), "m1", PROVIDERS)


def test_load_model_reads_relaxed_json(tmp_path: Path) -> None:
    path = tmp_path / "m1.json"
    path.write_text('{\n // comment\n "key": "m1", "provider": "local", "protocol": "OPENAI", "modelId": "x",\n}')
    model = load_model(path, PROVIDERS)
    assert model.source == path and model.provider == "local"


def test_builtin_local_demo_model_file() -> None:
    path = Path(__file__).resolve().parents[2] / "app" / "builtin" / "models" / "local-demo.json"
    model = load_model(path, PROVIDERS)
    assert (model.key, model.provider, model.protocol, model.model_id) == ("local-demo", "local", "OPENAI", "local-demo")
    assert model.is_reasoner and model.is_function
    assert model.pricing.prompt_points_per_1k == 0 and model.pricing.completion_points_per_1k == 0


def test_catalog_rejects_bad_model_and_keeps_others(deploy: Deployment) -> None:
    deploy.write("models/good.json", model_file("good"))
    deploy.write("models/bad.json", model_file("bad", provider="missing"))
    deploy.write("models/broken.json", "{ not json")
    deploy.write("models/.hidden.json", "{ ignored")
    deploy.write("models/notes.txt", "ignored")
    catalog = deploy.build()
    assert list(catalog.models) == ["good"]
    reasons = {r.file: r.reason for r in catalog.rejections}
    assert set(reasons) == {"models/bad.json", "models/broken.json"}
    assert "missing" in reasons["models/bad.json"]
    assert reasons["models/broken.json"].startswith("line 1, column")
    assert all(r.kind == "model" for r in catalog.rejections)
