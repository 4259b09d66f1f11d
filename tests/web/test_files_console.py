"""Files in the web console (SPEC §23) in real headless Chromium: attach with the 📎 button and
by dropping a file, ask, and download the artifact the agent published — then the same chat
reopened from its history. DOM waits only (Playwright ``expect``), no sleeps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect

from app.devtools import FakeUpstream
from app.devtools.script import text_script
from tests.engine.helpers import call
from tests.files.support import FILE_TOOLS
from tests.support.deployment import agent, write_agent
from tests.support.browser import checked_page, headless_chromium
from tests.support.server import GatewayServer
from tests.web.test_console import WAIT_MS, answer, ask, open_console

NOTES = b"Shipment 42 leaves on Friday.\n"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with headless_chromium("web console tests") as instance:
        yield instance


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    async with checked_page(browser, WAIT_MS, accept_downloads=True) as tab:
        yield tab


async def drop_file(page: Page, name: str, text: str) -> None:
    """Drag a file over the page and drop it, as a file manager does."""
    transfer = await page.evaluate_handle(
        "([name, text]) => { const dt = new DataTransfer();"
        " dt.items.add(new File([text], name, { type: 'text/plain' })); return dt; }", [name, text])
    for kind in ("dragenter", "dragover", "drop"):
        await page.dispatch_event("#log", kind, {"dataTransfer": transfer})


async def test_attach_ask_and_download_the_published_file(
    deploy: Path, upstream: FakeUpstream, start_gateway: Callable[..., GatewayServer], page: Page
) -> None:
    write_agent(deploy, "reporter", agent("REACT", tools=FILE_TOOLS))
    gw = start_gateway()
    await open_console(page, gw, "reporter")
    # 📎 → the file chooser; the upload starts at once and creates the chat
    await page.set_input_files("#attach-input", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                                        "buffer": NOTES}])
    chips = page.locator("#attachments .attachment")
    await expect(chips.locator(".name")).to_have_text(["📎 notes.txt"])
    await expect(page.locator("#attachments .attachment.ready")).to_have_count(1)
    await expect(page.locator("#chat-id")).to_contain_text("chat_")
    # a dropped file goes to the same chat
    await drop_file(page, "second.txt", "two")
    await expect(page.locator("#attachments .attachment.ready")).to_have_count(2)
    await expect(chips.nth(1)).to_have_attribute("data-reference-id", "r02")
    await expect(page.locator("#chats li")).to_have_count(1)

    upstream.enqueue(call("c1", "_artifact_publish_", {"artifacts": [{"path": "uploads/notes.txt",
                                                                      "description": "your notes"}]}),
                     text_script(["Here it is."]))
    await ask(page, "Publish my notes")
    await expect(page.locator(".msg.user .refs .ref")).to_have_text(["📎 notes.txt", "📎 second.txt"])
    await expect(page.locator("#attachments")).to_be_hidden()
    card = page.locator(".artifact")
    await expect(card.locator(".name")).to_have_text("📄 notes.txt")
    await expect(card).to_contain_text("your notes")
    await expect(page.locator(".done")).to_be_visible()
    await expect(answer(page).last).to_have_text("Here it is.")
    question = [m for m in upstream.requests[0].body["messages"] if m["role"] == "user"][-1]["content"]
    assert "[r01] notes.txt" in question and "[r02] second.txt" in question

    async with page.expect_download() as pending:
        await card.locator(".download").click()
    download = await pending.value
    assert download.suggested_filename == "notes.txt"
    assert Path(await download.path()).read_bytes() == NOTES

    # the chat reopened from its history: the question's files and the download card are back
    await page.click("#new-chat")
    await expect(card).to_have_count(0)
    await page.locator("#chats li").click()
    await expect(page.locator(".msg.user .refs .ref")).to_have_text(["📎 notes.txt", "📎 second.txt"])
    async with page.expect_download() as pending:
        await page.locator(".artifact .download").click()
    assert Path(await (await pending.value).path()).read_bytes() == NOTES
