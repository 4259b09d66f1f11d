"""``browser_open`` (SPEC §13) in a real headless Chromium against pages served on loopback."""

from __future__ import annotations

import ipaddress
import threading
import tracemalloc
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import orjson
import pytest
from playwright.async_api import async_playwright

from app.errors import ToolError
from app.tools.browser import MAX_TITLE_CHARS, browser_open, system_chromium
from app.tools.browser_egress import EgressProxy, is_allowed, parse_networks
from app.tools.registry import builtin_tools
from tests.tools.conftest import REPO, ContextFactory, make_settings

#: the test pages are on loopback, which ``browser_open`` refuses unless listed
LOOPBACK_SITE = {"agent": {"tools": {"browser": {"allowed-private-networks": ["127.0.0.1/32"]}}}}
INTERNAL_SECRET = b"INTERNAL-SECRET-4c1d"

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
        target = self.path.partition("?to=")[2]
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = PAGE
        if self.path.startswith("/fetch?to="):  # the page's script reads another address into the page
            # a synchronous request: done before the page's load event, so no race with browser_open
            body = (b"<!doctype html><html><body><p id='out'>waiting</p><script>"
                    b"const out = document.getElementById('out');"
                    b"try { const x = new XMLHttpRequest(); x.open('GET', '" + target.encode() + b"', false);"
                    b" x.send(); out.innerText = x.status === 200 ? 'read: ' + x.responseText : 'failed: ' + x.status; }"
                    b" catch (e) { out.innerText = 'failed: ' + e; }"
                    b"</script></body></html>")
        elif self.path == "/huge":  # 10 MB of text and a 2 MB title, made by the page's script
            body = (b"<!doctype html><html><body><p id='out'></p><script>"
                    b"document.title = 't'.repeat(2000000);"
                    b"document.getElementById('out').textContent = 'x'.repeat(10000000);"
                    b"</script></body></html>")
        elif self.path == "/secret":
            body = INTERNAL_SECRET
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        return


def _serve(host: str) -> Iterator[str]:
    server = _Site((host, 0), _Handler)
    server.release = threading.Event()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def site() -> Iterator[str]:
    yield from _serve("127.0.0.1")


@pytest.fixture
def internal() -> Iterator[str]:
    """A service on another loopback address (127.0.0.2): not listed, so not reachable."""
    yield from _serve("127.0.0.2")


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
    settings = make_settings(deploy, agent={"chat-image-token": {"secret": "s3cret"}, **LOOPBACK_SITE["agent"]})
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


async def test_attack_page_making_megabytes_of_text_sends_only_what_is_returned(
    chromium_available: None, site: str, make_ctx: ContextFactory, deploy: Path
) -> None:
    """The text and title are cut in the page: 20 MB of script-made text used to cross into the
    gateway whole (87 MB traced, against 7 MB now) to return maxChars of it; 10 MB here."""
    ctx = make_ctx(make_settings(deploy, **LOOPBACK_SITE), timeout_s=60)
    tracemalloc.start()
    try:
        result = await browser_open({"url": f"{site}/huge", "maxChars": 100}, ctx)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result["text"] == "x" * 100 and result["truncated"] is True
    assert result["title"] == "t" * MAX_TITLE_CHARS
    assert peak < 24 * 1024 * 1024, f"{peak} bytes held by the gateway for a 100-character answer"


async def test_the_whole_call_is_bounded_by_the_tool_budget(
    chromium_available: None, site: str, make_ctx: ContextFactory, deploy: Path
) -> None:
    with pytest.raises(ToolError, match="tool budget"):
        await browser_open({"url": f"{site}/hang"}, make_ctx(make_settings(deploy, **LOOPBACK_SITE), timeout_s=3))


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "0x7f000001", "[::ffff:127.0.0.1]", "[::1]",
                                  "0.0.0.0"])
async def test_attack_url_naming_a_loopback_address_is_refused(
    site: str, make_ctx: ContextFactory, host: str
) -> None:
    """The gateway's own port, Redis… listen on loopback: a URL naming it in any spelling is refused
    before a browser starts (the page would come back to the model as text)."""
    port = site.rsplit(":", 1)[1]
    with pytest.raises(ToolError, match="non-public address"):
        await browser_open({"url": f"http://{host}:{port}/secret"}, make_ctx())


@pytest.mark.parametrize("address", ["169.254.169.254", "10.1.2.3", "172.16.0.1", "192.168.1.1", "100.64.0.1",
                                     "224.0.0.1", "0.0.0.0", "127.0.0.2", "::1", "fe80::1", "fd00::1",
                                     "::ffff:169.254.169.254"])
def test_cloud_metadata_private_and_special_addresses_are_not_public(address: str) -> None:
    assert not is_allowed(ipaddress.ip_address(address), ())
    assert is_allowed(ipaddress.ip_address(address), parse_networks([f"{address}/128" if ":" in address else
                                                                      f"{address}/32"]))


def test_public_addresses_are_allowed() -> None:
    assert is_allowed(ipaddress.ip_address("93.184.216.34"), ())
    assert is_allowed(ipaddress.ip_address("2606:2800:220:1:248:1893:25c8:1946"), ())


async def test_attack_page_redirecting_to_an_internal_address_gets_a_refusal(
    chromium_available: None, site: str, internal: str, make_ctx: ContextFactory, deploy: Path
) -> None:
    result = await browser_open({"url": f"{site}/redirect?to={internal}/secret"},
                                make_ctx(make_settings(deploy, **LOOPBACK_SITE), timeout_s=60))
    assert INTERNAL_SECRET.decode() not in result["text"]
    assert result["status"] == 403 and "non-public address" in result["text"]


async def test_attack_page_script_reading_an_internal_address_gets_nothing(
    chromium_available: None, site: str, internal: str, make_ctx: ContextFactory, deploy: Path
) -> None:
    ctx = make_ctx(make_settings(deploy, **LOOPBACK_SITE), timeout_s=60)
    allowed = await browser_open({"url": f"{site}/fetch?to={site}/secret"}, ctx)
    assert allowed["text"] == f"read: {INTERNAL_SECRET.decode()}"  # the page's script does work
    result = await browser_open({"url": f"{site}/fetch?to={internal}/secret"}, ctx)
    assert INTERNAL_SECRET.decode() not in result["text"] and result["text"].startswith("failed")


async def test_attack_tunnel_through_the_egress_proxy_to_an_internal_address_is_refused(
    site: str, internal: str
) -> None:
    """What Chromium sends the proxy: plain requests (absolute URL) and CONNECT tunnels (https, wss)."""
    async with EgressProxy(parse_networks(["127.0.0.1/32"])) as proxy:
        async with httpx.AsyncClient(proxy=proxy.url, timeout=10) as client:
            assert (await client.get(f"{site}/secret")).content == INTERNAL_SECRET  # listed: goes through
            refused = await client.get(f"{internal}/secret")
            assert refused.status_code == 403 and b"non-public address" in refused.content
            with pytest.raises(httpx.ProxyError):
                await client.get(f"https://127.0.0.2:{internal.rsplit(':', 1)[1]}/secret")
        assert proxy.refused == ["127.0.0.2", "127.0.0.2"]


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
