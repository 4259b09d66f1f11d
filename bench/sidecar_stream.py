"""Streaming through the desktop sidecar vs the HTTP gateway, side by side in one run (SPEC §10, issue 13).

``python bench/sidecar_stream.py`` (project venv; ``--repeat 3``). The same stamping fake upstream
(``latency_upstream``) and the same deployment (one ONESHOT agent) behind two paths:

* ``sidecar`` — ``python -m app sidecar``: ``agent.query`` over stdin, every event an
  ``agent.event`` notification line on its stdout pipe, read by this process;
* ``http`` — ``python -m app serve``: ``POST /api/ap/query`` read as SSE by the thin client of
  ``bench/latency.py``.

Two phases each, ``QUERIES`` queries at once: *paced* (100 deltas 10 ms apart, like tokens) and
*burst* (200 deltas with no pause). Prints the CPU per delta of the gateway process
(utime+stime from ``/proc``, 10 ms ticks) and the one-way latency p50/p99 of each delta (the
upstream's send stamp to this process's arrival time), medians over the repetitions, each
process fresh; writes the table to ``bench/RESULTS.md`` between ``<!-- sidecar-stream:start -->``
and ``<!-- sidecar-stream:end -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from itertools import count
from pathlib import Path
from typing import Any

import orjson
from latency_client import run_load
from latency_proc import cpu_seconds, stop
from latency_report import measure_and_report, percentile
from latency_targets import REPO, _env, make_deployment, start_gateway, start_upstream

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
START, END = "<!-- sidecar-stream:start -->", "<!-- sidecar-stream:end -->"
QUERIES = 20
PHASES = (("paced", "pace=0.01 deltas=100", 100), ("burst", "burst deltas=200", 200))
#: a generous bound that only turns a hang into a failure
HANG_S = 120.0


class Sidecar:
    """A ``python -m app sidecar`` process; replies by id, delta lags measured as lines arrive."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.lags_ns: list[int] = []
        self._ids = count(1)
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, deploy: Path, log: Path) -> Sidecar:
        with log.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "app", "--log-level", "WARNING", "sidecar", "--dir", str(deploy),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
                env=_env(), cwd=str(REPO), limit=64 * 1024 * 1024)
        return cls(proc)

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            now = time.monotonic_ns()
            message = orjson.loads(line)
            if message.get("method") == "agent.event":
                event = message["params"]["event"]
                if event.get("type") == "content.delta":
                    self.lags_ns.extend(now - int(stamp) for stamp in event["delta"].split())
            elif message.get("id") in self.replies:
                self.replies.pop(message["id"]).set_result(message)

    async def query(self, text: str) -> None:
        assert self.proc.stdin is not None
        request_id = next(self._ids)
        reply = self.replies[request_id] = asyncio.get_running_loop().create_future()
        self.proc.stdin.write(orjson.dumps({"jsonrpc": "2.0", "id": request_id, "method": "agent.query",
                                            "params": {"agentKey": "benchAgent", "message": text}}) + b"\n")
        await self.proc.stdin.drain()
        result = (await asyncio.wait_for(reply, HANG_S)).get("result") or {}
        if result.get("status") != "complete":
            raise RuntimeError(f"sidecar query did not complete: {result}")

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        if await asyncio.wait_for(self.proc.wait(), HANG_S) != 0:
            raise RuntimeError(f"the sidecar exited with status {self.proc.returncode}")
        await self._reader


async def _sidecar_phase(sidecar: Sidecar, message: str, deltas: int) -> tuple[float, list[int]]:
    sidecar.lags_ns = []
    before = cpu_seconds(sidecar.proc.pid)
    await asyncio.gather(*(sidecar.query(message) for _ in range(QUERIES)))
    cpu = cpu_seconds(sidecar.proc.pid) - before
    if len(sidecar.lags_ns) != QUERIES * deltas:
        raise RuntimeError(f"sidecar: {len(sidecar.lags_ns)} deltas arrived, {QUERIES * deltas} sent")
    return cpu / len(sidecar.lags_ns) * 1e6, sidecar.lags_ns


