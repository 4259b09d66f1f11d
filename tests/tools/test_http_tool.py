"""HTTP backend tools against a real loopback HTTP server (SPEC §3.3)."""

from __future__ import annotations

import gzip
import json
import threading
import tracemalloc
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from app.catalog.definitions import ToolDefinition, ToolKind
from app.errors import ToolError
from app.tools.http_tool import ERROR_EXCERPT_CHARS, call_http_tool


def _gzip_of_zeros(size: int) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = bytes(1 << 20)
    return b"".join(compressor.compress(block) for _ in range(size >> 20)) + compressor.flush()


#: 128 MiB of zeros in about 128 KiB of gzip
GZIP_BOMB = _gzip_of_zeros(128 << 20)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args: Any) -> None:  # keep test output quiet
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append({"path": self.path, "body": json.loads(body), "headers": dict(self.headers)})
        if self.path == "/json":
            self._send(200, "application/json", json.dumps({"echo": json.loads(body), "ok": True}))
        elif self.path == "/text":
            self._send(200, "text/plain; charset=utf-8", "plain 文本")
        elif self.path in ("/gzip-json", "/bomb"):
            data = gzip.compress(b'{"packed": true}') if self.path == "/gzip-json" else GZIP_BOMB
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/deep":
            self._send(200, "application/json", "[" * 5000 + "]" * 5000)
        elif self.path == "/fail":
            self._send(500, "text/plain", "boom " + "x" * 5000)
        elif self.path == "/slow":
            self.server.release.wait(5)
            self._send(200, "application/json", "{}")
        else:
            self._send(404, "text/plain", "nope")

    def _send(self, status: int, content_type: str, text: str) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, Any]] = []
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield srv
    finally:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


def _tool(url: str) -> ToolDefinition:
    return ToolDefinition(name="remote", kind=ToolKind.BACKEND, description="", parameters={}, tool_api=url)


async def test_json_response_is_parsed(server: _Server, make_ctx: Any) -> None:
    result = await call_http_tool(_tool(server.url + "/json"), {"city": "上海", "n": 1}, make_ctx())
    assert result == {"echo": {"city": "上海", "n": 1}, "ok": True}
    assert server.seen[0]["headers"]["X-Agent-Run-Id"] == "run_test"


async def test_text_response_is_returned_as_text(server: _Server, make_ctx: Any) -> None:
    assert await call_http_tool(_tool(server.url + "/text"), {}, make_ctx()) == "plain 文本"


async def test_a_body_nested_past_the_recursion_limit_is_returned_as_text(server: _Server, make_ctx: Any) -> None:
    """``json.loads`` raised RecursionError on it, which no caller expected: the run ended as
    ``internal_error`` instead of getting a result."""
    assert await call_http_tool(_tool(server.url + "/deep"), {}, make_ctx()) == "[" * 5000 + "]" * 5000


async def test_non_2xx_is_a_tool_error_with_a_bounded_excerpt(server: _Server, make_ctx: Any) -> None:
    with pytest.raises(ToolError, match="HTTP 500: boom") as info:
        await call_http_tool(_tool(server.url + "/fail"), {}, make_ctx())
    assert len(info.value.message) < ERROR_EXCERPT_CHARS + 200


async def test_timeout_is_a_tool_error(server: _Server, make_ctx: Any) -> None:
    with pytest.raises(ToolError, match="timed out"):
        await call_http_tool(_tool(server.url + "/slow"), {}, make_ctx(timeout_s=0.2))


async def test_connection_refused_is_a_tool_error(make_ctx: Any) -> None:
    srv = _Server()  # bind a port, then close it: nothing listens there
    url = srv.url
    srv.server_close()
    with pytest.raises(ToolError, match="failed"):
        await call_http_tool(_tool(url + "/json"), {}, make_ctx())


async def test_attack_a_failing_tool_shows_no_credential_of_its_url(server: _Server, make_ctx: Any) -> None:
    """The error names the tool's URL and becomes the call's result (the client's tool.result, the chat
    file, the model's next request, the tool span): a toolApi with a password or an api_key parameter
    showed them there in clear."""
    secret_url = server.url.replace("http://", "http://svc:URL-PASS-7@") + "/fail?api_key=KEY-42&lang=en"
    refused = _Server()  # a port nothing listens on
    closed = refused.url
    refused.server_close()
    for url, ctx in ((secret_url, make_ctx()), (server.url + "/slow?token=KEY-42", make_ctx(timeout_s=0.2)),
                     (closed + "/json?api_key=KEY-42", make_ctx())):
        with pytest.raises(ToolError) as info:
            await call_http_tool(_tool(url), {}, ctx)
        message = info.value.message
        assert "KEY-42" not in message and "URL-PASS-7" not in message, message
        assert "=***" in message, message


async def test_gzip_response_is_decoded(server: _Server, make_ctx: Any) -> None:
    assert await call_http_tool(_tool(server.url + "/gzip-json"), {}, make_ctx()) == {"packed": True}
    assert server.seen[-1]["headers"]["Accept-Encoding"] == "gzip"


async def test_attack_gzip_bomb_response_is_refused_without_inflating_it(server: _Server, make_ctx: Any) -> None:
    """The 2 MiB bound holds for the inflated body while it is read: httpx inflates each received
    chunk whole, so 128 KiB of gzip was 128 MiB in the gateway's memory before the check."""
    tracemalloc.start()
    try:
        with pytest.raises(ToolError, match="response larger than"):
            await call_http_tool(_tool(server.url + "/bomb"), {}, make_ctx())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024, f"{peak} bytes held while reading a bounded response"
