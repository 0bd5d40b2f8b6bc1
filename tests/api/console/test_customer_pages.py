"""A customer's timeline and consent history in the console, and the paged list of customers waiting at a step,
in headless Chromium against the real stack."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.api.console.conftest import need_chromium
from tests.api.console.pages_support import API_KEY, console, fits, shot, sign_in
from tests.support.stack import Stack, eventually, stack_fixture  # noqa: F401  (registers the fixture)

pytestmark = pytest.mark.devserver

PAGE = 2


async def _started(stack: Stack, customers: int) -> tuple[dict[str, Any], list[str], list[str]]:
    """A journey (an email, then a wait) with ``customers`` who entered it and wait at its second step; returns
    the journey, the customers and their trigger events' ids."""
    journey = stack.journey()
    assert (await stack.http.post("/v1/journeys", json=journey)).status_code == 201
    ids = [await stack.customer() for _ in range(customers)]
    trigger = journey["trigger"]["event"]
    events = [{"event_id": f"ev-{c}", "customer_id": c, "name": trigger} for c in ids]
    assert (await stack.http.post("/v1/events", json={"events": events})).status_code == 202

    async def waiting() -> bool:
        report = (await stack.http.get(f"/v1/journeys/{journey['id']}/report")).json()
        steps = {s["step_id"]: s for s in report["steps"]}
        assert steps["await-done"]["waiting_now"] == customers, steps
        assert steps["hello"]["reached"] == customers, steps
        return True

    await eventually(waiting, timeout=30)
    return journey, ids, [e["event_id"] for e in events]


async def _rows(page: Any) -> list[tuple[str, str]]:
    rows = page.locator("#timeline tbody tr")
    return [(await r.get_attribute("data-kind"), (await r.inner_text())) for r in await rows.all()]


async def test_timeline_consent_history_and_paging(stack: Stack) -> None:
    need_chromium()
    journey, customers, event_ids = await _started(stack, 3)
    customer = customers[0]
    # Consent changes after the one stack.customer() made: withdrawn by the customer, granted again by support.
    consent = f"/v1/customers/{customer}/consent"
    assert (await stack.http.put(consent, json={"channels": {"email": "withdrawn"}})).status_code == 200
    assert (
        await stack.http.put(consent, json={"channels": {"email": "granted"}, "source": "support"})
    ).status_code == 200

    async with console(stack, console_page_size=PAGE) as (base, browser):
        page = await sign_in(browser, base, API_KEY)
        await page.goto(f"{base}/console/customers/{customer}")
        await page.get_by_role("link", name="Timeline").click()
        await page.wait_for_url(re.compile(r".*/timeline$"))

        # Newest first, PAGE at a time: follow "Older" to the end and read everything once.
        seen: list[tuple[str, str]] = []
        pages = 0
        while True:
            pages += 1
            rows = await _rows(page)
            assert 0 < len(rows) <= PAGE
            seen.extend(rows)
            if pages == 1:
                await shot(page, "console-timeline")
            older = page.get_by_role("link", name="Older")
            if not await older.count():
                break
            await older.click()
        assert pages >= 2
        kinds = [kind for kind, _ in seen]
        # The event, then the message it caused, then the step: newest first, so in reverse.
        assert kinds.count("event") == 1 and kinds.count("message") == 1 and kinds.count("step") == 1, seen
        assert kinds.index("step") < kinds.index("message") < kinds.index("event")
        event_line = seen[kinds.index("event")][1]
        assert journey["trigger"]["event"] in event_line
        message_line = seen[kinds.index("message")][1]
        assert "email" in message_line and f"{journey['id']} v1 / hello" in message_line and "sent" in message_line
        step_line = seen[kinds.index("step")][1]
        assert "hello" in step_line and "sent" in step_line
        assert event_ids[0]  # its own id, not another customer's: only this customer's rows are listed
        assert all(customers[1] not in line for _, line in seen)

        await page.goto(f"{base}/console/customers/{customer}")
        await page.get_by_role("link", name="Consent history").click()
        history = page.locator("#consent-history tbody tr")
        lines = [await r.inner_text() for r in await history.all()]
        assert len(lines) == 3, lines  # granted (stack.customer), withdrawn, granted again: newest first
        assert "granted" in lines[0] and "support" in lines[0]
        assert "withdrawn" in lines[1] and "api" in lines[1]
        assert "granted" in lines[2]
        await shot(page, "console-consent")

        # More customers wait at a step than a page holds: "Next page" shows the rest, each once.
        await page.goto(f"{base}/console/journeys/{journey['id']}?step=await-done")
        first = [
            await a.inner_text()
            for a in await page.locator("#waiting ul.waiting > li > a[href^='/console/customers/']").all()
        ]
        assert len(first) == PAGE
        await page.get_by_role("link", name="Next page").click()
        rest = [
            await a.inner_text()
            for a in await page.locator("#waiting ul.waiting > li > a[href^='/console/customers/']").all()
        ]
        assert sorted(first + rest) == sorted(customers)
        assert await page.get_by_role("link", name="Next page").count() == 0
        await shot(page, "console-waiting-page-2")

        phone = await sign_in(browser, base, API_KEY, width=390)
        await phone.goto(f"{base}/console/customers/{customer}/timeline")
        await fits(phone)
        await shot(phone, "console-timeline-390")