async def measure(repeat: int) -> dict[tuple[str, str], list[tuple[float, float, float]]]:
    """(path, phase) → per repetition: CPU µs per delta, latency p50 and p99 in ms."""
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    work = Path(tempfile.mkdtemp(prefix="agw-sidecar-stream-"))
    upstream, url = start_upstream(work)

    def keep(path: str, phase: str, cpu: float, lags: list[int]) -> None:
        lags = sorted(lags)
        figures = (cpu, percentile(lags, 50) / 1e6, percentile(lags, 99) / 1e6)
        results.setdefault((path, phase), []).append(figures)
        print(f"[{path}] {phase}: {cpu:.1f} µs CPU per delta, p50 {figures[1]:.2f} ms, p99 {figures[2]:.2f} ms",
              flush=True)

    try:
        for rep in range(repeat):
            for path in (("sidecar", "http") if rep % 2 == 0 else ("http", "sidecar")):
                if path == "sidecar":
                    sidecar = await Sidecar.start(make_deployment(work / f"sc{rep}", url), work / f"sc{rep}.log")
                    try:
                        await _sidecar_phase(sidecar, "burst deltas=5", 5)  # warm-up
                        for phase, message, deltas in PHASES:
                            keep(path, phase, *await _sidecar_phase(sidecar, message, deltas))
                    finally:
                        await sidecar.stop()
                else:
                    gateway = start_gateway(work, url, work, name=f"http{rep}")
                    assert gateway.target is not None
                    try:
                        await run_load(gateway.target, "burst deltas=5", concurrency=QUERIES, per_worker=1,
                                       timeout_s=HANG_S)
                        for phase, message, deltas in PHASES:
                            before = cpu_seconds(gateway.proc.pid)
                            samples, _ = await run_load(gateway.target, message, concurrency=QUERIES, per_worker=1,
                                                        timeout_s=HANG_S)
                            cpu = cpu_seconds(gateway.proc.pid) - before
                            errors = [s.error for s in samples if s.error]
                            lags = [lag for s in samples for lag in s.lags_ns]
                            if errors or len(lags) != QUERIES * deltas:
                                raise RuntimeError(f"http: {len(lags)} deltas of {QUERIES * deltas}; {errors[:3]}")
                            keep(path, phase, cpu / len(lags) * 1e6, lags)
                    finally:
                        stop(gateway.proc)
    finally:
        stop(upstream.proc)
    return results


def render(results: dict[tuple[str, str], list[tuple[float, float, float]]], repeat: int,
           load: tuple[tuple[float, float, float], tuple[float, float, float]]) -> str:
    (b1, b5, b15), (a1, a5, a15) = load

    def cell(values: list[float], digits: int) -> str:
        each = " / ".join(f"{v:.{digits}f}" for v in values)
        return f"{statistics.median(values):.{digits}f} ({each})"

    lines = [
        "## The desktop sidecar vs HTTP (`python bench/sidecar_stream.py`)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {repeat} repetitions; load average before "
        f"{b1:.2f} / {b5:.2f} / {b15:.2f}, after {a1:.2f} / {a5:.2f} / {a15:.2f}. {QUERIES} queries at once on one "
        "ONESHOT agent; *paced*: 100 deltas 10 ms apart, *burst*: 200 deltas with no pause. *sidecar*: "
        "`agent.query` over stdin, `agent.event` lines on its stdout pipe; *http*: `POST /api/ap/query` as SSE. "
        "CPU of the gateway process; latency one-way, from the upstream's send stamp to arrival here. "
        "Medians (each repetition in brackets), every process fresh.",
        "",
        "| path | phase | CPU per delta µs | latency p50 ms | latency p99 ms |",
        "|---|---|---|---|---|",
    ]
    for phase, _, _ in PHASES:
        for path in ("sidecar", "http"):
            runs = results.get((path, phase), [])
            if runs:
                lines.append(f"| {path} | {phase} | {cell([r[0] for r in runs], 1)} | {cell([r[1] for r in runs], 2)} "
                             f"| {cell([r[2] for r in runs], 2)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    options = parser.parse_args(sys.argv[1:] if argv is None else argv)
    measure_and_report(measure, render, options.repeat, RESULTS, START, END, write=not options.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
