"""The studio (SPEC §20: ``app/web/studio.js``) in real headless Chromium against a real gateway.

Run an agent, open its timeline (every step shows its duration), inspect its raw events, edit a
question and re-run from there (a fork), see the original and the re-run side by side and both
chats; re-run a GRAPH run from a node with the graph drawn and its path highlighted; the live
runs (interrupt) and the usage page; keyboard use and the 390 px layout. DOM waits only
(Playwright ``expect``), no sleeps. ``AGW_STUDIO_SCREENSHOTS=<dir>`` also writes the README's
screenshots there (``studio-1280.png``, ``studio-390.png``).
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, Page, expect

from app.devtools import FakeUpstream
from app.devtools.script import Finish, Gate, Text, text_script
from tests.engine.helpers import call
from tests.support.deployment import agent, write_agent
from tests.support.browser import checked_page, headless_chromium
from tests.support.server import GatewayServer
from tests.web.test_console import WAIT_MS, answer, ask, open_console

WEATHER = {"backends": ["mock_city_weather"], "frontends": [], "actions": []}
#: what a step's duration cell shows: "0 ms" … "999 ms", "1.25 s", "12.5 s"
DURATION = re.compile(r"^(\d+ ms|\d+\.\d+ s)$")


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with headless_chromium("studio tests") as instance:
        yield instance


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    async with checked_page(browser, WAIT_MS) as tab:
        yield tab


def run_tools(page: Page, index: int = -1) -> Any:
    tools = page.locator("#log .run-tools")
    return tools.last if index == -1 else tools.nth(index)


async def durations(page: Page) -> list[str]:
    cells = page.locator("#studio-timeline .tl-row .tl-duration")
    return [text.strip() for text in await cells.all_inner_texts()]


async def test_timeline_edit_rerun_and_both_branches(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page,
    client: httpx.AsyncClient, tmp_path: Path,
) -> None:
    write_agent(deploy, "weather", agent("REACT", tools=WEATHER, reasoning=True))
    gw = start_gateway()
    upstream.enqueue(
        call("call_1", "mock_city_weather", {"city": "Paris", "date": "2026-11-25"}, text=("Let me check. ",)),
        text_script(["Sunny in Paris."], reasoning=["Weather looks fine."]),
        text_script(["Tomorrow: rain."]),
    )
    await open_console(page, gw, "weather")
    await ask(page, "Paris weather?")
    await expect(page.locator(".done")).to_have_count(1)
    await ask(page, "And tomorrow?")
    await expect(page.locator(".done")).to_have_count(2)

    # the first run's timeline: the run, two model calls and the tool call, each with a duration
    await run_tools(page, 0).get_by_role("button", name="Timeline of this run").click()
    timeline = page.locator("#studio-timeline")
    await expect(page.locator("#studio")).to_be_visible()
    await expect(page.locator("#tab-timeline")).to_have_attribute("aria-selected", "true")
    rows = timeline.locator(".tl-row")
    await expect(rows).to_have_count(4)
    assert [await rows.nth(i).get_attribute("class") for i in range(4)] == [
        "tl-row tl-run", "tl-row tl-model", "tl-row tl-tool", "tl-row tl-model"]
    cells = await durations(page)
    assert len(cells) == 4 and all(DURATION.match(cell) for cell in cells), cells
    await expect(rows.nth(1).locator(".tl-label")).to_contain_text("fake-openai → mock_city_weather")
    await expect(rows.nth(1).locator(".tl-meta")).to_have_text("10→5 tok")
    await expect(rows.nth(2).locator(".tl-label")).to_have_text("tool · mock_city_weather")
    await expect(timeline.locator(".tl-summary dd").nth(2)).to_have_text("30 (20 in / 10 out)")
    await expect(timeline.locator(".tl-summary dd").nth(3)).to_have_text("0.5")  # points of the run
    await expect(timeline.locator(".tl-bar")).to_have_count(4)
    await rows.nth(2).locator("summary").click()  # a step opens to its arguments and result
    await expect(rows.nth(2).locator(".tl-detail")).to_contain_text('"city":"Paris"')

    # edit the second question and re-run from there: a fork holding the first run, then the new question
    upstream.enqueue(text_script(["Rome: sun."]))
    sent_before = upstream.requests[2].body["messages"]
    await page.locator("#log .user-tools").nth(1).get_by_role("button", name="Edit this question").click()
    editor = page.locator(".edit-form textarea")
    await expect(editor).to_be_focused()
    await expect(editor).to_have_value("And tomorrow?")
    await editor.fill("And in Rome?")
    await page.locator(".edit-form").get_by_role("button", name="Re-run from here").click()

    # side by side: the original and the re-run
    await expect(page.locator("#tab-compare")).to_have_attribute("aria-selected", "true")
    columns = page.locator("#studio-compare .compare-col")
    await expect(columns).to_have_count(2)
    await expect(columns.nth(0).locator(".compare-question")).to_have_text("And tomorrow?")
    await expect(columns.nth(0).locator(".compare-answer")).to_have_text("Tomorrow: rain.")
    await expect(columns.nth(1).locator(".compare-question")).to_have_text("And in Rome?")
    await expect(columns.nth(1).locator(".compare-answer")).to_have_text("Rome: sun.")
    await expect(page.locator("#studio-compare .compare-diff")).to_contain_text("Different answers.")
    assert all(DURATION.match(t.strip()) for t in await columns.locator(".tl-duration").all_inner_texts())
    await page.screenshot(path=str(tmp_path / "studio-compare-1280.png"), animations="disabled")

    # the model got exactly the copied history and the edited question
    sent = upstream.requests[3].body["messages"]
    assert sent[:-1] == sent_before[:-1] and sent[-1] == {"role": "user", "content": "And in Rome?"}

    # both branches: the fork on screen (the first run copied, the new question), the original in the list
    await expect(page.locator(".fork-banner")).to_contain_text("Fork of “Paris weather?”")
    await expect(page.locator("#log .msg.user")).to_have_text(["Paris weather?", "And in Rome?"])
    await expect(page.locator("#chats li")).to_have_count(2)
    await expect(page.locator("#chats li.fork")).to_have_count(1)
    await expect(page.locator("#chats li.fork")).to_have_class(re.compile(r"\bactive\b"))  # the fork is on screen
    await expect(page.locator("#log .run-tools").last.get_by_role("button", name="Compare with the original run")) \
        .to_be_visible()
    await page.locator(".fork-banner").get_by_role("button", name="Open original").click()
    await expect(page.locator("#log .msg.user")).to_have_text(["Paris weather?", "And tomorrow?"])
    await expect(answer(page)).to_have_text("Tomorrow: rain.")
    chats = (await client.get(f"{gw.url}/api/ap/chats")).json()["data"]
    assert sorted(c["chatName"] for c in chats) == ["Paris weather?", "Paris weather?"]
    (fork,) = [c for c in chats if "forkedFrom" in c]
    (original,) = [c for c in chats if "forkedFrom" not in c]
    assert fork["forkedFrom"]["chatId"] == original["chatId"] and fork["forkedFrom"]["position"] == "before"
    await expect(page.locator("#chats li:not(.fork)")).to_have_class(re.compile(r"\bactive\b"))


async def test_rerun_from_here_and_the_event_inspector(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    write_agent(deploy, "weather", agent("REACT", tools=WEATHER))
    gw = start_gateway()
    upstream.enqueue(call("call_1", "mock_city_weather", {"city": "Oslo", "date": "2026-11-25"}),
                     text_script(["Snow."]))
    await open_console(page, gw, "weather")
    await ask(page, "Oslo?")
    await expect(page.locator(".done")).to_have_count(1)

    # the raw events as the page received them, filterable
    await run_tools(page).get_by_role("button", name="Raw events of this run").click()
    events = page.locator("#studio-events .events-list > li")
    await expect(page.locator("#studio-events .events-source")).to_contain_text("as this page received them")
    first_types = await events.evaluate_all("items => items.map(i => i.dataset.type)")
    assert first_types[:3] == ["request.query", "chat.start", "run.start"] and first_types[-1] == "run.complete"
    assert "tool.args" in first_types and "content.delta" in first_types
    await page.fill("#events-filter", "tool.")
    visible = page.locator("#studio-events .events-list > li:not([hidden])")
    await expect(visible.first).to_have_attribute("data-type", "tool.start")
    assert set(await visible.evaluate_all("items => items.map(i => i.dataset.type)")) == {
        "tool.start", "tool.args", "tool.end", "tool.result"}
    await page.locator("#events-deltas").uncheck()
    assert set(await visible.evaluate_all("items => items.map(i => i.dataset.type)")) == {
        "tool.start", "tool.end", "tool.result"}
    await visible.first.locator("summary").click()
    await expect(visible.first.locator("pre")).to_contain_text('"toolName": "mock_city_weather"')

    # re-run the same question from here: a fork before the run, the same question asked again
    upstream.enqueue(call("call_2", "mock_city_weather", {"city": "Oslo", "date": "2026-11-26"}),
                     text_script(["Sleet."]))
    await run_tools(page).get_by_role("button", name="Re-run from here").click()
    columns = page.locator("#studio-compare .compare-col")
    await expect(columns).to_have_count(2)
    await expect(columns.locator(".compare-question")).to_have_text(["Oslo?", "Oslo?"])
    await expect(columns.locator(".compare-answer")).to_have_text(["Snow.", "Sleet."])
    assert upstream.requests[2].body["messages"] == upstream.requests[0].body["messages"]

    # a run this page did not follow: the gateway's replay (the run is still retained)
    await page.reload()
    await expect(page.locator(".done")).to_have_count(1)
    await run_tools(page).get_by_role("button", name="Raw events of this run").click()
    await expect(page.locator("#studio-events .events-source")).to_contain_text("the gateway's replay")
    await expect(events.last).to_have_attribute("data-type", "run.complete")


REVIEW_LOOP = {
    "state": {"draft": {"type": "string"}, "review": {"type": "object"}, "rounds": {"type": "integer", "initial": 0}},
    "nodes": [
        {"name": "write", "kind": "llm", "description": "Write a draft", "prompt": "Write about ${message}.",
         "output": "draft"},
        {"name": "review", "kind": "llm", "description": "Review the draft", "prompt": "Review: ${state.draft}",
         "outputFormat": "json", "output": "review", "update": {"rounds": "state.rounds + 1"}},
    ],
    "edges": [{"from": "START", "to": "write"}, {"from": "write", "to": "review"},
              {"from": "review", "to": "END", "condition": "state.review.passed == true"},
              {"from": "review", "to": "write", "condition": "!state.review.passed && state.rounds < 3"},
              {"from": "review", "to": "END"}],
    "answer": "${state.draft} (${state.rounds} rounds)",
}


async def run_review_loop(page: Page, gw: GatewayServer, upstream: FakeUpstream) -> None:
    upstream.enqueue(text_script(["Draft one."]), text_script(['{"passed": false}']),
                     text_script(["Draft two."]), text_script(['{"passed": true}']))
    await open_console(page, gw, "loop")
    await ask(page, "tea")
    await expect(page.locator(".done")).to_have_count(1)
    await run_tools(page).get_by_role("button", name="Timeline of this run").click()
    await expect(page.locator("#studio-timeline svg.graph")).to_be_visible()


async def test_graph_run_is_drawn_with_its_path_and_reruns_from_a_node(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    write_agent(deploy, "loop", {"name": "Review loop", "modelConfig": {"modelKey": "fake-openai"}, "mode": "GRAPH",
                                 "graph": REVIEW_LOOP})
    gw = start_gateway()
    await run_review_loop(page, gw, upstream)
    graph = page.locator("#studio-timeline svg.graph")
    # generated from the definition: every node and edge, START and END
    await expect(graph.locator("g.node")).to_have_count(4)
    await expect(graph.locator("path.edge")).to_have_count(5)
    assert await graph.locator("g.node").evaluate_all("gs => gs.map(g => g.dataset.node)") == [
        "START", "write", "review", "END"]
    # the path taken: write and review twice, then END by the first (passed) edge; the unused edge is not lit
    await expect(graph.locator("g.node.visited")).to_have_count(4)
    await expect(graph.locator('g.node[data-node="write"] .node-visits')).to_have_text("×2")
    hot = await graph.locator("path.edge.hot").evaluate_all("ps => ps.map(p => p.dataset.from + '>' + p.dataset.to)")
    assert sorted(hot) == ["START>write", "review>END", "review>write", "write>review"]
    assert await graph.locator("path.edge:not(.hot)").count() == 1  # the fallback review → END
    # graph nodes as bars in the timeline, each with its model call and a duration
    tasks = page.locator("#studio-timeline .tl-row.tl-task")
    await expect(tasks).to_have_count(4)
    await expect(tasks.locator(".tl-label")).to_have_text(
        ["node write · Write a draft", "node review · Review the draft", "node write#2 · Write a draft",
         "node review#2 · Review the draft"])
    cells = await durations(page)
    assert all(DURATION.match(cell) for cell in cells), "\n".join(cells)

    # re-run from the second review with an edited draft: the fork restarts at that node
    upstream.enqueue(text_script(['{"passed": true}']))
    await graph.locator('g.node[data-node="review"]').focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#node-fork-node")).to_be_focused()
    await page.select_option("#node-fork-node", "review#2")
    await page.fill("#node-fork-state", '{"draft": "Edited draft."}')
    await page.get_by_role("button", name="Re-run from this node").click()
    columns = page.locator("#studio-compare .compare-col")
    await expect(columns).to_have_count(2)
    await expect(columns.nth(1).locator(".compare-answer")).to_have_text("Edited draft. (2 rounds)")
    await expect(columns.nth(0).locator(".compare-answer")).to_have_text("Draft two. (2 rounds)")
    assert upstream.requests[4].body["messages"][-1] == {"role": "user", "content": "Review: Edited draft."}
    await expect(page.locator(".fork-banner")).to_contain_text("at node review#2")


async def test_live_runs_interrupt_and_usage_page(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    write_agent(deploy, "plain", agent())
    gw = start_gateway()
    upstream.enqueue(text_script(["Done."]))
    await open_console(page, gw, "plain")
    await ask(page, "first")
    await expect(page.locator(".done")).to_have_count(1)

    upstream.enqueue([Text("Working"), Gate("hold"), Text("…"), Finish()])
    await ask(page, "second")
    await expect(answer(page)).to_have_text("Working")
    await page.click("#studio-toggle")
    await page.click("#tab-runs")
    cards = page.locator("#studio-runs .run-card")
    running = page.locator('#studio-runs .run-card[data-status="running"]')
    await expect(running).to_have_count(1)
    await expect(page.locator('#studio-runs .run-card[data-status="completed"]')).to_have_count(1)
    await running.get_by_role("button", name=re.compile("^Interrupt run")).click()
    await expect(page.locator(".done").last).to_have_text("cancelled")
    await expect(page.locator('#studio-runs .run-card[data-status="cancelled"]')).to_have_count(1)
    await expect(cards).to_have_count(2)
    upstream.release("hold")

    # usage per day, agent and model (GET /api/ap/usage)
    await page.click("#tab-usage")
    rows = page.locator("#studio-usage .usage-table tbody tr")
    await expect(rows).to_have_count(1)
    await expect(page.locator("#studio-usage .usage-table tfoot")).to_contain_text("total")
    await page.select_option("#usage-group", "agent")
    await page.get_by_role("button", name="Show").click()
    await expect(rows.first.locator("td").first).to_have_text("plain")
    await page.select_option("#usage-group", "model")
    await page.get_by_role("button", name="Show").click()
    await expect(rows.first.locator("td").first).to_have_text("fake-openai")
    await expect(rows.first.locator("td").nth(1)).to_have_text("2")  # two model calls


async def test_keyboard_focus_and_phone_layout(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page, tmp_path: Path
) -> None:
    write_agent(deploy, "loop", {"name": "Review loop", "modelConfig": {"modelKey": "fake-openai"}, "mode": "GRAPH",
                                 "graph": REVIEW_LOOP})
    gw = start_gateway()
    await page.set_viewport_size({"width": 1280, "height": 800})
    await run_review_loop(page, gw, upstream)
    shots = [tmp_path]
    if os.environ.get("AGW_STUDIO_SCREENSHOTS"):
        shots.append(Path(os.environ["AGW_STUDIO_SCREENSHOTS"]))
    for folder in shots:
        await page.screenshot(path=str(folder / "studio-1280.png"), animations="disabled")

    # the tabs are a keyboard tab list; focus is visible; Escape closes and gives focus back
    await page.focus("#tab-timeline")
    await page.keyboard.press("ArrowRight")
    await expect(page.locator("#tab-events")).to_be_focused()
    await expect(page.locator("#tab-events")).to_have_attribute("aria-selected", "true")
    await page.keyboard.press("End")
    await expect(page.locator("#tab-usage")).to_be_focused()
    outline = await page.locator("#tab-usage").evaluate("b => getComputedStyle(b).outlineStyle")
    assert outline == "solid"
    await page.keyboard.press("Home")
    await expect(page.locator("#tab-timeline")).to_be_focused()
    await page.keyboard.press("Escape")
    await expect(page.locator("#studio")).to_be_hidden()
    await expect(page.locator("#log .run-tools button").first).to_be_focused()  # back where it was opened
    # a chat opens from the keyboard
    await page.locator("#new-chat").click()
    await expect(page.locator("#log > *")).to_have_count(0)
    await page.locator("#chats li").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator(".done")).to_have_count(1)

    # 390 px: the studio is a full-width sheet, nothing overflows sideways
    await page.set_viewport_size({"width": 390, "height": 844})
    await run_tools(page).get_by_role("button", name="Timeline of this run").click()
    await expect(page.locator("#studio-timeline svg.graph")).to_be_visible()
    sizes = await page.evaluate(
        "() => ({scroll: document.scrollingElement.scrollWidth, inner: innerWidth,"
        " studio: document.getElementById('studio').getBoundingClientRect().width,"
        " rows: Math.max(...[...document.querySelectorAll('.tl-row')].map(r => r.getBoundingClientRect().right))})")
    assert sizes["scroll"] <= sizes["inner"] == 390, sizes
    assert sizes["studio"] == 390 and sizes["rows"] <= 390, sizes
    for folder in shots:
        await page.screenshot(path=str(folder / "studio-390.png"), animations="disabled")
    await page.locator("#studio-close").click()
    await expect(page.locator("#studio")).to_be_hidden()
