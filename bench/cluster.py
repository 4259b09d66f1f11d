"""Several instances (SPEC §16): 1 vs 2 gateway instances on Redis behind haproxy, side by side.

``python bench/cluster.py`` (project venv; needs ``redis-server`` and ``haproxy`` on PATH).

Children of this process, all on 127.0.0.1: the stamping fake upstream (``latency_upstream``:
every text delta carries its send time), ``redis-server`` (nothing persisted), and three
``python -m app serve``: one without Redis (the reference), two with ``agent.cluster.redis-url``
on one shared deployment folder; two haproxy processes from ``deploy/haproxy.cfg`` (round
robin): one in front of the first clustered instance, one in front of both. One setup at a time,
so the setups never compete for the CPU:

1. latency: ``LATENCY_N`` sequential paced streams (50 deltas, 10 ms apart), per-delta one-way
   latency (client arrival − upstream stamp) and what the setup adds over reading the upstream;
2. crowd: ``CROWD`` streams at once (50 deltas, 50 ms apart), per-delta latency;
3. throughput: burst streams (50 deltas, no pause) at concurrency 50 and 200, wall time and
   CPU seconds of every process (gateways, haproxy, Redis) from ``/proc`` — ``ROUNDS`` rounds,
   the setups taking turns within each round, the median reported (the machine is shared).

Then the cross-instance watch: a query on instance 1, watched live on instance 2 through
``GET /api/ap/run/stream`` (its events come through the Redis Stream), against a second watcher
on instance 1 itself; per-delta latency of the deltas sent after both watchers were attached.

Prints the figures and rewrites the ``cluster`` section of ``bench/RESULTS.md``. Bounded: every
phase has a timeout; children die with this process and are stopped by pid.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import orjson
from latency_client import Sample, Target, _read_body, run_load
from latency_proc import cpu_seconds, free_port, spawn, stop, tail, wait_http
from latency_report import machine, median, percentile, replace_section
from latency_targets import Running, make_deployment, start_upstream

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "RESULTS.md"
START, END = "<!-- cluster:start -->", "<!-- cluster:end -->"
DELTAS = 50
LATENCY_N = 30
CROWD = 200
CROWD_PACE_S = 0.05
THROUGHPUT = ((50, 4), (200, 2))  # (concurrency, requests per worker)
WATCH_N = 30
ROUNDS = 3
PHASE_TIMEOUT_S = 120.0


# --------------------------------------------------------------------------- processes


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update({"PYTHONPATH": str(REPO), "NO_PROXY": "127.0.0.1,localhost", **extra})
    return env


def start_redis(work: Path, logs: Path) -> tuple[Running, str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    log = logs / "redis.log"
    proc = spawn([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--dir", str(work)], log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            import redis  # the [cluster] extra, installed with [test]

            if redis.Redis(port=port, socket_timeout=2).ping():
                return Running(proc, None, log), f"redis://127.0.0.1:{port}/0"
        except redis.RedisError:
            time.sleep(0.05)
    stop(proc)
    raise RuntimeError(f"redis-server did not answer: {tail(log)}")


def deployment(root: Path, upstream_url: str, redis_url: str | None) -> Path:
    deploy = make_deployment(root, upstream_url)
    if redis_url:
        text = (deploy / "application.yml").read_text(encoding="utf-8")
        cluster = f"agent:\n  cluster:\n    redis-url: {redis_url}\n  llm:\n    interaction-log:\n      enabled: false\n"
        (deploy / "application.yml").write_text(text.replace("agent:\n", cluster, 1), encoding="utf-8")
    else:
        text = (deploy / "application.yml").read_text(encoding="utf-8")
        plain = "agent:\n  llm:\n    interaction-log:\n      enabled: false\n"
        (deploy / "application.yml").write_text(text.replace("agent:\n", plain, 1), encoding="utf-8")
    return deploy


def start_gateway(name: str, deploy: Path, logs: Path) -> tuple[Running, str]:
    port = free_port()
    log = logs / f"gateway-{name}.log"
    argv = [sys.executable, "-m", "app", "--dir", str(deploy), "--log-level", "WARNING", "serve",
            "--host", "127.0.0.1", "--port", str(port)]
    proc = spawn(argv, log, env=_env(), cwd=deploy)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", proc, log, timeout=90)
    return Running(proc, None, log), base


def haproxy_config(listen: int, servers: list[str]) -> str:
    """deploy/haproxy.cfg (docs/reverse-proxy.md) with this listen port and one line per instance."""
    text = (REPO / "deploy" / "haproxy.cfg").read_text(encoding="utf-8")
    text = re.sub(r"^(\s*bind )\S+$", rf"\g<1>127.0.0.1:{listen}", text, count=1, flags=re.MULTILINE)
    lines = "\n".join(f"    server gw{i} {urlsplit(url).netloc} check inter 5s" for i, url in enumerate(servers, 1))
    return re.sub(r"^\s*server \S+ 127\.0\.0\.1:8080\b.*$", "    balance roundrobin\n" + lines, text, count=1,
                  flags=re.MULTILINE)


def start_haproxy(name: str, servers: list[str], work: Path, logs: Path) -> tuple[Running, str]:
    port = free_port()
    cfg = work / f"haproxy-{name}.cfg"
    cfg.write_text(haproxy_config(port, servers), encoding="utf-8")
    log = logs / f"haproxy-{name}.log"
    proc = spawn([shutil.which("haproxy") or "/usr/sbin/haproxy", "-f", str(cfg), "-db"], log)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", proc, log, timeout=30)
    return Running(proc, None, log), base


# --------------------------------------------------------------------------- measuring


def _gateway_body(message: str) -> dict[str, object]:
    return {"agentKey": "benchAgent", "message": message}


@dataclass(slots=True)
class Phase:
    samples: list[Sample]
    wall_s: float
    cpu_s: dict[str, float]
    client_cpu_s: float
    expected: int = DELTAS

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.error is None and s.deltas == self.expected]

    @property
    def lags_ms(self) -> list[float]:
        return [lag / 1e6 for s in self.ok for lag in s.lags_ns]

    @property
    def deltas(self) -> int:
        return sum(s.deltas for s in self.ok)


@dataclass(slots=True)
class Setup:
    name: str
    label: str
    target: Target
    pids: dict[str, int]  # role → pid whose CPU is counted (gateways summed under "gateways")
    latency: Phase | None = None
    crowd: Phase | None = None
    throughput: dict[int, list[Phase]] = field(default_factory=dict)


def _cpu(pids: dict[str, int]) -> dict[str, float]:
    totals: dict[str, float] = {}
    for role, pid in pids.items():
        key = "gateways" if role.startswith("gateway") else role
        totals[key] = totals.get(key, 0.0) + cpu_seconds(pid)
    return totals


async def phase(setup: Setup, message: str, concurrency: int, per_worker: int) -> Phase:
    cpu0, me0, t0 = _cpu(setup.pids), time.process_time(), time.monotonic()
    samples, _ = await run_load(setup.target, message, concurrency=concurrency, per_worker=per_worker,
                                timeout_s=PHASE_TIMEOUT_S)
    wall = time.monotonic() - t0
    cpu1 = _cpu(setup.pids)
    return Phase(samples, wall, {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}, time.process_time() - me0)


async def measure(setup: Setup) -> None:
    print(f"[{setup.name}] warm-up", flush=True)
    await phase(setup, "paced warm-up", 1, 5)
    await phase(setup, "burst warm-up", 10, 2)
    print(f"[{setup.name}] latency: {LATENCY_N} sequential paced streams", flush=True)
    setup.latency = await phase(setup, "paced", 1, LATENCY_N)
    print(f"[{setup.name}] crowd: {CROWD} streams at once, pace {CROWD_PACE_S} s", flush=True)
    setup.crowd = await phase(setup, f"crowd pace={CROWD_PACE_S}", CROWD, 1)


async def throughput(setups: list[Setup]) -> None:
    for round_ in range(1, ROUNDS + 1):
        for setup in setups:
            for concurrency, per_worker in THROUGHPUT:
                print(f"[{setup.name}] throughput round {round_}: {concurrency} x {per_worker} burst streams",
                      flush=True)
                measured = await phase(setup, "burst", concurrency, per_worker)
                setup.throughput.setdefault(concurrency, []).append(measured)


def _rate(p: Phase) -> float:
    return p.deltas / p.wall_s if p.wall_s else 0.0


def _mid(phases: list[Phase]) -> Phase:
    """The round with the median throughput."""
    return sorted(phases, key=_rate)[len(phases) // 2]


async def _watch(url: str, run_id: str, stamped: list[tuple[int, int]], attached: asyncio.Event) -> None:
    """GET the run's stream with the benchmark's thin HTTP reader; ``(lag, stamp)`` per text delta."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write((f"GET /api/ap/run/stream?runId={run_id} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
                      "accept: text/event-stream\r\nconnection: close\r\n\r\n").encode())
        status = (await reader.readline()).decode("latin-1")
        chunked = False
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            if line.lower().startswith(b"transfer-encoding") and b"chunked" in line.lower():
                chunked = True
        if " 200 " not in status:
            raise RuntimeError(f"watch {url}: {status.strip()}")
        attached.set()
        pending = b""
        async for data in _read_body(reader, chunked):
            now = time.monotonic_ns()
            *lines, pending = (pending + data).split(b"\n")
            for raw in lines:
                if not raw.startswith(b"data:"):
                    continue
                event = orjson.loads(raw[5:])
                if event.get("type") == "content.delta":
                    stamped.extend((now - int(stamp), int(stamp)) for stamp in event["delta"].split())
                elif event.get("type") in ("run.complete", "run.error", "run.cancel"):
                    return
    finally:
        writer.close()


