"""The deterministic demo tools of the upstream definitions (SPEC §3.3 "Built-in tools").

``mock_city_weather``, ``mock_logistics_status``, ``mock_ops_runbook``,
``mock_todo_tasks``, ``mock_transport_schedule``: fake data shaped as each tool's
description says, derived from a hash of the (normalised) arguments only — the same
arguments always give the same result. Every result carries ``"mock": true``. The
weather, logistics, todo and transport results are what the ``show_weather_card``,
``show_logistics_status``, ``show_todo_card`` and ``show_transport_card`` viewports render.
"""

from __future__ import annotations

import hashlib
import json
import random
from datetime import date, datetime, timedelta
from typing import Any

from app.errors import ToolError
from app.tools.base import ToolContext

#: dates derived for tools whose arguments carry none start here
_EPOCH = date(2026, 1, 1)


def _rng(tool: str, *parts: Any) -> random.Random:
    """A private generator seeded from the tool name and its arguments."""
    blob = json.dumps([tool, *parts], ensure_ascii=False, sort_keys=True)
    seed = int.from_bytes(hashlib.sha256(blob.encode("utf-8")).digest()[:8], "big")
    return random.Random(seed)


def _text(args: dict[str, Any], *names: str) -> str:
    for name in names:
        value = args.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if value is not None and not isinstance(value, str):
            raise ToolError(f"{name!r} must be a string")
    return ""


def _parse_date(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value[:10])
    except ValueError as exc:
        raise ToolError(f"{name!r} must be a date like 2026-02-13, got {value!r}") from exc


# ---------------------------------------------------------------------------------
# weather

_WEATHER = (
    ("晴", "sunny", "☀️"),
    ("多云", "cloudy", "⛅"),
    ("阴", "overcast", "☁️"),
    ("小雨", "light rain", "🌦️"),
    ("中雨", "rain", "🌧️"),
    ("雷阵雨", "thunderstorm", "⛈️"),
    ("小雪", "light snow", "🌨️"),
    ("雾", "fog", "🌫️"),
)
_WIND_DIRECTIONS = ("北风", "东北风", "东风", "东南风", "南风", "西南风", "西风", "西北风")


