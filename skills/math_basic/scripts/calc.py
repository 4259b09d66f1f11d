#!/usr/bin/env python3
"""math_basic: deterministic arithmetic (see ../SKILL.md).

    calc.py --op add|sub|mul|div|pow|mod --a NUMBER --b NUMBER [--precision N]

stdout: {"ok":true,"op":"mul","a":2.0,"b":3.0,"result":6.0}
bad input: {"ok":false,"error":"…"} and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import NoReturn

OPS = ("add", "sub", "mul", "div", "pow", "mod")


def fail(message: str) -> NoReturn:
    print(json.dumps({"ok": False, "error": message}, ensure_ascii=False, separators=(",", ":")))
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # argparse would print usage text instead of JSON
        fail(message)


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def compute(op: str, a: float, b: float) -> float:
    if op == "add":
        return a + b
    if op == "sub":
        return a - b
    if op == "mul":
        return a * b
    if op == "div":
        if b == 0:
            fail("division by zero")
        return a / b
    if op == "mod":
        if b == 0:
            fail("modulo by zero")
        return a % b
    try:
        result = math.pow(a, b)
    except (OverflowError, ValueError) as exc:
        fail(f"pow({a}, {b}) is not representable: {exc}")
    return result


def main(argv: list[str]) -> int:
    parser = Parser(prog="calc.py", description="Deterministic arithmetic.")
    parser.add_argument("--op", required=True, choices=OPS)
    parser.add_argument("--a", required=True, type=number)
    parser.add_argument("--b", required=True, type=number)
    parser.add_argument("--precision", type=int, default=6)
    args = parser.parse_args(argv)
    if not 0 <= args.precision <= 15:
        fail("precision must be between 0 and 15")
    result = compute(args.op, args.a, args.b)
    if not math.isfinite(result):
        fail("the result is not a finite number")
    out = {"ok": True, "op": args.op, "a": args.a, "b": args.b, "result": round(result, args.precision)}
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
