"""``browser_open`` (SPEC §13) in a real headless Chromium against pages served on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
from playwright.async_api import async_playwright

from app.errors import ToolError
from app.tools.browser import browser_open, system_chromium
from app.tools.registry import builtin_tools
from tests.tools.conftest import REPO, ContextFactory, make_settings

PAGE = (b"<!doctype html><html><head><title>Loopback page</title></head>"
        b"<body><h1>Hello from the test</h1><p>" + b"lorem ipsum " * 200 + b"</p></body></html>")


class _Site(ThreadingHTTPServer):
    daemon_threads = True
    release: threading.Event


class _Handler(BaseHTTPRequestHandler):
    server: _Site

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/hang":
            self.server.release.wait(60)  # never answers while the test runs
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        return


@pytest.fixture
def site() -> Iterator[str]:
    server = _Site(("127.0.0.1", 0), _Handler)
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
async def chromium_available() -> None:
    if system_chromium() is not None:
        return
    async with async_playwright() as playwright:
        own = Path(playwright.chromium.executable_path).is_file()
    if not own:
        pytest.skip("no Chromium: neither Playwright's browser nor /usr/bin/chromium "
                    "(install with `apt-get install chromium`)")


def test_registered_with_a_definition_file() -> None:
    assert "browser_open" in builtin_tools()
    definition = orjson.loads((REPO / "tools" / "browser_open.backend").read_bytes())
    assert [tool["name"] for tool in definition["tools"]] == ["browser_open"]
    assert definition["tools"][0]["parameters"]["required"] == ["url"]


@pytest.mark.parametrize("url", ["file:///etc/passwd", "javascript:alert(1)", "data:text/html,<b>x</b>",
                                 "chrome://settings", "about:blank", "ftp://example.com/x", "http://", "", 42])
async def test_refuses_non_http_urls(make_ctx: ContextFactory, url: object) -> None:
    with pytest.raises(ToolError):
        await browser_open({"url": url}, make_ctx())


async def test_opens_a_page_returns_text_and_a_screenshot_link(
    chromium_available: None, site: str, make_ctx: ContextFactory, deploy: Path
) -> None:
    settings = make_settings(deploy, agent={"chat-image-token": {"secret": "s3cret"}})
    result = await browser_open({"url": f"{site}/page", "maxChars": 40}, make_ctx(settings, timeout_s=60))
    assert result["url"] == f"{site}/page" and result["status"] == 200
    assert result["title"] == "Loopback page"
    assert result["text"].startswith("Hello from the test") and len(result["text"]) == 40
    assert result["truncated"] is True
    link, _, token = result["screenshot"].partition("&token=")
    assert token, "data-link tokens are on: the link must be signed"
    assert link.startswith("/api/ap/data?file=screenshots/") and link.endswith(".png")
    png = deploy / "data" / link.split("file=", 1)[1]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_the_whole_call_is_bounded_by_the_tool_budget(
    chromium_available: None, site: str, make_ctx: ContextFactory
) -> None:
    with pytest.raises(ToolError, match="tool budget"):
        await browser_open({"url": f"{site}/hang"}, make_ctx(timeout_s=3))


async def test_without_the_browser_extra_the_tool_says_how_to_enable_it(
    make_ctx: ContextFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "playwright.async_api", None)  # as if the extra were not installed
    with pytest.raises(ToolError, match=r"pip install 'agent-gateway\[browser\]'"):
        await browser_open({"url": "http://127.0.0.1:9/"}, make_ctx())


def test_playwright_is_an_optional_extra_not_a_core_dependency() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert not any(dep.lower().startswith("playwright") for dep in project["dependencies"])
    assert any(dep.startswith("playwright") for dep in project["optional-dependencies"]["browser"])
    assert any(dep.startswith("playwright") for dep in project["optional-dependencies"]["test"])
