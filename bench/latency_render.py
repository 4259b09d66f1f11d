"""The latency benchmark's figures as Markdown (printed, and written into ``bench/RESULTS.md``)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from latency_report import machine, median, percentile

if TYPE_CHECKING:
    from latency import PathResult, Phase

NAN = float("nan")

METHOD = """\
**Method.** One process tree on loopback: the project's `FakeUpstream` in a child process
(`bench/latency_upstream.py`), whose renderer writes each text delta as the sender's
`time.monotonic_ns()` taken just before the frame is written; `python -m app serve` on a temp
deployment (ONESHOT agent, OPENAI model pointing at the upstream); LiteLLM's proxy
(`litellm --config`, model `openai/fake-gpt`, `api_base` = upstream `/v1`) from its own venv.
The client (a thin asyncio HTTP/1.1 reader, the same for all paths, one fresh connection per
request; httpx saturated the client first at 200 streams) takes its own monotonic time when a
`data:` line arrives; `CLOCK_MONOTONIC` is system-wide, so *arrival − stamp* is each delta's
one-way latency through the path, client parsing included. "Added" = path − direct, so the client
and upstream costs cancel out. Paths are measured one after the other (never competing for CPU).
Paced script: 50 deltas, 10 ms apart; crowd: 200 streams at once, 50 deltas 50 ms apart (4,000
deltas/s offered); burst script: 50 deltas, no pause. TTF = from just before
the request is sent to the first `data:` event / first text delta. CPU = utime+stime of the proxy
process tree from `/proc/<pid>/stat` over the phase (10 ms ticks); for *direct* the CPU column is
the upstream's own, for reference. Memory: VmHWM (peak RSS) of the proxy before and after
the crowd phase; per stream = ΔVmHWM / peak streams open. "CPU busy" = CPU seconds / wall
seconds of the phase (100% = one core; the machine has the cores listed above, shared by the
client, the upstream and the proxy)."""


def _ms(ns: float) -> float:
    return ns / 1e6


def _fmt(value: float, digits: int = 2) -> str:
    return "n/a" if value != value else f"{value:.{digits}f}"


def _ttf(phase: Phase, attr: str) -> list[float]:
    return [_ms(getattr(s, attr) - s.started_ns) for s in phase.ok if getattr(s, attr) is not None]


def _lags(phase: Phase) -> list[float]:
    return [_ms(lag) for s in phase.ok for lag in s.lags_ns]


def _stats(values: Sequence[float]) -> tuple[float, float, float]:
    return median(values), percentile(values, 95), percentile(values, 99)


def _latency_table(results: Sequence[PathResult], pick: str) -> list[str]:
    rows = ["| path | streams ok | TTF event med / p95 ms | TTF delta med / p95 ms | "
            "per-delta latency med / p95 / p99 ms | added vs direct med / p95 ms | CPU busy proxy / client |",
            "|---|---|---|---|---|---|---|"]
    direct = next((r for r in results if r.name == "direct"), None)
    base = _stats(_lags(getattr(direct, pick))) if direct and getattr(direct, pick) else (NAN, NAN, NAN)
    for r in results:
        phase = getattr(r, pick)
        if phase is None:
            continue
        ev, de, lag = _ttf(phase, "first_event_ns"), _ttf(phase, "first_delta_ns"), _stats(_lags(phase))
        proxy_busy = "—" if r.name == "direct" else f"{phase.proxy_cpu_s / phase.wall_s:.0%}"
        busy = f"{proxy_busy} / {phase.client_cpu_s / phase.wall_s:.0%}"
        added = "—" if r.name == "direct" else f"{_fmt(lag[0] - base[0], 3)} / {_fmt(lag[1] - base[1], 3)}"
        rows.append(
            f"| {r.name} | {len(phase.ok)}/{len(phase.samples)} (peak open {phase.peak_streams}) "
            f"| {_fmt(median(ev))} / {_fmt(percentile(ev, 95))} | {_fmt(median(de))} / {_fmt(percentile(de, 95))} "
            f"| {_fmt(lag[0], 3)} / {_fmt(lag[1], 3)} / {_fmt(lag[2], 3)} | {added} | {busy} |"
        )
    return rows


def _throughput_table(results: Sequence[PathResult]) -> list[str]:
    rows = ["| path | concurrency | streams ok | deltas | wall s | deltas/s (wall) | proxy CPU s "
            "| **deltas per proxy CPU-second** | proxy CPU ms per stream | upstream CPU s | client CPU s |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for concurrency, phase in sorted(r.throughput.items()):
            deltas = sum(s.deltas for s in phase.ok)
            if r.name == "direct":
                proxy = "— | — | —"
            else:
                per_cpu = deltas / phase.proxy_cpu_s if phase.proxy_cpu_s > 0 else NAN
                per_stream = phase.proxy_cpu_s * 1000 / len(phase.ok) if phase.ok else NAN
                proxy = f"{phase.proxy_cpu_s:.2f} | **{_fmt(per_cpu, 0)}** | {_fmt(per_stream, 2)}"
            rows.append(
                f"| {r.name} | {concurrency} | {len(phase.ok)}/{len(phase.samples)} | {deltas} "
                f"| {phase.wall_s:.2f} | {deltas / phase.wall_s:,.0f} | {proxy} "
                f"| {phase.upstream_cpu_s:.2f} | {phase.client_cpu_s:.2f} |"
            )
    return rows


def _memory_table(results: Sequence[PathResult]) -> list[str]:
    rows = ["| path | RSS idle MiB | VmHWM before MiB | VmHWM after MiB | sampled peak RSS MiB "
            "| peak streams open | ΔVmHWM per stream KiB |", "|---|---|---|---|---|---|---|"]
    for r in results:
        if r.crowd is None:
            continue
        streams = max(r.crowd.peak_streams, 1)
        rows.append(
            f"| {r.name} | {r.rss_idle_kib / 1024:.1f} | {r.hwm_before_kib / 1024:.1f} | {r.hwm_after_kib / 1024:.1f} "
            f"| {r.rss_peak_kib / 1024:.1f} | {r.crowd.peak_streams} "
            f"| {(r.hwm_after_kib - r.hwm_before_kib) / streams:.1f} |"
        )
    return rows


def _cost_split(results: Sequence[PathResult]) -> list[str]:
    """Two points at concurrency 50: 50-delta and LONG-delta streams → fixed + per-delta CPU."""
    rows = ["| path | proxy CPU ms per 50-delta stream | per long stream (deltas) | ≈ fixed ms per stream "
            "| ≈ µs per delta |", "|---|---|---|---|---|"]
    for r in results:
        short, long = r.throughput.get(50), r.long_burst
        if r.name == "direct" or short is None or long is None or not short.ok or not long.ok:
            continue
        x1, x2 = short.proxy_cpu_s * 1000 / len(short.ok), long.proxy_cpu_s * 1000 / len(long.ok)
        per_delta = (x2 - x1) / (long.expected - short.expected)
        fixed = x1 - short.expected * per_delta
        rows.append(f"| {r.name} | {x1:.2f} | {x2:.2f} ({long.expected}) | {fixed:.2f} | {per_delta * 1000:.0f} |")
    return rows


def _path(results: Sequence[PathResult], name: str) -> PathResult | None:
    return next((r for r in results if r.name == name), None)


def _med_lag(phase: Phase | None) -> float:
    return median(_lags(phase)) if phase else NAN


def _per_cpu(r: PathResult | None, concurrency: int) -> float:
    phase = r.throughput.get(concurrency) if r else None
    if phase is None or phase.proxy_cpu_s <= 0:
        return NAN
    return sum(s.deltas for s in phase.ok) / phase.proxy_cpu_s


def _interpretation(results: Sequence[PathResult]) -> list[str]:
    direct, gateway, litellm = (_path(results, n) for n in ("direct", "gateway", "litellm"))
    if direct is None or gateway is None:
        return []
    base = _med_lag(direct.latency)
    lines = [f"* One stream at a time, the gateway adds **{_fmt(_med_lag(gateway.latency) - base, 2)} ms** (median) "
             f"to each delta over reading the upstream directly"]
    if litellm is not None:
        lines[-1] += f"; LiteLLM adds {_fmt(_med_lag(litellm.latency) - base, 2)} ms."
    ttf = {r.name: median(_ttf(r.latency, "first_delta_ns")) for r in results if r.latency}
    lines.append("* Time to first delta (median): " + ", ".join(f"{k} {_fmt(v, 1)} ms" for k, v in ttf.items())
                 + ". The gateway's first *event* comes sooner than its first delta: `request.query`/`run.start` "
                 "are sent before the upstream call.")
    for concurrency in (1, 50, 200):
        g, lt = _per_cpu(gateway, concurrency), _per_cpu(litellm, concurrency)
        ratio = f" — {_fmt(g / lt, 1)}× LiteLLM's {_fmt(lt, 0)}" if litellm is not None else ""
        lines.append(f"* Concurrency {concurrency}: gateway {_fmt(g, 0)} deltas per CPU-second{ratio}.")
    if gateway.crowd is not None:
        lines.append(
            f"* 200 streams started at once: the gateway's median per-delta latency rises to "
            f"{_fmt(_med_lag(gateway.crowd), 0)} ms (direct: {_fmt(_med_lag(direct.crowd), 1)} ms)"
            + (f", LiteLLM's to {_fmt(_med_lag(litellm.crowd), 0)} ms" if litellm and litellm.crowd else "")
            + ". We read this as queueing behind 200 run starts at once (inferred, not measured: the fixed cost per stream in the cost "
            "split times 200, on one event loop sharing 2 cores with the client and the upstream) rather than "
            "steady per-delta cost; a real deployment would spread run starts out.")
    lines.append("* Both proxies run as one process with one event loop (LiteLLM `--num_workers 1`, no database, "
                 "default callbacks); LiteLLM does more per request (auth, routing, cost/usage bookkeeping), so "
                 "this compares what each costs as deployed by default, not equal feature sets. Absolute numbers "
                 "are for this small VM; the ratios are the point.")
    return lines


def _errors(results: Sequence[PathResult]) -> list[str]:
    lines = []
    for r in results:
        phases = [r.latency, r.crowd, *r.throughput.values(), r.long_burst]
        errors = [e for p in phases if p is not None for e in p.errors]
        if errors:
            lines.append(f"* {r.name}: {len(errors)} failed streams, e.g. `{errors[0][:160]}`")
    return lines


def render(results: Sequence[PathResult], note: str | None, elapsed_s: float, litellm_python: Path | None) -> str:
    out = ["## Streaming latency: direct vs gateway vs LiteLLM (`python bench/latency.py`)", "",
           f"Run {time.strftime('%Y-%m-%d %H:%M %Z')}, {elapsed_s:.0f} s in all.", "",
           *machine(litellm_python), "", METHOD, ""]
    if note:
        out += [f"**LiteLLM:** {note}", ""]
    out += ["### Latency, one stream at a time (paced script, 30 streams)", "", *_latency_table(results, "latency"), "",
            "### Latency with 200 streams open at once (crowd: 50 deltas, 50 ms apart)", "", *_latency_table(results, "crowd"), "",
            "### Throughput and CPU cost (burst script)", "", *_throughput_table(results), "",
            "Cost split (concurrency 50, linear fit through the two stream lengths; 10 ms CPU ticks, "
            "so roughly ±0.1 ms per stream):", "", *_cost_split(results), "",
            "### Memory (crowd phase: 200 streams at once)", "", *_memory_table(results), ""]
    interpretation = _interpretation(results)
    if interpretation:
        out += ["### Interpretation", "", *interpretation, ""]
    errors = _errors(results)
    if errors:
        out += ["### Failures", "", *errors, ""]
    return "\n".join(out)
