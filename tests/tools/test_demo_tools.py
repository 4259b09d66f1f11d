"""city_datetime and the deterministic mock tools (SPEC §3.3 "Built-in tools")."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timezone
from typing import Any

import pytest

from app.errors import ToolError
from app.tools.city_datetime import city_datetime, city_datetime_at
from app.tools.mocks import (
    mock_city_weather,
    mock_logistics_status,
    mock_ops_runbook,
    mock_todo_tasks,
    mock_transport_schedule,
)
from app.tools.registry import ENGINE_TOOLS, builtin_tool_names, builtin_tools
from app.tools.sensitive_data import detect, mock_sensitive_data_detector
from tests.tools.conftest import REPO

INSTANT = datetime(2026, 2, 13, 4, 5, 6, tzinfo=timezone.utc)


def test_registry_names() -> None:
    tools = builtin_tools()
    assert tools is not builtin_tools()  # a fresh mapping each call
    assert {"_bash_", "_skill_run_script_", "agent_file_create", "city_datetime", "mock_city_weather"} <= set(tools)
    assert ENGINE_TOOLS == {"_plan_add_tasks_", "_plan_update_task_", "_plan_get_tasks_"}
    assert builtin_tool_names() == set(tools) | ENGINE_TOOLS
    assert not ENGINE_TOOLS & set(tools)


@pytest.mark.parametrize(
    ("city", "zone", "clock"),
    [
        ("Shanghai", "Asia/Shanghai", "12:05:06"),
        ("上海", "Asia/Shanghai", "12:05:06"),
        ("北京市", "Asia/Shanghai", "12:05:06"),
        ("东京", "Asia/Tokyo", "13:05:06"),
        ("new york", "America/New_York", "23:05:06"),
        ("San-Francisco", "America/Los_Angeles", "20:05:06"),
        ("London", "Europe/London", "04:05:06"),
        ("Europe/Paris", "Europe/Paris", "05:05:06"),
        ("UTC", "UTC", "04:05:06"),
    ],
)
def test_city_datetime_lookup(city: str, zone: str, clock: str) -> None:
    result = city_datetime_at(city, INSTANT)
    assert result["timezone"] == zone
    assert result["time"] == clock
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", result["date"])
    assert result["datetime"].startswith(result["date"] + "T" + clock)
    assert result["weekday"] in ("Thursday", "Friday")
    assert set(result) >= {"city", "timezone", "date", "time", "datetime", "weekday"}


async def test_city_datetime_live_and_unknown(make_ctx: Any) -> None:
    ctx = make_ctx()
    live = await city_datetime({"city": "Singapore"}, ctx)
    assert live["timezone"] == "Asia/Singapore"
    with pytest.raises(ToolError, match="unknown city 'Atlantis'"):
        await city_datetime({"city": "Atlantis"}, ctx)
    with pytest.raises(ToolError, match="unknown city"):
        await city_datetime({"city": "../../etc/passwd"}, ctx)
    assert (await city_datetime({}, ctx))["timezone"] == "Asia/Shanghai"


@pytest.mark.parametrize("city", ["America/Argentina", "America/Indiana", "Europe"])
async def test_a_folder_of_time_zones_is_an_unknown_city(make_ctx: Any, city: str) -> None:
    """``America/Argentina`` names a folder of zones: ``ZoneInfo`` raised IsADirectoryError, which came
    back as "tool failed: [Errno 21] Is a directory: '<the gateway's install path>…'"."""
    with pytest.raises(ToolError, match="unknown city") as raised:
        await city_datetime({"city": city}, make_ctx())
    assert "Errno" not in raised.value.message and "/" + "zoneinfo" not in raised.value.message


async def test_weather_is_deterministic_and_shaped(make_ctx: Any) -> None:
    ctx = make_ctx()
    first = await mock_city_weather({"city": "Shanghai", "date": "2026-02-13"}, ctx)
    again = await mock_city_weather({"city": "Shanghai", "date": "2026-02-13"}, ctx)
    other = await mock_city_weather({"city": "Shanghai", "date": "2026-07-13"}, ctx)
    assert first == again
    assert first != other
    assert first["city"] == "Shanghai" and first["date"] == "2026-02-13"
    assert isinstance(first["temperatureC"], int)
    assert 0 <= first["humidity"] <= 100 and 1 <= first["windLevel"] <= 12
    assert isinstance(first["weather"], str) and first["mock"] is True
    with pytest.raises(ToolError, match="city"):
        await mock_city_weather({"date": "2026-02-13"}, ctx)
    with pytest.raises(ToolError, match="date"):
        await mock_city_weather({"city": "x", "date": "tomorrow"}, ctx)


async def test_logistics(make_ctx: Any) -> None:
    ctx = make_ctx()
    result = await mock_logistics_status({"trackingNo": "SF123456789CN"}, ctx)
    assert result == await mock_logistics_status({"trackingNo": "SF123456789CN"}, ctx)
    assert result["trackingNo"] == "SF123456789CN"
    assert result["events"] and {"time", "location", "description"} <= set(result["events"][0])
    assert result["statusText"] and result["carrier"]
    assert (await mock_logistics_status({"trackingNo": "X1", "carrier": "EMS"}, ctx))["carrier"] == "EMS"
    with pytest.raises(ToolError):
        await mock_logistics_status({}, ctx)


async def test_runbook_todo_transport(make_ctx: Any) -> None:
    ctx = make_ctx()
    runbook = await mock_ops_runbook({"message": "检查支付服务", "city": "杭州"}, ctx)
    assert runbook == await mock_ops_runbook({"query": "检查支付服务", "city": "杭州"}, ctx)
    assert runbook["steps"] and {"step", "title", "command", "expected"} <= set(runbook["steps"][0])
    with pytest.raises(ToolError):
        await mock_ops_runbook({}, ctx)

    todo = await mock_todo_tasks({"owner": "Alice"}, ctx)
    assert todo == await mock_todo_tasks({"owner": "Alice"}, ctx)
    assert todo["owner"] == "Alice" and todo["total"] == len(todo["tasks"]) >= 4
    assert {"id", "title", "priority", "status", "dueDate"} <= set(todo["tasks"][0])

    args = {"type": "高铁", "fromCity": "上海", "toCity": "北京", "date": "2026-03-01"}
    trip = await mock_transport_schedule(args, ctx)
    assert trip == await mock_transport_schedule(dict(args), ctx)
    assert trip["type"] == "train" and trip["date"] == "2026-03-01"
    assert all(t["number"].startswith("G") for t in trip["trips"])
    flight = await mock_transport_schedule({**args, "type": "flight"}, ctx)
    assert flight["type"] == "flight" and flight["typeText"] == "航班"
    with pytest.raises(ToolError, match="unknown transport type"):
        await mock_transport_schedule({**args, "type": "boat"}, ctx)
    with pytest.raises(ToolError):
        await mock_transport_schedule({"date": "2026-03-01"}, ctx)


async def test_transport_schedule_on_the_last_representable_day_is_a_tool_error(make_ctx: Any) -> None:
    """Trips leaving on 9999-12-31 may arrive the next day: that was an OverflowError, which ended
    the whole run with internal_error; now the model gets a tool error it can act on."""
    ctx = make_ctx()
    # the schedules drawn for these arguments have a trip arriving the next day
    for kind, from_city, to_city in (("train", "a", "b"), ("flight", "上海", "广州")):
        with pytest.raises(ToolError, match="'date' must be before 9999-12-31"):
            await mock_transport_schedule({"type": kind, "fromCity": from_city, "toCity": to_city, "date": "9999-12-31"},
                                          ctx)
    first = await mock_transport_schedule({"type": "train", "fromCity": "上海", "toCity": "北京", "date": "0001-01-01"}, ctx)
    assert first["date"] == "0001-01-01" and first["trips"]


def _id_number(prefix17: str) -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(prefix17, weights, strict=True))
    return prefix17 + "10X98765432"[total % 11]


async def test_sensitive_detector_finds_real_data(make_ctx: Any) -> None:
    ctx = make_ctx()
    id_card = _id_number("11010519491231002")
    text = (
        f"联系人手机 13812345678，邮箱 alice@example.com，身份证 {id_card}，"
        "银行卡 4111 1111 1111 1111，key=sk-abcdefghijklmnopqrstuvwx"
    )
    result = await mock_sensitive_data_detector({"text": text}, ctx)
    assert result["hasSensitiveData"] is True and result["result"] == "有"
    types = {f["type"] for f in result["findings"]}
    assert {"phone", "email", "id_card", "bank_card", "api_key"} <= types
    assert "13812345678" not in str(result) and "sk-abcdefghijklmnopqrstuvwx" not in str(result)
    assert result["summary"].startswith("检测到")


async def test_sensitive_detector_clean_text_and_aliases(make_ctx: Any) -> None:
    ctx = make_ctx()
    clean = await mock_sensitive_data_detector({"content": "今天天气不错，订单号 20260213 已发货。"}, ctx)
    assert clean["hasSensitiveData"] is False and clean["result"] == "没有" and clean["findings"] == []
    assert detect("card 4111 1111 1111 1112")["hasSensitiveData"] is False  # fails Luhn
    valid = _id_number("11010519491231002")
    wrong = valid[:-1] + ("1" if valid[-1] != "1" else "2")
    assert "id_card" not in {f["type"] for f in detect(f"id {wrong}")["findings"]}
    with pytest.raises(ToolError):
        await mock_sensitive_data_detector({}, ctx)


def _detect_in_child(text_expression: str) -> dict[str, Any]:
    """``detect`` of a large text, in a child process whose CPU limit (20 s, against a second or
    two needed) only guards the suite from hanging on a regression: the check is that it ends."""
    code = (
        "import json, resource\n"
        "resource.setrlimit(resource.RLIMIT_CPU, (20, 20))\n"
        "from app.tools.sensitive_data import detect\n"
        f"result = detect({text_expression})\n"
        "print(json.dumps({'counts': result['counts'], 'findings': len(result['findings'])}))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0, (done.returncode, done.stderr[-500:])
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_attack_text_of_percent_signs_makes_the_email_scan_quadratic() -> None:
    """``%`` may appear in an e-mail's local part but was missing from the rule's look-behind, so
    every ``%`` of a run started a scan to the run's end: 60 KB of them froze the gateway (every
    request, ``/healthz`` too) for 11 s; this megabyte, about an hour."""
    assert _detect_in_child("'%' * 1_000_000 + ' a%b@example.com'") == {"counts": {"邮箱": 1}, "findings": 1}


def test_attack_text_of_many_phone_numbers_makes_the_overlap_check_quadratic() -> None:
    """Each finding was compared with every earlier one (to skip overlaps): 5,000 phone numbers
    took a second, these 100,000 (1.2 MB) several minutes. Now the spans are kept sorted and a
    finding is compared with its two neighbours; every number is still counted once."""
    result = _detect_in_child("'13812345678 ' * 100_000 + 'bob@example.com'")
    assert result == {"counts": {"手机号": 100_000, "邮箱": 1}, "findings": 50}