async def mock_city_weather(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """``{city, date}`` → ``{city, date, weather, temperatureC, humidity, windLevel, …}``."""
    city = _text(args, "city")
    if not city:
        raise ToolError("'city' is required")
    day_text = _text(args, "date") or date.today().isoformat()
    day = _parse_date(day_text, "date")
    rng = _rng("mock_city_weather", city.casefold(), day.isoformat())
    # a seasonal baseline so January is colder than July
    season = {12: -2, 1: -4, 2: 0, 3: 8, 4: 14, 5: 20, 6: 25, 7: 29, 8: 28, 9: 23, 10: 16, 11: 8}[day.month]
    temperature = season + rng.randint(-4, 6)
    low = temperature - rng.randint(3, 7)
    high = temperature + rng.randint(1, 4)
    weather_zh, weather_en, icon = rng.choice(_WEATHER if temperature <= 2 else _WEATHER[:6] + _WEATHER[7:])
    aqi = rng.randint(15, 180)
    return {
        "city": city,
        "date": day.isoformat(),
        "weather": weather_zh,
        "weatherEn": weather_en,
        "icon": icon,
        "temperatureC": temperature,
        "minTemperatureC": low,
        "maxTemperatureC": high,
        "humidity": rng.randint(25, 95),
        "windDirection": rng.choice(_WIND_DIRECTIONS),
        "windLevel": rng.randint(1, 6),
        "aqi": aqi,
        "airQuality": "优" if aqi <= 50 else "良" if aqi <= 100 else "轻度污染" if aqi <= 150 else "中度污染",
        "tips": _weather_tip(weather_en, temperature),
        "mock": True,
    }


def _weather_tip(weather: str, temperature: int) -> str:
    if "rain" in weather or "thunder" in weather:
        return "有降水，出门记得带伞。"
    if "snow" in weather or temperature <= 0:
        return "天气寒冷，注意保暖防滑。"
    if temperature >= 30:
        return "气温较高，注意防暑补水。"
    return "天气适宜，适合出行。"


# ---------------------------------------------------------------------------------
# logistics

_CARRIERS = ("SF Express", "JD Logistics", "YTO Express", "ZTO Express", "EMS", "STO Express")
_CITIES = ("深圳", "广州", "上海", "杭州", "北京", "成都", "武汉", "南京", "西安", "重庆")
_LOGISTICS_STEPS = (
    ("picked_up", "已揽收", "快件已由{origin}营业点揽收"),
    ("in_transit", "运输中", "快件已到达{origin}转运中心"),
    ("in_transit", "运输中", "快件已从{origin}转运中心发出，发往{destination}"),
    ("in_transit", "运输中", "快件已到达{destination}转运中心"),
    ("out_for_delivery", "派送中", "快件正在派送中，派送员将尽快联系您"),
    ("delivered", "已签收", "快件已签收，签收人：本人"),
)


async def mock_logistics_status(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """``{trackingNo, carrier?}`` → ``{trackingNo, carrier, status, statusText, events[], …}``."""
    tracking_no = _text(args, "trackingNo", "tracking_no")
    if not tracking_no:
        raise ToolError("'trackingNo' is required")
    rng = _rng("mock_logistics_status", tracking_no.upper())
    carrier = _text(args, "carrier") or rng.choice(_CARRIERS)
    origin, destination = rng.sample(_CITIES, 2)
    reached = rng.randint(1, len(_LOGISTICS_STEPS))
    shipped = datetime.combine(_EPOCH + timedelta(days=rng.randint(0, 330)), datetime.min.time()) + timedelta(
        hours=rng.randint(8, 18), minutes=rng.randint(0, 59)
    )
    events: list[dict[str, Any]] = []
    moment = shipped
    for index, (_, text, template) in enumerate(_LOGISTICS_STEPS[:reached]):
        if index:
            moment += timedelta(hours=rng.randint(3, 14), minutes=rng.randint(0, 59))
        location = origin if index < 3 else destination
        events.append({
            "time": moment.strftime("%Y-%m-%d %H:%M"),
            "location": location,
            "status": text,
            "description": template.format(origin=origin, destination=destination),
        })
    status, status_text, _ = _LOGISTICS_STEPS[reached - 1]
    estimated = (shipped + timedelta(days=rng.randint(2, 4))).strftime("%Y-%m-%d")
    return {
        "trackingNo": tracking_no,
        "carrier": carrier,
        "status": status,
        "statusText": status_text,
        "origin": origin,
        "destination": destination,
        "currentLocation": events[-1]["location"],
        "estimatedDelivery": estimated,
        "updatedAt": events[-1]["time"],
        "events": list(reversed(events)),  # newest first, as carriers show them
        "mock": True,
    }


# ---------------------------------------------------------------------------------
# ops runbook

_RUNBOOK_STEPS = (
    ("检查主机资源", "uptime && free -h && df -h", "CPU 负载、内存与磁盘使用率在阈值内"),
    ("检查服务进程", "systemctl status app.service", "服务处于 active (running) 状态"),
    ("检查最近错误日志", "journalctl -u app.service --since '-1h' | grep -i error | tail -n 50", "无新增 ERROR 级别日志"),
    ("检查网络连通性", "curl -sS -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/health", "返回 200"),
    ("检查数据库连接", "SELECT 1;", "查询在 100ms 内返回"),
    ("检查证书有效期", "openssl x509 -enddate -noout -in /etc/ssl/certs/app.pem", "证书有效期大于 30 天"),
    ("检查备份任务", "ls -lt /var/backups | head", "最近 24 小时内有成功的备份"),
    ("检查告警与监控面板", "打开监控面板查看 P95 延迟与错误率", "P95 < 300ms，错误率 < 0.1%"),
)


async def mock_ops_runbook(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """``{message|query, city?}`` → ``{title, summary, severity, steps[], …}``."""
    message = _text(args, "message", "query")
    if not message:
        raise ToolError("'message' is required (the inspection request or problem description)")
    city = _text(args, "city")
    rng = _rng("mock_ops_runbook", message, city)
    chosen = sorted(rng.sample(range(len(_RUNBOOK_STEPS)), rng.randint(4, 6)))
    steps = [
        {"step": number, "title": title, "command": command, "expected": expected}
        for number, (title, command, expected) in enumerate((_RUNBOOK_STEPS[i] for i in chosen), start=1)
    ]
    severity = rng.choice(("low", "medium", "high"))
    scope = f"{city}机房" if city else "生产环境"
    return {
        "title": f"{scope}巡检 Runbook",
        "request": message,
        "city": city or None,
        "severity": severity,
        "summary": f"针对「{message[:60]}」生成 {len(steps)} 个巡检步骤，建议按顺序执行并记录结果。",
        "steps": steps,
        "estimatedMinutes": sum(rng.randint(3, 10) for _ in steps),
        "rollback": "如发现异常，先摘除故障节点流量，再按变更记录回滚最近一次发布。",
        "owner": rng.choice(("SRE 值班", "平台运维组", "应用负责人")),
        "mock": True,
    }


# ---------------------------------------------------------------------------------
# todo tasks

_TODO_TITLES = (
    "整理本周周报", "评审接口设计文档", "修复登录页样式问题", "准备季度复盘材料", "回复客户邮件",
    "更新项目排期", "与设计师对齐需求", "补充单元测试", "检查线上告警", "预约团队会议室",
    "提交报销单", "阅读技术分享文章",
)  # fmt: skip
_TODO_TAGS = ("工作", "会议", "开发", "文档", "个人", "紧急")


async def mock_todo_tasks(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """``{owner?}`` → ``{owner, total, completed, tasks[{id, title, priority, status, dueDate, tags}]}``."""
    owner = _text(args, "owner") or "我"
    rng = _rng("mock_todo_tasks", owner)
    start = _EPOCH + timedelta(days=rng.randint(0, 330))
    tasks = []
    for index, title in enumerate(rng.sample(_TODO_TITLES, rng.randint(4, 7)), start=1):
        status = rng.choice(("todo", "todo", "in_progress", "done"))
        tasks.append({
            "id": f"T{index:03d}",
            "title": title,
            "priority": rng.choice(("high", "medium", "low")),
            "status": status,
            "dueDate": (start + timedelta(days=rng.randint(0, 10))).isoformat(),
            "tags": sorted(rng.sample(_TODO_TAGS, rng.randint(1, 2))),
        })
    tasks.sort(key=lambda task: (task["dueDate"], task["id"]))
    return {
        "owner": owner,
        "total": len(tasks),
        "completed": sum(1 for task in tasks if task["status"] == "done"),
        "tasks": tasks,
        "mock": True,
    }


# ---------------------------------------------------------------------------------
# transport schedule

_FLIGHT_WORDS = ("flight", "plane", "air", "航班", "飞机", "机票")
_TRAIN_WORDS = ("train", "rail", "高铁", "火车", "动车", "列车")
_AIRLINES = (("CA", "中国国航"), ("MU", "东方航空"), ("CZ", "南方航空"), ("HU", "海南航空"), ("ZH", "深圳航空"))


def _transport_type(value: str, rng: random.Random) -> str:
    lowered = value.casefold()
    if any(word in lowered for word in _FLIGHT_WORDS):
        return "flight"
    if any(word in lowered for word in _TRAIN_WORDS):
        return "train"
    if value:
        raise ToolError(f"unknown transport type {value!r}: use flight/train (航班/高铁)")
    return rng.choice(("flight", "train"))


async def mock_transport_schedule(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """``{type?, fromCity, toCity, date}`` → ``{type, fromCity, toCity, date, trips[…]}``."""
    from_city = _text(args, "fromCity", "from")
    to_city = _text(args, "toCity", "to")
    if not from_city or not to_city:
        raise ToolError("'fromCity' and 'toCity' are required")
    day = _parse_date(_text(args, "date") or date.today().isoformat(), "date")
    if day == date.max:  # a trip may arrive the next day, which would be past the last date there is
        raise ToolError(f"'date' must be before {date.max.isoformat()}: trips leaving then would arrive after it")
    raw_type = _text(args, "type")
    rng = _rng("mock_transport_schedule", raw_type.casefold(), from_city, to_city, day.isoformat())
    kind = _transport_type(raw_type, rng)
    trips: list[dict[str, Any]] = []
    departures = sorted(rng.sample(range(6 * 60, 22 * 60, 5), rng.randint(3, 5)))
    for minute in departures:
        duration = rng.randint(90, 200) if kind == "flight" else rng.randint(150, 420)
        depart = datetime.combine(day, datetime.min.time()) + timedelta(minutes=minute)
        arrive = depart + timedelta(minutes=duration)
        if kind == "flight":
            code, airline = rng.choice(_AIRLINES)
            trip: dict[str, Any] = {
                "number": f"{code}{rng.randint(1000, 9999)}",
                "operator": airline,
                "fromStation": f"{from_city}机场",
                "toStation": f"{to_city}机场",
                "seatClass": "经济舱",
                "price": rng.randint(45, 180) * 10,
            }
        else:
            trip = {
                "number": f"G{rng.randint(1, 1999)}",
                "operator": "中国铁路",
                "fromStation": f"{from_city}站",
                "toStation": f"{to_city}站",
                "seatClass": "二等座",
                "price": rng.randint(120, 900),
            }
        trip.update({
            "departTime": depart.strftime("%H:%M"),
            "arriveTime": arrive.strftime("%H:%M"),
            "arriveDate": arrive.date().isoformat(),
            "durationMinutes": duration,
            "duration": f"{duration // 60}小时{duration % 60}分",
            "seatsLeft": rng.randint(0, 60),
            "status": rng.choice(("on_time", "on_time", "on_time", "delayed")),
        })
        trips.append(trip)
    return {
        "type": kind,
        "typeText": "航班" if kind == "flight" else "高铁",
        "fromCity": from_city,
        "toCity": to_city,
        "date": day.isoformat(),
        "trips": trips,
        "cheapest": min(trips, key=lambda trip: trip["price"])["number"],
        "mock": True,
    }
