"""``mock_sensitive_data_detector``: a real scan for sensitive data (SPEC §3.3 "Built-in tools").

Despite its upstream name the scan is real (regular expressions plus checksums):
mainland-China mobile and landline numbers, 18-digit resident ID numbers (date and
checksum validated), e-mail addresses, bank card numbers (Luhn validated) and
API-key-like secrets. Findings carry masked values only — the tool never repeats a
secret in full. Result: ``{hasSensitiveData, result: "有"|"没有", summary, findings[…]}``.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

from app.errors import ToolError
from app.tools.base import ToolContext

_TEXT_FIELDS = ("text", "content", "message", "query", "document", "input")
MAX_FINDINGS = 50

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


@dataclass(frozen=True, slots=True)
class _Rule:
    type: str
    label: str
    pattern: re.Pattern[str]


_RULES: tuple[_Rule, ...] = (
    _Rule("private_key", "私钥", re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")),
    _Rule(
        "api_key",
        "API 密钥",
        re.compile(
            r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_\-]{16,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
            r"|github_pat_[A-Za-z0-9_]{30,}|xox[abprs]-[A-Za-z0-9\-]{10,}|AIza[0-9A-Za-z_\-]{35}"
            r"|glpat-[A-Za-z0-9_\-]{20,})"
        ),
    ),
    _Rule("bearer_token", "访问令牌", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9\-._~+/]{20,}=*")),
    _Rule(
        "secret_assignment",
        "密钥/口令",
        re.compile(
            r"(?i)\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|token|password|passwd|pwd|密码)"
            r"\s*[:=：]\s*[\"']?[^\s\"',;]{6,}"
        ),
    ),
    # the look-behind holds every character of the local part (``%`` too): a match starts only where
    # a run of them starts, so a run without ``@`` is scanned once, not once per character
    _Rule("email", "邮箱", re.compile(r"(?<![\w.%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")),
    _Rule(
        "id_card",
        "身份证号",
        re.compile(r"(?<![0-9A-Za-z])[1-9]\d{5}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[\dXx](?![0-9A-Za-z])"),
    ),
    _Rule("bank_card", "银行卡号", re.compile(r"(?<![\d-])(?:\d{4}[ -]?){3}\d{4}(?:[ -]?\d{1,3})?(?![\d-])")),
    _Rule("phone", "手机号", re.compile(r"(?<!\d)(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)")),
    _Rule("landline", "固定电话", re.compile(r"(?<!\d)0\d{2,3}-\d{7,8}(?!\d)")),
)


def _valid_id_card(value: str) -> bool:
    try:
        date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return False
    total = sum(int(d) * w for d, w in zip(value[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == value[17].upper()


def _luhn(digits: str) -> bool:
    total = 0
    for index, ch in enumerate(reversed(digits)):
        n = int(ch)
        if index % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _mask(value: str) -> str:
    compact = value.strip()
    if len(compact) <= 4:
        return "*" * len(compact)
    keep = 3 if len(compact) >= 11 else 1
    return compact[:keep] + "*" * (len(compact) - 2 * keep) + compact[-keep:]


def _valid(rule: _Rule, value: str) -> bool:
    if rule.type == "id_card":
        return _valid_id_card(value)
    if rule.type == "bank_card":
        digits = re.sub(r"[ -]", "", value)
        return 16 <= len(digits) <= 19 and _luhn(digits)
    return True


def _overlaps(taken: list[tuple[int, int]], start: int, end: int) -> bool:
    """Whether ``[start, end)`` overlaps a span of ``taken`` (sorted, non-overlapping): only the
    spans either side of where it would go can, so one look-up instead of a walk of all."""
    index = bisect.bisect_left(taken, (start, end))
    return (index > 0 and taken[index - 1][1] > start) or (index < len(taken) and taken[index][0] < end)


def _scan(text: str) -> Iterator[dict[str, Any]]:
    taken: list[tuple[int, int]] = []
    for rule in _RULES:
        for match in rule.pattern.finditer(text):
            start, end = match.span()
            if _overlaps(taken, start, end):
                continue
            if not _valid(rule, match.group(0)):
                continue
            bisect.insort(taken, (start, end))
            yield {"type": rule.type, "label": rule.label, "value": _mask(match.group(0)), "start": start, "end": end}


def detect(text: str) -> dict[str, Any]:
    """The detector's result for ``text``."""
    findings = sorted(_scan(text), key=lambda f: f["start"])
    counts: dict[str, int] = {}
    for finding in findings:
        counts[finding["label"]] = counts.get(finding["label"], 0) + 1
    if findings:
        detail = "、".join(f"{label} {n} 处" for label, n in counts.items())
        summary = f"检测到 {len(findings)} 处敏感数据：{detail}。建议脱敏后再使用或传播。"
    else:
        summary = "未检测到手机号、身份证号、邮箱、银行卡号或密钥等敏感数据。"
    return {
        "hasSensitiveData": bool(findings),
        "result": "有" if findings else "没有",
        "summary": summary,
        "counts": counts,
        "findings": findings[:MAX_FINDINGS],
        "truncatedFindings": len(findings) > MAX_FINDINGS,
        "textLength": len(text),
    }


async def mock_sensitive_data_detector(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """``{text | content | message | query | document | input}`` → the scan result."""
    for name in _TEXT_FIELDS:
        value = args.get(name)
        if isinstance(value, str) and value.strip():
            return detect(value)
    raise ToolError("no text to check: pass it in 'text'")
