"""Tool argument templates (SPEC §3.3 "Tool argument templates")."""

from __future__ import annotations

import subprocess
import sys

import pytest

from app.errors import ToolError
from app.tools.templates import resolve_templates
from tests.tools.conftest import REPO

RESULTS = {
    "city_datetime": {"city": "上海", "date": "2026-02-13", "datetime": "2026-02-13T09:30:00+08:00", "n": 3},
    "mock_city_weather": {"forecast": {"days": [{"date": "2026/02/28"}]}, "ok": True},
    "text_tool": '{"when": "2026-12-31 23:59:59"}',
}


def test_field_and_dotted_path() -> None:
    args = {
        "city": "{{city_datetime.city}}",
        "note": "去 {{ city_datetime.city }} 的日期是 {{city_datetime.date}}",
        "nested": ["{{mock_city_weather.forecast.days.0.date}}"],
        "untouched": "{{not a template}} {{target}}",
    }
    assert resolve_templates(args, RESULTS) == {
        "city": "上海",
        "note": "去 上海 的日期是 2026-02-13",
        "nested": ["2026/02/28"],
        "untouched": "{{not a template}} {{target}}",
    }


def test_whole_string_keeps_the_value_type() -> None:
    assert resolve_templates({"n": "{{city_datetime.n}}", "b": "{{mock_city_weather.ok}}"}, RESULTS) == {
        "n": 3,
        "b": True,
    }
    assert resolve_templates("n={{city_datetime.n}}", RESULTS) == "n=3"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{city_datetime.date+1d}}", "2026-02-14"),
        ("{{city_datetime.date-14d}}", "2026-01-30"),
        ("{{city_datetime.date+365d}}", "2027-02-13"),
        ("{{city_datetime.datetime+1d}}", "2026-02-14T09:30:00+08:00"),
        ("{{city_datetime.datetime-13d}}", "2026-01-31T09:30:00+08:00"),
        ("{{mock_city_weather.forecast.days.0.date+1d}}", "2026/03/01"),
        ("{{text_tool.when+1d}}", "2027-01-01 23:59:59"),
    ],
)
def test_day_offsets(template: str, expected: str) -> None:
    assert resolve_templates({"d": template}, RESULTS) == {"d": expected}


@pytest.mark.parametrize(
    ("template", "reason"),
    [
        ("{{unknown_tool.date}}", "no result of tool 'unknown_tool'"),
        ("{{city_datetime.missing}}", "has no field 'missing'"),
        ("{{mock_city_weather.forecast.days.5.date}}", "has no field"),
        ("{{mock_city_weather.forecast.days.\u00b2.date}}", "has no field"),  # a digit int() refuses
        ("{{mock_city_weather.forecast.days.--1.date}}", "has no field"),
        ("{{city_datetime.city+1d}}", "is not a date"),
        ("{{city_datetime.n+1d}}", "is not a date"),
    ],
)
def test_unresolvable_templates_are_tool_errors(template: str, reason: str) -> None:
    with pytest.raises(ToolError, match=reason) as info:
        resolve_templates({"x": [f"a {template}"]}, RESULTS)
    assert template in str(info.value)


def test_attack_a_text_result_nested_past_the_recursion_limit_is_unresolvable_not_a_crash() -> None:
    """A string result is read as JSON to look a field up; nested 5000 deep (a user's frontend
    answer can be any string) ``json.loads`` raised RecursionError, which ended the run as
    ``internal_error`` instead of giving the call an error result (SPEC §3.3)."""
    results = {"confirm_dialog": "[" * 5000 + "]" * 5000}
    with pytest.raises(ToolError, match="has no field"):
        resolve_templates({"city": "{{confirm_dialog.a}}"}, results)


def test_non_strings_pass_through() -> None:
    args = {"a": 1, "b": None, "c": [True, 2.5]}
    assert resolve_templates(args, {}) == args


def test_attack_arguments_repeating_a_template_over_a_large_result_are_refused() -> None:
    """5 KB of arguments repeating one template over a 1 MB result expanded to 300 MB in the
    gateway (a model's arguments may be megabytes); what templates put in is bounded instead."""
    results = {"_bash_": {"stdout": "x" * 1_000_000, "lines": ["y" * 1000] * 1000}}
    with pytest.raises(ToolError, match="put in more than"):
        resolve_templates({"command": "{{_bash_.stdout}}" * 300}, results)
    with pytest.raises(ToolError, match="put in more than"):  # whole values count their JSON text
        resolve_templates({"items": ["{{_bash_.lines}}"] * 300}, results)
    once = resolve_templates({"command": "echo {{_bash_.stdout}}", "items": "{{_bash_.lines}}"}, results)
    assert len(once["command"]) == 1_000_005 and once["items"] is results["_bash_"]["lines"]


def test_attack_argument_with_a_long_run_of_blanks_after_a_template_start() -> None:
    """``{{a.b`` and a megabyte of blanks: the old pattern backtracked quadratically over the blanks
    (30 KB froze the gateway's event loop for 7.6 s; this megabyte, hours). It runs in a child
    process whose CPU limit (20 s, against well under a second needed) only guards the suite
    from hanging on a regression: the check is that it finishes, with the text untouched."""
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_CPU, (20, 20))\n"
        "from app.tools.templates import resolve_templates\n"
        "text = '{{a.b' + ' ' * 1_000_000 + 'x {{a.b-1' + '\\t' * 1_000_000 + 'x'\n"
        "assert resolve_templates({'city': text}, {}) == {'city': text}\n"
        "print('resolved')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "resolved", (done.returncode, done.stderr[-500:])
