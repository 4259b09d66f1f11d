"""Machine description, statistics and the latency section of ``bench/RESULTS.md``.

Only the text between ``<!-- latency:start -->`` and ``<!-- latency:end -->`` is ever
rewritten; a new file gets both this section's and the load section's markers.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import platform
import statistics
import subprocess
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

START, END = "<!-- latency:start -->", "<!-- latency:end -->"
LOAD_START, LOAD_END = "<!-- load:start -->", "<!-- load:end -->"
PROJECT_PACKAGES = ("fastapi", "starlette", "sse-starlette", "uvicorn", "httpx", "httpcore", "pydantic", "orjson",
                    "uvloop", "httptools")
Loads = tuple[tuple[float, float, float], tuple[float, float, float]]
R = TypeVar("R")

LITELLM_PACKAGES = ("litellm", "fastapi", "uvicorn", "httpx", "openai", "aiohttp", "uvloop")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (``q`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _field(text: str, key: str) -> str:
    for line in text.splitlines():
        name, _, value = line.partition(":" if ":" in line else "=")
        if name.strip() == key:
            return value.strip().strip('"')
    return "?"


def _versions(names: Sequence[str]) -> str:
    found = []
    for name in names:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def litellm_versions(python: Path) -> str:
    code = (
        "import importlib.metadata as m\n"
        f"for n in {LITELLM_PACKAGES!r}:\n"
        "    try: print(n, m.version(n))\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    try:
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return ", ".join(out.split("\n")).strip(", ")


def load_average() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (``/proc/loadavg``): how busy the machine was."""
    one, five, fifteen = _read("/proc/loadavg").split()[:3] or ("nan", "nan", "nan")
    return float(one), float(five), float(fifteen)


def machine(litellm_python: Path | None) -> list[str]:
    mem_kib = int(_field(_read("/proc/meminfo"), "MemTotal").split()[0] or 0)
    lines = [
        f"* CPU: {_field(_read('/proc/cpuinfo'), 'model name')}; nproc {len(os.sched_getaffinity(0))}",
        f"* memory: {mem_kib / 1024 / 1024:.1f} GiB",
        f"* OS: {_field(_read('/etc/os-release'), 'PRETTY_NAME')}, kernel {platform.release()}",
        f"* Python: {platform.python_version()} ({platform.python_implementation()})",
        f"* gateway packages: {_versions(PROJECT_PACKAGES)}",
    ]
    if litellm_python is not None and litellm_python.exists():
        lines.append(f"* LiteLLM venv (`bench/.venv-litellm`): {litellm_versions(litellm_python)}")
    return lines


def replace_section(results: Path, start: str, end: str, body: str) -> None:
    """Rewrite only the text between ``start`` and ``end`` in ``results`` (created with both
    benchmarks' markers when missing); the rest of the file is kept as it is."""
    section = f"{start}\n{body.rstrip()}\n{end}"
    if results.exists():
        text = results.read_text(encoding="utf-8")
    else:
        text = f"# Benchmark results\n\n{START}\n{END}\n\n{LOAD_START}\n{LOAD_END}\n"
    if start in text and end in text:
        head, _, rest = text.partition(start)
        _, _, tail = rest.partition(end)
        text = head + section + tail
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    results.write_text(text, encoding="utf-8")


def write_section(results: Path, body: str) -> None:
    replace_section(results, START, END, body)


def measure_and_report(measure: Callable[[int], Coroutine[Any, Any, R]], render: Callable[[R, int, Loads], str], repeat: int,
                       results: Path, start: str, end: str, *, write: bool) -> None:
    """A benchmark's run: ``measure(repeat)`` between two load-average readings, ``render`` the
    figures, print them, and (``write``) put them between ``start`` and ``end`` in ``results``."""
    before = load_average()
    figures = asyncio.run(measure(repeat))
    report = render(figures, repeat, (before, load_average()))
    print(report)
    if write:
        replace_section(results, start, end, report)

