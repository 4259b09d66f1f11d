"""The sidecar's ``llm.*`` methods (SPEC §19) through the real subprocess: ``llm.usage`` totals of
the usage ledger, ``llm.providers`` without any key, ``llm.models`` with groups, limits and the
circuit breaker's state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.sidecar import SidecarProcess

ONE = {"maxCalls": 6, "timeoutMs": 5000, "retryCount": 0}


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Path:
    root = make_deployment(tmp_path / "deploy", upstream.url, yaml_extra=(
        "    dead:\n      base-url: http://127.0.0.1:9\n"
        "    withcreds:\n      base-url: http://someone:hunter2@127.0.0.1:9/v1\n      api-key: sk-withcreds-key\n"
        "  llm:\n    breaker:\n      failures: 1\n      open-seconds: 600\n"
    ))
    models: dict[str, dict[str, Any]] = {
        "m1": {"provider": "fake", "protocol": "OPENAI", "modelId": "one", "limits": {"rpm": 50, "tpm": 9000},
               "pricing": {"promptPointsPer1k": 10, "completionPointsPer1k": 30}},
        "gone": {"provider": "dead", "protocol": "ANTHROPIC", "modelId": "none"},
        "deadfirst": {"group": {"strategy": "fallback", "members": [{"modelKey": "gone"}, {"modelKey": "m1"}]}},
        "spread": {"group": {"strategy": "weighted",
                             "members": [{"modelKey": "m1", "weight": 3}, {"modelKey": "gone", "weight": 1}]}},
    }
    for key, body in models.items():
        (root / "models" / f"{key}.json").write_bytes(orjson.dumps({"key": key, **body}))
    write_agent(root, "a_deadfirst", agent("ONESHOT", model="deadfirst", budget={"model": ONE}))
    write_agent(root, "a_m1", agent("ONESHOT", model="m1", budget={"model": ONE}))
    return root


def around_today() -> dict[str, str]:
    today = datetime.now(UTC).date()
    return {"from": (today - timedelta(days=1)).isoformat(), "to": (today + timedelta(days=1)).isoformat()}


async def ask(sidecar: SidecarProcess, agent_key: str) -> dict[str, Any]:
    result: dict[str, Any] = await sidecar.result("agent.query", {"agentKey": agent_key, "message": "hi",
                                                                  "stream": False})
    assert result["status"] == "complete", result
    return result


async def test_llm_usage_totals_the_ledger_like_the_http_endpoint(
    sidecar: SidecarProcess, upstream: FakeUpstream, deploy: Path
) -> None:
    upstream.enqueue(text_script(["alive"], usage=(100, 20)), text_script(["again"], usage=(300, 40)))
    grouped = await ask(sidecar, "a_deadfirst")  # gone refuses the connection, m1 answers
    await ask(sidecar, "a_m1")
    by_model = await sidecar.result("llm.usage", {"groupBy": "model", **around_today()})
    assert by_model["groupBy"] == "model"
    assert by_model["groups"] == [
        {"key": "gone", "calls": 1, "errors": 1, "promptTokens": 0, "completionTokens": 0, "totalTokens": 0,
         "points": 0.0},
        {"key": "m1", "calls": 2, "errors": 0, "promptTokens": 400, "completionTokens": 60, "totalTokens": 460,
         "points": round(400 / 1000 * 10 + 60 / 1000 * 30, 4)},
    ]
    assert by_model["totals"]["calls"] == 3 and by_model["totals"]["errors"] == 1
    by_agent = await sidecar.result("llm.usage", {"groupBy": "agent", **around_today()})
    assert [(g["key"], g["calls"]) for g in by_agent["groups"]] == [("a_deadfirst", 2), ("a_m1", 1)]
    by_user = await sidecar.result("llm.usage", {"groupBy": "user", **around_today()})
    assert [g["key"] for g in by_user["groups"]] == ["anonymous"]
    # the failed member's line names the group and why it failed
    lines = [orjson.loads(raw) for path in (deploy / "data" / ".agw" / "usage").glob("*.jsonl")
             for raw in path.read_bytes().splitlines()]
    failed = next(line for line in lines if line["status"] == "error")
    assert failed["runId"] == grouped["runId"] and failed["modelKey"] == "gone"
    assert failed["groupKey"] == "deadfirst" and failed["errorCode"].startswith("upstream_")
    assert failed["provider"] == "dead"


@pytest.mark.parametrize("params", [{"groupBy": "week"}, {"from": "2025-02-30"}, {"from": 20250101},
                                    {"from": "2025-03-02", "to": "2025-03-01"}])
async def test_llm_usage_bad_params_are_invalid_params(sidecar: SidecarProcess, params: dict[str, Any]) -> None:
    reply = await sidecar.call("llm.usage", params)
    assert reply["error"]["code"] == -32602 and reply["error"]["message"].startswith("invalid")
    assert reply["error"]["data"]["code"] == 4000
    assert (await sidecar.result("llm.usage"))["totals"]["calls"] == 0  # the sidecar is still fine


async def test_llm_providers_say_whether_a_key_is_set_and_never_show_it(sidecar: SidecarProcess) -> None:
    reply = await sidecar.call("llm.providers")
    providers = {p["providerKey"]: p for p in reply["result"]}
    assert set(providers) >= {"fake", "fakenew", "local", "dead", "withcreds"}
    assert providers["fake"]["hasKey"] is True and providers["local"]["hasKey"] is False
    assert providers["dead"] == {"providerKey": "dead", "baseUrl": "http://127.0.0.1:9", "hasKey": False}
    assert providers["withcreds"]["baseUrl"] == "http://127.0.0.1:9/v1"  # credentials in the URL are cut
    raw = orjson.dumps(reply)
    for secret in (b"sk-test-secret-key-123", b"sk-test-newapi-key", b"sk-withcreds-key", b"hunter2"):
        assert secret not in raw


async def test_llm_models_list_groups_limits_and_breaker_state(
    sidecar: SidecarProcess, upstream: FakeUpstream
) -> None:
    before = {m["modelKey"]: m for m in await sidecar.result("llm.models")}
    assert before["m1"] == {"modelKey": "m1", "provider": "fake", "protocol": "OPENAI", "modelId": "one",
                            "limits": {"rpm": 50, "tpm": 9000}, "breaker": "closed"}
    assert before["gone"]["protocol"] == "ANTHROPIC" and before["gone"]["breaker"] == "closed"
    assert before["deadfirst"]["group"] == {"strategy": "fallback",
                                            "members": [{"modelKey": "gone", "weight": 1},
                                                        {"modelKey": "m1", "weight": 1}]}
    assert before["spread"]["group"]["members"] == [{"modelKey": "m1", "weight": 3}, {"modelKey": "gone", "weight": 1}]
    assert "group" not in before["m1"]
    upstream.enqueue(text_script(["alive"]))
    await ask(sidecar, "a_deadfirst")  # one failure opens gone's breaker (failures: 1)
    after = {m["modelKey"]: m for m in await sidecar.result("llm.models")}
    assert after["gone"]["breaker"] == "open" and after["m1"]["breaker"] == "closed"
