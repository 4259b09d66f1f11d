"""The three processes of the benchmark: the stamping upstream, our gateway, LiteLLM's proxy.

All bind 127.0.0.1 only. Each ``start_*`` returns a ``Running`` (process, target, log);
the caller stops them with ``latency_proc.stop``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from dataclasses import dataclass
from pathlib import Path

import orjson

from latency_client import Target
from latency_proc import free_port, spawn, stop, tail, wait_http

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
LITELLM_VENV = BENCH / ".venv-litellm"
LITELLM_SPEC = "litellm[proxy]"
LITELLM_KEY = "sk-bench-master-key"  # LiteLLM's proxy refuses to start without a master key


@dataclass(frozen=True, slots=True)
class Running:
    proc: subprocess.Popen[bytes]
    target: Target | None
    log: Path


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HTTP_PROXY", "HTTPS_PROXY", "http_proxy"))}
    env.update({"PYTHONPATH": str(REPO), "NO_PROXY": "127.0.0.1,localhost", **extra})
    return env


def start_upstream(logs: Path) -> tuple[Running, str]:
    log = logs / "upstream.log"
    proc = spawn([sys.executable, str(BENCH / "latency_upstream.py")], log, env=_env(), cwd=REPO,
                 stdin_pipe=True, stdout_pipe=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    if not line.startswith("READY "):
        stop(proc)
        raise RuntimeError(f"upstream did not start: {line!r} {tail(log)}")
    url = line.split(" ", 1)[1]
    direct = Target("direct", f"{url}/v1/chat/completions", "openai", _openai_body("fake-gpt"))
    return Running(proc, direct, log), url


def _openai_body(model: str):  # type: ignore[no-untyped-def]
    def body(message: str) -> dict[str, object]:
        return {"model": model, "stream": True, "messages": [{"role": "user", "content": message}]}
    return body


def _gateway_body(message: str) -> dict[str, object]:
    return {"agentKey": "benchAgent", "message": message}


def make_deployment(root: Path, upstream_url: str) -> Path:
    """A minimal deployment: one OPENAI model on the fake upstream, one ONESHOT agent."""
    for folder in ("agents", "models", "tools", "skills", "viewports", "data"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    (root / "models" / "bench-model.json").write_bytes(orjson.dumps(
        {"key": "bench-model", "provider": "bench", "protocol": "OPENAI", "modelId": "fake-gpt"}))
    (root / "agents" / "benchAgent.json").write_bytes(orjson.dumps({
        "key": "benchAgent", "name": "bench agent", "mode": "ONESHOT",
        "modelConfig": {"modelKey": "bench-model", "reasoning": {"enabled": False}},
        "toolConfig": None, "plain": {"systemPrompt": "You are a benchmark agent."},
    }))
    (root / "application.yml").write_text(
        "agent:\n  auth:\n    enabled: false\n"
        # one anonymous user with up to hundreds of live streams: lift the run caps (SPEC §19 limits)
        "  limits:\n    concurrent-runs: 100000\n    user:\n      concurrent-runs: 100000\n"
        "  providers:\n"
        f"    bench:\n      base-url: {upstream_url}\n      api-key: sk-bench-dummy\n",
        encoding="utf-8",
    )
    return root


def start_gateway(root: Path, upstream_url: str, logs: Path, *, name: str = "gateway", src: Path = REPO,
                  serve_args: tuple[str, ...] = (), gc_log: Path | None = None) -> Running:
    """``python -m app serve`` from the source tree ``src`` (the project, or a copy of an earlier
    state for a before/after run) with ``serve_args`` appended; with ``gc_log``, under
    ``latency_gcprobe`` so its garbage-collector pauses land in that file when it stops."""
    deploy = make_deployment(root / f"deploy-{name}", upstream_url)
    port = free_port()
    log = logs / f"{name}.log"
    agw = ["--dir", str(deploy), "--log-level", "WARNING", "serve", "--host", "127.0.0.1", "--port", str(port),
           *serve_args]
    if gc_log is not None:
        argv = [sys.executable, str(BENCH / "latency_gcprobe.py"), str(gc_log), *agw]
    else:
        argv = [sys.executable, "-m", "app", *agw]
    env = _env(SERVER_PORT=str(port))
    env["PYTHONPATH"] = str(src)
    proc = spawn(argv, log, env=env, cwd=deploy)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/healthz", proc, log, timeout=60)
    return Running(proc, Target(name, f"{base}/api/ap/query", "gateway", _gateway_body), log)


def ensure_litellm(logs: Path) -> Path:
    """Create ``bench/.venv-litellm`` and install LiteLLM's proxy there (never in the project venv).

    Returns the ``litellm`` executable; raises ``RuntimeError`` with pip's tail on failure.
    """
    exe = LITELLM_VENV / "bin" / "litellm"
    python = LITELLM_VENV / "bin" / "python"
    if exe.exists() and subprocess.run([str(python), "-c", "import litellm.proxy.proxy_server"],
                                       capture_output=True, timeout=120).returncode == 0:
        return exe
    log = logs / "litellm-install.log"
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(LITELLM_VENV)
    with log.open("ab") as handle:
        result = subprocess.run([str(python), "-m", "pip", "install", "--quiet", LITELLM_SPEC],
                                stdout=handle, stderr=subprocess.STDOUT, timeout=900)
    if result.returncode != 0 or not exe.exists():
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if "is ignored" not in ln]
        raise RuntimeError(f"pip install {LITELLM_SPEC} failed (rc={result.returncode}): " + " | ".join(lines[-8:]))
    return exe


def start_litellm(exe: Path, root: Path, upstream_url: str, logs: Path) -> Running:
    config = root / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        "  - model_name: fake-gpt\n"
        "    litellm_params:\n"
        "      model: openai/fake-gpt\n"
        f"      api_base: {upstream_url}/v1\n"
        "      api_key: sk-bench-dummy\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
        "litellm_settings:\n"
        "  telemetry: false\n",
        encoding="utf-8",
    )
    port = free_port()
    log = logs / "litellm.log"
    env = _env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False", LITELLM_LOG="ERROR",
               DISABLE_SCHEMA_UPDATE="True")
    env.pop("PYTHONPATH")
    argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"]
    proc = spawn(argv, log, env=env, cwd=root)
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/health/liveliness", proc, log, timeout=180)
    return Running(proc, Target("litellm", f"{base}/v1/chat/completions", "openai", _openai_body("fake-gpt"),
                                           {"authorization": f"Bearer {LITELLM_KEY}"}), log)
