#!/usr/bin/env python3
"""math_stats: deterministic statistics over a numeric list (see ../SKILL.md).

    stats.py --values 1,2,3,4 [--metric summary|count|sum|min|max|mean|median|mode|stdev] [--precision N]

stdout: {"ok":true,"metric":"mean","count":4,"result":2.5}; for ``summary`` every
statistic in one object ({"ok":true,"metric":"summary","count":4,"sum":10.0,…}).
``stdev`` is the sample standard deviation (needs two values; ``null`` in a summary of one).
bad input: {"ok":false,"error":"…"} and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from typing import NoReturn

METRICS = ("summary", "count", "sum", "min", "max", "mean", "median", "mode", "stdev")


def fail(message: str) -> NoReturn:
    print(json.dumps({"ok": False, "error": message}, ensure_ascii=False, separators=(",", ":")))
    sys.exit(2)


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        fail(message)


def parse_values(text: str) -> list[float]:
    values: list[float] = []
    for item in text.replace("，", ",").split(","):
        item = item.strip()
        if not item:
            continue
        try:
            value = float(item)
        except ValueError:
            fail(f"not a number: {item!r}")
        if not math.isfinite(value):
            fail(f"not a finite number: {item!r}")
        values.append(value)
    if not values:
        fail("--values must hold at least one number, e.g. 1,2,3,4")
    return values


def metric(name: str, values: list[float], precision: int) -> float | int | None:
    if name == "count":
        return len(values)
    if name == "sum":
        result = math.fsum(values)
    elif name == "min":
        result = min(values)
    elif name == "max":
        result = max(values)
    elif name == "mean":
        result = statistics.fmean(values)
    elif name == "median":
        result = float(statistics.median(values))
    elif name == "mode":
        result = float(statistics.mode(values))
    else:
        if len(values) < 2:
            return None
        result = statistics.stdev(values)
    return round(result, precision)


def main(argv: list[str]) -> int:
    parser = Parser(prog="stats.py", description="Deterministic statistics.")
    parser.add_argument("--values", required=True)
    parser.add_argument("--metric", default="summary", choices=METRICS)
    parser.add_argument("--precision", type=int, default=6)
    args = parser.parse_args(argv)
    if not 0 <= args.precision <= 15:
        fail("precision must be between 0 and 15")
    values = parse_values(args.values)
    if args.metric == "summary":
        out: dict[str, object] = {"ok": True, "metric": "summary"}
        for name in METRICS[1:]:
            out[name] = metric(name, values, args.precision)
        out["modes"] = [round(m, args.precision) for m in statistics.multimode(values)]
    else:
        result = metric(args.metric, values, args.precision)
        if result is None:
            fail("stdev needs at least two values")
        out = {"ok": True, "metric": args.metric, "count": len(values), "result": result}
    print(json.dumps(out, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
