"""Start-up and shutdown time of the desktop sidecar: ``python -m app sidecar`` vs one-file executables.

``python bench/sidecar_startup.py [--runs N] [EXECUTABLE ...]`` (project venv). For each command —
``python -m app sidecar`` from this checkout, then every EXECUTABLE given (e.g. ``dist/agw-sidecar``
from ``scripts/build-sidecar``) run as ``EXECUTABLE sidecar`` — N times, one at a time, against a
fresh copy of the repository's demo deployment (built-in demo model, scheduler on):

* **ready**: from spawning the process to reading the reply of the first ``gateway.health``
  request (written at once, so it waits for the whole start: unpacking, imports, catalog,
  scheduler);
* **exit**: from closing stdin to the process's exit (status 0 required).

Executables run with ``PATH=/usr/bin:/bin`` and a fresh ``HOME`` only, as a desktop app starts them.
Prints median and min per command (seconds). Every wait is bounded (60 s); nothing is written.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[1]
HEALTH = orjson.dumps({"jsonrpc": "2.0", "id": 1, "method": "gateway.health"}) + b"\n"


def demo_deployment(root: Path) -> Path:
    root.mkdir(parents=True)
    shutil.copyfile(REPO / "application.yml", root / "application.yml")
    for folder in ("agents", "tools", "skills", "viewports"):
        shutil.copytree(REPO / folder, root / folder)
    return root


def one_run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env, cwd=str(cwd))
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write(HEALTH)
        proc.stdin.flush()
        line = proc.stdout.readline()
        ready = time.perf_counter() - started
        reply = orjson.loads(line)
        assert reply.get("result", {}).get("status") == "UP", reply
        closing = time.perf_counter()
        proc.stdin.close()
        status = proc.wait(timeout=60)
        exited = time.perf_counter() - closing
        assert status == 0, f"exit status {status}"
        return ready, exited
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=60)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("executables", nargs="*", type=Path)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="agw-startup-") as tmp:
        base = Path(tmp)
        home = base / "home"
        home.mkdir()
        commands: list[tuple[str, list[str], dict[str, str], Path]] = [
            ("python -m app sidecar", [sys.executable, "-m", "app", "sidecar"], dict(os.environ), REPO)]
        for exe in args.executables:
            commands.append((f"{exe.name} sidecar", [str(exe.resolve()), "sidecar"],
                             {"PATH": "/usr/bin:/bin", "HOME": str(home)}, base))
        print(f"{'command':<34} {'ready median / min s':>22} {'exit median / min s':>22}")
        for index, (label, argv, env, cwd) in enumerate(commands):
            readies, exits = [], []
            for n in range(args.runs):
                deploy = demo_deployment(base / f"deploy-{index}-{n}")
                ready, exited = one_run([*argv, "--dir", str(deploy)], env, cwd)
                readies.append(ready)
                exits.append(exited)
                shutil.rmtree(deploy, ignore_errors=True)
            print(f"{label:<34} {statistics.median(readies):>10.2f} / {min(readies):<9.2f} "
                  f"{statistics.median(exits):>10.2f} / {min(exits):<9.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
