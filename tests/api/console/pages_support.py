"""What the console page tests share: headless Chromium, signing in, the console served on a free port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from api.app import create_app
from tests.api.console.conftest import ARGS, ARTIFACTS, CHROMIUM, screenshot
from tests.api.console.conftest import sign_in as sign_in_page
from tests.support.mail import free_port
from tests.support.stack import API_KEY, Stack, make_settings, serving

READ_KEY = "console-pages-read-key"


@contextlib.asynccontextmanager
async def console(stack: Stack, **overrides: Any) -> AsyncIterator[tuple[str, Any]]:
    """The app on the stack's pool and Temporal, served on a free port with an admin and a read key; yields its
    URL and a launched headless Chromium."""
    from playwright.async_api import async_playwright

    port = free_port()
    settings = make_settings(
        public_base_url=f"http://127.0.0.1:{port}",
        api_keys=[{"key": API_KEY, "role": "admin"}, {"key": READ_KEY, "role": "read"}],
        smtp_host=stack.settings.smtp_host,
        smtp_port=stack.settings.smtp_port,
        task_queue=stack.settings.task_queue,
        **overrides,
    )
    ARTIFACTS.mkdir(exist_ok=True)
    async with serving(create_app(settings, pool=stack.pool, client=stack.client), port) as base:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                yield base, browser
            finally:
                await browser.close()


async def sign_in(browser: Any, base: str, key: str, *, width: int = 1280) -> Any:
    """A new page (JavaScript off: every page reads without it) signed in with ``key``."""
    context = await browser.new_context(java_script_enabled=False, viewport={"width": width, "height": 900})
    page = await context.new_page()
    await sign_in_page(page, base, key)
    return page


async def shot(page: Any, name: str) -> Path:
    """A full-page screenshot ``name``.png in test-artifacts/."""
    return await screenshot(page, f"{name}.png")


async def fits(page: Any, width: int = 390) -> None:
    """The page itself does not scroll sideways at ``width`` (wide tables scroll in their own box)."""
    assert await page.evaluate("document.documentElement.scrollWidth") <= width
