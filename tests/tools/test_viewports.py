"""The HTML viewports (SPEC §3.5): self-contained, in English, and they render / submit in a real browser.

The cards and the confirm dialog take their data in the wrapped messages our console posts
(``{type: "viewport_init" | "viewport_data" | "tool_init", data}``) and as the bare payload the
upstream web client posts (a message without one of those types is the payload itself). The
browser tests load each page as the gateway serves it (``GET /api/ap/viewport``) into an iframe
and post from the parent, as a host page does."""

from __future__ import annotations

import json
import re
import shutil
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from app.devtools import FakeUpstream, demo_responder
from app.tools import mocks
from tests.support.deployment import make_deployment
from tests.support.browser import checked_page, headless_chromium
from tests.support.server import GatewayServer
from tests.tools.conftest import REPO

VIEWPORTS = REPO / "viewports"
CARDS = {
    "show_weather_card": (mocks.mock_city_weather, {"city": "上海", "date": "2026-02-13"}, "2026-02-13"),
    "show_logistics_status": (mocks.mock_logistics_status, {"trackingNo": "SF123456789CN"}, "SF123456789CN"),
    "show_todo_card": (mocks.mock_todo_tasks, {"owner": "Alice"}, "Alice"),
    "show_transport_card": (
        mocks.mock_transport_schedule,
        {"type": "flight", "fromCity": "Shanghai", "toCity": "Beijing", "date": "2026-03-01"},
        "Shanghai",
    ),
}


#: generous upper bound for one DOM wait; only turns a hang into a failure
WAIT_MS = 10_000
_CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.mark.parametrize("key", [*CARDS, "confirm_dialog"])
def test_viewport_is_self_contained(key: str) -> None:
    html = (VIEWPORTS / f"{key}.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "@import" not in html
    assert "postMessage" in html or "addEventListener(\"message\"" in html


@pytest.mark.parametrize("key", [*CARDS, "confirm_dialog"])
def test_viewport_speaks_english(key: str) -> None:
    """Every line a person can read is English; Chinese is only allowed in the lookup table that
    turns the mock tools' Chinese values into English (its keys)."""
    html = (VIEWPORTS / f"{key}.html").read_text(encoding="utf-8")
    assert '<html lang="en">' in html
    for line in html.splitlines():
        if _CJK.search(line):
            assert re.fullmatch(r'\s*(var \w+ = \{ )?("[^"]+": "[^"\u4e00-\u9fff]+",? ?)+(\};)?\s*', line), line


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with headless_chromium("viewport browser tests") as instance:
        yield instance


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    async with checked_page(browser, WAIT_MS) as tab:
        yield tab


async def test_cards_render_their_tool_result(page: Page) -> None:
    for key, (tool, args, expected) in CARDS.items():
        data = await tool(args, None)
        query = urllib.parse.quote(json.dumps(data, ensure_ascii=False))
        await page.goto((VIEWPORTS / f"{key}.html").as_uri() + "?data=" + query)
        text = await page.inner_text("#root")
        assert expected in text, key
        assert "Loading" not in text and "Cannot render" not in text, key


async def test_confirm_dialog_posts_frontend_submit(page: Page, tmp_path: Path) -> None:
    init = {
        "type": "tool_init",
        "data": {
            "runId": "r1", "toolId": "t_1", "toolKey": "confirm_dialog", "toolType": "html", "toolTimeout": 300000,
            "params": {"question": "Which plan?", "options": ["Plan A", "Plan B"], "allowFreeText": True},
        },
    }
    host = tmp_path / "host.html"
    host.write_text(
        f"""<html><body><iframe id="f" src="{(VIEWPORTS / 'confirm_dialog.html').as_uri()}"></iframe><script>
        window.got = null;
        window.addEventListener("message", function (e) {{ window.got = e.data; }});
        document.getElementById("f").onload = function () {{
          document.getElementById("f").contentWindow.postMessage({json.dumps(init)}, "*");
        }};
        </script></body></html>""",
        encoding="utf-8",
    )
    await page.goto(host.as_uri())
    frame = page.frame_locator("#f")
    await frame.locator("text=Which plan?").wait_for()
    await frame.locator("text=Plan B").click()
    await frame.locator("textarea").fill("  asap ")
    await frame.locator("button.primary").click()
    await page.wait_for_function("window.got !== null")
    assert await page.evaluate("window.got") == {
        "type": "frontend_submit",
        "runId": "r1",
        "toolId": "t_1",
        "params": {
            "confirmed": True, "selectedOption": "Plan B", "selectedIndex": 1, "freeText": "asap",
            "answer": "Plan B: asap",
        },
    }


# ---- as served by the gateway, fed by a host page ------------------------------------------------

HOST = "<!DOCTYPE html><html><body><iframe id='vp'></iframe></body></html>"
POST = "message => document.getElementById('vp').contentWindow.postMessage(message, '*')"


@pytest.fixture
def served(tmp_path: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer]) -> GatewayServer:
    """A real gateway serving the repository's viewports/."""
    return start_gateway(root=make_deployment(tmp_path / "served", upstream.url))


async def _load(page: Page, gw: GatewayServer, key: str) -> Any:
    """The viewport's HTML from ``GET /api/ap/viewport``, loaded into an iframe of a host page."""
    async with httpx.AsyncClient() as client:
        envelope = (await client.get(f"{gw.url}/api/ap/viewport", params={"viewportKey": key})).json()
    assert envelope["code"] == 0, envelope
    await page.set_content(HOST)
    await page.eval_on_selector(
        "#vp", "(frame, html) => new Promise(done => { frame.onload = done; frame.srcdoc = html; })",
        envelope["data"]["html"],
    )
    return page.frame_locator("#vp")


