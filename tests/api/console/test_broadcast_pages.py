"""Segments and broadcasts in the console, in headless Chromium against the real stack: a broadcast made in the
browser from a named segment (its audience count equal to the count API's), previewed for a customer, sent, and
its page's figures equal to ``GET /v1/broadcasts/{id}``; a scheduled one cancelled after a confirmation; a
read-only key sees no create button and its POST is refused."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.api.console.conftest import need_chromium
from tests.api.console.pages_support import API_KEY, READ_KEY, console, fits, shot, sign_in
from tests.support.engine import where_tag
from tests.support.stack import Stack, eventually, stack_fixture  # noqa: F401  (registers the fixture)

pytestmark = pytest.mark.devserver


async def _member(stack: Stack, tag: str, first_name: str) -> str:
    customer_id = f"cust-{uuid.uuid4().hex[:10]}"
    response = await stack.http.put(
        f"/v1/customers/{customer_id}",
        json={"email": f"{customer_id}@example.com", "attributes": {"tag": tag, "first_name": first_name}},
    )
    assert response.status_code == 200, response.text
    response = await stack.http.put(f"/v1/customers/{customer_id}/consent", json={"channels": {"email": "granted"}})
    assert response.status_code == 200, response.text
    return customer_id


async def _figure(page: Any, selector: str) -> str:
    return (await page.locator(selector).first.inner_text()).strip()


async def test_broadcast_from_a_named_segment_in_the_browser(stack: Stack) -> None:
    need_chromium()
    tag = uuid.uuid4().hex
    names = {await _member(stack, tag, name): name for name in ("Ada", "Grace", "Linus")}
    first = sorted(names)[0]
    segment_id = f"seg-{uuid.uuid4().hex[:8]}"
    where = where_tag(tag)
    assert (await stack.http.put(f"/v1/segments/{segment_id}", json=where)).status_code == 201
    counted = (await stack.http.get(f"/v1/segments/{segment_id}/count", params={"sample": 20})).json()
    assert counted["count"] == 3

    async with console(stack) as (base, browser):
        page = await sign_in(browser, base, API_KEY)
        await page.get_by_role("link", name="Segments").click()
        await page.locator(f'tr[data-segment="{segment_id}"]').get_by_role("link", name=segment_id, exact=True).click()
        assert await _figure(page, '#count [data-figure="count"]') == str(counted["count"])
        listed = [await a.inner_text() for a in await page.locator("#members a").all()]
        assert listed == counted["sample"]
        await shot(page, "console-segment")
        await page.get_by_role("link", name="New broadcast to this segment…").click()

        # The form: the segment chosen, its audience count as the API counts it.
        assert await page.get_by_label("Named segment").input_value() == segment_id
        assert await _figure(page, '#audience [data-figure="count"]') == str(counted["count"])
        await page.get_by_label("Name (optional)").fill(f"Launch {tag[:6]}")
        await page.get_by_label(re.compile(r"^Subject")).fill("Hello {{ customer.first_name }}")
        await page.get_by_label(re.compile(r"^Text")).fill("News for {{ customer.first_name }}.")
        styled = (
            '<p id="dear" style="color: rgb(176, 0, 32); font-size: 22px">Dear <b>{{ customer.first_name }}</b></p>'
        )
        await page.get_by_label(re.compile(r"^HTML")).fill(styled)
        assert await page.get_by_label("Customer id").input_value() == first  # the first member by default
        form_page = await page.request.get(f"{base}/console/broadcasts/new")
        assert "'unsafe-inline'" not in form_page.headers["content-security-policy"]  # no preview: the strict policy
        async with page.expect_response(f"{base}/console/broadcasts/new") as answer:
            await page.get_by_role("button", name="Preview for this customer").click()
        # The page showing a preview lets the email's inline styles apply, and nothing else: no script, nothing from
        # outside (the editor's page has the same rule).
        policy = (await answer.value).headers["content-security-policy"]
        assert "style-src 'self' 'unsafe-inline';" in policy and "script-src 'self';" in policy
        preview = page.locator("#preview")
        assert await preview.locator('[data-channel="email"] [data-field="subject"]').inner_text() == (
            f"Hello {names[first]}"
        )
        assert f"News for {names[first]}." in (await preview.locator('[data-field="text"]').text_content() or "")
        frame = page.frame_locator("#email-frame")
        assert await frame.locator("b").inner_text() == names[first]
        assert await page.locator("#email-frame").get_attribute("sandbox") == ""
        # The email as styled by its own inline style, as in the editor's preview.
        dear = frame.locator("#dear")
        assert await dear.evaluate("p => getComputedStyle(p).color") == "rgb(176, 0, 32)"
        assert await dear.evaluate("p => getComputedStyle(p).fontSize") == "22px"
        assert (await page.locator("#decision").inner_text()).startswith("Would send on email")
        await page.locator("#email-frame").scroll_into_view_if_needed()
        await shot(page, "console-broadcast-new")
        await page.set_viewport_size({"width": 390, "height": 844})  # the form and its preview, on a phone
        await fits(page)
        await page.locator("#email-frame").scroll_into_view_if_needed()
        await shot(page, "console-broadcast-new-390")
        await page.set_viewport_size({"width": 1280, "height": 900})

        await page.get_by_role("button", name="Create and schedule").click()
        await page.wait_for_url(re.compile(r".*/console/broadcasts/b-[0-9a-f]+\?done=create$"))
        broadcast_id = page.url.split("/console/broadcasts/")[1].split("?")[0]

        async def completed() -> dict[str, Any]:
            view = (await stack.http.get(f"/v1/broadcasts/{broadcast_id}")).json()
            assert view["status"] == "completed", view
            return view

        view = await eventually(completed, timeout=30)
        await page.reload()
        assert await _figure(page, '[data-figure="status"]') == "completed"
        assert await _figure(page, '#progress [data-figure="audience"]') == str(view["audience"]) == "3"
        assert await _figure(page, '#progress [data-figure="done"]') == str(view["progress"]["done"])
        assert await _figure(page, '#progress [data-figure="total"]') == str(view["progress"]["total"])
        for status, n in view["progress"]["by_status"].items():
            assert await _figure(page, f'#by-status [data-figure="{status}"]') == str(n)
        assert await page.locator("#by-status tbody tr").count() == len(view["progress"]["by_status"])
        for figure in ("sent", "opened", "clicked"):
            assert await _figure(page, f'#report [data-figure="{figure}"]') == str(view["report"][figure])
        assert view["report"]["sent"] == 3
        assert await page.locator("progress").get_attribute("value") == str(view["progress"]["done"])
        await shot(page, "console-broadcast")

        await page.get_by_role("link", name="Broadcasts").click()
        row = page.locator(f'tr[data-broadcast="{broadcast_id}"]')
        assert await _figure(row, '[data-figure="audience"]') == "3"
        assert await _figure(row, '[data-figure="sent"]') == str(view["report"]["sent"])
        await shot(page, "console-broadcasts")

        # Scheduled for later (an instant), then cancelled after a confirmation that says who is left out.
        await page.get_by_role("link", name="New broadcast…").click()
        await page.get_by_label("Named segment").select_option(segment_id)
        await page.get_by_label(re.compile(r"^Subject")).fill("Later")
        await page.get_by_label(re.compile(r"^Text")).fill("Later news.")
        await page.get_by_label("At this instant (UTC)").check()
        await page.get_by_label("Date and time").fill("2031-01-02T10:00")
        await page.get_by_role("button", name="Create and schedule").click()
        await page.wait_for_url(re.compile(r".*\?done=create$"))
        later = page.url.split("/console/broadcasts/")[1].split("?")[0]

        async def frozen() -> dict[str, Any]:
            view = (await stack.http.get(f"/v1/broadcasts/{later}")).json()
            assert view["progress"]["by_status"] == {"pending": 3}, view
            return view

        view = await eventually(frozen, timeout=30)
        assert view["definition"]["send_at"].startswith("2031-01-02T10:00:00")
        await page.reload()
        await page.get_by_role("link", name="Cancel…").click()
        assert "The 3 recipient(s) not sent yet" in await page.locator("#affects").inner_text()
        await shot(page, "console-broadcast-confirm")
        await page.set_viewport_size({"width": 390, "height": 844})
        await fits(page)
        await shot(page, "console-broadcast-confirm-390")
        await page.set_viewport_size({"width": 1280, "height": 900})
        await page.get_by_role("button", name="Yes, cancel the broadcast").click()
        await page.wait_for_url(re.compile(r".*\?done=cancel$"))
        assert (await stack.http.get(f"/v1/broadcasts/{later}")).json()["status"] == "cancelled"
        assert await _figure(page, '[data-figure="status"]') == "cancelled"

        # A read-only key, on a phone: no create button, no actions, and its POST is refused.
        phone = await sign_in(browser, base, READ_KEY, width=390)
        await phone.goto(f"{base}/console/broadcasts")
        assert await phone.get_by_role("link", name="New broadcast…").count() == 0
        await fits(phone)
        await phone.goto(f"{base}/console/broadcasts/{broadcast_id}")
        assert await _figure(phone, '#report [data-figure="sent"]') == "3"
        assert await phone.get_by_role("link", name=re.compile("Pause|Cancel|Resume")).count() == 0
        await fits(phone)
        await shot(phone, "console-broadcast-390")
        await phone.goto(f"{base}/console/segments")
        await fits(phone)
        await shot(phone, "console-segments-390")
        csrf = await phone.locator('input[name="csrf"]').first.get_attribute("value")
        form = {"csrf": csrf or "", "segment": segment_id, "subject": "x", "text": "y", "do": "create"}
        before = len((await stack.http.get("/v1/broadcasts")).json())
        refused = await phone.request.post(f"{base}/console/broadcasts/new", form=form)
        assert refused.status == 403
        assert len((await stack.http.get("/v1/broadcasts")).json()) == before
        refused = await phone.request.post(f"{base}/console/broadcasts/{broadcast_id}/cancel", form={"csrf": csrf})
        assert refused.status == 403
        assert (await stack.http.get(f"/v1/broadcasts/{broadcast_id}")).json()["status"] == "completed"


async def _reload_until_count(page: Any, expected: int) -> None:
    async def shown() -> bool:
        await page.reload()
        assert await _figure(page, '[data-reach] [data-figure="count"]') == str(expected)
        return True

    await eventually(shown, timeout=30)


async def test_a_segment_page_shows_the_kept_count_at_once_and_count_now_recounts(stack: Stack) -> None:
    need_chromium()
    tag = uuid.uuid4().hex
    first = await _member(stack, tag, "Ada")
    segment_id = f"seg-{uuid.uuid4().hex[:8]}"
    where = where_tag(tag)
    assert (await stack.http.put(f"/v1/segments/{segment_id}", json=where)).status_code == 201
    assert (await stack.http.get(f"/v1/segments/{segment_id}/count")).json()["count"] == 1
    second = await _member(stack, tag, "Grace")

    async with console(stack, segment_count_max_age_seconds=3600) as (base, browser):
        page = await sign_in(browser, base, API_KEY)
        await page.goto(f"{base}/console/segments/{segment_id}")
        # Fresh enough: the kept count, said to be one, and no recount.
        assert await _figure(page, '#count [data-figure="count"]') == "1"
        assert re.fullmatch(r"counted \d+ seconds? ago", await _figure(page, '#count [data-figure="age"]'))
        assert await page.locator('[data-figure="counting"]').count() == 0
        assert [await a.inner_text() for a in await page.locator("#members a").all()] == [first]
        await shot(page, "console-segment-kept")

        await page.get_by_role("button", name="Count now").click()
        await page.wait_for_url(re.compile(r".*\?recount=(started|counting)$"))
        assert "reload" in await _figure(page, "#recount")
        await _reload_until_count(page, 2)
        assert [await a.inner_text() for a in await page.locator("#members a").all()] == sorted([first, second])
        assert (await stack.http.get(f"/v1/segments/{segment_id}/count", params={"max_age": 3600})).json()[
            "stored"
        ] is True

        # The list shows the kept count of each segment.
        await page.get_by_role("link", name="Segments").click()
        assert await _figure(page, f'tr[data-segment="{segment_id}"] [data-figure="count"]') == "2"

        # A read key sees the count but no "Count now", and its POST is refused.
        reader = await sign_in(browser, base, READ_KEY)
        await reader.goto(f"{base}/console/segments/{segment_id}")
        assert await _figure(reader, '#count [data-figure="count"]') == "2"
        assert await reader.get_by_role("button", name="Count now").count() == 0
        csrf = await reader.locator('input[name="csrf"]').first.get_attribute("value")
        refused = await reader.request.post(f"{base}/console/segments/{segment_id}/count", form={"csrf": csrf or ""})
        assert refused.status == 403


async def test_a_stale_count_is_shown_while_the_page_recounts_it(stack: Stack) -> None:
    from playwright.async_api import expect

    from tests.api.console.conftest import sign_in as sign_in_with_script

    need_chromium()
    tag = uuid.uuid4().hex
    await _member(stack, tag, "Ada")
    segment_id = f"seg-{uuid.uuid4().hex[:8]}"
    where = where_tag(tag)
    assert (await stack.http.put(f"/v1/segments/{segment_id}", json=where)).status_code == 201

    async with console(stack, segment_count_max_age_seconds=0) as (base, browser):
        # Without JavaScript: never counted, so "Counting…" at once; a reload shows the count.
        page = await sign_in(browser, base, API_KEY)
        await page.goto(f"{base}/console/segments/{segment_id}")
        assert "Not counted yet" in await page.locator("#count").inner_text()
        assert await page.locator('#count [data-figure="counting"]').count() == 1
        await _reload_until_count(page, 1)

        # With JavaScript: the stale count at once, then the recount in place, on the new-broadcast form too
        # (what was typed stays).
        await _member(stack, tag, "Grace")
        context = await browser.new_context(java_script_enabled=True)
        live = await context.new_page()
        await sign_in_with_script(live, base, API_KEY)
        await live.goto(f"{base}/console/broadcasts/new?segment={segment_id}")
        await live.get_by_label("Name (optional)").fill("Kept while counting")
        audience = live.locator("#audience")
        assert await audience.locator('[data-figure="counting"]').count() == 1
        await expect(audience.locator('[data-figure="count"]')).to_have_text("2", timeout=30_000)  # no reload
        await expect(audience.locator('[data-figure="counting"]')).to_have_text("Counted.")
        assert await live.get_by_label("Name (optional)").input_value() == "Kept while counting"
        await shot(live, "console-broadcast-new-recounted")
