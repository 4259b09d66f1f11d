"""Load and soak: up to 1000 concurrent SSE streams through the gateway, every event checked.

``python bench/load.py`` (project venv; ``--levels 1,50,200,500,1000 --deltas 20 --soak-seconds 30``).

Three processes on 127.0.0.1:

* the model: this file in ``--upstream`` mode — the project's ``FakeUpstream`` answering
  every chat request with a fixed script: delta ``d0``, then a ``Gate`` named in the
  user message, then ``d1 … d{N-1}`` (``--pace-ms`` apart), usage, finish;
* the gateway: ``python -m app serve`` on a temp deployment (one ONESHOT agent on an
  OPENAI model pointing at the upstream), logging at WARNING;
* the load generator: this process (asyncio + httpx).

Per level L: open L streams at once; each must receive ``d0`` (the upstream then holds
every stream at the gate), so all L streams are provably open at the same time; then the
gate is released through the upstream's control channel and the rest flows. Every
stream's events are checked: ``seq`` contiguous from 1, ``request.query`` first, content
deltas exactly ``d0 … d{N-1}`` in order, ``run.complete`` last. A stream that fails any
check counts as an error; "lost events" = expected content deltas not delivered. Gateway
peak RSS (``VmHWM``), current RSS and CPU seconds (``utime+stime`` from ``/proc/<pid>/stat``)
are recorded per level. The soak phase keeps ``--soak-concurrency`` streams running
back to back for ``--soak-seconds`` and compares RSS at its start and end.

Bounded: every level has a deadline (``--level-timeout``), children die with this process.
Results go to stdout and to ``bench/RESULTS.md`` between ``<!-- load:start -->`` and
``<!-- load:end -->`` (nothing else in that file is touched).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from latency_proc import cpu_seconds, free_port, memory, spawn, stop, wait_http
from latency_report import replace_section

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "RESULTS.md"
START, END = "<!-- load:start -->", "<!-- load:end -->"


# --------------------------------------------------------------------------- the upstream child


def _upstream_main(deltas: int, pace_ms: int) -> int:
    """``--upstream`` mode: serve until stdin closes; print ``READY <url>`` first."""
    sys.path.insert(0, str(REPO))
    from app.devtools.fake_upstream import FakeUpstream
    from app.devtools.script import Finish, Gate, Pause, Step, Text, Usage

    def responder(body: Mapping[str, Any]) -> list[Step]:
        gate = "default"
        for message in body.get("messages") or []:
            if isinstance(message, dict) and message.get("role") == "user":
                gate = str(message.get("content", "")).rpartition("gate=")[2].split()[0] or gate
        steps: list[Step] = [Text("d0"), Gate(gate)]
        for index in range(1, deltas):
            if pace_ms:
                steps.append(Pause(pace_ms / 1000))
            steps.append(Text(f"d{index}"))
        return [*steps, Usage(10, deltas), Finish("stop")]

    with FakeUpstream(responder=responder) as upstream:  # type: ignore[arg-type]
        print(f"READY {upstream.url}", flush=True)
        sys.stdin.read()
    return 0


# --------------------------------------------------------------------------- processes


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update({"PYTHONPATH": str(REPO), "NO_PROXY": "127.0.0.1,localhost", **extra})
    return env


def _deployment(root: Path, upstream_url: str) -> Path:
    for folder in ("agents", "models", "tools", "skills", "viewports", "data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "models" / "load-model.json").write_bytes(orjson.dumps(
        {"key": "load-model", "provider": "load", "protocol": "OPENAI", "modelId": "load-gpt"}))
    (root / "agents" / "load.json").write_bytes(orjson.dumps({
        "key": "load", "name": "load", "mode": "ONESHOT",
        "modelConfig": {"modelKey": "load-model", "reasoning": {"enabled": False}},
        "plain": {"systemPrompt": "You are a load test."},
        "budget": {"runTimeoutMs": 600000, "model": {"maxCalls": 2, "timeoutMs": 600000}},
    }))
    (root / "application.yml").write_text(
        "agent:\n  auth:\n    enabled: false\n  llm:\n    interaction-log:\n      enabled: false\n"
        f"  providers:\n    load:\n      base-url: {upstream_url}\n      api-key: sk-load\n",
        encoding="utf-8",
    )
    return root


@dataclass(frozen=True, slots=True)
class ProcStats:
    rss_kib: int
    hwm_kib: int
    cpu_s: float


def proc_stats(pid: int) -> ProcStats:
    """VmRSS / VmHWM and utime+stime of the gateway process (``latency_proc`` reads ``/proc``)."""
    mem = memory(pid)
    return ProcStats(mem.rss_kib, mem.hwm_kib, cpu_seconds(pid))


# --------------------------------------------------------------------------- one stream


@dataclass(slots=True)
class StreamResult:
    deltas: list[str] = field(default_factory=list)
    events: int = 0
    error: str | None = None


def _check(events: list[dict[str, Any]], deltas: list[str], expected: list[str]) -> str | None:
    if not events:
        return "no events"
    if [e.get("seq") for e in events] != list(range(1, len(events) + 1)):
        return "seq not contiguous"
    if events[0].get("type") != "request.query":
        return f"first event {events[0].get('type')}"
    if events[-1].get("type") != "run.complete":
        return f"terminal {events[-1].get('type')}: {events[-1].get('error')}"
    if deltas != expected:
        return f"content deltas differ ({len(deltas)}/{len(expected)})"
    return None


async def one_stream(client: httpx.AsyncClient, url: str, gate: str, expected: list[str],
                     opened: asyncio.Queue[None] | None) -> StreamResult:
    result = StreamResult()
    events: list[dict[str, Any]] = []
    signalled = False
    body = {"agentKey": "load", "message": f"load test gate={gate}"}
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                result.error = f"HTTP {response.status_code}"
                return result
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                event = orjson.loads(line[6:])
                events.append(event)
                if event.get("type") == "content.delta":
                    result.deltas.append(event["delta"])
                    if not signalled and opened is not None:
                        signalled = True
                        opened.put_nowait(None)
    except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
        cause = exc.__cause__ or exc.__context__
        result.error = (f"{type(exc).__name__}: {exc}" + (f" ({cause!r})" if cause is not None else "")
                        + f" after {len(events)} events")[:200]
    finally:
        if not signalled and opened is not None:
            opened.put_nowait(None)  # never leave the level waiting for a stream that died
    result.events = len(events)
    if result.error is None:
        result.error = _check(events, result.deltas, expected)
    return result


# --------------------------------------------------------------------------- levels


@dataclass(slots=True)
class LevelResult:
    level: int
    ok: int
    errors: int
    lost_deltas: int
    events: int
    wall_s: float
    open_at_once: int
    cpu_s: float
    rss_after_kib: int
    hwm_kib: int
    first_errors: list[str]
    timed_out: bool = False


async def run_level(level: int, gw_url: str, upstream_url: str, pid: int, deltas: int,
                    timeout_s: float) -> LevelResult:
    expected = [f"d{i}" for i in range(deltas)]
    gate = f"level-{level}-{time.monotonic_ns()}"
    opened: asyncio.Queue[None] = asyncio.Queue()
    # each stream of a level runs once: no connection is reused, so none is kept. (Keeping 1000 idle
    # connections made httpx's pool scan them all at every response: the client, not the gateway,
    # then set the level's wall time once the gateway kept its connections for 75 s.)
    limits = httpx.Limits(max_connections=level + 10, max_keepalive_connections=0)
    timeout = httpx.Timeout(timeout_s, connect=timeout_s)
    before = proc_stats(pid)
    started = time.monotonic()
    timed_out = False
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client, \
            httpx.AsyncClient(timeout=10) as control:
        tasks = [asyncio.create_task(one_stream(client, f"{gw_url}/api/ap/query", gate, expected, opened))
                 for _ in range(level)]
        try:
            async with asyncio.timeout(timeout_s):
                for _ in range(level):
                    await opened.get()
        except TimeoutError:
            timed_out = True
        open_at_once = level - sum(task.done() for task in tasks)
        await control.post(f"{upstream_url}/_control/release/{gate}")
        done, pending = await asyncio.wait(tasks, timeout=timeout_s)
        for task in pending:
            task.cancel()
            timed_out = True
        results = [task.result() if task in done and not task.cancelled() else StreamResult(error="timeout")
                   for task in tasks]
    wall = time.monotonic() - started
    after = proc_stats(pid)
    errors = [r.error for r in results if r.error]
    return LevelResult(
        level=level, ok=level - len(errors), errors=len(errors),
        lost_deltas=sum(max(0, deltas - len(r.deltas)) for r in results),
        events=sum(r.events for r in results), wall_s=wall, open_at_once=open_at_once,
        cpu_s=after.cpu_s - before.cpu_s, rss_after_kib=after.rss_kib, hwm_kib=after.hwm_kib,
        first_errors=sorted(set(errors))[:3], timed_out=timed_out,
    )


@dataclass(slots=True)
class SoakResult:
    concurrency: int
    seconds: float
    streams: int
    errors: int
    lost_deltas: int
    rss_start_kib: int
    rss_end_kib: int
    hwm_kib: int
    cpu_s: float
    first_errors: list[str]


async def run_soak(concurrency: int, seconds: float, gw_url: str, upstream_url: str, pid: int,
                   deltas: int) -> SoakResult:
    """``concurrency`` workers issue streams back to back for ``seconds`` (gate pre-released)."""
    expected = [f"d{i}" for i in range(deltas)]
    gate = "soak-open"
    async with httpx.AsyncClient(timeout=10) as control:
        await control.post(f"{upstream_url}/_control/release/{gate}")
    results: list[StreamResult] = []
    before = proc_stats(pid)
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency + 10, max_keepalive_connections=concurrency + 10)

    async def worker(client: httpx.AsyncClient) -> None:
        while time.monotonic() < deadline:
            results.append(await one_stream(client, f"{gw_url}/api/ap/query", gate, expected, None))

    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(120)) as client:
        await asyncio.wait_for(asyncio.gather(*(worker(client) for _ in range(concurrency))), seconds + 180)
    after = proc_stats(pid)
    return SoakResult(
        concurrency=concurrency, seconds=seconds, streams=len(results),
        errors=sum(1 for r in results if r.error), lost_deltas=sum(max(0, deltas - len(r.deltas)) for r in results),
        rss_start_kib=before.rss_kib, rss_end_kib=after.rss_kib, hwm_kib=after.hwm_kib, cpu_s=after.cpu_s - before.cpu_s,
        first_errors=sorted({r.error for r in results if r.error})[:3],
    )


# --------------------------------------------------------------------------- report


def _cpuinfo_model() -> str:
    for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or "?"


def machine() -> list[str]:
    mem_kib = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal:"))
    return [
        f"* CPU: {_cpuinfo_model()}; nproc {os.cpu_count()} (affinity {len(os.sched_getaffinity(0))})",
        f"* memory: {mem_kib / 1024 / 1024:.1f} GiB",
        f"* Python: {platform.python_version()} ({platform.python_implementation()}), kernel {platform.release()}",
        f"* open-files limit used: {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}",
    ]


def render(levels: list[LevelResult], soak: SoakResult | None, deltas: int, pace_ms: int) -> str:
    lines = [
        "## Load and soak",
        "",
        f"`python bench/load.py` — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}. Gateway (`python -m app serve`, "
        "WARNING logs, interaction log off), fake upstream and load generator in three processes on one machine, "
        "loopback only, sharing its cores:",
        "",
        *machine(),
        "",
        f"Each stream: ONESHOT agent, the upstream sends `d0`, holds at a gate until **all** streams of the level "
        f"have received `d0` (so they are open at the same time), then `d1…d{deltas - 1}` {pace_ms} ms apart. "
        "Checked per stream: `seq` contiguous from 1, `request.query` first, content deltas exactly "
        f"`d0…d{deltas - 1}` in order, `run.complete` last. Gateway CPU = utime+stime of the gateway process "
        "during the level; RSS/VmHWM from `/proc/<pid>/status` (VmHWM is the peak since the gateway started).",
        "",
        "| streams at once | ok | errors | lost deltas | events checked | wall s | gateway CPU s | "
        "gateway RSS after MiB | gateway peak RSS (VmHWM) MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in levels:
        lines.append(
            f"| {r.level} ({r.open_at_once} open) | {r.ok} | {r.errors} | {r.lost_deltas} | {r.events} | "
            f"{r.wall_s:.1f} | {r.cpu_s:.1f} | {r.rss_after_kib / 1024:.0f} | {r.hwm_kib / 1024:.0f} |"
        )
    for r in levels:
        if r.first_errors or r.timed_out:
            lines.append(f"\nLevel {r.level}: timed_out={r.timed_out}; errors: {'; '.join(r.first_errors)}")
    clean = [r.level for r in levels if r.errors == 0 and r.lost_deltas == 0 and not r.timed_out]
    lines += ["", f"**Highest level with 0 lost events and 0 errors: {max(clean) if clean else 'none'}.**"]
    if soak is not None:
        lines += [
            "",
            f"Soak: {soak.concurrency} concurrent workers issuing streams back to back for {soak.seconds:.0f} s "
            f"(no gate): **{soak.streams} streams, {soak.errors} errors, {soak.lost_deltas} lost deltas**; "
            f"gateway RSS {soak.rss_start_kib / 1024:.0f} → {soak.rss_end_kib / 1024:.0f} MiB "
            f"(VmHWM {soak.hwm_kib / 1024:.0f} MiB), CPU {soak.cpu_s:.1f} s "
            f"({soak.streams / soak.seconds:.0f} streams/s, {soak.streams * deltas / soak.seconds:.0f} deltas/s).",
        ]
        if soak.first_errors:
            lines.append(f"\nSoak errors: {'; '.join(soak.first_errors)}")
    return "\n".join(lines)


def write_section(body: str) -> None:
    replace_section(RESULTS, START, END, body)


# --------------------------------------------------------------------------- main


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def _bench(args: argparse.Namespace, gw_url: str, upstream_url: str, pid: int) -> str:
    levels: list[LevelResult] = []
    for level in args.levels:
        result = await run_level(level, gw_url, upstream_url, pid, args.deltas, args.level_timeout)
        levels.append(result)
        print(f"level {level:>5}: ok {result.ok}, errors {result.errors}, lost {result.lost_deltas}, "
              f"open at once {result.open_at_once}, wall {result.wall_s:.1f}s, gateway CPU {result.cpu_s:.1f}s, "
              f"VmHWM {result.hwm_kib / 1024:.0f} MiB {result.first_errors}", flush=True)
    soak = None
    if args.soak_seconds > 0:
        soak = await run_soak(args.soak_concurrency, args.soak_seconds, gw_url, upstream_url, pid, args.deltas)
        print(f"soak: {soak}", flush=True)
    return render(levels, soak, args.deltas, args.pace_ms)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")], default=[1, 50, 200, 500, 1000])
    parser.add_argument("--deltas", type=int, default=20)
    parser.add_argument("--pace-ms", type=int, default=10)
    parser.add_argument("--level-timeout", type=float, default=180.0)
    parser.add_argument("--soak-seconds", type=float, default=30.0)
    parser.add_argument("--soak-concurrency", type=int, default=100)
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--serve-args", default="",
                        help="extra `agw serve` options, e.g. '--loop asyncio --http h11' (the pure-Python stack)")
    parser.add_argument("--upstream", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.upstream:
        return _upstream_main(args.deltas, args.pace_ms)

    _raise_nofile(4 * max(args.levels) + 1024)  # inherited by both children
    work = Path(tempfile.mkdtemp(prefix="agw-load-"))
    upstream = gateway = None
    try:
        upstream = spawn([sys.executable, str(Path(__file__).resolve()), "--upstream", "--deltas", str(args.deltas),
                          "--pace-ms", str(args.pace_ms)], work / "upstream.log", env=_env(), cwd=REPO,
                         stdin_pipe=True, stdout_pipe=True)
        assert upstream.stdout is not None
        ready = upstream.stdout.readline().decode().strip()
        if not ready.startswith("READY "):
            raise RuntimeError(f"upstream did not start: {ready!r}")
        upstream_url = ready.split(" ", 1)[1]
        deploy = _deployment(work / "deploy", upstream_url)
        port = free_port()
        gateway = spawn([sys.executable, "-m", "app", "--dir", str(deploy), "--log-level", "WARNING", "serve",
                         *args.serve_args.split()],
                         work / "gateway.log", cwd=deploy,
                         # a load test is one anonymous user with up to 1000 live runs: lift the run caps
                         env=_env(SERVER_PORT=str(port), AGENT_LIMITS_CONCURRENT_RUNS="100000",
                                  AGENT_LIMITS_USER_CONCURRENT_RUNS="100000"))
        gw_url = f"http://127.0.0.1:{port}"
        wait_http(f"{gw_url}/healthz", gateway, work / "gateway.log", timeout=60)
        report = asyncio.run(_bench(args, gw_url, upstream_url, gateway.pid))
        print()
        print(report)
        if not args.no_write:
            write_section(report)
        return 0
    finally:
        for proc in (gateway, upstream):
            if proc is not None:
                stop(proc, timeout=15)
        log = work / "gateway.log"
        if log.exists() and log.stat().st_size:
            print(f"(gateway log tail)\n{log.read_text(errors='replace')[-2000:]}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
