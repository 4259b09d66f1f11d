"""Run the real gateway (uvicorn + FastAPI app) on a loopback port in a background thread."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from app.api.app import create_app
from app.config import Settings, load_settings


class GatewayServer:
    """A real gateway serving ``deploy_dir`` on 127.0.0.1 (ephemeral port), in its own thread."""

    def __init__(self, deploy_dir: Path, overrides: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.settings: Settings = load_settings(
            deploy_dir, files=(Path("application.yml"),), env=env or {}, overrides=overrides
        )
        self.app = create_app(self.settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway(self) -> Any:
        return self.app.state.gateway

    def start(self) -> GatewayServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()

    def __enter__(self) -> GatewayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def wait_healthy(url: str, process: subprocess.Popen[Any], timeout_s: float = 60.0) -> bool:
    """Poll ``GET <url>/healthz`` of a gateway started as ``process`` until it answers 200 (True).

    False as soon as the process exited or ``timeout_s`` passed (a bound that only turns a hang
    into a failure): the caller says why, with the process's output.
    """
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return False

