"""Resume: runs that outlive their connection (SPEC §15), every event checked across both connections.

``python bench/resume.py`` (project venv; ``--runs 1000 --concurrency 20 --deltas 40 --pace-ms 5 --reconnect-ms 20``;
``--runs 50 --no-write`` is the quick check).

Three processes on 127.0.0.1, started as in ``bench/load.py``: the fake upstream (``load.py
--upstream``: a token-paced answer ``d0 d1 … d{N-1}``, ``--pace-ms`` apart, its gate released
before the first run), ``python -m app serve`` on ``load.py``'s temp deployment (run limits
raised to ``--concurrency`` so no query is refused) and this process as the client (httpx).

One uninterrupted warm-up run first: it is checked like the others and tells how many events a
run has and where ``runId`` first appears. Then, for each of ``--runs`` runs (``--concurrency``
at a time):

1. ``POST /api/ap/query`` with ``"onDisconnect": "continue"``; read a random number of events
   (at least up to the first one with ``runId``, at most all but the terminal one), then close
   the connection mid-stream;
2. after ``--reconnect-ms``, ``GET /api/ap/run`` — the log's ``lastSeq`` right before resuming: when it is beyond the
   last seq seen, the first event of the resumed stream was already in the log, i.e. replayed;
3. resume with ``GET /api/ap/run/stream?runId=…`` — even runs pass ``after=<last seq seen>``,
   odd runs the ``Last-Event-ID`` header — and read to the end of the stream;
4. ``GET /api/ap/run`` again: ``status`` must be ``completed``; its ``lastSeq`` is the length
   the run's log really has.

Checked per run: the SSE ``id:`` of every message equals its ``seq``; the seqs of the two
connections together are exactly ``1 … lastSeq`` in order (a missing seq is a *lost* event, one
seen twice a *duplicated* event); every ``runId`` is the run's; the concatenated
``content.delta`` text equals the scripted answer; exactly one terminal event, last, and it is
``run.complete``. Resume latency = from sending the resume request to the first event parsed
from its stream, over the resumes whose first event was replayed.

Bounded: ``--runs`` ≤ 100,000, ``--concurrency`` ≤ 1,000, every run has ``--run-timeout`` and the
whole phase ``--timeout``; children die with this process. Exit status 1 on any lost or
duplicated event, failed check or timeout. Results go to stdout and (unless ``--no-write``) to
``bench/RESULTS.md`` between ``<!-- resume:start -->`` and ``<!-- resume:end -->``.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
from latency_proc import cpu_seconds, free_port, memory, spawn, stop, tail, wait_http
from latency_report import machine, median, percentile, replace_section
from load import _deployment, _env

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
RESULTS = BENCH / "RESULTS.md"
START, END = "<!-- resume:start -->", "<!-- resume:end -->"
AGENT = "load"  # the agent of load.py's deployment
GATE = "resume-open"  # load.py's upstream holds every answer at a gate after d0; released once
TERMINALS = frozenset({"run.complete", "run.error", "run.cancel"})
SSE_HEADERS = {"accept": "text/event-stream"}


# --------------------------------------------------------------------------- SSE


@dataclass(frozen=True, slots=True)
class Message:
    sse_id: str | None
    event: dict[str, Any]

    @property
    def seq(self) -> Any:
        return self.event.get("seq")

    @property
    def type(self) -> Any:
        return self.event.get("type")


async def messages(response: httpx.Response) -> AsyncGenerator[Message, None]:
    """The SSE messages of ``response``: ``id:`` and the JSON of ``data:``, one per blank-line-ended block."""
    sse_id: str | None = None
    data: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data:
                yield Message(sse_id, orjson.loads("\n".join(data)))
            sse_id, data = None, []
        elif line.startswith("id:"):
            sse_id = line[3:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    if data:
        yield Message(sse_id, orjson.loads("\n".join(data)))


# --------------------------------------------------------------------------- one run


@dataclass(slots=True)
class RunResult:
    index: int
    drop_after: int  # events read on the first connection
    header: bool  # resumed with Last-Event-ID (else ?after=)
    run_id: str | None = None
    first: list[Message] = field(default_factory=list)
    resumed: list[Message] = field(default_factory=list)
    log_seq_before_resume: int | None = None
    status_before_resume: str | None = None
    resume_latency_s: float | None = None
    final_status: str | None = None
    final_last_seq: int | None = None
    lost: int = 0
    duplicated: int = 0
    error: str | None = None

    @property
    def replayed_first(self) -> bool:
        """The resumed stream's first event was in the log before the resume request was sent."""
        if not self.resumed or self.log_seq_before_resume is None:
            return False
        seq = self.resumed[0].seq
        return isinstance(seq, int) and seq <= self.log_seq_before_resume


