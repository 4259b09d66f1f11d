"""The floor under the hot-path targets (issue 13): what relaying one paced delta costs any
Python process on this machine, measured beside the gateway in one run.

``python bench/relay_floor.py`` (project venv; ``--repeat 3``). Three paths to the same
stamping fake upstream (``latency_upstream``), the same crowd as ``bench/latency.py`` (200
streams at once, 120 deltas 50 ms apart) and the same thin client:

* ``direct`` — the client reads the upstream; the CPU column is the *upstream's* (what producing
  one paced delta costs a Python asyncio server);
* ``relay`` — a TCP relay on uvloop protocols in its own process (``relay`` mode of this
  script): no tasks, no parsing, no HTTP — each chunk the upstream sends is written to the
  client from the socket callback. One receive and one send per delta: the floor for any
  process that forwards tokens;
* ``gateway`` — ``python -m app serve`` on the bench deployment, as in ``bench/latency.py``.

Prints CPU per delta of the process in the middle (utime+stime from ``/proc``, 10 ms ticks), of
the upstream and of the client (this process), their sum (the machine's CPU for one delta, and so
the least wall time a wave of 200 deltas needs on this machine's cores), the one-way latency
p50/p99 of each path, and writes the table to ``bench/RESULTS.md`` between
``<!-- relay-floor:start -->`` and ``<!-- relay-floor:end -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from latency_client import Target, run_crowd, run_load
from latency_proc import cpu_seconds, free_port, stop
from latency_report import measure_and_report, percentile
from latency_targets import _openai_body, start_gateway, start_upstream

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
START, END = "<!-- relay-floor:start -->", "<!-- relay-floor:end -->"
STREAMS, DELTAS, PACE_S = 200, 120, 0.05


# ------------------------------------------------------------------------------ the relay


class _Upstream(asyncio.Protocol):
    def __init__(self, client: _Client) -> None:
        self.client = client
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.client.transport is not None:
            self.client.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.client.transport is not None:
            self.client.transport.close()


class _Client(asyncio.Protocol):
    """One client connection: opens its own connection to the upstream and pipes both ways."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.transport: asyncio.Transport | None = None
        self.upstream: _Upstream | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(lambda: _Upstream(self), self.host, self.port)
        self.upstream = upstream
        for data in self.pending:
            upstream.transport.write(data)  # type: ignore[union-attr]
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write(data)
        else:
            self.pending.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


def relay(host: str, port: int, listen_port: int) -> None:
    import uvloop

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(lambda: _Client(host, port), "127.0.0.1",
                                                                listen_port)
        print("READY", flush=True)
        await server.serve_forever()

    uvloop.run(main())


# ---------------------------------------------------------------------------- measuring


#: one repetition of one path: CPU per delta (µs) of the process in the middle, the upstream and the
#: client; latency p50 and p99 (ms); failed streams
Run = tuple[float, float, float, float, float, int]


async def _crowd(target: Target, pid: int, upstream_pid: int) -> tuple[tuple[float, float, float], list[int], int]:
    """CPU per delta of the middle process (the upstream itself for ``direct``), of the upstream
    and of this process (the client), the lags, and the failed streams."""
    before = cpu_seconds(pid), cpu_seconds(upstream_pid), time.process_time()
    samples, _, _ = await run_crowd(target, f"crowd pace={PACE_S} deltas={DELTAS}", streams=STREAMS,
                                    probe_message="x", probes=0, timeout_s=300)
    after = cpu_seconds(pid), cpu_seconds(upstream_pid), time.process_time()
    errors = sum(1 for sample in samples if sample.error)
    lags = [lag for sample in samples for lag in sample.lags_ns]
    middle, upstream, client = ((b - a) / max(1, len(lags)) * 1e6 for a, b in zip(before, after, strict=True))
    return (middle, upstream, client), lags, errors


