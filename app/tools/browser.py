"""``browser_open``: open a URL in headless Chromium through Playwright (SPEC §13).

Arguments: ``{url, fullPage?, maxChars?}``. Only ``http``/``https`` URLs are opened
(``file:``, ``javascript:``, ``data:``, ``chrome:`` … are refused with a ``ToolError``), and
only public addresses: the URL's host is checked first, and the browser reaches the network
only through ``browser_egress.EgressProxy``, which refuses loopback, private, link-local…
addresses for every request of the page (redirects, sub-resources, WebSockets) unless
``agent.tools.browser.allowed-private-networks`` lists them.
The page load has a 30 s timeout; the whole call (browser start included) is bounded
by the tool budget (``ctx.timeout_s``). The result is
``{url, title, status, text, truncated, screenshot}``: the final URL, the page title,
the HTTP status, the visible text (truncated to ``maxChars``, default 8000) and a
``/api/ap/data?file=screenshots/<name>.png`` link to the PNG saved in the data folder
(signed with ``&token=`` when data-link tokens are on).

Playwright is the optional extra ``[browser]``; without it the tool answers a clear error
saying how to enable it. Browser: Playwright's own Chromium when it is installed (``playwright install
chromium``), else the system one (``/usr/bin/chromium``, Debian ``apt-get install
chromium``). Neither → a clear ``ToolError``.
"""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from types import ModuleType
from typing import TYPE_CHECKING

from app.config import SCREENSHOT_DIR
from app.errors import ToolError
from app.security.data_tokens import issue_data_token
from app.tools.base import ToolContext
from app.tools.browser_egress import EgressProxy, Network, check_url_target, parse_networks, proxy_settings

if TYPE_CHECKING:  # Playwright is the optional extra ``[browser]`` (SPEC §22): imported on use
    from playwright.async_api import Browser, Playwright, ProxySettings

#: what the tool answers when the extra is not installed
MISSING_PLAYWRIGHT = (
    "browser_open needs Playwright, which is not installed: pip install 'agent-gateway[browser]' "
    "(and a Chromium: apt-get install chromium, or playwright install chromium)"
)

PAGE_LOAD_TIMEOUT_MS = 30_000
DEFAULT_MAX_CHARS = 8000
MAX_CHARS_LIMIT = 100_000
SYSTEM_CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    # WebRTC's UDP would not go through the egress proxy
    "--force-webrtc-ip-handling-policy=disable_non_proxied_udp",
)
_ALLOWED_SCHEMES = frozenset({"http", "https"})
#: longest page title returned
MAX_TITLE_CHARS = 1000
#: ``[title, text]`` of the page, each cut to its limit (``[titleLimit, textLimit]``) in the page
_PAGE_TEXT = """([titleLimit, textLimit]) => [
  String(document.title).slice(0, titleLimit),
  (document.body ? document.body.innerText : '').slice(0, textLimit),
]"""


def check_url(value: Any) -> str:
    """An absolute http(s) URL with a host, or ``ToolError``."""
    if not isinstance(value, str) or not value.strip():
        raise ToolError("browser_open needs a 'url' (an http or https address)")
    url = value.strip()
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _ALLOWED_SCHEMES:
        shown = f"'{scheme}:'" if scheme else "no scheme"
        raise ToolError(f"browser_open only opens http and https URLs ({shown} refused): {url[:200]}")
    if not parts.hostname:
        raise ToolError(f"browser_open needs a URL with a host: {url[:200]}")
    return url


def system_chromium() -> str | None:
    """The first system Chromium found (``/usr/bin/chromium`` or on ``PATH``)."""
    for candidate in SYSTEM_CHROMIUM:
        if Path(candidate).is_file():
            return candidate
    return shutil.which("chromium") or shutil.which("chromium-browser")