async def _run_status(client: httpx.AsyncClient, base: str, run_id: str) -> dict[str, Any]:
    response = await client.get(f"{base}/api/ap/run", params={"runId": run_id})
    if response.status_code != 200:
        raise RuntimeError(f"GET /api/ap/run: HTTP {response.status_code} {response.text[:200]}")
    data: dict[str, Any] = response.json()["data"]
    return data


async def _query(client: httpx.AsyncClient, base: str, result: RunResult, drop_after: int | None) -> None:
    """POST the query; read ``drop_after`` events (None = to the end), then leave the connection."""
    body = {"agentKey": AGENT, "message": f"resume bench run {result.index} gate={GATE}", "onDisconnect": "continue"}
    async with client.stream("POST", f"{base}/api/ap/query", json=body, headers=SSE_HEADERS) as response:
        if response.status_code != 200:
            raise RuntimeError(f"POST /api/ap/query: HTTP {response.status_code} {(await response.aread())[:200]!r}")
        async with aclosing(messages(response)) as stream:
            async for message in stream:
                result.first.append(message)
                if result.run_id is None and isinstance(message.event.get("runId"), str):
                    result.run_id = message.event["runId"]
                if drop_after is not None and len(result.first) >= drop_after and result.run_id is not None:
                    break  # leaving the blocks closes the connection with the rest of the stream unread


async def _resume(client: httpx.AsyncClient, base: str, result: RunResult) -> None:
    assert result.run_id is not None
    after = str(result.first[-1].seq)
    params = {"runId": result.run_id}
    headers = dict(SSE_HEADERS)
    if result.header:
        headers["last-event-id"] = after
    else:
        params["after"] = after
    sent = time.perf_counter()
    async with client.stream("GET", f"{base}/api/ap/run/stream", params=params, headers=headers) as response:
        if response.status_code != 200:
            raise RuntimeError(f"GET /api/ap/run/stream: HTTP {response.status_code} "
                               f"{(await response.aread())[:200]!r}")
        async for message in messages(response):
            if not result.resumed:
                result.resume_latency_s = time.perf_counter() - sent
            result.resumed.append(message)


def check(result: RunResult, expected_text: str) -> str | None:
    """Count lost/duplicated events into ``result``; return what is wrong with the run, or None."""
    seen = result.first + result.resumed
    seqs = [m.seq for m in seen]
    last = result.final_last_seq or 0
    unique = {s for s in seqs if isinstance(s, int)}
    result.duplicated = len(seqs) - len(set(seqs))
    result.lost = len(set(range(1, last + 1)) - unique)
    if result.lost or result.duplicated:
        missing = sorted(set(range(1, last + 1)) - unique)[:5]
        return f"lost {result.lost} (seqs {missing}), duplicated {result.duplicated}"
    if seqs != list(range(1, last + 1)):
        return f"seqs out of order or beyond lastSeq {last}: {seqs[:60]}"
    if any(m.sse_id != str(m.seq) for m in seen):
        bad = next(m for m in seen if m.sse_id != str(m.seq))
        return f"SSE id {bad.sse_id!r} for seq {bad.seq}"
    if any("runId" in m.event and m.event["runId"] != result.run_id for m in seen):
        return "an event carries another runId"
    terminals = [m for m in seen if m.type in TERMINALS]
    if len(terminals) != 1 or terminals[0] is not seen[-1]:
        return f"{len(terminals)} terminal events ({[m.type for m in terminals]}), last event {seen[-1].type}"
    if terminals[0].type != "run.complete":
        return f"terminal {terminals[0].type}: {terminals[0].event.get('error')}"
    text = "".join(str(m.event.get("delta", "")) for m in seen if m.type == "content.delta")
    if text != expected_text:
        return f"answer differs: {text[:80]!r} ≠ {expected_text[:80]!r}"
    if result.final_status != "completed":
        return f"GET /api/ap/run status {result.final_status}"
    return None


