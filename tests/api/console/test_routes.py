"""The console in a real headless Chromium, against the real app, with customers running the abandoned-cart journey
on the dev server: sign in, figures equal the report API's, who waits where, roles, /docs offline, screenshots."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from api.app import create_app
from tests.api.console.conftest import ARGS, ARTIFACTS, CHROMIUM, need_chromium, sign_in
from tests.support.engine import EXAMPLES
from tests.support.mail import free_port
from tests.support.stack import API_KEY, Stack, eventually, make_settings, serving, stack_fixture  # noqa: F401

pytestmark = pytest.mark.devserver

READ_KEY = "console-read-key"


async def _running_cart(stack: Stack) -> tuple[str, list[str]]:
    """The abandoned-cart example under a unique id and trigger, with two customers waiting in its first step."""
    tag = uuid.uuid4().hex[:8]
    text = (EXAMPLES / "abandoned-cart.yaml").read_text()
    text = text.replace("id: abandoned-cart", f"id: abandoned-cart-{tag}", 1)
    text = text.replace("event: cart_abandoned", f"event: cart_abandoned_{tag}", 1)
    response = await stack.http.post("/v1/journeys", content=text, headers={"content-type": "application/yaml"})
    assert response.status_code == 201, response.text
    journey_id = f"abandoned-cart-{tag}"
    customers = [await stack.customer(), await stack.customer()]
    events = [{"customer_id": c, "name": f"cart_abandoned_{tag}", "properties": {"cart_value": 42}} for c in customers]
    assert (await stack.http.post("/v1/events", json={"events": events})).status_code == 202

    async def waiting() -> dict[str, Any]:
        report = (await stack.http.get(f"/v1/journeys/{journey_id}/report")).json()
        steps = {s["step_id"]: s for s in report["steps"]}
        assert steps["wait-1-hour"]["waiting_now"] == 2, steps["wait-1-hour"]
        return report

    await eventually(waiting, timeout=30)
    return journey_id, customers


async def test_console_in_headless_chromium(stack: Stack) -> None:
    need_chromium()
    from playwright.async_api import async_playwright

    journey_id, customers = await _running_cart(stack)
    port = free_port()
    settings = make_settings(
        public_base_url=f"http://127.0.0.1:{port}",
        api_keys=[{"key": API_KEY, "role": "admin"}, {"key": READ_KEY, "role": "read"}],
        temporal_ui_url="http://temporal-ui.test:8233",
    )
    ARTIFACTS.mkdir(exist_ok=True)
    async with serving(create_app(settings, pool=stack.pool, client=stack.client), port) as base:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                context = await browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
                page = await context.new_page()
                await sign_in(page, base, API_KEY)
                row = page.locator(f'tr[data-journey="{journey_id}"]')
                assert await row.locator('[data-figure="running"]').inner_text() == "2"
                assert await row.locator('[data-figure="entered"]').inner_text() == "2"
                await page.screenshot(path=str(ARTIFACTS / "console-journeys.png"), full_page=True)

                await row.get_by_role("link").click()
                await page.wait_for_url(re.compile(f".*/console/journeys/{journey_id}$"))
                report = (await stack.http.get(f"/v1/journeys/{journey_id}/report")).json()
                for step in report["steps"]:
                    node = page.locator(f'svg a[data-step="{step["step_id"]}"]')
                    assert await node.locator('[data-figure="reached"]').text_content() == f"reached {step['reached']}"
                    waiting = "?" if step["waiting_now"] is None else step["waiting_now"]
                    assert await node.locator('[data-figure="waiting"]').text_content() == f"waiting {waiting}"
                    line = page.locator(f'#step-figures tr[data-step="{step["step_id"]}"]')
                    assert await line.locator('[data-figure="reached"]').inner_text() == str(step["reached"])
                # Edges carry their branch, to the step the workflow would go to.
                edges = page.locator('g.edge[data-source="wait-for-click"]')
                branches = {
                    await edges.nth(i).get_attribute("data-branch"): await edges.nth(i).get_attribute("data-target")
                    for i in range(await edges.count())
                }
                assert branches == {"on_event": "wait-for-order", "on_timeout": "cart-push"}
                await page.screenshot(path=str(ARTIFACTS / "console-journey.png"), full_page=True)

                await page.locator('svg a[data-step="wait-1-hour"]').click()  # who waits there
                waiting_list = page.locator("#waiting")
                for customer in customers:
                    link = waiting_list.get_by_role("link", name=customer, exact=True)
                    assert await link.count() == 1
                runs = waiting_list.get_by_role("link", name="run in the Temporal UI")
                assert (await runs.first.get_attribute("href") or "").startswith("http://temporal-ui.test:8233/")
                await page.screenshot(path=str(ARTIFACTS / "console-waiting.png"), full_page=True)

                await page.get_by_role("link", name="Pause…").click()
                assert "affects 2 customer(s)" in await page.locator("#affects").inner_text()
                await page.screenshot(path=str(ARTIFACTS / "console-confirm.png"), full_page=True)
                await page.get_by_role("button", name="Yes, pause the journey").click()
                await page.wait_for_url(re.compile(".*done=pause"))
                assert (await stack.http.get(f"/v1/journeys/{journey_id}")).json()["status"] == "paused"

                await page.get_by_role("link", name="Customers").click()
                await page.get_by_label("Customer id or email").fill(f"{customers[0]}@example.com")
                await page.get_by_label("Customer id or email").press("Enter")
                await page.locator("#results").get_by_role("link", name=customers[0]).click()
                assert "wait-1-hour" in await page.locator("#runs").inner_text()
                await page.screenshot(path=str(ARTIFACTS / "console-customer.png"), full_page=True)
                await context.close()

                # 390 px wide: the page itself does not scroll sideways (the graph scrolls in its own box).
                phone = await browser.new_context(java_script_enabled=False, viewport={"width": 390, "height": 844})
                page = await phone.new_page()
                await sign_in(page, base, READ_KEY)
                await page.goto(f"{base}/console/journeys/{journey_id}")
                assert await page.evaluate("document.documentElement.scrollWidth") <= 390
                await page.screenshot(path=str(ARTIFACTS / "console-journey-390.png"), full_page=True)
                # A read-only key sees no pause, resume or archive, and its POST is refused.
                for name in ("Pause…", "Resume…", "Archive…"):
                    assert await page.get_by_role("link", name=name).count() == 0
                csrf = await page.locator('input[name="csrf"]').first.get_attribute("value")
                refused = await page.request.post(
                    f"{base}/console/journeys/{journey_id}/archive", form={"csrf": csrf or ""}
                )
                assert refused.status == 403
                assert (await stack.http.get(f"/v1/journeys/{journey_id}")).json()["status"] == "paused"
                await phone.close()

                # /docs works with every request outside this server refused.
                offline = await browser.new_context()
                outside: list[str] = []

                async def only_local(route: Any) -> None:
                    if route.request.url.startswith(base):
                        await route.continue_()
                    else:
                        outside.append(route.request.url)
                        await route.abort()

                await offline.route("**/*", only_local)
                page = await offline.new_page()
                await page.goto(f"{base}/docs")
                await page.locator(".swagger-ui .info").wait_for()
                assert outside == []
                await page.screenshot(path=str(ARTIFACTS / "docs.png"))
                await offline.close()
            finally:
                await browser.close()


async def test_the_customer_page_shows_devices_and_the_merge_log(stack: Stack) -> None:
    """Issue 15's customer page lists the customer's devices and the merge log, as the API has them; the id of a
    profile merged in opens the surviving one and says so."""
    import html

    import httpx

    keep, gone = f"keep-{uuid.uuid4().hex[:8]}", f"gone-{uuid.uuid4().hex[:8]}"
    for customer_id in (keep, gone):
        response = await stack.http.put(f"/v1/customers/{customer_id}", json={"email": f"{customer_id}@example.com"})
        assert response.status_code == 200, response.text
    attributes = {"vip": True, "plan": {"tier": "gold"}, "city": "Lyon"}
    assert (await stack.http.put(f"/v1/customers/{keep}", json={"attributes": attributes})).status_code == 200
    event = {"customer_id": keep, "name": f"viewed-{keep}", "properties": {"sku": "A1", "gift": False}}
    assert (await stack.http.post("/v1/events", json=event)).status_code == 202
    device = await stack.http.put(
        f"/v1/customers/{keep}/devices/phone-1", json={"platform": "fcm", "token": "fcm-token-" + "x" * 20}
    )
    assert device.status_code in (200, 201), device.text
    merged = await stack.http.post("/v1/identify", json={"customer_id": keep, "customer_ids": [gone]})
    assert merged.status_code == 200, merged.text
    [entry] = [m for m in (await stack.http.get(f"/v1/customers/{keep}/merges")).json() if m["merged_id"]]
    assert entry["merged_id"] == gone

    transport = httpx.ASGITransport(app=stack.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://parcours.test") as http:
        page = await http.get("/console/login")
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page.text)
        assert csrf is not None
        signed = await http.post("/console/login", data={"csrf": csrf.group(1), "api_key": API_KEY, "next": "/"})
        assert signed.status_code == 303
        page = await http.get(f"/console/customers/{keep}")
        assert page.status_code == 200
        devices = page.text.split('id="devices-title"')[1].split("</section>")[0]
        assert "fcm phone-1" in devices and "inactive" not in devices
        # Values read as data, not as Python: true and JSON objects in the profile and the event's properties.
        profile = page.text.split('id="profile-title"')[1].split("</section>")[0]
        assert "<dd>true</dd>" in profile and "<dd>Lyon</dd>" in profile
        assert html.unescape(profile.split("<dt>plan</dt><dd>")[1].split("</dd>")[0]) == '{"tier": "gold"}'
        events = html.unescape(page.text.split('id="events"')[1].split("</table>")[0])
        assert '{"gift": false, "sku": "A1"}' in events and "True" not in profile
        merges = page.text.split('id="merges"')[1].split("</ul>")[0]
        assert f"profile {gone} merged in" in merges
        # The merged-away id opens the profile it became part of.
        page = await http.get(f"/console/customers/{gone}")
        assert page.status_code == 200 and f"Customer {keep}" in page.text
        assert "was merged into this profile" in page.text
