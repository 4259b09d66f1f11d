"""Helpers of the file tests (SPEC §23): uploads over real HTTP, raw multipart bodies, what is on disk."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import GatewayServer

BOUNDARY = "agw-test-boundary-7f3a"
#: the smallest valid PNG (1×1, transparent)
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5f0000000049454e44ae426082"
)
#: what the console and tests attach to ask for bash and artifacts
FILE_TOOLS = {"backends": ["_bash_", "_artifact_publish_"], "frontends": [], "actions": []}


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def upload(client: httpx.AsyncClient, gw: GatewayServer, name: str, data: bytes, *,
                 chat_id: str | None = None, content_type: str = "application/octet-stream",
                 headers: dict[str, str] | None = None) -> httpx.Response:
    """``POST /api/ap/upload`` the way a browser form sends it (httpx builds the multipart body)."""
    form = {"chatId": chat_id} if chat_id else {}
    return await client.post(f"{gw.url}/api/ap/upload", files={"file": (name, data, content_type)}, data=form,
                             headers=headers)


def multipart(filename: bytes, data: bytes, *, fields: dict[str, str] | None = None,
              content_type: bytes = b"application/octet-stream", closed: bool = True) -> bytes:
    """A multipart body written byte by byte: any file name bytes (NUL, raw UTF-8, ``../``)."""
    out = b""
    for name, value in (fields or {}).items():
        out += (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n").encode()
    out += (f"--{BOUNDARY}\r\n".encode() + b'Content-Disposition: form-data; name="file"; filename="' + filename
            + b'"\r\nContent-Type: ' + content_type + b"\r\n\r\n" + data)
    return out + (f"\r\n--{BOUNDARY}--\r\n".encode() if closed else b"")


async def raw_upload(client: httpx.AsyncClient, gw: GatewayServer, body: bytes) -> httpx.Response:
    return await client.post(f"{gw.url}/api/ap/upload", content=body,
                             headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}"})


def files_under(*roots: Path) -> list[Path]:
    """Every regular file below ``roots`` (what an upload could have left behind)."""
    return sorted(p for root in roots if root.exists() for p in root.rglob("*") if p.is_file())


def leftovers(deploy: Path) -> list[Path]:
    """Files of the gateway's file store, the workspaces and the chats."""
    state = deploy / "data" / ".agw"
    return files_under(state / "files", state / "workspaces", deploy / "chats")


async def eventually(condition: Callable[[], bool], what: str, attempts: int = 500) -> None:
    """Wait (polling, bounded) until ``condition()`` holds: the order of events, not a clock, is tested."""
    for _ in range(attempts):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def envelope(response: httpx.Response) -> Any:
    body = response.json()
    assert response.status_code == 200 and body["code"] == 0, (response.status_code, body)
    return body["data"]