async def measure(repeat: int) -> dict[str, list[Run]]:
    work = Path(tempfile.mkdtemp(prefix="agw-floor-"))
    upstream, url = start_upstream(work)
    host_port = url.split("//", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    listen = free_port()
    relay_proc = subprocess.Popen([sys.executable, __file__, "relay", host, port, str(listen)],
                                  stdout=subprocess.PIPE)
    assert relay_proc.stdout is not None
    if relay_proc.stdout.readline().strip() != b"READY":
        raise RuntimeError("the relay did not start")
    gateway = start_gateway(work, url, work)
    paths = {
        "direct": (upstream.target, upstream.proc.pid),
        "relay": (Target("relay", f"http://127.0.0.1:{listen}/v1/chat/completions", "openai",
                         _openai_body("fake-gpt")), relay_proc.pid),
        "gateway": (gateway.target, gateway.proc.pid),
    }
    results: dict[str, list[Run]] = {name: [] for name in paths}
    try:
        for target, _ in paths.values():  # warm-up
            await run_load(target, "burst deltas=20", concurrency=5, per_worker=4, timeout_s=60)
        for _ in range(repeat):
            for name, (target, pid) in paths.items():
                (us, upstream_us, client_us), lags, errors = await _crowd(target, pid, upstream.proc.pid)
                p50, p99 = percentile(lags, 50) / 1e6, percentile(lags, 99) / 1e6
                results[name].append((us, upstream_us, client_us, p50, p99, errors))
                print(f"[{name}] {us:.1f} µs CPU per delta (upstream {upstream_us:.1f}, client {client_us:.1f}), "
                      f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, {errors} failed streams", flush=True)
    finally:
        relay_proc.kill()
        relay_proc.wait()
        stop(gateway.proc)
        stop(upstream.proc)
    return results


def render(results: dict[str, list[Run]], repeat: int,
           loads: tuple[tuple[float, ...], tuple[float, ...]]) -> str:
    rows = []
    labels = {"direct": "direct (CPU: the upstream producing)", "relay": "relay (CPU: the relay)",
              "gateway": "gateway (CPU: the gateway)"}
    cores = os.cpu_count() or 1
    for name, runs in results.items():
        cpu = statistics.median(run[0] for run in runs)
        each = " / ".join(f"{run[0]:.0f}" for run in runs)
        upstream = statistics.median(run[1] for run in runs)
        client = statistics.median(run[2] for run in runs)
        # every process's CPU for one delta (direct: the middle column is the upstream already)
        machine = statistics.median(run[2] + run[1] + (run[0] if name != "direct" else 0) for run in runs)
        wave = machine * STREAMS / cores / 1000  # ms of wall time a wave needs on all cores at least
        p50 = statistics.median(run[3] for run in runs)
        p99 = statistics.median(run[4] for run in runs)
        failed = sum(run[5] for run in runs)
        rows.append(f"| {labels[name]} | {cpu:.0f} ({each}) | {upstream:.0f} | {client:.0f} | {machine:.0f} "
                    f"| {wave:.1f} | {p50:.2f} | {p99:.2f} | {failed} |")
    return "\n".join([
        "## The floor under a paced delta (`python bench/relay_floor.py`)",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {repeat} repetitions; load average before "
        f"{' / '.join(f'{v:.2f}' for v in loads[0])}, after {' / '.join(f'{v:.2f}' for v in loads[1])}. "
        f"{STREAMS} streams at once, {DELTAS} deltas {PACE_S * 1000:.0f} ms apart, the client of "
        "`bench/latency.py`. *relay* is a TCP relay on uvloop protocols (no tasks, no parsing): the "
        "least any process can spend to forward one paced delta here.",
        "",
        "| path | CPU per delta, µs, median (each run) | upstream µs | client µs | all processes µs "
        f"| a wave of {STREAMS} deltas on {cores} cores, ms at least | latency p50 ms | latency p99 ms "
        "| failed streams |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        "Latency is one-way, from the upstream's send stamp to the client's arrival time, so the rows "
        "include the client's own queueing. The relay can come out *faster* than direct, because two "
        "processes share the work of 200 streams. The streams start together, so their deltas come in "
        f"waves of {STREAMS}; the upstream sends a wave over about {STREAMS} times its own CPU per delta. "
        "When the CPU all processes spend on a wave, spread over every core, takes longer than that, "
        "the wave's later deltas queue behind its earlier ones, whoever is in the middle.",
    ])


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["relay"]:
        relay(args[1], int(args[2]), int(args[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    options = parser.parse_args(args)
    measure_and_report(measure, render, options.repeat, RESULTS, START, END, write=not options.no_write)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
