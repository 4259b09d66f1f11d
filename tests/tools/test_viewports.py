"""The HTML viewports (SPEC §3.5): self-contained, and they render / submit in a real browser."""

from __future__ import annotations

import json
import re
import shutil
import urllib.parse
from pathlib import Path
from typing import Any

import pytest

from app.tools import mocks
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


@pytest.mark.parametrize("key", [*CARDS, "confirm_dialog"])
def test_viewport_is_self_contained(key: str) -> None:
    html = (VIEWPORTS / f"{key}.html").read_text(encoding="utf-8")
    assert html.lstrip().lower().startswith("<!doctype html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "@import" not in html
    assert "postMessage" in html or "addEventListener(\"message\"" in html


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
async def page() -> Any:
    playwright_api = pytest.importorskip("playwright.async_api")
    executable = _chromium()
    if executable is None:
        pytest.skip("no system chromium")
    async with playwright_api.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def test_cards_render_their_tool_result(page: Any) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    for key, (tool, args, expected) in CARDS.items():
        data = await tool(args, None)
        query = urllib.parse.quote(json.dumps(data, ensure_ascii=False))
        await page.goto((VIEWPORTS / f"{key}.html").as_uri() + "?data=" + query)
        text = await page.inner_text("#root")
        assert expected in text, key
        assert "Loading" not in text and "Cannot render" not in text, key
    assert errors == []


async def test_confirm_dialog_posts_frontend_submit(page: Any, tmp_path: Path) -> None:
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
            "answer": "Plan B：asap",
        },
    }
