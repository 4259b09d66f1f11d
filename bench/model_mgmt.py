"""The cost of model management (issue 16 / SPEC §19): a model group + limits + the usage ledger
versus a plain model, side by side in one run, at 200 concurrent token-paced streams.

``python bench/model_mgmt.py`` (project venv; ``--level 200 --deltas 40 --pace-ms 10 --repeat 3``).

One fake upstream (``bench/load.py --upstream``: delta, gate, the rest paced) and two gateway
processes on two deployments that differ only in the model the agent uses:

* ``plain`` — the agent's model is a provider model, no limits (the ledger still writes: it is
  always on, so the comparison isolates groups + limits);
* ``managed`` — the agent's model is a ``fallback`` group of two provider models with
  ``limits.rpm/tpm`` set high enough never to refuse, user rpm/tpm/daily-token limits set, and
  the ledger writing a line per call;
* ``no-ledger`` is not a configuration: the ledger cannot be switched off; the per-call cost of a
  ledger line is measured separately below with the ledger class alone.

Per repetition each gateway serves the same level (``load.run_level``: every stream checked,
0 lost events required) and its CPU seconds are read from ``/proc``; the report is the median CPU
per stream and per delta of each, and the managed overhead in percent. Results go to stdout and
to ``bench/RESULTS.md`` between ``<!-- model-mgmt:start -->`` and ``<!-- model-mgmt:end -->``.
Bounded: each level has a deadline; children die with this process.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson
from latency_proc import free_port, spawn, stop, wait_http
from latency_report import replace_section
from load import RESULTS, _deployment, _env, _raise_nofile, machine, run_level

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
START, END = "<!-- model-mgmt:start -->", "<!-- model-mgmt:end -->"


def managed_deployment(root: Path, upstream_url: str) -> Path:
    _deployment(root, upstream_url)
    models = root / "models"
    (models / "load-model-b.json").write_bytes(orjson.dumps(
        {"key": "load-model-b", "provider": "load", "protocol": "OPENAI", "modelId": "load-gpt-b"}))
    (models / "load-group.json").write_bytes(orjson.dumps({
        "key": "load-group", "limits": {"rpm": 10_000_000, "tpm": 1_000_000_000},
        "group": {"strategy": "fallback", "members": [{"modelKey": "load-model"}, {"modelKey": "load-model-b"}]},
    }))
    agent_file = root / "agents" / "load.json"
    agent = orjson.loads(agent_file.read_bytes())
    agent["modelConfig"]["modelKey"] = "load-group"
    agent_file.write_bytes(orjson.dumps(agent))
    with (root / "application.yml").open("a", encoding="utf-8") as yml:
        yml.write("  limits:\n    user:\n      rpm: 10000000\n      tpm: 1000000000\n      daily-tokens: 1000000000000\n")
    return root


def ledger_line_cost(lines: int = 20_000) -> float:
    """Microseconds of event-loop time per ``UsageLedger.record`` (the hook the engine calls)."""
    sys.path.insert(0, str(REPO))
    from app.usage.ledger import UsageLedger

    folder = Path(tempfile.mkdtemp(prefix="agw-ledger-"))
    ledger = UsageLedger(folder)
    entry = {"ts": 0, "runId": "run_x", "chatId": "chat_x", "agentKey": "load", "modelKey": "load-model",
             "provider": "load", "user": "anonymous", "promptTokens": 10, "completionTokens": 40, "points": 0.1,
             "durationMs": 400, "ttftMs": 5, "status": "ok"}
    started = time.perf_counter()
    for _ in range(lines):
        ledger.record(dict(entry))
    elapsed = time.perf_counter() - started
    ledger.close()
    shutil.rmtree(folder, ignore_errors=True)
    return elapsed / lines * 1e6


def management_call_cost(calls: int = 20_000) -> tuple[float, float]:
    """CPU µs per model call of the engine's per-call model management, plain vs managed.

    The same sequence ``turn.model_turn`` and ``RunService`` run for each call (admit, router
    candidates, member limits, ``before_call``, breaker bookkeeping, ``after_call``, one ledger
    line), on the gateway's own classes, timed with ``process_time`` (every thread of the
    process, so the ledger's writer is included). *plain*: a provider model and no limits;
    *managed*: the bench's fallback group with model and user limits.
    """
    sys.path.insert(0, str(REPO))
    from app.catalog.definitions import GroupMember, ModelDefinition, ModelGroup, ModelLimits
    from app.config import BreakerSettings, UserLimitSettings
    from app.engine.limits import RateLimiter
    from app.engine.routing import ModelRouter
    from app.usage.ledger import UsageLedger

    a = ModelDefinition(key="load-model", provider="load", protocol="OPENAI", model_id="load-gpt")
    b = ModelDefinition(key="load-model-b", provider="load", protocol="OPENAI", model_id="load-gpt-b")
    group = ModelDefinition(key="load-group", provider="load", protocol="OPENAI", model_id="load-gpt",
                            limits=ModelLimits(rpm=10_000_000, tpm=1_000_000_000),
                            group=ModelGroup("fallback", (GroupMember(a), GroupMember(b))))
    unlimited = UserLimitSettings()
    limited = UserLimitSettings.model_validate({"rpm": 10_000_000, "tpm": 1_000_000_000,
                                                "daily-tokens": 1_000_000_000_000})
    entry = {"ts": int(time.time() * 1000), "runId": "run_x", "chatId": "chat_x", "agentKey": "load",
             "modelKey": "load-model", "provider": "load", "user": "anonymous", "promptTokens": 10,
             "completionTokens": 40, "points": 0.1, "durationMs": 400, "ttftMs": 5, "status": "ok"}

    async def run(model: ModelDefinition, user: UserLimitSettings) -> float:
        folder = Path(tempfile.mkdtemp(prefix="agw-mgmt-call-"))
        ledger, router = UsageLedger(folder), ModelRouter(BreakerSettings())
        limiter = RateLimiter(user)
        started = time.process_time()
        for _ in range(calls):
            await limiter.admit("anonymous", model, model.members)
            candidates = router.candidates(model)
            usable = [m for m in candidates if await limiter.usable(m)] if model.group is not None else candidates
            member = usable[0]
            await limiter.before_call("anonymous", model, member)
            router.started(member.key)
            router.succeeded(member.key)
            await limiter.after_call("anonymous", model, member, 50)
            ledger.record(dict(entry))
        await ledger.flush()
        elapsed = time.process_time() - started
        ledger.close()
        shutil.rmtree(folder, ignore_errors=True)
        return elapsed / calls * 1e6

    plain = min(asyncio.run(run(a, unlimited)) for _ in range(3))
    managed = min(asyncio.run(run(group, limited)) for _ in range(3))
    return plain, managed


def render(level: int, deltas: int, pace_ms: int, runs: dict[str, list[tuple[float, int]]],
           ledger_us: float, command: str, call_cost: tuple[float, float]) -> str:
    rows = []
    medians: dict[str, float] = {}
    for name, samples in runs.items():
        cpu = [s for s, _ in samples]
        medians[name] = statistics.median(cpu)
        lost = sum(lost for _, lost in samples)
        each = " / ".join(f"{value:.2f}" for value in cpu)
        rows.append(f"| {name} | {len(samples)} | {medians[name]:.2f} s ({each}) | {medians[name] / level * 1e3:.2f} ms | "
                    f"{medians[name] / (level * deltas) * 1e6:.1f} µs | {lost} |")
    overhead = (medians["managed"] - medians["plain"]) / medians["plain"] * 100 if medians["plain"] else 0.0
    # the two gateways alternate, so each repetition is a pair measured under the same conditions
    paired = [(m - p) / p * 100 for (p, _), (m, _) in zip(runs["plain"], runs["managed"], strict=True) if p]
    paired_median = statistics.median(paired) if paired else 0.0
    return "\n".join([
        "## Model management overhead (issue 16, SPEC §19)",
        "",
        f"`{command}` — {level} concurrent streams × {deltas} deltas, {pace_ms} ms apart; gateway CPU "
        "(utime+stime) per level, median of the repetitions. *plain*: a provider model; *managed*: a "
        "fallback group of two models + model and user rpm/tpm/daily limits + the ledger line per call.",
        "",
        "| gateway | reps | CPU per level, median (each run) | per stream | per delta | lost deltas |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"**Managed overhead: {overhead:+.1f} % CPU** at {level} streams (target < 5 %), from the medians; "
        f"median of the paired repetitions {paired_median:+.1f} % (each: "
        f"{' / '.join(f'{value:+.1f}' for value in paired)}). CPU is read in 10 ms ticks, so a few percent "
        "either way is noise; a negative figure means the difference is below it. "
        f"A ledger line costs {ledger_us:.1f} µs of event-loop time (`UsageLedger.record`, the write "
        "itself happens on the ledger's thread).",
        "",
        f"**Per model call, measured exactly** (`management_call_cost`: the engine's per-call sequence on the "
        f"gateway's own classes, 20,000 calls, process CPU including the ledger's thread): plain "
        f"{call_cost[0]:.1f} µs, managed {call_cost[1]:.1f} µs, so management adds "
        f"{call_cost[1] - call_cost[0]:.1f} µs per call = **{(call_cost[1] - call_cost[0]) / (medians['plain'] / level * 1e6) * 100:.2f} %** "
        f"of the plain gateway's CPU per stream above ({medians['plain'] / level * 1e3:.2f} ms, one model call each).",
        "",
        *machine(),
    ])


async def measure(args: argparse.Namespace, urls: dict[str, tuple[str, int]], upstream_url: str
                  ) -> dict[str, list[tuple[float, int]]]:
    runs: dict[str, list[tuple[float, int]]] = {name: [] for name in urls}
    for url, pid in urls.values():  # warm-up: imports, first connections
        await run_level(10, url, upstream_url, pid, args.deltas, args.level_timeout)
    for _ in range(args.repeat):
        for name, (url, pid) in urls.items():  # alternate, so drift hits both alike
            result = await run_level(args.level, url, upstream_url, pid, args.deltas, args.level_timeout)
            if result.errors:
                raise RuntimeError(f"{name}: {result.errors} streams failed: {result.first_errors}")
            runs[name].append((result.cpu_s, result.lost_deltas))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--level", type=int, default=200)
    parser.add_argument("--deltas", type=int, default=40)
    parser.add_argument("--pace-ms", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--level-timeout", type=float, default=180.0)
    parser.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = parser.parse_args(argv)
    _raise_nofile(8 * args.level + 1024)
    work = Path(tempfile.mkdtemp(prefix="agw-mgmt-"))
    procs = []
    try:
        upstream = spawn([sys.executable, str(BENCH / "load.py"), "--upstream", "--deltas", str(args.deltas),
                          "--pace-ms", str(args.pace_ms)], work / "upstream.log", env=_env(), cwd=REPO,
                         stdin_pipe=True, stdout_pipe=True)
        procs.append(upstream)
        assert upstream.stdout is not None
        ready = upstream.stdout.readline().decode().strip()
        if not ready.startswith("READY "):
            raise RuntimeError(f"upstream did not start: {ready!r}")
        upstream_url = ready.split(" ", 1)[1]
        urls: dict[str, tuple[str, int]] = {}
        for name, build in (("plain", _deployment), ("managed", managed_deployment)):
            deploy = build(work / name, upstream_url)
            port = free_port()
            proc = spawn([sys.executable, "-m", "app", "--dir", str(deploy), "--log-level", "WARNING", "serve"],
                         work / f"{name}.log", cwd=deploy,
                         env=_env(SERVER_PORT=str(port), AGENT_LIMITS_CONCURRENT_RUNS="100000",
                                  AGENT_LIMITS_USER_CONCURRENT_RUNS="100000"))
            procs.append(proc)
            wait_http(f"http://127.0.0.1:{port}/healthz", proc, work / f"{name}.log", timeout=60)
            urls[name] = (f"http://127.0.0.1:{port}", proc.pid)
        runs = asyncio.run(measure(args, urls, upstream_url))
        command = "python bench/model_mgmt.py " + " ".join(argv if argv is not None else sys.argv[1:])
        report = render(args.level, args.deltas, args.pace_ms, runs, ledger_line_cost(), command.strip(),
                        management_call_cost())
        print(report)
        if not args.no_write:
            replace_section(RESULTS, START, END, report)
        return 0
    finally:
        for proc in reversed(procs):
            stop(proc, timeout=15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
