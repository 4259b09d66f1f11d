"""What the embedded demo model reads in a question and writes in an answer.

Reading (``city_of``, ``date_of``, ``pick_enum``, ``relevant_tools``): the city named in
the person's message (a table of major cities, English and Chinese names, else a
capitalised name after "in"/"for"/"at", else Shanghai), the date ("today", "tomorrow",
"yesterday" or an ISO date), the enum value a message names (``dark`` for "night mode"),
and which offered tools the question concerns.

Writing (``describe_result``, ``viewport_block``): one English sentence per tool result
(the weather, the local time, a confirmation, an action), and the ``viewport`` block an
after-call hint asks for (SPEC §3.5) with the tool's result object as its JSON.

Everything here is a pure function of its arguments: the same question gives the same answer.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

DEFAULT_CITY = "Shanghai"

#: canonical English name → other names people write (matched case-insensitively, whole words)
_CITIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Tokyo", ("东京", "東京")),
    ("Shanghai", ("上海",)),
    ("Beijing", ("Peking", "北京")),
    ("Paris", ("巴黎",)),
    ("London", ("伦敦",)),
    ("New York", ("NYC", "New York City", "纽约")),
    ("Berlin", ("柏林",)),
    ("Hong Kong", ("香港",)),
    ("Singapore", ("新加坡",)),
    ("Seoul", ("首尔",)),
    ("Osaka", ("大阪",)),
    ("Shenzhen", ("深圳",)),
    ("Guangzhou", ("广州",)),
    ("Hangzhou", ("杭州",)),
    ("Chengdu", ("成都",)),
    ("Sydney", ("悉尼",)),
    ("Los Angeles", ("洛杉矶",)),
    ("San Francisco", ("旧金山",)),
    ("Seattle", ("西雅图",)),
    ("Chicago", ("芝加哥",)),
    ("Toronto", ("多伦多",)),
    ("Moscow", ("莫斯科",)),
    ("Madrid", ("马德里",)),
    ("Rome", ("罗马",)),
    ("Amsterdam", ("阿姆斯特丹",)),
    ("Vienna", ("维也纳",)),
    ("Zurich", ("苏黎世",)),
    ("Dubai", ("迪拜",)),
    ("Bangkok", ("曼谷",)),
    ("Mumbai", ("孟买",)),
    ("Cairo", ("开罗",)),
)  # fmt: skip

#: capitalised words after "in/for/at" that are not places
_NOT_PLACES = frozenset(
    "I Monday Tuesday Wednesday Thursday Friday Saturday Sunday January February March April May June July "
    "August September October November December Celsius Fahrenheit English Chinese The A An".split()
)
_NAMED_PLACE = re.compile(r"\b(?:in|for|at|to)\s+([A-Z][A-Za-z'-]+(?:\s+[A-Z][A-Za-z'-]+)?)")

#: words that name an enum value without spelling it
_SYNONYMS: Mapping[str, tuple[str, ...]] = {
    "dark": ("night", "black", "dim", "darker", "深色", "暗", "黑"),
    "light": ("day", "bright", "white", "lighter", "浅色", "亮", "白"),
}
_RELATIVE_DAYS = (("tomorrow", 1), ("明天", 1), ("yesterday", -1), ("昨天", -1))
_ISO_DATE = re.compile(r"\b(\d{4}-\d{2}-\d{2})\b")
_IGNORED_NAME_PARTS = frozenset({"mock", "get", "set", "show", "the"})
_VIEWPORT_KEY = re.compile(r"\bkey\s*=\s*([A-Za-z0-9_.-]+)")
_VIEWPORT_TYPE = re.compile(r"\btype\s*=\s*([A-Za-z_]+)")


def _is_ascii(text: str) -> bool:
    return text.isascii()


def _position(text: str, name: str) -> int:
    """Where ``name`` occurs in ``text`` (whole words for Latin names, case-insensitive); -1 if not."""
    if _is_ascii(name):
        found = re.search(rf"(?<![A-Za-z]){re.escape(name)}(?![A-Za-z])", text, re.IGNORECASE)
        return found.start() if found else -1
    return text.find(name)


def named_city(text: str) -> str | None:
    """The first known city ``text`` names (its English name), else ``None``."""
    best: tuple[int, int, str] | None = None
    for city, aliases in _CITIES:
        for name in (city, *aliases):
            at = _position(text, name)
            if at >= 0 and (best is None or (at, -len(name)) < (best[0], best[1])):
                best = (at, -len(name), city)
    return best[2] if best else None


def city_of(text: str) -> str:
    """The city the message is about: a known city, else a capitalised name after
    "in/for/at/to", else :data:`DEFAULT_CITY`."""
    known = named_city(text)
    if known:
        return known
    for found in _NAMED_PLACE.finditer(text):
        words = found.group(1).split()
        if words[0] not in _NOT_PLACES:
            return " ".join(word for word in words if word not in _NOT_PLACES)
    return DEFAULT_CITY


def date_of(text: str, today: str) -> str:
    """An ISO date the message names, "tomorrow"/"yesterday" relative to ``today``, else ``today``."""
    explicit = _ISO_DATE.search(text)
    if explicit:
        return explicit.group(1)
    lowered = text.casefold()
    for word, offset in _RELATIVE_DAYS:
        if word in lowered:
            return (_dt.date.fromisoformat(today) + _dt.timedelta(days=offset)).isoformat()
    return today


def pick_enum(values: Sequence[Any], text: str) -> Any:
    """The enum value the message names (itself or a synonym, the earliest mention wins), else the first."""
    best: tuple[int, int] | None = None
    for index, value in enumerate(values):
        names = (str(value), *_SYNONYMS.get(str(value).casefold(), ()))
        positions = [at for at in (_position(text, name) for name in names) if at >= 0]
        if positions and (best is None or min(positions) < best[0]):
            best = (min(positions), index)
    return values[best[1]] if best else values[0]


def _takes_city(tool: Mapping[str, Any]) -> bool:
    parameters = tool.get("parameters")
    properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
    return isinstance(properties, Mapping) and any("city" in str(name).lower() for name in properties)


def relevant_tools(tools: Sequence[Mapping[str, Any]], question: str) -> list[Mapping[str, Any]]:
    """The offered tools the question concerns, in offered order: a tool whose name shares a
    word with the question ("weather", "theme", "switch"…), and every tool taking a city when
    the question names one. When none fits, the first tool (a demo always shows a call)."""
    lowered = question.casefold()
    city_named = named_city(question) is not None
    chosen = []
    for tool in tools:
        parts = [p for p in str(tool["name"]).lower().split("_") if len(p) > 2 and p not in _IGNORED_NAME_PARTS]
        if any(_position(lowered, part) >= 0 for part in parts) or (city_named and _takes_city(tool)):
            chosen.append(tool)
    return chosen or list(tools[:1])


def task_description(tool_name: str, question: str) -> str:
    """A plan task that uses ``tool_name`` for the question; it names the tool, so the
    execute stage can tell which tool the task needs."""
    city = city_of(question)
    if tool_name == "city_datetime":
        return f"Look up the current date and time in {city} with city_datetime"
    if tool_name == "mock_city_weather":
        return f"Check the weather in {city} with mock_city_weather"
    return f"Use {tool_name} for: {question[:80] or 'the request'}"


def _json_object(content: str) -> dict[str, Any] | None:
    try:
        value = orjson.loads(content)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def _arguments_text(arguments: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in arguments.items())


def describe_result(name: str, arguments: Mapping[str, Any], content: str) -> str:
    """One English sentence about one tool result."""
    data = _json_object(content)
    if data is not None and "temperatureC" in data:
        weather = data.get("weatherEn") or data.get("weather") or "no description"
        sentence = f"Weather in {data.get('city', '?')} on {data.get('date', 'today')}: {weather}, {data['temperatureC']}°C"
        if data.get("minTemperatureC") is not None and data.get("maxTemperatureC") is not None:
            sentence += f" ({data['minTemperatureC']}°C to {data['maxTemperatureC']}°C)"
        if data.get("humidity") is not None:
            sentence += f", humidity {data['humidity']}%"
        return sentence + "."
    if data is not None and "timezone" in data and "time" in data:
        when = f"{str(data['time'])[:5]} on {data.get('weekday', '')} {data.get('date', '')}".replace("  ", " ")
        offset = f", UTC{data['utcOffset']}" if data.get("utcOffset") else ""
        return f"In {data.get('city', '?')} it is {when.strip()} ({data['timezone']}{offset})."
    if data is not None and "confirmed" in data:
        if data["confirmed"] is False:
            return "You cancelled the confirmation."
        answer = data.get("answer") or data.get("selectedOption") or data.get("freeText") or "yes"
        return f"You confirmed: {answer}."
    if data is not None and isinstance(data.get("error"), (str, Mapping)):
        return f"The tool {name} failed: {data['error']}."
    called = f"{name}({_arguments_text(arguments)})" if arguments else name
    if content.strip() == "OK":
        return f"Done: {called}."
    shown = content if len(content) <= 200 else content[:200] + "…"
    return f"The tool {called} returned: {shown}"


def viewport_block(system_text: str, tool_name: str, content: str) -> str | None:
    """The viewport block (SPEC §3.5) the tool's after-call hint in the system prompt asks
    for — ``type=…, key=…`` and the tool's result object — or ``None`` when it names none."""
    data = _json_object(content)
    if data is None:
        return None
    for line in system_text.splitlines():
        if not line.startswith(f"- {tool_name}:") or "viewport" not in line.lower():
            continue
        key = _VIEWPORT_KEY.search(line)
        if key is None:
            continue
        kind = _VIEWPORT_TYPE.search(line)
        header = f"type={kind.group(1) if kind else 'html'}, key={key.group(1)}"
        return f"```viewport\n{header}\n{orjson.dumps(data).decode()}\n```"
    return None


__all__ = [
    "DEFAULT_CITY",
    "city_of",
    "date_of",
    "describe_result",
    "named_city",
    "pick_enum",
    "relevant_tools",
    "task_description",
    "viewport_block",
]
