"""``city_datetime``: the current date and time in a city (SPEC §3.3 "Built-in tools").

The city is looked up in a table of common cities (English and Chinese names), or
taken as an IANA zone name (``Asia/Shanghai``, ``UTC``). Unknown → ``ToolError``.
Without a city, Shanghai is used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from app.errors import ToolError
from app.tools.base import ToolContext

_DEFAULT_CITY = "Shanghai"

#: IANA zone → names (English, Chinese, a few aliases); normalised by ``_normalise``
_ZONES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "Asia/Shanghai": (
        "Shanghai", "上海", "Beijing", "Peking", "北京", "Hangzhou", "杭州", "Shenzhen", "深圳",
        "Guangzhou", "Canton", "广州", "Chengdu", "成都", "Chongqing", "重庆", "Tianjin", "天津",
        "Nanjing", "南京", "Wuhan", "武汉", "Xi'an", "Xian", "西安", "Suzhou", "苏州",
        "Changsha", "长沙", "Zhengzhou", "郑州", "Qingdao", "青岛", "Xiamen", "厦门",
        "Kunming", "昆明", "Harbin", "哈尔滨", "Shenyang", "沈阳", "Dalian", "大连",
        "Jinan", "济南", "Hefei", "合肥", "Fuzhou", "福州", "Ningbo", "宁波", "Lhasa", "拉萨",
        "Urumqi", "乌鲁木齐", "China", "中国",
    ),
    "Asia/Hong_Kong": ("Hong Kong", "HongKong", "香港"),
    "Asia/Macau": ("Macau", "Macao", "澳门"),
    "Asia/Taipei": ("Taipei", "台北"),
    "Asia/Tokyo": ("Tokyo", "东京", "東京", "Osaka", "大阪", "Kyoto", "京都"),
    "Asia/Seoul": ("Seoul", "首尔", "Busan", "釜山"),
    "Asia/Singapore": ("Singapore", "新加坡"),
    "Asia/Bangkok": ("Bangkok", "曼谷"),
    "Asia/Kuala_Lumpur": ("Kuala Lumpur", "吉隆坡"),
    "Asia/Jakarta": ("Jakarta", "雅加达"),
    "Asia/Manila": ("Manila", "马尼拉"),
    "Asia/Ho_Chi_Minh": ("Ho Chi Minh City", "Saigon", "胡志明市"),
    "Asia/Kolkata": ("New Delhi", "Delhi", "新德里", "Mumbai", "孟买", "Bangalore", "班加罗尔"),
    "Asia/Dubai": ("Dubai", "迪拜", "Abu Dhabi", "阿布扎比"),
    "Asia/Riyadh": ("Riyadh", "利雅得"),
    "Asia/Jerusalem": ("Jerusalem", "耶路撒冷", "Tel Aviv", "特拉维夫"),
    "Europe/Istanbul": ("Istanbul", "伊斯坦布尔"),
    "Europe/Moscow": ("Moscow", "莫斯科"),
    "Europe/London": ("London", "伦敦", "Edinburgh", "爱丁堡"),
    "Europe/Dublin": ("Dublin", "都柏林"),
    "Europe/Paris": ("Paris", "巴黎"),
    "Europe/Berlin": ("Berlin", "柏林", "Munich", "慕尼黑", "Frankfurt", "法兰克福"),
    "Europe/Madrid": ("Madrid", "马德里", "Barcelona", "巴塞罗那"),
    "Europe/Rome": ("Rome", "罗马", "Milan", "米兰"),
    "Europe/Amsterdam": ("Amsterdam", "阿姆斯特丹"),
    "Europe/Zurich": ("Zurich", "苏黎世", "Geneva", "日内瓦"),
    "Europe/Vienna": ("Vienna", "维也纳"),
    "Europe/Stockholm": ("Stockholm", "斯德哥尔摩"),
    "Europe/Athens": ("Athens", "雅典"),
    "Africa/Cairo": ("Cairo", "开罗"),
    "Africa/Johannesburg": ("Johannesburg", "约翰内斯堡", "Cape Town", "开普敦"),
    "Africa/Lagos": ("Lagos", "拉各斯"),
    "Africa/Nairobi": ("Nairobi", "内罗毕"),
    "America/New_York": ("New York", "NYC", "纽约", "Washington", "Washington DC", "华盛顿", "Boston", "波士顿", "Miami", "迈阿密"),
    "America/Toronto": ("Toronto", "多伦多", "Montreal", "蒙特利尔"),
    "America/Chicago": ("Chicago", "芝加哥", "Houston", "休斯顿", "Dallas", "达拉斯"),
    "America/Denver": ("Denver", "丹佛"),
    "America/Phoenix": ("Phoenix", "凤凰城"),
    "America/Los_Angeles": ("Los Angeles", "LA", "洛杉矶", "San Francisco", "SF", "旧金山", "Seattle", "西雅图", "Las Vegas", "拉斯维加斯", "San Jose", "圣何塞"),
    "America/Vancouver": ("Vancouver", "温哥华"),
    "America/Mexico_City": ("Mexico City", "墨西哥城"),
    "America/Sao_Paulo": ("Sao Paulo", "São Paulo", "圣保罗", "Rio de Janeiro", "里约热内卢"),
    "America/Argentina/Buenos_Aires": ("Buenos Aires", "布宜诺斯艾利斯"),
    "Pacific/Honolulu": ("Honolulu", "Hawaii", "檀香山", "夏威夷"),
    "Australia/Sydney": ("Sydney", "悉尼", "Canberra", "堪培拉"),
    "Australia/Melbourne": ("Melbourne", "墨尔本"),
    "Australia/Brisbane": ("Brisbane", "布里斯班"),
    "Australia/Perth": ("Perth", "珀斯"),
    "Pacific/Auckland": ("Auckland", "奥克兰", "Wellington", "惠灵顿"),
    "UTC": ("UTC", "GMT", "Greenwich", "格林尼治"),
})  # fmt: skip

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_WEEKDAYS_ZH = ("星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日")
_SEPARATORS = re.compile(r"[\s\-_'’.·]+")
_CITY_SUFFIXES = ("市", "city")


def _normalise(name: str) -> str:
    key = _SEPARATORS.sub("", name.strip().casefold())
    for suffix in _CITY_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            key = key[: -len(suffix)]
    return key


def _city_table() -> dict[str, str]:
    return {_normalise(name): zone for zone, names in _ZONES.items() for name in names}


def resolve_zone(city: str) -> str:
    """The IANA zone of ``city`` (a table name or an IANA name), or ``ToolError``."""
    zone = _city_table().get(_normalise(city))
    if zone is not None:
        return zone
    candidate = city.strip()
    if "/" in candidate or candidate.upper() in ("UTC", "GMT"):
        try:
            ZoneInfo(candidate)
        except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder of zones (America/Argentina)
            pass
        else:
            return candidate
    raise ToolError(
        f"unknown city {city!r}: use a major city name (e.g. Shanghai, 北京, Tokyo, New York) "
        "or an IANA time zone such as Asia/Shanghai"
    )


def city_datetime_at(city: str, now: datetime) -> dict[str, Any]:
    """The result for ``city`` at the instant ``now`` (timezone-aware)."""
    zone = resolve_zone(city)
    local = now.astimezone(ZoneInfo(zone))
    offset = local.strftime("%z")
    return {
        "city": city.strip(),
        "timezone": zone,
        "date": local.strftime("%Y-%m-%d"),
        "time": local.strftime("%H:%M:%S"),
        "datetime": local.isoformat(timespec="seconds"),
        "weekday": _WEEKDAYS[local.weekday()],
        "weekdayZh": _WEEKDAYS_ZH[local.weekday()],
        "utcOffset": f"{offset[:3]}:{offset[3:]}" if offset else "+00:00",
    }


async def city_datetime(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """``{city}`` → ``{city, timezone, date, time, datetime, weekday, …}`` (real clock)."""
    city = args.get("city")
    if city is None or (isinstance(city, str) and not city.strip()):
        city = _DEFAULT_CITY
    if not isinstance(city, str):
        raise ToolError("'city' must be a string")
    return city_datetime_at(city, datetime.now().astimezone())
