"""What an operator sees at the default log level (SPEC §22), from a real ``python -m app serve``
process: one line per run start and end, every upstream failure with provider, URL and status
(never the key), auth refusals with the reason, and ``logging.format: json``."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from app.devtools import FakeUpstream
from app.devtools.script import http_error_script, text_script
from tests.security.support import ISSUER, bearer, mint, rsa_pair
from tests.support.deployment import REPO, agent, make_deployment, write_agent
from tests.support.server import wait_healthy

API_KEY = "sk-test-secret-key-123"


class Served:
    """``python -m app serve`` on a deployment, its stderr in a file."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.log = root.parent / f"{root.name}.log"
        environ = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "SERVER_", "MEMORY_", "LOGGING_"))}
        environ.update(env or {})
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app", "serve", "--dir", str(root), "--port", str(self.port)],
                cwd=REPO, env=environ, stdout=out, stderr=subprocess.STDOUT)
        if not wait_healthy(self.url, self.process):
            self.stop()
            raise RuntimeError(f"gateway did not start: {self.text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def wait_for(self, needle: str) -> str:
        for _ in range(400):  # bounded: the line is written as the run ends
            text = self.text()
            if needle in text:
                return text
            time.sleep(0.025)
        raise AssertionError(f"{needle!r} never logged:\n{self.text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()


@pytest.fixture
def served(tmp_path: Path, upstream: FakeUpstream) -> Iterator[Served]:
    root = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(root, "plain", agent("ONESHOT"))
    server = Served(root)
    yield server
    server.stop()


def test_each_run_logs_its_start_and_end_at_info(served: Served, upstream: FakeUpstream) -> None:
    upstream.enqueue(text_script(["hello"], usage=(12, 3)))
    reply = httpx.post(f"{served.url}/api/ap/query", json={"agentKey": "plain", "message": "x", "stream": False})
    run_id = reply.json()["data"]["runId"]
    text = served.wait_for(f"run {run_id} ended")
    started = next(line for line in text.splitlines() if f"run {run_id} started" in line)
    ended = next(line for line in text.splitlines() if f"run {run_id} ended" in line)
    assert "INFO" in started and "agent=plain" in started and f"chat={reply.json()['data']['chatId']}" in started
    assert "INFO" in ended and "status=completed" in ended and "duration_ms=" in ended and "tokens=12/3" in ended


def test_upstream_failure_logs_provider_url_and_status_never_the_key(served: Served, upstream: FakeUpstream) -> None:
    upstream.enqueue(http_error_script(401, f"Incorrect API key provided: {API_KEY}"))
    reply = httpx.post(f"{served.url}/api/ap/query", json={"agentKey": "plain", "message": "x", "stream": False})
    run_id = reply.json()["data"]["runId"]
    text = served.wait_for(f"run {run_id} ended")
    failure = next(line for line in text.splitlines() if "upstream failure" in line and run_id in line)
    assert "WARNING" in failure and "provider=fake" in failure and "status=401" in failure
    assert f"url={upstream.url}/v1/chat/completions" in failure
    assert API_KEY not in text
    ended = next(line for line in text.splitlines() if f"run {run_id} ended" in line)
    assert "WARNING" in ended and "status=error (upstream_http_error)" in ended


def test_json_logs_and_auth_refusals(tmp_path: Path, upstream: FakeUpstream) -> None:
    pair = rsa_pair()
    root = make_deployment(tmp_path / "deploy", upstream.url)
    write_agent(root, "plain", agent("ONESHOT"))
    pem = "\n".join("      " + line for line in pair.public_pem.strip().splitlines())
    config = (root / "application.yml").read_text()
    assert "  auth:\n    enabled: false\n" in config
    config = config.replace("  auth:\n    enabled: false\n", f"  auth:\n    enabled: true\n    issuer: {ISSUER}\n"
                                                            f"    local-public-key: |\n{pem}\n")
    (root / "application.yml").write_text(config + "logging:\n  format: json\n")
    server = Served(root)
    try:
        refused = httpx.get(f"{server.url}/api/ap/agents", headers={"Authorization": "Bearer nope.nope.nope"})
        assert refused.status_code == 401
        token = mint(pair, "alice")
        upstream.enqueue(text_script(["ok"]))
        reply = httpx.post(f"{server.url}/api/ap/query", headers=bearer(token),
                           json={"agentKey": "plain", "message": "x", "stream": False})
        assert reply.status_code == 200, reply.text
        run_id = reply.json()["data"]["runId"]
        server.wait_for(f"run {run_id} ended")
    finally:
        server.stop()
    records = [orjson.loads(line) for line in server.text().splitlines() if line.strip()]
    assert records and all({"ts", "level", "logger", "msg"} <= set(r) for r in records)
    refusal = next(r for r in records if r["msg"].startswith("auth refused"))
    assert refusal["level"] == "INFO" and "/api/ap/agents" in refusal["msg"] and "invalid token" in refusal["msg"]
    assert any(r["msg"].startswith(f"run {run_id} started") for r in records)
    assert token not in server.text()
