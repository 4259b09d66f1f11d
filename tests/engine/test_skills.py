"""Skills over real HTTP (SPEC §3.4): catalog in the system prompt, disclosure on first use,
truncation, and ``_skill_run_script_`` running the repository's scripts end to end."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.engine.helpers import call, first, of_type, tool_message
from tests.support.deployment import agent, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect

SKILL_TOOLS = {"backends": ["_skill_run_script_"], "frontends": [], "actions": []}
CALC = {"skill": "math_basic", "script": "scripts/calc.py", "args": ["--op", "mul", "--a", "6", "--b", "7"]}


def _skill_agent(mode: str = "REACT", **extra: Any) -> dict[str, Any]:
    return agent(mode, tools=SKILL_TOOLS, skillConfig={"skills": ["math_basic"]}, skills=["text_utils"], **extra)


def _disclosures(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for m in body["messages"] if m["role"] == "user" and "Math Basic Skill" in m["content"]]


async def test_catalog_is_in_the_system_prompt(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "math", _skill_agent(runtimePrompts={"skill": {"catalogHeader": "SKILL CATALOG HERE"}}))
    gw = start_gateway()
    upstream.enqueue(text_script(["42"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "math", "message": "6*7"})
    assert events[-1]["type"] == "run.complete"
    system = upstream.requests[0].body["messages"][0]
    assert system["role"] == "system"
    text = system["content"]
    assert "SKILL CATALOG HERE" in text
    assert "math_basic" in text and "deterministic arithmetic" in text  # id and description
    assert "text_utils" in text  # skills merged with skillConfig.skills
    assert "# Math Basic Skill" not in text  # the body is not in the catalog


async def test_calc_script_runs_end_to_end_and_the_skill_is_disclosed_once(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "math", _skill_agent())
    gw = start_gateway()
    upstream.enqueue(
        call("s1", "_skill_run_script_", CALC),
        call("s2", "_skill_run_script_", {**CALC, "args": ["--op", "add", "--a", "1", "--b", "2"]}),
        text_script(["6*7 = 42"]),
    )
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "math", "message": "6*7"})
    assert events[-1]["type"] == "run.complete"
    results = {e["toolId"]: e["result"] for e in of_type(events, "tool.result")}
    assert results["s1"]["exitCode"] == 0
    assert orjson.loads(results["s1"]["stdout"]) == {"ok": True, "op": "mul", "a": 6.0, "b": 7.0, "result": 42.0}
    assert orjson.loads(results["s2"]["stdout"])["result"] == 3.0
    second, third = upstream.requests[1].body, upstream.requests[2].body
    assert not _disclosures(upstream.requests[0].body)
    # disclosed as a user message right after the tool result of the turn that first used it
    messages = second["messages"]
    assert messages[-2]["role"] == "tool" and messages[-2]["tool_call_id"] == "s1"
    assert messages[-1] == _disclosures(second)[0]
    assert "Skill instructions disclosed on first use" in messages[-1]["content"]
    assert "scripts/calc.py" in messages[-1]["content"]
    assert orjson.loads(tool_message(second, "s1")["content"]) == results["s1"]
    assert len(_disclosures(third)) == 1  # not disclosed twice


async def test_disclosure_is_truncated_to_max_prompt_chars(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "math", _skill_agent())
    gw = start_gateway({"agent": {"skill": {"max-prompt-chars": 60}}})
    upstream.enqueue(call("s1", "_skill_run_script_", CALC), text_script(["42"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "math", "message": "6*7"})
    assert events[-1]["type"] == "run.complete"
    disclosure = _disclosures(upstream.requests[1].body)[0]["content"]
    body = (deploy / "skills" / "math_basic" / "SKILL.md").read_text(encoding="utf-8").split("---", 2)[2].strip()
    assert body[:60] in disclosure and body[:61] not in disclosure
    assert "truncated" in disclosure


async def test_python_code_variant(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "math", _skill_agent("ONESHOT"))
    gw = start_gateway()
    code = "import json, sys\nprint(json.dumps({'sum': sum(range(10)), 'argv': sys.argv[1:]}))\n"
    upstream.enqueue(call("s1", "_skill_run_script_", {"skill": "math_basic", "pythonCode": code, "args": ["x"]}),
                     text_script(["45"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "math", "message": "sum"})
    assert events[-1]["type"] == "run.complete"
    result = first(events, "tool.result")["result"]
    assert result["exitCode"] == 0 and orjson.loads(result["stdout"]) == {"sum": 45, "argv": ["x"]}
    assert orjson.loads(tool_message(upstream.requests[1].body, "s1")["content"]) == result
    assert _disclosures(upstream.requests[1].body)  # pythonCode use also discloses the skill


async def test_unknown_skill_is_an_error_result_not_a_disclosure(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient
) -> None:
    write_agent(deploy, "math", _skill_agent())
    gw = start_gateway()
    upstream.enqueue(call("s1", "_skill_run_script_", {"skill": "../etc", "script": "x.py"}), text_script(["sorry"]))
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": "math", "message": "x"})
    assert events[-1]["type"] == "run.complete"
    assert first(events, "tool.result")["result"]["ok"] is False
    assert not _disclosures(upstream.requests[1].body)
