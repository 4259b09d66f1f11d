"""The desktop sidecar as ONE executable (SPEC §10 "Desktop additions"; docs/embedding-sidecar.md).

``scripts/build-sidecar`` builds ``agw-sidecar`` from this checkout ONCE per test session (the
module-scoped ``executable`` fixture: a PyInstaller one-file build takes a minute or two); the
binary is copied to a folder outside the repository and run the way a desktop app runs it:
with a minimal environment (``PATH=/usr/bin:/bin``, a fresh ``HOME``, no virtualenv), its working
directory outside the repository, against a deployment folder whose providers are this test's
FakeUpstream plus the built-in demo model (``base-url: embedded``). Waits are on messages, never
on durations."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from app import __version__
from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.engine.helpers import call, of_type
from tests.sidecar.test_scheduler_events import add_date_job, scheduler_events
from tests.support.deployment import REPO, agent, make_deployment, write_agent
from tests.support.sidecar import SidecarProcess
from tests.support.responders import echo_or_fail

BUILD_SCRIPT = REPO / "scripts" / "build-sidecar"
#: a generous bound that only turns a hung build into a failure (a build takes 1-3 minutes here)
BUILD_TIMEOUT_S = 1200
TOOLS = {"backends": ["_bash_", "_skill_run_script_"], "frontends": [], "actions": []}
CALC = {"skill": "math_basic", "script": "scripts/calc.py", "args": ["--op", "mul", "--a", "6", "--b", "7"]}
TERMINAL = ("run.complete", "run.error", "run.cancel")


@pytest.fixture(scope="module")
def executable(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """``agw-sidecar`` built from the checkout, copied to a folder outside the repository."""
    build = tmp_path_factory.mktemp("sidecar-build")
    done = subprocess.run(
        [str(BUILD_SCRIPT), "--python", sys.executable, "--dist", str(build / "dist"), "--work", str(build / "work")],
        cwd=str(REPO), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False,
    )
    assert done.returncode == 0, f"scripts/build-sidecar failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    assert "build-sidecar: " in done.stdout and f"agw {__version__}" in done.stdout, done.stdout
    app_dir = tmp_path_factory.mktemp("desktop-app")
    binary = app_dir / "agw-sidecar"
    shutil.copy2(build / "dist" / "agw-sidecar", binary)
    shutil.rmtree(build, ignore_errors=True)  # the copy is all that is left: no sources, no venv beside it
    assert REPO not in binary.resolve().parents and not (app_dir / "app").exists()
    yield binary


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    with FakeUpstream(responder=echo_or_fail) as fake:
        yield fake


@pytest.fixture
def deploy(tmp_path: Path, upstream: FakeUpstream) -> Path:
    root = make_deployment(tmp_path / "deploy", upstream.url, yaml_extra=(
        "  tools:\n    bash:\n      allowed-commands: echo,printenv\n"
        # an operator's pass-through of the variable the bundle's bootloader sets for itself
        "    sandbox:\n      env-passthrough: LD_LIBRARY_PATH\n"))
    yml = root / "application.yml"
    local = f"    local:\n      base-url: {upstream.url}\n"
    assert yml.read_text(encoding="utf-8").count(local) == 1
    yml.write_text(yml.read_text(encoding="utf-8").replace(local, "    local:\n      base-url: embedded\n"),
                   encoding="utf-8")
    write_agent(root, "demo", agent("ONESHOT", model="local-demo"))  # the built-in model file of the bundle
    write_agent(root, "plain", agent("ONESHOT", budget={"model": {"maxCalls": 3, "timeoutMs": 20000,
                                                                  "retryCount": 0}}))
    write_agent(root, "tools", agent("REACT", tools=TOOLS, skillConfig={"skills": ["math_basic"]}))
    return root


def minimal_env(home: Path, path: str = "/usr/bin:/bin") -> dict[str, str]:
    """What a desktop app may give its sidecar: no virtualenv, no PYTHONPATH, a fresh HOME."""
    home.mkdir(parents=True, exist_ok=True)
    return {"PATH": path, "HOME": str(home)}


@pytest.fixture
async def start(executable: Path, deploy: Path, tmp_path: Path) -> AsyncIterator[Any]:
    processes: list[SidecarProcess] = []

    async def start_sidecar(env: dict[str, str]) -> SidecarProcess:
        process = SidecarProcess(deploy, tmp_path / f"sidecar-{len(processes)}.stderr", command=(str(executable),),
                                 env=env, clean_env=True, cwd=executable.parent)
        processes.append(process)
        return await process.start()

    yield start_sidecar
    for process in processes:
        if process.proc is not None and process.proc.returncode is None:
            # SIGTERM: the one-file bootloader forwards it and the gateway stops cleanly; SIGKILL
            # (SidecarProcess.stop) would kill the bootloader only and orphan the gateway process
            process.proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(process.proc.wait(), timeout=30)
        await process.stop()


async def _query(sidecar: SidecarProcess, params: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A streamed ``agent.query``: its ``agent.event`` notifications up to the terminal event, then its reply."""
    reply = await sidecar.send("agent.query", params)
    events: list[dict[str, Any]] = []
    while not events or events[-1]["type"] not in TERMINAL:
        events.append(await sidecar.next_event(params["requestId"]))
    message = await asyncio.wait_for(reply, timeout=60)
    assert "result" in message, message
    return events, message["result"]


