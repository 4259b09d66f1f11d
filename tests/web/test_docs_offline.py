"""``/docs`` and ``/redoc`` work offline (SPEC §22): real headless Chromium against a real gateway.

Every request the page makes to a host other than 127.0.0.1 is aborted and recorded; the pages
must still render the operations of ``/openapi.json`` (so every script and style came from the
gateway itself) and must not have tried to leave loopback at all. The gateway runs with auth on:
the documentation is public, like the OpenAPI document, while ``/api/**`` stays protected.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, Route, expect

from tests.security.support import ISSUER, rsa_pair
from tests.support.browser import checked_page, headless_chromium
from tests.support.server import GatewayServer

#: generous upper bound for one DOM wait; only turns a hang into a failure
WAIT_MS = 15_000
LOOPBACK = "127.0.0.1"


class Traffic:
    """What the page asked for. Every request that reaches the network layer passes ``guard``: the
    loopback ones are served, any other is aborted and recorded. What the browser itself refuses
    (the pages' Content-Security-Policy) never gets that far and is recorded from the console."""

    def __init__(self) -> None:
        self.served: list[str] = []
        self.aborted: list[str] = []
        self.csp_refusals: list[str] = []

    async def guard(self, route: Route) -> None:
        url = route.request.url
        if urlsplit(url).hostname == LOOPBACK:
            self.served.append(url)
            await route.continue_()
        else:
            self.aborted.append(url)
            await route.abort()

    def console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            self.csp_refusals.append(message.text)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with headless_chromium("the offline docs test") as instance:
        yield instance


@pytest.fixture
async def guarded_page(browser: Browser) -> AsyncIterator[tuple[Page, Traffic]]:
    """A fresh page whose every request to another host is aborted; script errors fail the test."""
    async with checked_page(browser, WAIT_MS) as page:
        traffic = Traffic()
        await page.route("**/*", traffic.guard)
        page.on("console", traffic.console)
        yield page, traffic


@pytest.fixture
def docs_gateway(start_gateway: Callable[..., GatewayServer]) -> GatewayServer:
    key = rsa_pair()
    return start_gateway({"agent": {"auth": {"enabled": True, "local-public-key": key.public_pem, "issuer": ISSUER}}})


async def test_swagger_ui_renders_the_operations_without_leaving_loopback(
    docs_gateway: GatewayServer, guarded_page: tuple[Page, Traffic], client: httpx.AsyncClient
) -> None:
    page, traffic = guarded_page
    gw = docs_gateway
    assert (await client.get(f"{gw.url}/api/ap/agents")).status_code == 401  # auth is really on
    await page.goto(f"{gw.url}/docs")
    query = page.locator('.opblock-summary-path[data-path="/api/ap/query"]')
    await expect(query).to_be_visible()
    await expect(query).to_have_text("/api/ap/query")
    await expect(page.locator('.opblock-summary-path[data-path="/api/ap/run/stream"]')).to_be_visible()
    # the run-event streams are linked from the document's description
    await expect(page.locator('.info a[href="/asyncapi.json"]').first).to_be_visible()
    # the event-stream answer of the query operation names the AsyncAPI document
    await query.click()
    await expect(page.locator("#operations-default-query_api_ap_query_post")
                 .get_by_text("A Server-Sent-Events stream of run events").first).to_be_visible()
    assert traffic.aborted == []
    assert traffic.csp_refusals == []  # the policy lets everything of the gateway through
    assert f"{gw.url}/docs/static/swagger-ui-bundle.js" in traffic.served
    assert f"{gw.url}/docs/static/swagger-ui.css" in traffic.served
    assert f"{gw.url}/openapi.json" in traffic.served


async def test_redoc_renders_the_operations_without_leaving_loopback(
    docs_gateway: GatewayServer, guarded_page: tuple[Page, Traffic]
) -> None:
    page, traffic = guarded_page
    gw = docs_gateway
    await page.goto(f"{gw.url}/redoc")
    await expect(page.get_by_text("Run an agent; Server-Sent Events").first).to_be_visible()
    await expect(page.get_by_text("/api/ap/query").first).to_be_attached()
    assert traffic.aborted == []
    assert f"{gw.url}/docs/static/redoc.standalone.js" in traffic.served
    # ReDoc's footer logo would come from its CDN: the browser refused it, nothing of ours
    assert all(gw.url not in refusal for refusal in traffic.csp_refusals), traffic.csp_refusals


async def test_docs_pages_name_only_assets_of_the_gateway(
    docs_gateway: GatewayServer, client: httpx.AsyncClient
) -> None:
    """The HTML itself: every script, style and icon is under ``/docs/static`` and is served;
    Swagger UI's online validator (a request to another host for its badge) is switched off."""
    gw = docs_gateway
    pages = [await client.get(f"{gw.url}/docs"), await client.get(f"{gw.url}/redoc")]
    swagger, redoc = (page.text for page in pages)
    for page in pages:
        assert page.status_code == 200 and "http://" not in page.text and "https://" not in page.text, page.text
        assert page.headers["content-security-policy"].startswith("default-src 'none';")
    assert '"validatorUrl": null' in swagger
    for asset, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "text/css"),
                        ("redoc.standalone.js", "javascript"), ("favicon.png", "image/png")):
        assert f"/docs/static/{asset}" in swagger + redoc
        response = await client.get(f"{gw.url}/docs/static/{asset}")
        assert response.status_code == 200 and kind in response.headers["content-type"], asset
    assert (await client.get(f"{gw.url}/docs/static/../app.py")).status_code == 404
