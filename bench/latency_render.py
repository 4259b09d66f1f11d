"""The latency benchmark's figures as Markdown (printed, and written into ``bench/RESULTS.md``).

Every figure is computed per repetition (an "added" figure against the *direct* path of the
same repetition) and reported as the median over the repetitions; the headline table also
lists each repetition's value.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from latency_report import machine, median, percentile

if TYPE_CHECKING:
    from latency import PathResult, Phase

NAN = float("nan")
Metric = Callable[["PathResult", "PathResult | None"], float]

METHOD = """\
**Method.** One process tree on loopback: the project's `FakeUpstream` in a child process
(`bench/latency_upstream.py`), whose renderer writes each text delta as the sender's
`time.monotonic_ns()` taken just before the frame is written; `python -m app serve` on a temp
deployment (ONESHOT agent, OPENAI model pointing at the upstream), run under
`bench/latency_gcprobe.py` (records each garbage-collector pass); LiteLLM's proxy
(`litellm --config`, model `openai/fake-gpt`, `api_base` = upstream `/v1`, `--num_workers 1`)
from its own venv. The client (a thin asyncio HTTP/1.1 reader, the same for all paths, one
fresh connection per request) takes its own monotonic time when a `data:` line arrives;
`CLOCK_MONOTONIC` is system-wide, so *arrival − stamp* is each delta's one-way latency through
the path. "Added" = path − direct in the same repetition, so client and upstream costs cancel
out. Paths are measured one after the other (never competing with each other for the CPU;
the order rotates between repetitions), each repetition on freshly started proxies.
Phases: *sequential* — 30 streams one at a time, 50 deltas 10 ms apart; *crowd* — 200 streams
started at once, 40 deltas 50 ms apart (4,000 deltas/s offered, paced like real tokens), and
while all 200 are open, 10 *probe* streams started one after the other; *crowd-long* — the
same with 120 deltas; *burst* — 50 deltas with no pause. TTF = from just before the request is
sent to the first text delta; "together" = the crowd's own streams (200 arrive in the same
instant), "steady" = the probes (a stream arriving while 200 flow). CPU = utime+stime of the
proxy process tree from `/proc/<pid>/stat` over the phase (10 ms ticks); paced CPU per delta
"all-in" = crowd CPU / deltas delivered (run start and end included), "marginal" = the slope
between crowd and crowd-long (CPU of 80 more deltas per stream). Memory: per stream =
ΔVmHWM over the first crowd of the process / streams open at once. GC = the gateway's
collector passes that started inside the crowd phases (wall and CPU time of each pass)."""


def _ms(ns: float) -> float:
    return ns / 1e6


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:,.{digits}f}"


def _ttf(samples: Sequence[object]) -> list[float]:
    return [_ms(s.first_delta_ns - s.started_ns) for s in samples  # type: ignore[attr-defined]
            if s.error is None and s.first_delta_ns is not None]  # type: ignore[attr-defined]


def _lags(phase: Phase | None) -> list[float]:
    return [_ms(lag) for s in phase.ok for lag in s.lags_ns] if phase is not None else []


# -- metrics of one path in one repetition (``d`` = the direct path of that repetition) ---------


def lag_p(pick: str, q: float) -> Metric:
    return lambda r, d: percentile(_lags(getattr(r, pick)), q)


def added_lag(pick: str, q: float) -> Metric:
    return lambda r, d: (percentile(_lags(getattr(r, pick)), q) - percentile(_lags(getattr(d, pick)), q)
                         if d is not None else NAN)


def ttf(pick: str, q: float, probes: bool = False) -> Metric:
    def metric(r: PathResult, d: PathResult | None) -> float:
        phase = getattr(r, pick)
        return percentile(_ttf(phase.probes if probes else phase.ok), q) if phase is not None else NAN
    return metric


def added_ttf(pick: str, probes: bool = False) -> Metric:
    return lambda r, d: ttf(pick, 50, probes)(r, d) - ttf(pick, 50, probes)(d, d) if d is not None else NAN


def cpu_per_delta(pick: str) -> Metric:
    def metric(r: PathResult, d: PathResult | None) -> float:
        phase = getattr(r, pick)
        return phase.proxy_cpu_s * 1e6 / phase.deltas if phase is not None and phase.deltas else NAN
    return metric


def _paced_split(r: PathResult) -> tuple[float, float]:
    """(fixed ms per stream, µs per delta) from crowd and crowd-long; NaN when either is missing."""
    short, long = r.crowd, r.crowd_long
    if short is None or long is None or not short.ok or not long.ok:
        return NAN, NAN
    x1, x2 = short.proxy_cpu_s * 1000 / len(short.ok), long.proxy_cpu_s * 1000 / len(long.ok)
    per_delta = (x2 - x1) / (long.expected - short.expected)
    return x1 - short.expected * per_delta, per_delta * 1000


def paced_marginal(r: PathResult, d: PathResult | None) -> float:
    return _paced_split(r)[1]


def paced_fixed(r: PathResult, d: PathResult | None) -> float:
    return _paced_split(r)[0]


def burst_per_cpu(concurrency: int) -> Metric:
    def metric(r: PathResult, d: PathResult | None) -> float:
        phase = r.throughput.get(concurrency)
        return phase.deltas / phase.proxy_cpu_s if phase is not None and phase.proxy_cpu_s > 0 else NAN
    return metric


def _burst_split(r: PathResult) -> tuple[float, float]:
    short, long = r.throughput.get(50), r.long_burst
    if short is None or long is None or not short.ok or not long.ok:
        return NAN, NAN
    x1, x2 = short.proxy_cpu_s * 1000 / len(short.ok), long.proxy_cpu_s * 1000 / len(long.ok)
    per_delta = (x2 - x1) / (long.expected - short.expected)
    return x1 - short.expected * per_delta, per_delta * 1000


def rss_per_stream(r: PathResult, d: PathResult | None) -> float:
    streams = r.crowd.peak_streams if r.crowd is not None else 0
    return (r.hwm_after_kib - r.hwm_before_kib) / streams if streams else NAN


def gc_max(index: int) -> Metric:
    return lambda r, d: max((p[index] for p in r.gc_pauses), default=0.0) if r.gc_measured else NAN


def gc_full(r: PathResult, d: PathResult | None) -> float:
    return float(sum(1 for p in r.gc_pauses if p[2] == 2)) if r.gc_measured else NAN


def gc_count(generation: int) -> Metric:
    return lambda r, d: float(sum(1 for p in r.gc_pauses if p[2] == generation)) if r.gc_measured else NAN


def gc_total_cpu(r: PathResult, d: PathResult | None) -> float:
    return sum(p[1] for p in r.gc_pauses) if r.gc_measured else NAN


def busy(pick: str) -> Metric:
    def metric(r: PathResult, d: PathResult | None) -> float:
        phase = getattr(r, pick)
        return 100 * phase.proxy_cpu_s / phase.wall_s if phase is not None and phase.wall_s else NAN
    return metric


# -- aggregation over repetitions ---------------------------------------------------------------


def _names(reps: Sequence[Sequence[PathResult]]) -> list[str]:
    names: list[str] = []
    for rep in reps:
        for r in rep:
            if r.name not in names:
                names.append(r.name)
    return names


def _values(reps: Sequence[Sequence[PathResult]], name: str, metric: Metric) -> list[float]:
    out = []
    for rep in reps:
        direct = next((r for r in rep if r.name == "direct"), None)
        for r in rep:
            if r.name == name:
                out.append(metric(r, direct))
    return out


def _med(values: Sequence[float]) -> float:
    clean = [v for v in values if v == v]
    return median(clean) if clean else NAN


def _cell(reps: Sequence[Sequence[PathResult]], name: str, metric: Metric, digits: int = 2) -> str:
    return _fmt(_med(_values(reps, name, metric)), digits)


def _ok(reps: Sequence[Sequence[PathResult]], name: str, pick: str) -> str:
    good = total = 0
    for rep in reps:
        for r in rep:
            phase = getattr(r, pick) if r.name == name else None
            if phase is not None:
                good, total = good + len(phase.ok), total + len(phase.samples)
    return f"{good}/{total}"


HEADLINE: list[tuple[str, str, Metric, int, str]] = [
    # (label, target for the gateway, metric, digits, unit)
    ("crowd: added latency per delta, p50", "≤ 0.5", added_lag("crowd", 50), 3, "ms"),
    ("crowd: added latency per delta, p99", "≤ 5", added_lag("crowd", 99), 2, "ms"),
    ("crowd: added TTF p50, streams arriving together", "", added_ttf("crowd"), 1, "ms"),
    ("crowd: added TTF p50, a stream arriving while 200 flow", "≤ 3", added_ttf("crowd", probes=True), 2, "ms"),
    ("paced CPU per delta, all-in (crowd)", "", cpu_per_delta("crowd"), 0, "µs"),
    ("paced CPU per delta, marginal (crowd-long − crowd)", "≤ 60", paced_marginal, 0, "µs"),
    ("paced CPU per stream, fixed part", "", paced_fixed, 2, "ms"),
    ("RSS per active stream (ΔVmHWM)", "≤ 64", rss_per_stream, 1, "KiB"),
    ("GC: longest pause in the crowds, wall", "", gc_max(0), 1, "ms"),
    ("GC: longest pause in the crowds, CPU", "", gc_max(1), 1, "ms"),
    ("GC: full collections in the crowds", "", gc_full, 0, ""),
    ("burst: deltas per CPU-second, concurrency 50", "", burst_per_cpu(50), 0, ""),
]


def _headline(reps: Sequence[Sequence[PathResult]], proxies: Sequence[str]) -> list[str]:
    rows = ["| figure | target | " + " | ".join(f"{n} median (each run)" for n in proxies) + " |",
            "|---|---|" + "---|" * len(proxies)]
    for label, target, metric, digits, unit in HEADLINE:
        cells = []
        for name in proxies:
            values = _values(reps, name, metric)
            each = " / ".join(_fmt(v, digits) for v in values)
            cells.append(f"**{_fmt(_med(values), digits)}** ({each})")
        rows.append(f"| {label}{f' ({unit})' if unit else ''} | {target} | " + " | ".join(cells) + " |")
    return rows


def _ratios(reps: Sequence[Sequence[PathResult]], proxies: Sequence[str]) -> list[str]:
    if "litellm" not in proxies:
        return []
    lines = []
    for label, metric in (("paced, all-in", cpu_per_delta("crowd")), ("paced, marginal", paced_marginal)):
        for name in proxies:
            if name == "litellm":
                continue
            ratios = [lt / g if g and g == g and lt == lt else NAN
                      for g, lt in zip(_values(reps, name, metric), _values(reps, "litellm", metric), strict=False)]
            lines.append(f"* CPU per delta, {label}: LiteLLM / {name} = **{_fmt(_med(ratios), 1)}×** "
                         f"(each run: {' / '.join(_fmt(x, 1) for x in ratios)}).")
    for concurrency in (1, 50, 200):
        for name in proxies:
            if name == "litellm":
                continue
            ratios = [g / lt if lt and lt == lt else NAN for g, lt in
                      zip(_values(reps, name, burst_per_cpu(concurrency)),
                          _values(reps, "litellm", burst_per_cpu(concurrency)), strict=False)]
            lines.append(f"* Bursts at concurrency {concurrency}: {name} / LiteLLM deltas per CPU-second = "
                         f"{_fmt(_med(ratios), 1)}×.")
    return lines


def _errors(reps: Sequence[Sequence[PathResult]]) -> list[str]:
    lines = []
    for index, rep in enumerate(reps):
        for r in rep:
            phases = [r.latency, r.crowd, r.crowd_long, *r.throughput.values(), r.long_burst]
            errors = [e for p in phases if p is not None for e in p.errors]
            if errors:
                lines.append(f"* run {index + 1}, {r.name}: {len(errors)} failed streams, e.g. `{errors[0][:160]}`")
    return lines


def render(reps: Sequence[Sequence[PathResult]], note: str | None, elapsed_s: float, litellm_python: Path | None,
           load: tuple[tuple[float, float, float], tuple[float, float, float]], run_note: str = "") -> str:
    names = _names(reps)
    proxies = [n for n in names if n != "direct"]
    (b1, b5, b15), (a1, a5, a15) = load
    out = ["## Streaming latency: direct vs gateway vs LiteLLM (`python bench/latency.py`)", "",
           f"Run {time.strftime('%Y-%m-%d %H:%M %Z')}, {len(reps)} repetitions, {elapsed_s:.0f} s in all.", "",
           *machine(litellm_python),
           f"* load average (1/5/15 min) before the run {b1:.2f} / {b5:.2f} / {b15:.2f}, after "
           f"{a1:.2f} / {a5:.2f} / {a15:.2f}" + (" — **the machine was shared with other work: absolute figures are "
                                                 "noisy, compare the paths of the same run**" if max(b1, a1, b5, a5) > 1.0
                                                 else ""), ""]
    if run_note:
        out += [run_note, ""]
    out += [METHOD, ""]
    if note:
        out += [f"**LiteLLM:** {note}", ""]
    out += ["### Headline (medians of the repetitions; each run's value in brackets)", "",
            *_headline(reps, proxies), "", *_ratios(reps, proxies), ""]
    out += ["### Latency, one stream at a time (sequential: 50 deltas 10 ms apart)", "",
            *_sequential(reps, names), ""]
    out += ["### Crowd: 200 streams at once, 40 deltas 50 ms apart (paced)", "", *_crowd(reps, names), ""]
    out += ["### Paced CPU cost (crowd and crowd-long)", "", *_paced(reps, proxies), ""]
    out += ["### Burst throughput and CPU (50 deltas, no pause)", "", *_burst(reps, proxies), ""]
    out += ["### Memory and garbage collector (first crowd of each process)", "", *_memory(reps, names), ""]
    errors = _errors(reps)
    if errors:
        out += ["### Failures", "", *errors, ""]
    return "\n".join(out)


def _pair(reps: Sequence[Sequence[PathResult]], name: str, metrics: Sequence[Metric], digits: int) -> str:
    return " / ".join(_cell(reps, name, m, digits) for m in metrics)


def _sequential(reps: Sequence[Sequence[PathResult]], names: Sequence[str]) -> list[str]:
    rows = ["| path | streams ok | TTF p50 / p95 ms | per-delta latency p50 / p95 / p99 ms | added p50 / p95 ms "
            "| proxy CPU busy % |", "|---|---|---|---|---|---|"]
    for name in names:
        added = "—" if name == "direct" else _pair(reps, name, [added_lag("latency", 50), added_lag("latency", 95)], 3)
        rows.append(f"| {name} | {_ok(reps, name, 'latency')} | {_pair(reps, name, [ttf('latency', 50), ttf('latency', 95)], 2)} "
                    f"| {_pair(reps, name, [lag_p('latency', q) for q in (50, 95, 99)], 3)} | {added} "
                    f"| {'—' if name == 'direct' else _cell(reps, name, busy('latency'), 0)} |")
    return rows


def _crowd(reps: Sequence[Sequence[PathResult]], names: Sequence[str]) -> list[str]:
    rows = ["| path | streams ok | TTF together p50 / p95 ms | TTF steady p50 / p95 ms (probes) "
            "| per-delta latency p50 / p95 / p99 ms | added p50 / p99 ms | proxy CPU busy % |",
            "|---|---|---|---|---|---|---|"]
    for name in names:
        added = "—" if name == "direct" else _pair(reps, name, [added_lag("crowd", 50), added_lag("crowd", 99)], 3)
        rows.append(f"| {name} | {_ok(reps, name, 'crowd')} | {_pair(reps, name, [ttf('crowd', 50), ttf('crowd', 95)], 1)} "
                    f"| {_pair(reps, name, [ttf('crowd', 50, True), ttf('crowd', 95, True)], 2)} "
                    f"| {_pair(reps, name, [lag_p('crowd', q) for q in (50, 95, 99)], 3)} | {added} "
                    f"| {'—' if name == 'direct' else _cell(reps, name, busy('crowd'), 0)} |")
    return rows


def _paced(reps: Sequence[Sequence[PathResult]], proxies: Sequence[str]) -> list[str]:
    rows = ["| path | crowd CPU s | crowd deltas | **µs per delta, all-in** | crowd-long CPU s | fixed ms per stream "
            "| **µs per delta, marginal** | deltas per CPU-second (all-in) |", "|---|---|---|---|---|---|---|---|"]
    for name in proxies:
        rows.append(
            f"| {name} | {_cell(reps, name, lambda r, d: r.crowd.proxy_cpu_s if r.crowd else NAN)} "
            f"| {_cell(reps, name, lambda r, d: float(r.crowd.deltas) if r.crowd else NAN, 0)} "
            f"| **{_cell(reps, name, cpu_per_delta('crowd'), 0)}** "
            f"| {_cell(reps, name, lambda r, d: r.crowd_long.proxy_cpu_s if r.crowd_long else NAN)} "
            f"| {_cell(reps, name, paced_fixed)} | **{_cell(reps, name, paced_marginal, 0)}** "
            f"| {_cell(reps, name, lambda r, d: 1e6 / cpu_per_delta('crowd')(r, d), 0)} |")
    return rows


def _burst(reps: Sequence[Sequence[PathResult]], proxies: Sequence[str]) -> list[str]:
    rows = ["| path | deltas per CPU-second at 1 / 50 / 200 | proxy CPU ms per 50-delta stream (c=50) "
            "| fixed ms per stream | µs per delta |", "|---|---|---|---|---|"]
    for name in proxies:
        per_stream: Metric = lambda r, d: (r.throughput[50].proxy_cpu_s * 1000 / len(r.throughput[50].ok)  # noqa: E731
                                           if 50 in r.throughput and r.throughput[50].ok else NAN)
        rows.append(f"| {name} | {_pair(reps, name, [burst_per_cpu(c) for c in (1, 50, 200)], 0)} "
                    f"| {_cell(reps, name, per_stream)} | {_cell(reps, name, lambda r, d: _burst_split(r)[0])} "
                    f"| {_cell(reps, name, lambda r, d: _burst_split(r)[1], 0)} |")
    return rows


def _memory(reps: Sequence[Sequence[PathResult]], names: Sequence[str]) -> list[str]:
    rows = ["| path | RSS idle MiB | VmHWM before → after MiB | peak streams open | ΔVmHWM per stream KiB "
            "| GC passes in the crowds (gen0 / gen1 / gen2) | longest GC pause wall / CPU ms | GC CPU ms in all |",
            "|---|---|---|---|---|---|---|---|"]
    for name in names:
        gens = " / ".join(_cell(reps, name, gc_count(generation), 0) for generation in (0, 1, 2))
        rows.append(
            f"| {name} | {_cell(reps, name, lambda r, d: r.rss_idle_kib / 1024, 1)} "
            f"| {_cell(reps, name, lambda r, d: r.hwm_before_kib / 1024, 1)} → "
            f"{_cell(reps, name, lambda r, d: r.hwm_after_kib / 1024, 1)} "
            f"| {_cell(reps, name, lambda r, d: float(r.crowd.peak_streams) if r.crowd else NAN, 0)} "
            f"| {_cell(reps, name, rss_per_stream, 1)} | {gens} "
            f"| {_pair(reps, name, [gc_max(0), gc_max(1)], 1)} | {_cell(reps, name, gc_total_cpu, 0)} |")
    return rows
