"""Streaming latency and cost: the fake upstream read directly vs through our gateway vs LiteLLM.

``python bench/latency.py`` (project venv). Starts, all on 127.0.0.1 and as children of
this process: the stamping fake upstream (``latency_upstream``), ``python -m app serve``
on a temp deployment (one ONESHOT agent on an OPENAI model pointing at the upstream), and
LiteLLM's proxy from its own venv ``bench/.venv-litellm`` (installed on first run). Then,
one path at a time, so the paths never compete for the CPU:

1. warm-up;
2. latency: ``LATENCY_N`` sequential paced streams (50 deltas, 10 ms apart);
3. memory and latency under load: ``RSS_STREAMS`` streams at once, 50 deltas 50 ms apart;
   VmHWM of the proxy before/after;
4. throughput: burst streams (50 deltas, no pause) at concurrency 1, 50, 200; proxy
   CPU time from /proc/<pid>/stat; then 200-delta bursts at 50, to split the proxy's CPU
   into a fixed cost per stream and a cost per delta.

Prints the figures and rewrites the latency section of ``bench/RESULTS.md``. Bounded: every
phase has a timeout, children die with this process.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from latency_client import Sample, Target, run_load
from latency_proc import cpu_seconds, memory, stop
from latency_render import render
from latency_report import write_section
from latency_targets import LITELLM_VENV, Running, ensure_litellm, start_gateway, start_litellm, start_upstream

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
DELTAS = 50
WARMUP = 5
LATENCY_N = 30
RSS_STREAMS = 200
CROWD_PACE_S = 0.05  # 20 deltas/s per stream, 4000/s offered in all
THROUGHPUT = ((1, 40), (50, 4), (200, 2))  # (concurrency, requests per worker)
LONG_DELTAS = 200  # burst streams of this length at concurrency 50 (2 each)
PHASE_TIMEOUT_S = 90.0


@dataclass(slots=True)
class Phase:
    samples: list[Sample]
    peak_streams: int
    wall_s: float
    proxy_cpu_s: float
    upstream_cpu_s: float
    client_cpu_s: float
    expected: int = DELTAS

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None and s.deltas == self.expected]

    @property
    def errors(self) -> list[str]:
        return [s.error or f"{s.deltas} deltas" for s in self.samples if s not in self.ok]


@dataclass(slots=True)
class PathResult:
    name: str
    proxy_label: str
    latency: Phase | None = None
    crowd: Phase | None = None  # the RSS_STREAMS-at-once paced phase
    throughput: dict[int, Phase] = field(default_factory=dict)
    long_burst: Phase | None = None  # LONG_DELTAS per stream, to split per-stream from per-delta cost
    rss_idle_kib: int = 0
    hwm_before_kib: int = 0
    hwm_after_kib: int = 0
    rss_peak_kib: int = 0
    failure: str | None = None


class RssSampler:
    """Samples the proxy tree's VmRSS every 50 ms in a thread (the event loop is busy)."""

    def __init__(self, pid: int) -> None:
        self._pid, self.peak_kib = pid, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak_kib = max(self.peak_kib, memory(self._pid).rss_kib)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def phase(target: Target, message: str, proxy_pid: int, upstream_pid: int,
                concurrency: int, per_worker: int, expected: int = DELTAS) -> Phase:
    cpu0, up0, me0, t0 = cpu_seconds(proxy_pid), cpu_seconds(upstream_pid), time.process_time(), time.monotonic()
    samples, peak = await run_load(target, message, concurrency=concurrency, per_worker=per_worker,
                                   timeout_s=PHASE_TIMEOUT_S)
    wall = time.monotonic() - t0
    return Phase(samples, peak, wall, cpu_seconds(proxy_pid) - cpu0, cpu_seconds(upstream_pid) - up0,
                 time.process_time() - me0, expected)


async def measure(running: Running, upstream_pid: int, proxy_label: str) -> PathResult:
    assert running.target is not None
    target, pid = running.target, running.proc.pid
    result = PathResult(target.name, proxy_label)
    print(f"[{target.name}] warm-up", flush=True)
    await phase(target, "paced warm-up", pid, upstream_pid, 1, WARMUP)
    await phase(target, "burst warm-up", pid, upstream_pid, 5, 2)
    print(f"[{target.name}] latency: {LATENCY_N} sequential paced streams", flush=True)
    result.latency = await phase(target, "paced", pid, upstream_pid, 1, LATENCY_N)
    before = memory(pid)
    result.rss_idle_kib, result.hwm_before_kib = before.rss_kib, before.hwm_kib
    print(f"[{target.name}] memory: {RSS_STREAMS} streams at once, pace {CROWD_PACE_S} s", flush=True)
    with RssSampler(pid) as sampler:
        result.crowd = await phase(target, f"crowd pace={CROWD_PACE_S}", pid, upstream_pid, RSS_STREAMS, 1)
    result.hwm_after_kib, result.rss_peak_kib = memory(pid).hwm_kib, sampler.peak_kib
    for concurrency, per_worker in THROUGHPUT:
        print(f"[{target.name}] throughput: {concurrency} x {per_worker} burst streams", flush=True)
        result.throughput[concurrency] = await phase(target, "burst", pid, upstream_pid, concurrency, per_worker)
    print(f"[{target.name}] cost split: 50 x 2 burst streams of {LONG_DELTAS} deltas", flush=True)
    result.long_burst = await phase(target, f"burst deltas={LONG_DELTAS}", pid, upstream_pid, 50, 2, LONG_DELTAS)
    return result


async def run(args: argparse.Namespace, work: Path) -> tuple[list[PathResult], str | None]:
    logs = work / "logs"
    logs.mkdir()
    upstream, upstream_url = start_upstream(logs)
    started: list[Running] = [upstream]
    results: list[PathResult] = []
    litellm_note: str | None = None
    try:
        gateway = start_gateway(work, upstream_url, logs)
        started.append(gateway)
        litellm: Running | None = None
        if not args.skip_litellm:
            try:
                print("[litellm] ensuring bench/.venv-litellm (pip install on first run)", flush=True)
                litellm = start_litellm(ensure_litellm(logs), work, upstream_url, logs)
                started.append(litellm)
            except (RuntimeError, OSError) as exc:
                litellm_note = f"LiteLLM could not be used: {exc}"
                print(litellm_note, flush=True)
        else:
            litellm_note = "LiteLLM skipped (--skip-litellm)."
        pid = upstream.proc.pid
        results.append(await measure(upstream, pid, "upstream (no proxy)"))
        results.append(await measure(gateway, pid, "gateway"))
        if litellm is not None:
            results.append(await measure(litellm, pid, "LiteLLM proxy"))
    finally:
        for running in reversed(started):
            stop(running.proc)
    if args.keep_logs:
        print(f"logs kept in {logs}")
    return results, litellm_note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-litellm", action="store_true", help="measure direct and gateway only")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the child logs")
    args = parser.parse_args()
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="agw-latency-"))
    try:
        results, note = asyncio.run(run(args, work))
    finally:
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    litellm_python = LITELLM_VENV / "bin" / "python"
    text = render(results, note, elapsed, litellm_python if any(r.name == "litellm" for r in results) else None)
    print(text)
    if not args.no_write:
        write_section(RESULTS, text)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
