"""Drive ``python -m app sidecar`` as a real subprocess over its stdin/stdout pipes (SPEC §10)."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections import defaultdict
from pathlib import Path
from typing import IO, Any

import orjson

from tests.support.deployment import REPO


class SidecarProcess:
    """A running sidecar. Replies are matched by ``id``; ``agent.event`` notifications are
    queued per ``requestId``; ``log`` keeps every message in arrival order.

    ``command`` replaces ``python -m app`` (the one-file executable: tests/sidecar/test_executable.py);
    ``clean_env`` starts it with ``env`` alone instead of this process's environment plus ``env``;
    ``stderr_path`` may be a descriptor instead (a pipe the test reads, or never reads)."""

    def __init__(self, deploy: Path, stderr_path: Path | int, *, extra_args: tuple[str, ...] = (),
                 env: dict[str, str] | None = None, command: tuple[str, ...] = (sys.executable, "-m", "app"),
                 clean_env: bool = False, cwd: Path = REPO) -> None:
        self._deploy = deploy
        self._stderr_path = stderr_path
        self._args = extra_args
        self._env = dict(env or {}) if clean_env else {**os.environ, **(env or {})}
        self._command = command
        self._cwd = cwd
        self._ids = itertools.count(1)
        self._replies: dict[Any, asyncio.Future[dict[str, Any]]] = {}
        self._orphans: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._events: defaultdict[str, asyncio.Queue[dict[str, Any]]] = defaultdict(asyncio.Queue)
        self.log: list[dict[str, Any]] = []
        self.proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._stderr: IO[bytes] | None = None

    async def start(self) -> SidecarProcess:
        stderr: IO[bytes] | int
        if isinstance(self._stderr_path, int):
            stderr = self._stderr_path
        else:
            stderr = self._stderr = open(self._stderr_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = await asyncio.create_subprocess_exec(
            *self._command, "sidecar", "--dir", str(self._deploy), *self._args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr,
            cwd=str(self._cwd), env=self._env, limit=64 * 1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            message = orjson.loads(line)  # anything that is not one JSON object per line fails here
            self.log.append(message)
            if isinstance(message, dict) and message.get("method") == "agent.event":
                self._events[message["params"]["requestId"]].put_nowait(message["params"]["event"])
            elif isinstance(message, dict) and message.get("id") in self._replies:
                future = self._replies.pop(message["id"])
                future.set_result(message)
            else:
                self._orphans.put_nowait(message)

    async def write(self, data: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(data)
        await self.proc.stdin.drain()

    async def send(self, method: str, params: Any = None, *, request_id: Any = None) -> asyncio.Future[dict[str, Any]]:
        """Send a request; the future resolves with its reply (the whole JSON-RPC message)."""
        rid = next(self._ids) if request_id is None else request_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[rid] = future
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": rid, "method": method}
        if params is not None:
            message["params"] = params
        await self.write(orjson.dumps(message) + b"\n")
        return future

    async def call(self, method: str, params: Any = None) -> dict[str, Any]:
        return await asyncio.wait_for(await self.send(method, params), timeout=60)

    async def result(self, method: str, params: Any = None) -> Any:
        reply = await self.call(method, params)
        assert "result" in reply, reply
        return reply["result"]

    async def next_event(self, request_id: str) -> dict[str, Any]:
        return await asyncio.wait_for(self._events[request_id].get(), timeout=60)

    async def next_orphan(self) -> dict[str, Any]:
        """The next message that matched no pending request (e.g. a parse-error reply)."""
        return await asyncio.wait_for(self._orphans.get(), timeout=60)

    async def close_stdin(self) -> int:
        """EOF on stdin; returns the exit status."""
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.close()
        status = await asyncio.wait_for(self.proc.wait(), timeout=60)
        if self._reader is not None:
            await asyncio.wait_for(self._reader, timeout=30)
        return status

    def stderr_text(self) -> str:
        if isinstance(self._stderr_path, int):
            return "(stderr is a pipe the test reads)"
        return self._stderr_path.read_text(encoding="utf-8", errors="replace")

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
        if self._stderr is not None:
            self._stderr.close()