def _forms(data: dict[str, Any]) -> dict[str, Any]:
    """The messages a host may post: our console's wrapped ones and the upstream client's bare payload."""
    return {
        "viewport_init": {"type": "viewport_init", "data": data},
        "viewport_data": {"type": "viewport_data", "data": data},
        "tool_init": {"type": "tool_init", "data": {"runId": "r1", "toolId": "t1", "params": data}},
        "bare": data,
        "bare_json_string": json.dumps(data, ensure_ascii=False),
    }


@pytest.mark.parametrize("key", list(CARDS))
async def test_served_card_renders_wrapped_and_bare_payloads(page: Page, served: GatewayServer, key: str) -> None:
    tool, args, expected = CARDS[key]
    data = await tool(args, None)
    for form, message in _forms(data).items():
        frame = await _load(page, served, key)  # a fresh card for each form
        await expect(frame.locator("#root")).to_have_text("Loading…")
        await page.evaluate(POST, message)
        await expect(frame.locator("#root")).to_contain_text(expected)
        text = await frame.locator("#root").inner_text()
        assert "Loading" not in text and "Cannot render" not in text and "No data" not in text, form


async def test_served_weather_card_shows_the_mock_values_in_english(page: Page, served: GatewayServer) -> None:
    data = await mocks.mock_city_weather({"city": "Tokyo", "date": "2026-02-13"}, None)
    frame = await _load(page, served, "show_weather_card")
    await page.evaluate(POST, data)
    root = frame.locator("#root")
    await expect(root).to_contain_text("Tokyo")
    text = await root.inner_text()
    assert data["weatherEn"] in text and "Humidity" in text and "Wind" in text
    assert not _CJK.search(text), text


@pytest.mark.parametrize("form", ["tool_init", "bare_tool_init_data", "bare_params"])
async def test_served_confirm_dialog_takes_wrapped_and_bare_payloads(
    page: Page, served: GatewayServer, form: str
) -> None:
    data = {"runId": "r9", "toolId": "t_9", "toolTimeout": 300000,
            "params": {"question": "Go to Tokyo?", "options": ["Yes", "No"], "allowFreeText": False}}
    message = {"tool_init": {"type": "tool_init", "data": data}, "bare_tool_init_data": data,
               "bare_params": data["params"]}[form]
    frame = await _load(page, served, "confirm_dialog")
    await expect(frame.locator("#card")).to_contain_text("Waiting for the question")
    await page.evaluate("() => { window.got = null; addEventListener('message', e => { window.got = e.data; }); }")
    await page.evaluate(POST, message)
    await expect(frame.locator(".question")).to_have_text("Go to Tokyo?")
    await frame.get_by_role("button", name="Yes").click()  # options only: one click answers
    await page.wait_for_function("window.got !== null")
    known = form != "bare_params"  # the bare params carry no run or tool id
    assert await page.evaluate("window.got") == {
        "type": "frontend_submit", "runId": "r9" if known else None, "toolId": "t_9" if known else None,
        "params": {"confirmed": True, "selectedOption": "Yes", "selectedIndex": 0, "freeText": None, "answer": "Yes"},
    }


async def test_attack_card_ignores_payloads_posted_by_other_windows(page: Page, served: GatewayServer) -> None:
    """Accepting bare payloads must not widen who may feed the card: only the parent page may."""
    forged = await mocks.mock_city_weather({"city": "Forgedville", "date": "2026-02-13"}, None)
    genuine = await mocks.mock_city_weather({"city": "Tokyo", "date": "2026-02-13"}, None)
    frame = await _load(page, served, "show_weather_card")
    inner = page.frames[1]
    # record every text the card ever shows, then let the card post the forged payload to itself
    await inner.evaluate("""() => {
        window.seen = [];
        new MutationObserver(() => window.seen.push(document.getElementById('root').innerText))
            .observe(document.getElementById('root'), {childList: true, subtree: true, characterData: true});
    }""")
    await inner.evaluate("message => window.postMessage(message, '*')", forged)
    await page.evaluate(POST, genuine)  # delivered after the forged one
    await expect(frame.locator("#root")).to_contain_text("Tokyo")
    seen = await inner.evaluate("window.seen")
    assert seen and not any("Forgedville" in text for text in seen)


async def test_console_shows_the_weather_card_of_the_demo_agent(
    tmp_path: Path, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    """End to end: the demo agents on the embedded demo model (no API key) → the answer's viewport
    block → the console fetches show_weather_card and renders the Tokyo weather in it."""
    with FakeUpstream(lambda request: demo_responder(request, pause_s=0)) as demo:
        root = make_deployment(tmp_path / "demo", demo.url)
        shutil.copytree(REPO / "agents", root / "agents", dirs_exist_ok=True)
        gw = start_gateway(root=root)
        await page.goto(gw.url + "/")
        await expect(page.locator('#agent option[value="demoReact"]')).to_have_count(1)
        await page.select_option("#agent", "demoReact")
        await page.fill("#message", "What's the weather in Tokyo?")
        await page.click("#send")
        answer = page.locator(".msg.assistant").last.locator(".content")
        await expect(answer.locator("iframe.viewport")).to_have_count(1)
        card = page.frame_locator(".content iframe.viewport").locator("#root")
        await expect(card).to_contain_text("Tokyo")
        await expect(card).to_contain_text("Humidity")
        await expect(answer).to_contain_text("Weather in Tokyo on ")
