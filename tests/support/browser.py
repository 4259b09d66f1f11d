"""Headless Chromium for the page tests (console, studio, files, viewports, /docs)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from playwright.async_api import Browser, Page, async_playwright
from playwright.async_api import Error as PlaywrightError

from app.errors import ToolError
from app.tools.browser import launch_chromium


@asynccontextmanager
async def headless_chromium(what: str) -> AsyncIterator[Browser]:
    """A running Chromium; when none can be launched the test is skipped with the reason printed."""
    async with async_playwright() as playwright:
        try:
            instance = await launch_chromium(playwright)
        except (ToolError, PlaywrightError) as exc:
            reason = f"{what} need headless Chromium, which cannot be launched here: {exc}"
            print(reason)
            pytest.skip(reason)
        try:
            yield instance
        finally:
            await instance.close()


@asynccontextmanager
async def checked_page(browser: Browser, timeout_ms: int, *, accept_downloads: bool = False) -> AsyncIterator[Page]:
    """A fresh page in its own context; any uncaught script error on it fails the test."""
    context = await browser.new_context(accept_downloads=accept_downloads)
    tab = await context.new_page()
    tab.set_default_timeout(timeout_ms)
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        await context.close()
    assert errors == [], errors