async def test_the_executable_runs_the_sidecar_outside_the_repository(
    start: Any, deploy: Path, upstream: FakeUpstream, tmp_path: Path
) -> None:
    sidecar: SidecarProcess = await start(minimal_env(tmp_path / "home"))
    health = await sidecar.result("gateway.health")
    assert health["status"] == "UP" and health["version"] == __version__
    assert {a["key"] for a in await sidecar.result("agent.list")} == {"demo", "plain", "tools"}
    # definitions are hot-reloaded from inside the bundle too (the watcher, or the fallback rescan)
    write_agent(deploy, "late", agent("ONESHOT"))
    for _ in range(600):  # bounded: only turns a reload that never happens into a failure
        if "late" in {a["key"] for a in await sidecar.result("agent.list")}:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("a new agent file was never loaded")

    # a streamed query on the built-in demo model: package data and the embedded model, from the bundle
    events, result = await _query(sidecar, {"agentKey": "demo", "message": "hello", "requestId": "q-demo"})
    assert result["status"] == "complete" and events[-1]["type"] == "run.complete"
    assert len(of_type(events, "content.delta")) > 1, "the answer did not stream"
    assert (deploy / "models" / "local-demo.json").is_file()
    notified = [i for i, m in enumerate(sidecar.log) if m.get("method") == "agent.event"]
    replied = next(i for i, m in enumerate(sidecar.log) if m.get("result") is result)
    assert max(notified) < replied  # every event was a notification before the reply
    history = await sidecar.result("chat.get", {"chatId": result["chatId"]})
    assert history["events"][-1]["type"] == "run.complete"

    # tools that start processes: bubblewrap's sandbox, and a Python skill script on the system python3
    upstream.enqueue(call("b1", "_bash_", {"command": "echo sandboxed"}), call("b2", "_bash_", {"command": "printenv"}),
                     call("s1", "_skill_run_script_", CALC), text_script(["6*7 = 42"]))
    events, result = await _query(sidecar, {"agentKey": "tools", "message": "6*7", "requestId": "q-tools"})
    assert result["status"] == "complete", events[-1]
    results = {e["toolId"]: e["result"] for e in of_type(events, "tool.result")}
    assert results["b1"]["exitCode"] == 0 and results["b1"]["stdout"].strip() == "sandboxed", results["b1"]
    environment = dict(line.split("=", 1) for line in results["b2"]["stdout"].splitlines() if "=" in line)
    assert "/data/.agw/workspaces/" in environment["HOME"]  # the chat's workspace, inside the sandbox
    # processes the gateway starts do not inherit the bundle's library folder
    assert "LD_LIBRARY_PATH" not in environment, environment
    assert results["s1"]["exitCode"] == 0, results["s1"]
    assert orjson.loads(results["s1"]["stdout"])["result"] == 42.0

    # scheduled date jobs: one completes, one fails; each outcome is a scheduler.event notification
    for job_id, message in (("greet", "good morning"), ("doomed", "please fail")):
        await add_date_job(sidecar, {"jobId": job_id, "agentKey": "plain", "message": message})
    outcomes = await scheduler_events(sidecar, 2)
    assert outcomes["greet"]["status"] == "completed" and "error" not in outcomes["greet"]
    assert outcomes["doomed"]["status"] == "failed" and "the model is down" in outcomes["doomed"]["error"]
    history = await sidecar.result("chat.get", {"chatId": outcomes["greet"]["chatId"]})
    assert [e["text"] for e in history["events"] if e["type"] == "content.snapshot"] == ["echo: good morning"]

    assert await sidecar.close_stdin() == 0  # EOF: a clean exit
    stderr = sidecar.stderr_text()
    assert "Traceback" not in stderr and "sidecar: stopped" in stderr, stderr[-3000:]


async def test_python_skill_scripts_without_a_system_python3_are_refused_clearly(
    start: Any, upstream: FakeUpstream, tmp_path: Path
) -> None:
    """The bundle runs Python scripts with the system's python3 (it has no interpreter for them);
    with none on its PATH they are refused with an error that says so, and _bash_ still works."""
    only_bwrap = tmp_path / "bin"
    only_bwrap.mkdir()
    bwrap = shutil.which("bwrap")
    assert bwrap, "bwrap is not installed: apt-get install bubblewrap (see .ci/run)"
    os.symlink(bwrap, only_bwrap / "bwrap")
    sidecar: SidecarProcess = await start(minimal_env(tmp_path / "home", path=str(only_bwrap)))
    upstream.enqueue(call("s1", "_skill_run_script_", CALC), call("b1", "_bash_", {"command": "echo still here"}),
                     text_script(["no python"]))
    events, result = await _query(sidecar, {"agentKey": "tools", "message": "6*7", "requestId": "q-nopy"})
    assert result["status"] == "complete", events[-1]
    results = {e["toolId"]: e["result"] for e in of_type(events, "tool.result")}
    assert results["s1"]["ok"] is False, results["s1"]
    assert "Python skill scripts need python3" in results["s1"]["error"]
    assert "no python3 is on its PATH" in results["s1"]["error"]
    assert results["b1"]["exitCode"] == 0 and results["b1"]["stdout"].strip() == "still here", results["b1"]
    assert await sidecar.close_stdin() == 0
