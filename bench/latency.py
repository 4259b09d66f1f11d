"""Streaming latency and cost: the fake upstream read directly vs through our gateway vs LiteLLM.

``python bench/latency.py`` (project venv). Starts, all on 127.0.0.1 and as children of
this process: the stamping fake upstream (``latency_upstream``), ``python -m app serve``
on a temp deployment (one ONESHOT agent on an OPENAI model pointing at the upstream), and
LiteLLM's proxy from its own venv ``bench/.venv-litellm`` (installed on first run).
Optional extra gateways, measured side by side in the same run: ``--before DIR`` (the
gateway from another source tree, e.g. a copy of an earlier commit: the "before" of a
before/after) and ``--pure-python`` (this gateway forced onto asyncio's loop and h11).

Each repetition (``--repeat``, default 3) starts every proxy afresh and measures the paths
one at a time, so they never compete for the CPU (the order rotates between repetitions):

1. warm-up;
2. latency: ``LATENCY_N`` sequential paced streams (50 deltas, 10 ms apart);
3. crowd: ``CROWD_STREAMS`` streams at once, ``CROWD_DELTAS`` deltas ``CROWD_PACE_S`` apart
   (paced like real tokens) — per-delta latency, time to first token of streams arriving
   together, and of ``PROBES`` streams started one by one while the crowd is open (steady
   state); proxy CPU per delta; VmHWM of the proxy before/after; the gateway's garbage
   collector pauses (it runs under ``latency_gcprobe``);
4. the same crowd with ``CROWD_LONG_DELTAS`` deltas, to split the paced CPU into a fixed
   cost per stream and a cost per delta;
5. throughput: burst streams (50 deltas, no pause) at concurrency 1, 50, 200, then
   200-delta bursts at 50 (the burst cost split).

Prints the figures (medians over the repetitions, and each repetition's value for the
headline ones) and rewrites the latency section of ``bench/RESULTS.md``. Bounded: every phase
has a timeout, children die with this process.
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

import orjson
from latency_client import Sample, Target, run_crowd, run_load
from latency_proc import cpu_seconds, memory, stop
from latency_render import render
from latency_report import load_average, write_section
from latency_targets import LITELLM_VENV, Running, ensure_litellm, start_gateway, start_litellm, start_upstream

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
DELTAS = 50
WARMUP = 5
LATENCY_N = 30
CROWD_STREAMS = 200
CROWD_DELTAS = 40
CROWD_LONG_DELTAS = 120
CROWD_PACE_S = 0.05  # 20 deltas/s per stream, 4000/s offered in all
PROBES = 10
PROBE_MESSAGE = "deltas=2 pace=0.01"
THROUGHPUT = ((1, 40), (50, 4), (200, 2))  # (concurrency, requests per worker)
LONG_DELTAS = 200  # burst streams of this length at concurrency 50 (2 each)
PHASE_TIMEOUT_S = 120.0
PURE_PYTHON = ("--loop", "asyncio", "--http", "h11")


@dataclass(slots=True)
class Phase:
    samples: list[Sample]
    peak_streams: int
    wall_s: float
    proxy_cpu_s: float
    upstream_cpu_s: float
    client_cpu_s: float
    expected: int = DELTAS
    probes: list[Sample] = field(default_factory=list)
    window_ns: tuple[int, int] = (0, 0)

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None and s.deltas == self.expected]

    @property
    def errors(self) -> list[str]:
        return [s.error or f"{s.deltas} deltas" for s in self.samples if s not in self.ok]

    @property
    def deltas(self) -> int:
        return sum(s.deltas for s in self.ok)


@dataclass(slots=True)
class PathResult:
    name: str
    proxy_label: str
    latency: Phase | None = None
    crowd: Phase | None = None  # CROWD_STREAMS at once, paced, with steady-state probes
    crowd_long: Phase | None = None  # the same with CROWD_LONG_DELTAS deltas (paced cost split)
    throughput: dict[int, Phase] = field(default_factory=dict)
    long_burst: Phase | None = None  # LONG_DELTAS per stream, to split per-stream from per-delta cost
    rss_idle_kib: int = 0
    hwm_before_kib: int = 0
    hwm_after_kib: int = 0
    rss_peak_kib: int = 0
    #: garbage-collector passes during the crowd phases: (wall ms, CPU ms, generation)
    gc_pauses: list[tuple[float, float, int]] = field(default_factory=list)
    gc_measured: bool = False
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
                concurrency: int, per_worker: int, expected: int = DELTAS, probes: int = 0) -> Phase:
    cpu0, up0, me0, t0 = cpu_seconds(proxy_pid), cpu_seconds(upstream_pid), time.process_time(), time.monotonic()
    start_ns = time.monotonic_ns()
    probe_samples: list[Sample] = []
    if probes:
        samples, peak, probe_samples = await run_crowd(target, message, streams=concurrency,
                                                       probe_message=PROBE_MESSAGE, probes=probes,
                                                       timeout_s=PHASE_TIMEOUT_S)
    else:
        samples, peak = await run_load(target, message, concurrency=concurrency, per_worker=per_worker,
                                       timeout_s=PHASE_TIMEOUT_S)
    wall = time.monotonic() - t0
    return Phase(samples, peak, wall, cpu_seconds(proxy_pid) - cpu0, cpu_seconds(upstream_pid) - up0,
                 time.process_time() - me0, expected, probe_samples, (start_ns, time.monotonic_ns()))


def _crowd_message(deltas: int) -> str:
    return f"crowd pace={CROWD_PACE_S} deltas={deltas}"


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
    print(f"[{target.name}] crowd: {CROWD_STREAMS} streams at once, {CROWD_DELTAS} deltas {CROWD_PACE_S} s apart, "
          f"{PROBES} probes", flush=True)
    with RssSampler(pid) as sampler:
        result.crowd = await phase(target, _crowd_message(CROWD_DELTAS), pid, upstream_pid, CROWD_STREAMS, 1,
                                   CROWD_DELTAS, probes=PROBES)
    result.hwm_after_kib, result.rss_peak_kib = memory(pid).hwm_kib, sampler.peak_kib
    print(f"[{target.name}] crowd: {CROWD_STREAMS} streams of {CROWD_LONG_DELTAS} deltas", flush=True)
    result.crowd_long = await phase(target, _crowd_message(CROWD_LONG_DELTAS), pid, upstream_pid, CROWD_STREAMS, 1,
                                    CROWD_LONG_DELTAS)
    for concurrency, per_worker in THROUGHPUT:
        print(f"[{target.name}] throughput: {concurrency} x {per_worker} burst streams", flush=True)
        result.throughput[concurrency] = await phase(target, "burst", pid, upstream_pid, concurrency, per_worker)
    print(f"[{target.name}] cost split: 50 x 2 burst streams of {LONG_DELTAS} deltas", flush=True)
    result.long_burst = await phase(target, f"burst deltas={LONG_DELTAS}", pid, upstream_pid, 50, 2, LONG_DELTAS)
    return result


def _read_gc(result: PathResult, gc_log: Path) -> None:
    """The collections of the stopped gateway that fell inside its crowd phases."""
    try:
        data = orjson.loads(gc_log.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return
    windows = [p.window_ns for p in (result.crowd, result.crowd_long) if p is not None]
    result.gc_measured = True
    result.gc_pauses = [(wall / 1e6, cpu / 1e6, generation) for start, wall, cpu, generation, _ in data["collections"]
                        if any(w0 <= start <= w1 for w0, w1 in windows)]


@dataclass(frozen=True, slots=True)
class ProxySpec:
    name: str
    label: str
    kind: str  # "gateway" or "litellm"
    src: Path | None = None
    serve_args: tuple[str, ...] = ()


async def one_repetition(rep: int, specs: list[ProxySpec], upstream: Running, upstream_url: str, work: Path,
                         logs: Path, litellm_exe: Path | None) -> list[PathResult]:
    print(f"=== repetition {rep + 1}", flush=True)
    results = [await measure(upstream, upstream.proc.pid, "upstream (no proxy)")]
    shift = rep % len(specs) if specs else 0
    for spec in specs[shift:] + specs[:shift]:
        gc_log = logs / f"gc-{spec.name}-{rep}.json"
        if spec.kind == "litellm":
            assert litellm_exe is not None
            running = start_litellm(litellm_exe, work / f"rep{rep}", upstream_url, logs)
        else:
            running = start_gateway(work / f"rep{rep}", upstream_url, logs, name=spec.name,
                                    src=spec.src or Path(__file__).resolve().parents[1], serve_args=spec.serve_args,
                                    gc_log=gc_log)
        try:
            result = await measure(running, upstream.proc.pid, spec.label)
        finally:
            stop(running.proc)
        if spec.kind == "gateway":
            _read_gc(result, gc_log)
        results.append(result)
    return results


async def run(args: argparse.Namespace, work: Path) -> tuple[list[list[PathResult]], str | None]:
    logs = work / "logs"
    logs.mkdir()
    (work / "rep0").mkdir()
    upstream, upstream_url = start_upstream(logs)
    litellm_note: str | None = None
    specs: list[ProxySpec] = []
    if args.before is not None:
        specs.append(ProxySpec("before", f"gateway from {args.before}", "gateway", src=args.before))
    specs.append(ProxySpec("gateway", "gateway", "gateway"))
    if args.pure_python:
        specs.append(ProxySpec("gateway-py", "gateway on asyncio + h11", "gateway", serve_args=PURE_PYTHON))
    litellm_exe: Path | None = None
    if not args.skip_litellm:
        try:
            print("[litellm] ensuring bench/.venv-litellm (pip install on first run)", flush=True)
            litellm_exe = ensure_litellm(logs)
            specs.append(ProxySpec("litellm", "LiteLLM proxy", "litellm"))
        except (RuntimeError, OSError) as exc:
            litellm_note = f"LiteLLM could not be used: {exc}"
            print(litellm_note, flush=True)
    else:
        litellm_note = "LiteLLM skipped (--skip-litellm)."
    reps: list[list[PathResult]] = []
    try:
        for rep in range(args.repeat):
            (work / f"rep{rep}").mkdir(exist_ok=True)
            reps.append(await one_repetition(rep, specs, upstream, upstream_url, work, logs, litellm_exe))
    finally:
        stop(upstream.proc)
    if args.keep_logs:
        print(f"logs kept in {logs}")
    return reps, litellm_note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-litellm", action="store_true", help="measure direct and the gateways only")
    parser.add_argument("--before", type=Path, default=None,
                        help="also measure the gateway of this source tree (a folder holding app/)")
    parser.add_argument("--pure-python", action="store_true", help="also measure this gateway on asyncio + h11")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (medians are reported)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the child logs")
    parser.add_argument("--note", default="", help="a sentence about the run, written under the machine description")
    args = parser.parse_args()
    started = time.monotonic()
    load_before = load_average()
    work = Path(tempfile.mkdtemp(prefix="agw-latency-"))
    try:
        reps, note = asyncio.run(run(args, work))
    finally:
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    litellm_python = LITELLM_VENV / "bin" / "python"
    has_litellm = any(r.name == "litellm" for rep in reps for r in rep)
    text = render(reps, note, elapsed, litellm_python if has_litellm else None, (load_before, load_average()),
                  args.note)
    print(text)
    if not args.no_write:
        write_section(RESULTS, text)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
