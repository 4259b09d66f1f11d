"""A real cluster for the tests of SPEC §16: redis-server, gateway processes, haproxy, a shared fake model.

* ``RedisServer`` — ``redis-server --port <free> --save '' --appendonly no`` (the Debian package;
  CI installs it), stopped and restarted by its own pid;
* ``GatewayProcess`` — ``python -m app serve`` on the shared deployment folder, one per instance,
  stopped (SIGTERM) or killed (SIGKILL) by its own pid; dies with the test process;
* ``proxy_config`` — deploy/haproxy.cfg (the tested snippet of docs/reverse-proxy.md) with the test's
  listen address and one ``server`` line per instance, round robin, no stickiness;
* ``ScriptBook`` — what the shared ``FakeUpstream`` answers: a query whose message names a script
  (``[[name]]``) gets that script's steps, the n-th model call of its run the n-th script, so tests
  that run at the same time never take each other's scripts;
* SSE helpers that send a user's bearer token.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from httpx_sse import aconnect_sse

from app.devtools.script import Script, Step, text_script
from tests.support.deployment import REPO
from tests.support.server import wait_healthy

HAPROXY_CFG = REPO / "deploy" / "haproxy.cfg"
#: bounds that only turn a hang into a failure
HANG = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def _binary(name: str, package: str) -> str:
    found = shutil.which(name) or next((p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if Path(p).is_file()),
                                       None)
    if found is None:
        pytest.fail(f"{name} is not installed: `apt-get install -y {package}` (Debian package; .ci/run installs "
                    "it). The cluster tests (SPEC §16) need it and must not be skipped.")
    return found


class RedisServer:
    """A throwaway ``redis-server`` on a loopback port, nothing persisted."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self._workdir = workdir
        self._log = workdir / "redis.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=10)

    def start(self) -> RedisServer:
        argv = [_binary("redis-server", "redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                "--save", "", "--appendonly", "no", "--dir", str(self._workdir)]
        with open(self._log, "ab") as log:
            self._proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        with self.client() as probe:
            for _ in range(500):  # bounded
                if self._proc.poll() is not None:
                    raise AssertionError(f"redis-server exited: {_tail(self._log)}")
                try:
                    if probe.ping():
                        return self
                except redis.RedisError:
                    time.sleep(0.02)
        raise AssertionError(f"redis-server did not answer: {_tail(self._log)}")

    def stop(self) -> None:
        if self._proc is not None:
            _stop(self._proc)
            self._proc = None


class GatewayProcess:
    """``python -m app serve`` for one instance of the cluster."""

    def __init__(self, name: str, deploy: Path, logs: Path) -> None:
        self.name = name
        self.deploy = deploy
        self.port = free_port()
        self.log = logs / f"gateway-{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> GatewayProcess:
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        env.update({"PYTHONPATH": str(REPO), "NO_PROXY": "127.0.0.1,localhost", "AGW_INSTANCE": self.name})
        argv = [sys.executable, "-m", "app", "--dir", str(self.deploy), "--log-level", "WARNING", "serve",
                "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, cwd=self.deploy, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        return self

    def wait_ready(self) -> GatewayProcess:
        """Until ``/healthz`` answers 200 (connected to Redis)."""
        assert self.proc is not None
        if wait_healthy(self.url, self.proc, HANG):
            return self
        if self.proc.poll() is not None:
            raise AssertionError(f"gateway {self.name} exited with {self.proc.returncode}:\n{_tail(self.log)}")
        raise AssertionError(f"gateway {self.name} did not become healthy:\n{_tail(self.log)}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to the cluster."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(HANG)

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def tail(self) -> str:
        return _tail(self.log)


def proxy_config(listen_port: int, servers: Sequence[GatewayProcess]) -> str:
    """deploy/haproxy.cfg with the test's listen port and one server line per instance (round robin,
    no stickiness), health-checked often enough for a test."""
    text = HAPROXY_CFG.read_text(encoding="utf-8")
    text, bound = re.subn(r"^(\s*bind )\S+$", rf"\g<1>127.0.0.1:{listen_port}", text, flags=re.MULTILINE)
    lines = "\n".join(f"    server {s.name} 127.0.0.1:{s.port} check inter 500ms fall 2 rise 1" for s in servers)
    text, served = re.subn(r"^\s*server \S+ 127\.0\.0\.1:8080\b.*$", "    balance roundrobin\n" + lines, text,
                           flags=re.MULTILINE)
    assert bound == 1 and served == 1, "deploy/haproxy.cfg no longer has one bind line and one server line"
    return text


class ScriptBook:
    """The shared fake model's scripts by name (see the module docstring). Thread-safe."""

    def __init__(self) -> None:
        self._scripts: dict[str, list[Script]] = {}
        self._lock = threading.Lock()

    def add(self, name: str, *scripts: Script) -> str:
        """Register the scripts of ``name``; returns the tag to put in the query's message."""
        assert re.fullmatch(r"[\w.-]+", name), name
        with self._lock:
            self._scripts[name] = [list(script) for script in scripts]
        return f"[[{name}]]"

    def __call__(self, body: dict[str, Any]) -> Script:
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        if not users:
            return text_script(["no user message"])
        last = users[-1]
        content = messages[last].get("content")
        text = content if isinstance(content, str) else orjson.dumps(content).decode()
        found = re.search(r"\[\[([\w.-]+)\]\]", text)
        calls = sum(1 for m in messages[last + 1:] if m.get("role") == "assistant")
        with self._lock:
            scripts = self._scripts.get(found.group(1)) if found else None
        if not scripts:
            return text_script(["no script for this message"])
        steps: list[Step] = list(scripts[min(calls, len(scripts) - 1)])
        return steps


# -- SSE over real HTTP with a bearer token -----------------------------------------------


async def sse(client: httpx.AsyncClient, method: str, url: str, headers: Mapping[str, str], *,
              json: Any = None, params: Mapping[str, Any] | None = None) -> AsyncIterator[dict[str, Any]]:
    """Each event's JSON as it arrives (checks ``id:`` = ``seq``); a non-200 answer fails with its body."""
    async with aconnect_sse(client, method, url, json=json, params=dict(params or {}),
                            headers=dict(headers)) as source:
        if source.response.status_code != 200:
            raise AssertionError(f"{method} {url}: {source.response.status_code} {await source.response.aread()!r}")
        async for event in source.aiter_sse():
            if not event.data:
                continue
            data = orjson.loads(event.data)
            assert event.id == str(data["seq"])
            yield data


async def query_all(client: httpx.AsyncClient, url: str, headers: Mapping[str, str],
                    body: dict[str, Any]) -> list[dict[str, Any]]:
    return [event async for event in sse(client, "POST", f"{url}/api/ap/query", headers, json=body)]


async def watch_all(client: httpx.AsyncClient, url: str, headers: Mapping[str, str],
                    run_id: str, after: int = 0) -> list[dict[str, Any]]:
    return [event async for event in sse(client, "GET", f"{url}/api/ap/run/stream", headers,
                                         params={"runId": run_id, "after": after})]


def chat_lines(deploy: Path, chat_id: str) -> list[dict[str, Any]]:
    """Every line of the chat's JSONL file; a line that is not JSON fails the test."""
    raw = (deploy / "chats" / f"{chat_id}.json").read_bytes()
    assert raw.endswith(b"\n"), "the chat file ends in the middle of a line"
    return [orjson.loads(line) for line in raw.splitlines()]