@dataclass(slots=True)
class WatchResult:
    local_ms: list[float] = field(default_factory=list)
    remote_ms: list[float] = field(default_factory=list)
    runs: int = 0
    errors: list[str] = field(default_factory=list)


async def cross_instance_watch(first: str, second: str) -> WatchResult:
    """Each run: a paced query on ``first`` (its client leaves after the first event, the run goes on);
    a watcher on ``first`` and one on ``second`` attach; the deltas sent after both attached count."""
    result = WatchResult()
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(WATCH_N):
            body = {"agentKey": "benchAgent", "message": "paced", "onDisconnect": "continue"}
            run_id = None
            async with http.stream("POST", f"{first}/api/ap/query", json=body) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        event = orjson.loads(line[5:])
                        run_id = event.get("runId") or event.get("requestId")
                        break
            if run_id is None:
                result.errors.append("no run id")
                continue
            local: list[tuple[int, int]] = []
            remote: list[tuple[int, int]] = []
            attached = [asyncio.Event(), asyncio.Event()]
            tasks = [asyncio.create_task(_watch(first, run_id, local, attached[0])),
                     asyncio.create_task(_watch(second, run_id, remote, attached[1]))]
            try:
                await asyncio.wait_for(asyncio.gather(*(a.wait() for a in attached)), 10)
                since = time.monotonic_ns()
                await asyncio.wait_for(asyncio.gather(*tasks), 30)
            except (OSError, RuntimeError, TimeoutError) as exc:
                for task in tasks:
                    task.cancel()
                result.errors.append(f"{type(exc).__name__}: {exc}")
                continue
            # lag = arrival − stamp, over the deltas stamped after both watchers were attached
            result.local_ms.extend(lag / 1e6 for lag, stamp in local if stamp > since)
            result.remote_ms.extend(lag / 1e6 for lag, stamp in remote if stamp > since)
            result.runs += 1
    return result


