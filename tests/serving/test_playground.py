"""The LangServe playground, loaded and used in a real headless browser (Debian's chromium)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.serving.conftest import RedisProcess, served

pytestmark = pytest.mark.integration


def test_playground_loads_and_answers_in_chromium(service_index: Path, redis_server: RedisProcess) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("Debian's chromium is not installed: run `make test` (it installs chromium)")
    with served(service_index, redis_server.url) as server, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}/agent/playground/")
            page.get_by_role("button", name="Start").wait_for()
            page.get_by_text("Messages", exact=False).first.wait_for()
            page.locator("button:has(svg)").first.click()  # add a message (Human by default)
            page.locator("textarea").first.fill("How does the LRU cache evict entries?")
            page.get_by_role("button", name="Start").click()
            page.get_by_text("Sources:", exact=False).first.wait_for(timeout=30_000)
            body = page.inner_text("body")
        finally:
            browser.close()
    assert "tinykv/cache.py:" in body
    assert not errors, errors
