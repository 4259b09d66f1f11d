"""The usage ledger (SPEC §19) over real HTTP: one line per model call in
``data/.agw/usage/<YYYY-MM-DD>.jsonl`` (a group's failed member too), ``GET /api/ap/usage``
totals that add up exactly to the scripted usage per ``groupBy``, ownership with auth on,
bad parameters, and a torn last line."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import Finish, Text, Usage, http_error_script, text_script
from app.usage import MAX_RANGE_DAYS, parse_usage_query
from tests.security.support import ISSUER, KeyPair, bearer, mint, mint_claims, rsa_pair
from tests.support.deployment import agent, make_deployment, write_agent
from tests.support.server import GatewayServer
from tests.support.sse import collect

ONE = {"maxCalls": 6, "timeoutMs": 5000, "retryCount": 0}
#: points per 1K tokens: m1 10/30, m2 20/40 (chosen so every expected total is exact)
PRICES = {"m1": (10, 30), "m2": (20, 40)}


@pytest.fixture
def second() -> Iterator[FakeUpstream]:
    with FakeUpstream() as fake:
        yield fake


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream, second: FakeUpstream) -> Path:
    root = make_deployment(tmp_path / "deploy", upstream.url, yaml_extra=(
        f"    second:\n      base-url: {second.url}\n      api-key: sk-second\n"
    ))
    models: dict[str, dict[str, Any]] = {
        "m1": {"provider": "fake", "protocol": "OPENAI", "modelId": "one",
               "pricing": {"promptPointsPer1k": PRICES["m1"][0], "completionPointsPer1k": PRICES["m1"][1]}},
        "m2": {"provider": "second", "protocol": "OPENAI", "modelId": "two",
               "pricing": {"promptPointsPer1k": PRICES["m2"][0], "completionPointsPer1k": PRICES["m2"][1]}},
        "fallback": {"group": {"strategy": "fallback", "members": [{"modelKey": "m1"}, {"modelKey": "m2"}]}},
    }
    for key, body in models.items():
        (root / "models" / f"{key}.json").write_bytes(orjson.dumps({"key": key, **body}))
    for key in ("m1", "m2", "fallback"):
        write_agent(root, f"a_{key}", agent("ONESHOT", model=key, budget={"model": ONE}))
    return root


def points(model: str, prompt: int, completion: int) -> float:
    per_prompt, per_completion = PRICES[model]
    return prompt / 1000 * per_prompt + completion / 1000 * per_completion


def usage_dir(deploy: Path) -> Path:
    return deploy / "data" / ".agw" / "usage"


def ledger_lines(deploy: Path) -> list[dict[str, Any]]:
    """Every line of every ledger file, in time order (the files of the days the calls fell on)."""
    lines = [orjson.loads(raw) for path in sorted(usage_dir(deploy).glob("*.jsonl"))
             for raw in path.read_bytes().splitlines() if raw.strip()]
    return lines


def around_today() -> dict[str, str]:
    """A range that holds today whichever side of midnight (UTC) the calls fall on."""
    today = datetime.now(UTC).date()
    return {"from": (today - timedelta(days=1)).isoformat(), "to": (today + timedelta(days=1)).isoformat()}


async def ask(client: httpx.AsyncClient, gw: GatewayServer, agent_key: str) -> list[dict[str, Any]]:
    events = await collect(client, f"{gw.url}/api/ap/query", {"agentKey": agent_key, "message": "hi"})
    assert events[-1]["type"] == "run.complete", events[-1]
    return events


async def usage(client: httpx.AsyncClient, gw: GatewayServer, **params: str) -> dict[str, Any]:
    response = await client.get(f"{gw.url}/api/ap/usage", params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 0
    data: dict[str, Any] = body["data"]
    return data


async def test_every_model_call_is_a_ledger_line_including_the_failed_group_member(
    deploy: Path, upstream: FakeUpstream, second: FakeUpstream, start_gateway: Callable[..., GatewayServer],
    client: httpx.AsyncClient,
) -> None:
    gw = start_gateway()
    upstream.enqueue(http_error_script(503, "down"))
    second.enqueue(text_script(["from ", "two"], usage=(100, 50)))
    grouped = await ask(client, gw, "a_fallback")
    upstream.enqueue(text_script(["one"], usage=(200, 100)))
    plain = await ask(client, gw, "a_m1")
    await usage(client, gw, **around_today())  # a query first writes every queued line

    failed, answered, single = ledger_lines(deploy)
    start = next(e for e in grouped if e["type"] == "run.start")
    run, chat = start["runId"], start["chatId"]
    assert failed["runId"] == answered["runId"] == run and failed["chatId"] == answered["chatId"] == chat
    assert failed["modelKey"] == "m1" and failed["groupKey"] == "fallback" and failed["provider"] == "fake"
    assert failed["status"] == "error" and failed["errorCode"] == "upstream_http_error"
    assert failed["promptTokens"] == failed["completionTokens"] == 0 and failed["points"] == 0
    assert failed["ttftMs"] is None and failed["durationMs"] >= 0
    assert answered["modelKey"] == "m2" and answered["groupKey"] == "fallback" and answered["provider"] == "second"
    assert answered["status"] == "ok" and "errorCode" not in answered
    assert (answered["promptTokens"], answered["completionTokens"]) == (100, 50)
    assert answered["points"] == pytest.approx(points("m2", 100, 50))
    assert 0 <= answered["ttftMs"] <= answered["durationMs"]
    assert single["runId"] == plain[-1]["runId"] and single["modelKey"] == "m1" and "groupKey" not in single
    assert (single["promptTokens"], single["completionTokens"], single["status"]) == (200, 100, "ok")
    for line in (failed, answered, single):
        assert line["user"] == "anonymous"
        assert line["agentKey"] == ("a_fallback" if line["runId"] == run else "a_m1")
        # the file is named after the line's UTC day
        day = datetime.fromtimestamp(line["ts"] / 1000, UTC).date().isoformat()
        assert any(orjson.loads(raw) == line for raw in (usage_dir(deploy) / f"{day}.jsonl").read_bytes().splitlines())
    # the run's own usage agrees with the ledger line of the member that answered
    assert grouped[-1]["usage"]["modelKey"] == "m2" and grouped[-1]["usage"]["promptTokens"] == 100


async def test_usage_totals_add_up_exactly_to_the_scripted_usage_per_group_by(
    deploy: Path, upstream: FakeUpstream, second: FakeUpstream, start_gateway: Callable[..., GatewayServer],
    client: httpx.AsyncClient,
) -> None:
    gw = start_gateway()
    # (agent, answering model, prompt, completion); the fallback run also has one failed m1 call
    scripted = [("a_m1", "m1", 120, 40), ("a_m1", "m1", 300, 7), ("a_m2", "m2", 55, 45), ("a_fallback", "m2", 9, 1)]
    for agent_key, model, prompt, completion in scripted:
        if agent_key == "a_fallback":
            upstream.enqueue(http_error_script(500))
        (upstream if model == "m1" else second).enqueue(text_script(["x"], usage=(prompt, completion)))
        await ask(client, gw, agent_key)
    prompt_sum = sum(s[2] for s in scripted)
    completion_sum = sum(s[3] for s in scripted)
    totals = {"calls": 5, "errors": 1, "promptTokens": prompt_sum, "completionTokens": completion_sum,
              "totalTokens": prompt_sum + completion_sum,
              "points": round(sum(points(m, p, c) for _, m, p, c in scripted), 4)}

    def expected(key_of: Callable[[tuple[str, str, int, int]], str]) -> dict[str, dict[str, Any]]:
        groups: dict[str, dict[str, Any]] = {}
        for row in scripted:
            group = groups.setdefault(key_of(row), {"calls": 0, "errors": 0, "promptTokens": 0,
                                                    "completionTokens": 0, "totalTokens": 0, "points": 0.0})
            group["calls"] += 1
            group["promptTokens"] += row[2]
            group["completionTokens"] += row[3]
            group["totalTokens"] += row[2] + row[3]
            group["points"] += points(row[1], row[2], row[3])
        return groups

    by_agent = expected(lambda row: row[0])
    by_agent["a_fallback"]["calls"] += 1  # the failed member: a call, an error, no tokens
    by_agent["a_fallback"]["errors"] += 1
    by_model = expected(lambda row: row[1])
    by_model["m1"]["calls"] += 1
    by_model["m1"]["errors"] += 1
    by_user = {"anonymous": {k: totals[k] for k in totals}}
    days = {datetime.fromtimestamp(line["ts"] / 1000, UTC).date().isoformat() for line in ledger_lines(deploy)}
    for group_by, want in (("agent", by_agent), ("model", by_model), ("user", by_user)):
        data = await usage(client, gw, groupBy=group_by, **around_today())
        assert data["groupBy"] == group_by and data["totals"] == totals
        got = {g["key"]: {k: v for k, v in g.items() if k != "key"} for g in data["groups"]}
        assert got.keys() == want.keys()
        for key, group in want.items():
            assert got[key] == {**group, "points": round(group["points"], 4)}, (group_by, key)
    by_day = await usage(client, gw, groupBy="day", **around_today())
    assert by_day["totals"] == totals and {g["key"] for g in by_day["groups"]} == days
    assert sum(g["calls"] for g in by_day["groups"]) == 5
    # the default range is today, the default groupBy is day
    default = await usage(client, gw)
    assert default["groupBy"] == "day" and default["from"] == default["to"]


async def test_a_torn_last_line_is_skipped_and_the_next_call_starts_a_new_line(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    good = {"ts": 1, "runId": "run_old", "chatId": "chat_old", "agentKey": "a_m1", "modelKey": "m1",
            "provider": "fake", "user": "anonymous", "promptTokens": 1000, "completionTokens": 2,
            "points": 10.06, "durationMs": 5, "ttftMs": 1, "status": "ok"}
    torn = orjson.dumps({**good, "promptTokens": 5000})[:-20]  # a crash cut this line short
    usage_dir(deploy).mkdir(parents=True)
    today = datetime.now(UTC).date()
    for day in (today, today + timedelta(days=1)):  # whichever UTC day the next call falls on
        (usage_dir(deploy) / f"{day.isoformat()}.jsonl").write_bytes(orjson.dumps(good) + b"\n" + torn)
    gw = start_gateway()
    with caplog.at_level(logging.WARNING, logger="app.usage"):
        upstream.enqueue(text_script(["fresh"], usage=(30, 20)))
        run = (await ask(client, gw, "a_m1"))[-1]["runId"]
        data = await usage(client, gw, **{"from": today.isoformat(), "to": (today + timedelta(days=1)).isoformat()})
    assert data["totals"]["calls"] == 3  # two good old lines, one new; both torn lines skipped
    assert data["totals"]["promptTokens"] == 2000 + 30 and data["totals"]["completionTokens"] == 4 + 20
    assert "skipped" in caplog.text
    # the new line did not glue onto the torn one: it is whole, on a line of its own
    landed = [path for path in usage_dir(deploy).glob("*.jsonl") if run.encode() in path.read_bytes()]
    assert len(landed) == 1
    raw = landed[0].read_bytes().split(b"\n")
    assert raw[1] == torn and orjson.loads(raw[2])["runId"] == run and raw[3] == b""


def _ledger_line(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """One ledger line of user ``anonymous`` at epoch ms 1 (the day files decide the day)."""
    return {"ts": 1, "user": "anonymous", "agentKey": "a", "modelKey": "m1", "status": "ok",
            "promptTokens": prompt_tokens, "completionTokens": completion_tokens, "points": 0}


def _write_days(deploy: Path, days: dict[str, bytes]) -> None:
    """Write each day file of the usage ledger (``YYYY-MM-DD`` → its bytes)."""
    usage_dir(deploy).mkdir(parents=True)
    for day, data in days.items():
        (usage_dir(deploy) / f"{day}.jsonl").write_bytes(data)


async def test_a_query_reads_only_the_days_of_its_range(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
) -> None:
    line = _ledger_line(1, 1)
    _write_days(deploy, {**{day: orjson.dumps(line) + b"\n" for day in ("2025-03-01", "2025-03-02", "2025-03-03",
                                                                          "2025-03-05")},
                         "2025-03-04": b"\xff not json at all\n"})
    gw = start_gateway()
    data = await usage(client, gw, **{"from": "2025-03-02", "to": "2025-03-04", "groupBy": "day"})
    assert (data["from"], data["to"]) == ("2025-03-02", "2025-03-04")
    assert [g["key"] for g in data["groups"]] == ["2025-03-02", "2025-03-03"] and data["totals"]["calls"] == 2
    # a single day: ``from`` alone runs to today, ``to`` alone is that day
    only = await usage(client, gw, to="2025-03-05")
    assert only["from"] == only["to"] == "2025-03-05" and only["totals"]["calls"] == 1


async def test_a_range_ending_on_the_last_day_of_the_calendar_is_answered_not_a_500(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
) -> None:
    """The range used to be walked one day past its end: after 9999-12-31 that is an OverflowError."""
    _write_days(deploy, {"9999-12-31": orjson.dumps(_ledger_line(3, 4)) + b"\n"})
    gw = start_gateway()
    data = await usage(client, gw, **{"from": "9999-12-30", "to": "9999-12-31"})
    assert [g["key"] for g in data["groups"]] == ["9999-12-31"] and data["totals"]["totalTokens"] == 7


@pytest.mark.parametrize("params", [
    {"from": "yesterday"},
    {"to": "2025-13-01"},
    {"from": "20250101", "to": "20250102"},
    {"from": "2025-01-01", "to": "2025-01-01T00:00"},
    {"groupBy": "week"},
    {"from": "2025-02-30"},
    {"from": "2025-03-02", "to": "2025-03-01"},
    {"from": "2024-01-01", "to": "2025-01-01"},  # 367 days
])
async def test_bad_usage_parameters_are_a_400_envelope(
    start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient, params: dict[str, str],
) -> None:
    gw = start_gateway()
    response = await client.get(f"{gw.url}/api/ap/usage", params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 4000 and body["data"] is None and body["msg"].startswith("invalid")
    # the longest allowed range is fine
    assert (await usage(client, gw, **{"from": "2024-01-01", "to": "2024-12-31"}))["totals"]["calls"] == 0


def _auth(pair: KeyPair, **extra: Any) -> dict[str, Any]:
    return {"agent": {"auth": {"enabled": True, "local-public-key": pair.public_pem, "issuer": ISSUER, **extra}}}


async def test_attack_user_reads_other_users_usage(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer],
) -> None:
    pair = rsa_pair()
    gw = start_gateway(_auth(pair))
    for user, scripted in (("alice", (10, 5)), ("bob", (20, 8))):
        upstream.enqueue(text_script(["hi"], usage=scripted))
        async with httpx.AsyncClient(timeout=30, headers=bearer(mint(pair, user))) as as_user:
            await ask(as_user, gw, "a_m1")

    async def seen(token: str, **params: str) -> dict[str, Any]:
        async with httpx.AsyncClient(timeout=30, headers=bearer(token)) as http:
            return await usage(http, gw, groupBy="user", **around_today(), **params)

    alice = await seen(mint(pair, "alice"))
    assert [g["key"] for g in alice["groups"]] == ["alice"]
    assert (alice["totals"]["promptTokens"], alice["totals"]["completionTokens"]) == (10, 5)
    # naming another user in the query does not widen what she sees
    assert (await seen(mint(pair, "alice"), user="bob"))["totals"] == alice["totals"]
    # roles that are not the admin role, or look like it, see only their own (none)
    for claims in ({"roles": ["user", "administrator"]}, {"role": "Admin"}, {"roles": "admins"},
                   {"roles": [{"name": "admin"}]}, {"admin": True}):
        other = await seen(mint_claims(pair, {"sub": "mallory", **claims}))
        assert other["groups"] == [] and other["totals"]["calls"] == 0, claims
    # the admin role, as a list or a single string, sees everyone
    for claims in ({"roles": ["reader", "admin"]}, {"role": "admin"}):
        admin = await seen(mint_claims(pair, {"sub": "carol", **claims}))
        assert [g["key"] for g in admin["groups"]] == ["alice", "bob"], claims
        assert (admin["totals"]["promptTokens"], admin["totals"]["completionTokens"]) == (30, 13)
    async with httpx.AsyncClient(timeout=30) as nobody:
        response = await nobody.get(f"{gw.url}/api/ap/usage")
        assert response.status_code == 401


async def test_attack_default_admin_role_after_the_admin_role_was_renamed(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer],
) -> None:
    pair = rsa_pair()
    gw = start_gateway(_auth(pair, **{"admin-role": "ops"}))
    upstream.enqueue(text_script(["hi"], usage=(10, 5)))
    async with httpx.AsyncClient(timeout=30, headers=bearer(mint(pair, "alice"))) as as_alice:
        await ask(as_alice, gw, "a_m1")
    for claims, sees in (({"roles": ["admin"]}, 0), ({"roles": ["ops"]}, 1)):
        async with httpx.AsyncClient(timeout=30, headers=bearer(mint_claims(pair, {"sub": "carol", **claims}))) as h:
            assert (await usage(h, gw, **around_today()))["totals"]["calls"] == sees, claims


def test_max_range_constant_matches_the_documented_limit() -> None:
    query = parse_usage_query({"from": "2024-01-01", "to": "2024-12-31"}, today=date(2025, 1, 1))
    assert MAX_RANGE_DAYS == 366 and (query.end - query.start).days + 1 == 366


async def test_reasoning_tokens_the_provider_reports_reach_the_ledger_line(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
) -> None:
    """SPEC §19 ``reasoningTokens?``: OpenAI's ``completion_tokens_details.reasoning_tokens``, only when sent."""
    gw = start_gateway()
    upstream.enqueue([Text("thought through"), Usage(120, 80, reasoning_tokens=30), Finish("stop")])
    upstream.enqueue(text_script(["plain"], usage=(10, 5)))
    await ask(client, gw, "a_m1")
    await ask(client, gw, "a_m1")
    await usage(client, gw, **around_today())
    reasoned, plain = ledger_lines(deploy)
    assert (reasoned["promptTokens"], reasoned["completionTokens"], reasoned["reasoningTokens"]) == (120, 80, 30)
    assert "reasoningTokens" not in plain and plain["completionTokens"] == 5