async def one_run(client: httpx.AsyncClient, base: str, result: RunResult, expected_text: str,
                  reconnect_s: float, timeout_s: float) -> RunResult:
    try:
        async with asyncio.timeout(timeout_s):
            await _query(client, base, result, result.drop_after)
            if result.run_id is None:
                raise RuntimeError(f"no runId in the first {len(result.first)} events")
            if result.first[-1].type in TERMINALS:
                raise RuntimeError(f"the run ended after {len(result.first)} events, before the drop point")
            await asyncio.sleep(reconnect_s)
            before = await _run_status(client, base, result.run_id)
            result.log_seq_before_resume, result.status_before_resume = int(before["lastSeq"]), before.get("status")
            await _resume(client, base, result)
            status = await _run_status(client, base, result.run_id)
            result.final_status, result.final_last_seq = status.get("status"), int(status["lastSeq"])
        result.error = check(result, expected_text)
    except TimeoutError:
        result.error = f"run timeout ({timeout_s:.0f} s)"
    except (httpx.HTTPError, orjson.JSONDecodeError, RuntimeError, KeyError, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    return result


async def warm_up(client: httpx.AsyncClient, base: str, expected_text: str) -> tuple[int, int]:
    """One run read to its end on one connection: (events per run, 1-based position of the first ``runId``)."""
    result = RunResult(index=-1, drop_after=0, header=False)
    await _query(client, base, result, None)
    if result.run_id is None:
        raise RuntimeError("warm-up: no event carries runId")
    status = await _run_status(client, base, result.run_id)
    result.final_status, result.final_last_seq = status.get("status"), int(status["lastSeq"])
    problem = check(result, expected_text)
    if problem:
        raise RuntimeError(f"warm-up run failed its checks: {problem}")
    first_id = next(i for i, m in enumerate(result.first, 1) if "runId" in m.event)
    return len(result.first), first_id


# --------------------------------------------------------------------------- the phase


@dataclass(slots=True)
class Summary:
    runs: int
    concurrency: int
    deltas: int
    pace_ms: int
    reconnect_ms: int
    events_per_run: int
    drop_range: tuple[int, int]
    results: list[RunResult]
    wall_s: float
    gateway_cpu_s: float
    client_cpu_s: float
    rss_kib: int
    hwm_kib: int

    @property
    def errors(self) -> list[RunResult]:
        return [r for r in self.results if r.error]

    @property
    def lost(self) -> int:
        return sum(r.lost for r in self.results)

    @property
    def duplicated(self) -> int:
        return sum(r.duplicated for r in self.results)

    @property
    def replayed_latencies_ms(self) -> list[float]:
        return [r.resume_latency_s * 1000 for r in self.results
                if r.error is None and r.replayed_first and r.resume_latency_s is not None]

    @property
    def ended_before_resume(self) -> int:
        return sum(1 for r in self.results if r.status_before_resume not in (None, "running", "waiting"))

    @property
    def live_first(self) -> int:
        return sum(1 for r in self.results if r.error is None and not r.replayed_first)


async def bench(args: argparse.Namespace, base: str, upstream_url: str, pid: int) -> Summary:
    expected_text = "".join(f"d{i}" for i in range(args.deltas))
    limits = httpx.Limits(max_connections=2 * args.concurrency + 10, max_keepalive_connections=2 * args.concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(args.run_timeout)) as client:
        (await client.post(f"{upstream_url}/_control/release/{GATE}")).raise_for_status()
        events_per_run, first_id = await warm_up(client, base, expected_text)
        low, high = first_id, events_per_run - 1  # at least one event read, at least the terminal one left
        rng = random.Random(args.seed)
        planned = [RunResult(index=i, drop_after=rng.randint(low, max(low, high)), header=i % 2 == 1)
                   for i in range(args.runs)]
        pending = iter(planned)
        finished: set[int] = set()

        async def worker() -> None:
            for result in pending:
                await one_run(client, base, result, expected_text, args.reconnect_ms / 1000, args.run_timeout)
                finished.add(result.index)

        cpu_before, client_before, started = cpu_seconds(pid), time.process_time(), time.monotonic()
        tasks = [asyncio.create_task(worker()) for _ in range(min(args.concurrency, args.runs))]
        done, unfinished = await asyncio.wait(tasks, timeout=args.timeout)
        for task in unfinished:
            task.cancel()
        await asyncio.gather(*unfinished, return_exceptions=True)
        wall, cpu = time.monotonic() - started, cpu_seconds(pid) - cpu_before
        client_cpu = time.process_time() - client_before
    for task in done:
        if task.exception() is not None:
            raise RuntimeError("a benchmark worker failed") from task.exception()
    for result in planned:
        if result.index not in finished:
            result.error = f"phase timeout ({args.timeout:.0f} s)"
    mem = memory(pid)
    return Summary(args.runs, args.concurrency, args.deltas, args.pace_ms, args.reconnect_ms, events_per_run,
                   (low, max(low, high)), planned, wall, cpu, client_cpu, mem.rss_kib, mem.hwm_kib)


# --------------------------------------------------------------------------- report


def _ms(values: list[float]) -> str:
    if not values:
        return "n/a"
    return " / ".join(f"{v:.2f}" for v in (median(values), percentile(values, 95), percentile(values, 99)))


def render(s: Summary, command: str) -> str:
    latencies = s.replayed_latencies_ms
    by_header = [r.resume_latency_s * 1000 for r in s.results if r.header and r.error is None
                 and r.replayed_first and r.resume_latency_s is not None]
    by_query = [r.resume_latency_s * 1000 for r in s.results if not r.header and r.error is None
                and r.replayed_first and r.resume_latency_s is not None]
    replayed_events = sum(len(r.resumed) for r in s.results)
    lines = [
        "## Resume (SPEC §15)",
        "",
        f"`{command}` — {time.strftime('%Y-%m-%d %H:%M:%S %Z')}. Gateway (`python -m app serve`, WARNING logs, "
        "interaction log off), fake upstream and client in three processes on one machine, loopback only, "
        "sharing its cores:",
        "",
        *machine(None),
        "",
        f"**Method.** Each run: ONESHOT agent, the upstream answers `d0…d{s.deltas - 1}` ({s.deltas} deltas, "
        f"{s.pace_ms} ms apart; {s.events_per_run} events per run); {min(s.concurrency, s.runs)} runs at a time. "
        "`POST /api/ap/query` with `\"onDisconnect\": \"continue\"`; the client reads a random number of events "
        f"(uniform in {s.drop_range[0]}…{s.drop_range[1]}: from the first event with `runId` to all but the "
        f"terminal one), closes the connection, waits {s.reconnect_ms} ms, asks `GET /api/ap/run` for the log's "
        "`lastSeq`, then resumes with `GET /api/ap/run/stream?runId=…` — even runs with `&after=<last seq seen>`, "
        "odd runs with the `Last-Event-ID` header — and reads to the end; a final `GET /api/ap/run` must say "
        "`completed` and gives the log's length. Checked per run: SSE `id:` = `seq`; the seqs of both connections "
        "together are exactly `1…lastSeq` (a missing one is *lost*, one seen twice *duplicated*); one `runId`; the "
        "concatenated `content.delta` text equals the scripted answer; exactly one terminal event, last, "
        "`run.complete`. Resume latency = from sending the resume request to the first event parsed from its "
        "stream (httpx client, parsing included), over the resumes whose first event was already in the log "
        "before the request (replayed); a resume that found nothing to replay yet waits for the next upstream "
        "token and is left out. Gateway CPU = utime+stime of the gateway process over the phase (10 ms ticks); "
        "client CPU = this process's CPU time over the phase.",
        "",
        "| runs | ok | errors | lost events | duplicated events | events checked (on the resumed stream) | "
        "resume latency "
        "p50 / p95 / p99 ms | wall s | gateway CPU s | gateway CPU ms per run | client CPU s | "
        "gateway RSS / VmHWM MiB |",
        "|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
        f"| {s.runs} | {s.runs - len(s.errors)} | {len(s.errors)} | {s.lost} | {s.duplicated} | "
        f"{sum(len(r.first) + len(r.resumed) for r in s.results)} ({replayed_events}) | {_ms(latencies)} | "
        f"{s.wall_s:.1f} | {s.gateway_cpu_s:.1f} | {s.gateway_cpu_s / max(s.runs, 1) * 1000:.1f} | "
        f"{s.client_cpu_s:.1f} | "
        f"{s.rss_kib / 1024:.0f} / {s.hwm_kib / 1024:.0f} |",
        "",
        f"* resume latency by form (p50 / p95 / p99 ms): `?after=` {_ms(by_query)} ({len(by_query)} runs); "
        f"`Last-Event-ID` {_ms(by_header)} ({len(by_header)} runs); resumes with nothing replayed yet "
        f"(left out): {s.live_first}; resumes of a run that had already ended (pure replay of the retained log): "
        f"{s.ended_before_resume}.",
    ]
    if s.errors:
        first = sorted({r.error or "" for r in s.errors})[:5]
        lines.append(f"* first errors: {'; '.join(first)}")
    verdict = "PASS" if not s.errors and not s.lost and not s.duplicated else "FAIL"
    lines += [
        f"* **{verdict}: {s.lost} lost, {s.duplicated} duplicated events, {len(s.errors)} failed runs "
        f"of {s.runs}.**",
        "* Quick check (same checks, prints only): `python bench/resume.py --runs 50 --no-write`.",
    ]
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def _bounded(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be within {low}…{high}")
        return value
    return parse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=_bounded(1, 100_000), default=1000)
    parser.add_argument("--concurrency", type=_bounded(1, 1000), default=20)
    parser.add_argument("--deltas", type=_bounded(1, 1000), default=40, help="content deltas per answer")
    parser.add_argument("--pace-ms", type=_bounded(0, 1000), default=5, help="pause between two deltas")
    parser.add_argument("--reconnect-ms", type=_bounded(0, 10_000), default=20,
                        help="pause between dropping the connection and resuming")
    parser.add_argument("--seed", type=int, default=15, help="seed of the random drop points")
    parser.add_argument("--run-timeout", type=float, default=60.0, help="seconds per run")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds for all runs")
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="agw-resume-"))
    upstream = gateway = None
    try:
        upstream = spawn([sys.executable, str(BENCH / "load.py"), "--upstream", "--deltas", str(args.deltas),
                          "--pace-ms", str(args.pace_ms)], work / "upstream.log", env=_env(), cwd=REPO,
                         stdin_pipe=True, stdout_pipe=True)
        assert upstream.stdout is not None
        ready = upstream.stdout.readline().decode().strip()
        if not ready.startswith("READY "):
            raise RuntimeError(f"upstream did not start: {ready!r} {tail(work / 'upstream.log')}")
        upstream_url = ready.split(" ", 1)[1]
        deploy = _deployment(work / "deploy", upstream_url)
        port = free_port()
        slots = str(max(20, args.concurrency + 10))
        gateway = spawn([sys.executable, "-m", "app", "--dir", str(deploy), "--log-level", "WARNING", "serve"],
                        work / "gateway.log", cwd=deploy, env=_env(
                            SERVER_PORT=str(port), AGENT_LIMITS_CONCURRENT_RUNS=slots,
                            AGENT_LIMITS_USER_CONCURRENT_RUNS=slots))
        base = f"http://127.0.0.1:{port}"
        wait_http(f"{base}/healthz", gateway, work / "gateway.log", timeout=60)
        summary = asyncio.run(bench(args, base, upstream_url, gateway.pid))
        command = "python bench/resume.py" + "".join(
            f" {flag} {value}" for flag, value, default in (
                ("--runs", args.runs, 1000), ("--concurrency", args.concurrency, 20),
                ("--deltas", args.deltas, 40), ("--pace-ms", args.pace_ms, 5),
                ("--reconnect-ms", args.reconnect_ms, 20))
            if value != default)
        report = render(summary, command)
        print(report)
        if not args.no_write:
            replace_section(RESULTS, START, END, report)
            print(f"written to {RESULTS}")
        return 1 if summary.errors or summary.lost or summary.duplicated else 0
    finally:
        for proc in (gateway, upstream):
            if proc is not None:
                stop(proc, timeout=15)
        log = work / "gateway.log"
        if log.exists() and log.stat().st_size:
            print(f"(gateway log tail)\n{tail(log, 20)}", file=sys.stderr)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
