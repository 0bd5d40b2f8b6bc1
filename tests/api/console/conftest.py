"""What the console's browser tests share: headless Chromium (Debian's, at ``CHROMIUM``), signing in, and where
screenshots go (``test-artifacts/``). Import the helpers from here; fixtures defined here are named ``console_*``."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip


def need_chromium() -> None:
    if not (os.path.exists(CHROMIUM) and shutil.which("chromium")):
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is missing at {CHROMIUM}: .ci/run installs it with apt-get")
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")


async def sign_in(page: Any, base: str, key: str) -> None:
    """Sign in from the console's home with the keyboard only; lands on the journeys list."""
    await page.goto(f"{base}/console")
    assert "/console/login" in page.url  # not signed in: the sign-in form
    await page.get_by_label("API key").fill(key)
    await page.get_by_label("API key").press("Enter")  # keyboard only
    await page.wait_for_url(re.compile(r".*/console/journeys$"))


async def screenshot(page: Any, name: str) -> Path:
    """A full-page screenshot in test-artifacts/ (checked to be a real image, not an empty page)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    await page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{name}: {path.stat().st_size} bytes, is the page blank?"
    return path
