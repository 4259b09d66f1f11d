"""Helpers of the MCP tests: server files, the test server as a stdio command or an HTTP process."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).resolve().parent
#: the real MCP server (built with the mcp SDK) every test talks to
SERVER_SCRIPT = HERE / "tool_server.py"


def write_server(deploy: Path, key: str, body: dict[str, Any]) -> Path:
    folder = deploy / "mcp-servers"
    folder.mkdir(exist_ok=True)
    path = folder / f"{key}.json"
    path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
    return path


def stdio_server(*, sandbox: bool = True, **extra: Any) -> dict[str, Any]:
    """The test server over stdio; its script folder is the (read-only) working directory."""
    return {"transport": "stdio", "command": sys.executable, "args": [SERVER_SCRIPT.name, "stdio"],
            "cwd": str(HERE), "sandbox": sandbox, **extra}


def copy_server_into(deploy: Path) -> str:
    """Put the server script inside the deployment folder; returns its path relative to it."""
    target = deploy / "mcp-src"
    target.mkdir(exist_ok=True)
    shutil.copy(SERVER_SCRIPT, target / SERVER_SCRIPT.name)
    return f"mcp-src/{SERVER_SCRIPT.name}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class HttpToolServer:
    """The test server over streamable HTTP on a loopback port, in its own process."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def start(self) -> HttpToolServer:
        self.process = subprocess.Popen([sys.executable, str(SERVER_SCRIPT), "http", str(self.port)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the MCP test server did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> HttpToolServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def eventually(check: Callable[[], Awaitable[Any]], what: str) -> Any:
    """Poll until ``check`` returns a truthy value; the bound only turns a hang into a failure."""
    for _ in range(1200):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.025)
    raise AssertionError(f"never happened: {what}")