async def launch_chromium(playwright: Playwright, proxy: ProxySettings | None = None) -> Browser:
    """Headless Chromium: Playwright's own build if installed, else the system one; ``proxy`` is
    Playwright's proxy option (``browser_egress.proxy_settings``)."""
    own = Path(playwright.chromium.executable_path)
    executable = None if own.is_file() else system_chromium()
    if executable is None and not own.is_file():
        raise ToolError("no Chromium available: install Debian's package (apt-get install chromium) "
                        "or Playwright's browser (playwright install chromium)")
    return await playwright.chromium.launch(headless=True, executable_path=executable, args=list(CHROMIUM_ARGS),
                                            proxy=proxy)


def _max_chars(value: Any) -> int:
    if value is None:
        return DEFAULT_MAX_CHARS
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ToolError("maxChars must be a positive integer")
    return min(value, MAX_CHARS_LIMIT)


def _data_link(ctx: ToolContext, file: str) -> str:
    link = f"/api/ap/data?file={quote(file, safe='/')}"
    token = issue_data_token(ctx.settings.agent.chat_image_token, file)
    return f"{link}&token={quote(token)}" if token else link


async def _open(url: str, ctx: ToolContext, full_page: bool, max_chars: int,
                allowed: tuple[Network, ...]) -> dict[str, Any]:
    folder = ctx.settings.screenshots_dir
    folder.mkdir(parents=True, exist_ok=True)
    name = f"shot_{uuid.uuid4().hex[:16]}.png"
    api = _playwright()
    async with EgressProxy(allowed) as proxy, api.async_playwright() as playwright:
        browser = await launch_chromium(playwright, proxy_settings(proxy))
        try:
            # a service worker's requests would still go through the proxy; blocked to keep pages simple
            page = await browser.new_page(viewport={"width": 1280, "height": 800}, service_workers="block")
            response = await page.goto(url, timeout=PAGE_LOAD_TIMEOUT_MS, wait_until="load")
            final_url = page.url
            if urlsplit(final_url).scheme.lower() not in _ALLOWED_SCHEMES:
                raise ToolError(f"the page navigated to a refused address: {final_url[:200]}")
            # cut inside the page: a script can make its text (or title) tens of megabytes, which
            # would otherwise all cross into the gateway to be cut here
            title, text = await page.evaluate(_PAGE_TEXT, [MAX_TITLE_CHARS, max_chars + 1])
            await page.screenshot(path=str(folder / name), full_page=full_page, timeout=PAGE_LOAD_TIMEOUT_MS)
        finally:
            await browser.close()
    text = text if isinstance(text, str) else ""
    title = title if isinstance(title, str) else ""
    return {
        "url": final_url,
        "title": title,
        "status": response.status if response is not None else None,
        "text": text[:max_chars],
        "truncated": len(text) > max_chars,
        "screenshot": _data_link(ctx, f"{SCREENSHOT_DIR}/{name}"),
    }


def _playwright() -> ModuleType:
    try:
        import playwright.async_api as api
    except ImportError as exc:
        raise ToolError(MISSING_PLAYWRIGHT) from exc
    return api


async def browser_open(args: dict[str, Any], ctx: ToolContext) -> dict[str, Any]:
    """The built-in ``browser_open`` tool (SPEC §13)."""
    url = check_url(args.get("url"))
    api = _playwright()
    max_chars = _max_chars(args.get("maxChars"))
    full_page = bool(args.get("fullPage", False))
    allowed = parse_networks(ctx.settings.agent.tools.browser.allowed_private_networks)
    try:
        async with asyncio.timeout(ctx.timeout_s):
            await check_url_target(url, allowed)
            return await _open(url, ctx, full_page, max_chars, allowed)
    except TimeoutError as exc:
        raise ToolError(f"browser_open did not finish within the tool budget ({ctx.timeout_s:g} s): {url[:200]}") \
            from exc
    except api.TimeoutError as exc:
        raise ToolError(f"the page did not load within {PAGE_LOAD_TIMEOUT_MS // 1000} s: {url[:200]}") from exc
    except api.Error as exc:
        first_line = (exc.message or str(exc)).strip().splitlines()[0] if (exc.message or str(exc)).strip() else ""
        raise ToolError(f"the browser could not open {url[:200]}: {first_line[:300]}") from exc
