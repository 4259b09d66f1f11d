"""``app.paths.ascii_int``: every number the gateway reads from untrusted text goes through it
(resume points, data-link expiries, Content-Length, upstream usage, schedule times, template
indexes, the terminal chat's choices)."""

from __future__ import annotations

import pytest

from app.paths import ascii_int


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("42", 42), ("007", 7), ("9" * 18, int("9" * 18)),
    ("", None), (" 1", None), ("-1", None), ("+1", None), ("1.0", None), ("1e3", None),
    ("\u00b2", None), ("\u2460", None), ("\u0661\u0662", None), ("\uff11", None),  # digits int() refuses or
    ("9" * 19, None), ("9" * 5000, None),  # reads non-ASCII; past the cap (int refuses > 4300 digits)
])
def test_only_ascii_digits_within_the_cap_are_numbers(text: str, expected: int | None) -> None:
    assert ascii_int(text) == expected


def test_the_cap_is_the_callers() -> None:
    assert ascii_int("12345", 4) is None and ascii_int("1234", 4) == 1234