# --------------------------------------------------------------------------- report


def _fmt(values: list[float], *qs: float) -> str:
    if not values:
        return "—"
    return " / ".join(f"{median(values) if q == 50 else percentile(values, q):.2f}" for q in qs)


def render(setups: list[Setup], watch: WatchResult | None, elapsed: float, load_start: float) -> str:
    direct = setups[0]
    assert direct.latency is not None
    base = median(direct.latency.lags_ms)
    base95 = percentile(direct.latency.lags_ms, 95)
    out = [
        "## Several instances (SPEC §16): 1 vs 2 instances on Redis behind haproxy",
        "",
        f"`python bench/cluster.py` — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {elapsed:.0f} s in all; "
        f"load average at the start {load_start:.1f}, at the end {os.getloadavg()[0]:.1f} (1 min; other work shared "
        "the machine).",
        "",
        *machine(None),
        f"* redis-server: {_version(['redis-server', '--version'])}; haproxy: {_version(['haproxy', '-v'])}",
        "",
        "**Method.** Children of the benchmark on loopback: the stamping fake upstream (each text delta "
        "carries its send time, `CLOCK_MONOTONIC`), `redis-server` (no persistence), gateways "
        "(`python -m app serve`, WARNING logs, interaction log off) and haproxy from `deploy/haproxy.cfg` "
        "(round robin). Setups, measured one after the other: *direct* (the upstream itself), *1 instance, "
        "no Redis* (the reference: one gateway without `agent.cluster`, behind haproxy), *1 instance* and "
        "*2 instances* (clustered gateways on one Redis and one deployment folder, behind haproxy). Per-delta "
        "latency = client arrival − upstream stamp; *added* = the setup's median/p95 minus direct's. Latency: "
        f"{LATENCY_N} sequential streams of {DELTAS} deltas 10 ms apart; crowd: {CROWD} streams at once, "
        f"{DELTAS} deltas {int(CROWD_PACE_S * 1000)} ms apart; throughput: burst streams ({DELTAS} deltas, no "
        "pause), deltas/s over the wall time of the phase. CPU = utime+stime from `/proc` over the phase "
        "(10 ms ticks), gateways summed. All processes share the machine's cores.",
        "",
        "| setup | streams ok (latency / crowd) | per-delta latency med / p95 ms | added vs direct med / p95 ms "
        "| crowd per-delta med / p95 / p99 ms |",
        "|---|---|---|---|---|",
    ]
    for s in setups:
        assert s.latency is not None and s.crowd is not None
        lags = s.latency.lags_ms
        added = "—" if s is direct else f"{median(lags) - base:.3f} / {percentile(lags, 95) - base95:.3f}"
        out.append(f"| {s.label} | {len(s.latency.ok)}/{len(s.latency.samples)} / {len(s.crowd.ok)}/"
                   f"{len(s.crowd.samples)} | {_fmt(lags, 50, 95)} | {added} | {_fmt(s.crowd.lags_ms, 50, 95, 99)} |")
    out += ["", f"Throughput, the median of {ROUNDS} rounds (all rounds' deltas/s in brackets):", "",
            "| setup | concurrency | streams ok | deltas | wall s | **deltas/s** | gateways CPU s | haproxy CPU s "
            "| Redis CPU s | gateway CPU ms per 1000 deltas |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in setups[1:]:
        for concurrency, phases in s.throughput.items():
            p = _mid(phases)
            gw = p.cpu_s.get("gateways", 0.0)
            per = f"{gw * 1e6 / p.deltas:.0f}" if p.deltas else "—"
            rates = ", ".join(f"{_rate(x):,.0f}" for x in phases)
            out.append(f"| {s.label} | {concurrency} | {len(p.ok)}/{len(p.samples)} | {p.deltas} | {p.wall_s:.2f} | "
                       f"**{_rate(p):,.0f}** ({rates}) | {gw:.2f} | {p.cpu_s.get('haproxy', 0.0):.2f} | "
                       f"{p.cpu_s.get('redis', 0.0):.2f} | {per} |")
    if watch is not None:
        out += ["", f"Cross-instance watch ({watch.runs} runs of {DELTAS} deltas 10 ms apart, query on instance 1; "
                "deltas sent after both watchers attached): per-delta latency med / p95 / p99 ms — watcher on "
                f"instance 1 (in-memory log): {_fmt(watch.local_ms, 50, 95, 99)}; watcher on instance 2 (Redis "
                f"Stream): {_fmt(watch.remote_ms, 50, 95, 99)}"
                + (f"; errors: {', '.join(watch.errors[:3])}" if watch.errors else "") + "."]
    out += ["", *interpretation(setups, watch)]
    return "\n".join(out) + "\n"


def interpretation(setups: list[Setup], watch: WatchResult | None) -> list[str]:
    by = {s.name: s for s in setups}
    lines = ["### Interpretation", ""]
    ref, one, two = by["single"], by["one"], by["two"]
    assert ref.latency and one.latency and two.latency
    lines.append(f"* One stream at a time, Redis adds {median(one.latency.lags_ms) - median(ref.latency.lags_ms):+.3f} "
                 "ms per delta (median, clustered vs reference instance): the query's own stream reads the "
                 "in-memory log; the Redis write is queued off the hot path.")
    for concurrency in (50, 200):
        r, o, t = (x.throughput.get(concurrency) for x in (ref, one, two))
        if r and o and t:
            rm, om, tm = _mid(r), _mid(o), _mid(t)
            lines.append(
                f"* Burst at concurrency {concurrency} (median round): {_rate(rm):,.0f} deltas/s (reference), "
                f"{_rate(om):,.0f} (1 instance on Redis), {_rate(tm):,.0f} (2 instances); gateway CPU per 1000 "
                f"deltas {_per(rm):.0f} / {_per(om):.0f} / {_per(tm):.0f} ms.")
    if watch is not None and watch.local_ms and watch.remote_ms:
        lines.append(f"* A watcher on another instance pays {median(watch.remote_ms) - median(watch.local_ms):+.2f} ms "
                     "per delta (median) for the hop through the Redis Stream.")
    lines.append(f"* This machine has {len(os.sched_getaffinity(0))} cores shared by the client, the upstream, "
                 "haproxy, Redis and the gateways: a second instance can only help as far as a core is free.")
    return lines


def _per(p: Phase) -> float:
    return p.cpu_s.get("gateways", 0.0) * 1e6 / p.deltas if p.deltas else float("nan")


def _version(argv: list[str]) -> str:
    import subprocess

    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    found = re.search(r"v=(\S+)|version (\S+)", out)
    return next((g for g in found.groups() if g), "?") if found else "?"


# --------------------------------------------------------------------------- main


async def run(work: Path, logs: Path) -> tuple[list[Setup], WatchResult | None]:
    started: list[Running] = []
    try:
        upstream, upstream_url = start_upstream(logs)
        started.append(upstream)
        assert upstream.target is not None
        redis_proc, redis_url = start_redis(work, logs)
        started.append(redis_proc)
        plain_deploy = deployment(work / "plain", upstream_url, None)
        shared_deploy = deployment(work / "shared", upstream_url, redis_url)
        print("starting gateways and haproxy", flush=True)
        ref, ref_url = start_gateway("reference", plain_deploy, logs)
        one, one_url = start_gateway("1", shared_deploy, logs)
        two, two_url = start_gateway("2", shared_deploy, logs)
        started += [ref, one, two]
        proxies = [start_haproxy(name, servers, work, logs)
                   for name, servers in (("reference", [ref_url]), ("one", [one_url]), ("two", [one_url, two_url]))]
        started += [proxy for proxy, _ in proxies]
        (ref_px, ref_px_url), (one_px, one_px_url), (two_px, two_px_url) = proxies

        def target(name: str, url: str) -> Target:
            return Target(name, f"{url}/api/ap/query", "gateway", _gateway_body)

        common = {"upstream": upstream.proc.pid}
        setups = [
            Setup("direct", "direct (upstream)", upstream.target, dict(common)),
            Setup("single", "1 instance, no Redis (reference)", target("single", ref_px_url),
                  {**common, "gateway": ref.proc.pid, "haproxy": ref_px.proc.pid}),
            Setup("one", "1 instance on Redis", target("one", one_px_url),
                  {**common, "gateway1": one.proc.pid, "haproxy": one_px.proc.pid, "redis": redis_proc.proc.pid}),
            Setup("two", "2 instances on Redis", target("two", two_px_url),
                  {**common, "gateway1": one.proc.pid, "gateway2": two.proc.pid, "haproxy": two_px.proc.pid,
                   "redis": redis_proc.proc.pid}),
        ]
        for setup in setups:
            await measure(setup)
        await throughput(setups[1:])
        print(f"cross-instance watch: {WATCH_N} runs", flush=True)
        watch = await cross_instance_watch(one_url, two_url)
        return setups, watch
    finally:
        for running in reversed(started):
            stop(running.proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    parser.add_argument("--keep-logs", action="store_true", help="keep the temp dir with the child logs")
    args = parser.parse_args()
    t0, load_start = time.monotonic(), os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="agw-cluster-bench-"))
    logs = work / "logs"
    logs.mkdir()
    try:
        setups, watch = asyncio.run(run(work, logs))
    finally:
        if args.keep_logs:
            print(f"logs kept in {logs}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    text = render(setups, watch, time.monotonic() - t0, load_start)
    print(text)
    if not args.no_write:
        replace_section(RESULTS, START, END, text)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
