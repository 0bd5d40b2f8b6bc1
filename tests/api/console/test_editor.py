"""The console's editor in a real headless Chromium, against the real app with a customer running the abandoned-cart
journey on the dev server: an error shown at its step as you type (the API's own message), fixed; the email
previewed for a customer, SMS and push as the API renders them; a test send reaching the SMTP sink marked [TEST];
publishing version 2 while the running customer stays on version 1; the same without JavaScript; a read-only key
refused everything but a preview. The preview following the draft as you type (the newest answer winning), and a
publish refused (409, nothing written) when someone published since the page was loaded."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from fastapi.routing import APIRoute
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.console.editor import as_yaml, located, stored
from api.console.editor import router as editor_router
from api.console.notices import from_query
from api.publishing import validated
from config.settings import Settings
from journeys.sms import measure
from journeys.validation import JourneyValidationError
from journeys.values import DEFAULT_LIMITS
from store import journeys as journey_store
from store.journeys import canonical
from tests.api.console.conftest import ARGS, ARTIFACTS, CHROMIUM, need_chromium, sign_in
from tests.support.engine import EXAMPLES
from tests.support.mail import free_port
from tests.support.stack import API_KEY, Stack, eventually, make_settings, serving, stack_fixture  # noqa: F401

pytestmark = pytest.mark.devserver

WRITE_KEY = "editor-write-key"
READ_KEY = "editor-read-key"


async def _cart_journey(stack: Stack) -> tuple[str, str, str]:
    """The abandoned-cart example under a unique id and trigger, one customer running it (waiting at its first
    step, version 1), and Ada, who has a first name and is in no journey yet."""
    tag = uuid.uuid4().hex[:8]
    text = (EXAMPLES / "abandoned-cart.yaml").read_text()
    text = text.replace("id: abandoned-cart", f"id: abandoned-cart-{tag}", 1)
    text = text.replace("event: cart_abandoned", f"event: cart_abandoned_{tag}", 1)
    response = await stack.http.post("/v1/journeys", content=text, headers={"content-type": "application/yaml"})
    assert response.status_code == 201, response.text
    journey_id = f"abandoned-cart-{tag}"
    runner = await stack.customer()
    ada = f"ada-{tag}"
    profile = {"email": f"{ada}@example.com", "attributes": {"first_name": "Ada"}}
    assert (await stack.http.put(f"/v1/customers/{ada}", json=profile)).status_code == 200
    consent = {"channels": {"email": "granted", "sms": "granted", "push": "granted"}}
    assert (await stack.http.put(f"/v1/customers/{ada}/consent", json=consent)).status_code == 200
    event = {"customer_id": runner, "name": f"cart_abandoned_{tag}", "properties": {"cart_value": 42}}
    assert (await stack.http.post("/v1/events", json=event)).status_code == 202

    async def running() -> bool:
        runs = (await stack.http.get(f"/v1/customers/{runner}/journeys")).json()
        assert [(r["journey_id"], r["version"], r["step"], r["status"]) for r in runs] == [
            (journey_id, 1, "wait-1-hour", "running")
        ], runs
        return True

    await eventually(running, timeout=30)
    return journey_id, runner, ada


async def _signed_in(http: httpx.AsyncClient, key: str) -> str:
    """A new console session for ``key`` (signed in through the form, as a browser does); its CSRF token."""

    async def token(path: str) -> str:
        match = re.search(r'name="csrf" value="([^"]+)"', (await http.get(path)).text)
        assert match
        return match[1]

    http.cookies.clear()
    form = {"csrf": await token("/console/login"), "api_key": key, "next": "/console/journeys"}
    assert (await http.post("/console/login", data=form)).status_code == 303
    return await token("/console/journeys")


JsonPost = Callable[[bytes, str], Awaitable[httpx.Response]]


@contextlib.asynccontextmanager
async def _editor_endpoint(
    env: WorkflowEnvironment, pool: asyncpg.Pool, path: str
) -> AsyncIterator[tuple[httpx.AsyncClient, JsonPost]]:
    """A console with a write and a read key, a client on it, and a POST of a JSON body with a CSRF token to
    ``path`` (one of the editor's endpoints)."""
    settings = make_settings(api_keys=[{"key": WRITE_KEY, "role": "write"}, {"key": READ_KEY, "role": "read"}])
    app = create_app(settings, pool=pool, client=env.client)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://parcours.test") as http:

        async def post(body: bytes, csrf: str) -> httpx.Response:
            headers = {"content-type": "application/json", "x-csrf-token": csrf}
            return await http.post(path, content=body, headers=headers)

        yield http, post


async def _api_issues(stack: Stack, text: str) -> list[dict[str, Any]]:
    response = await stack.http.post("/v1/journeys", content=text, headers={"content-type": "application/yaml"})
    assert response.status_code == 422, response.text
    return response.json()["error"]["issues"]  # type: ignore[no-any-return]


def _console_settings(stack: Stack, port: int) -> Settings:
    """Settings of a console served on ``port``, sending through the stack's SMTP sink, with an admin, a write and
    a read key."""
    return make_settings(
        public_base_url=f"http://127.0.0.1:{port}",
        smtp_host=stack.smtp.host,
        smtp_port=stack.smtp.port,
        api_keys=[{"key": API_KEY, "role": "admin"}, {"key": WRITE_KEY, "role": "write"},
                  {"key": READ_KEY, "role": "read"}],
    )  # fmt: skip


async def test_edit_preview_test_send_and_publish_in_chromium(stack: Stack) -> None:
    need_chromium()
    from playwright.async_api import async_playwright

    journey_id, runner, ada = await _cart_journey(stack)
    port = free_port()
    settings = _console_settings(stack, port)
    ARTIFACTS.mkdir(exist_ok=True)
    async with serving(create_app(settings, pool=stack.pool, client=stack.client), port) as base:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                context = await browser.new_context(viewport={"width": 1280, "height": 900})
                page = await context.new_page()
                await sign_in(page, base, WRITE_KEY)
                await page.goto(f"{base}/console/journeys/{journey_id}")
                await page.get_by_role("link", name="Edit the definition").click()
                await page.wait_for_url(re.compile(f".*/console/journeys/{journey_id}/edit$"))
                editor = page.get_by_label("Definition (YAML)")
                original = await editor.input_value()
                assert f"id: {journey_id}\n" in original and "duration: 1h\n" in original

                # An invalid duration: the API's own message appears at its step while typing, with no submit.
                broken = original.replace("duration: 1h", "duration: soon", 1)
                [expected] = await _api_issues(stack, broken)
                await editor.fill(broken)
                group = page.locator('.issue-group[data-step="wait-1-hour"]')
                await group.locator(".issue").first.wait_for()
                assert page.url.endswith("/edit")  # nothing was submitted
                assert await group.locator(".issue .loc").all_inner_texts() == [expected["location"]]
                assert await group.locator(".issue .msg").all_inner_texts() == [expected["message"]]
                assert (
                    await page.locator("#issues-summary").inner_text()
                    == "1 problem(s): fix them to preview or publish."
                )
                line = broken.splitlines().index("    duration: soon") + 1
                assert await page.locator(".gutter .bad").all_inner_texts() == [str(line)]
                await group.get_by_role("link", name=f"line {line}").click()  # the cursor goes to that line
                cursor = await editor.evaluate("a => a.value.slice(0, a.selectionStart).split('\\n').length")
                assert cursor == line
                await page.screenshot(path=str(ARTIFACTS / "console-editor-error.png"), full_page=True)

                # Fixed (to a new duration): no problem left, as the API says.
                fixed = original.replace("duration: 1h", "duration: 2h", 1)
                await editor.fill(fixed)
                await page.locator("#issues-summary", has_text="No problem found.").wait_for()
                assert await page.locator(".issue").count() == 0

                # The keyboard: Tab indents the line, Shift+Tab takes it back, Esc then Tab moves on to "Check".
                start = fixed.index("    duration: 2h")
                await editor.evaluate("(a, at) => { a.focus(); a.setSelectionRange(at, at); }", start)
                await page.keyboard.press("Tab")
                assert await editor.input_value() == fixed[:start] + "  " + fixed[start:]
                await page.keyboard.press("Shift+Tab")
                assert await editor.input_value() == fixed
                await page.keyboard.press("Escape")
                await page.keyboard.press("Tab")
                assert await page.evaluate("document.activeElement.textContent") == "Check"
                await page.locator("#issues-summary", has_text="No problem found.").wait_for()

                # Preview of the email for Ada: her first name in the sandboxed frame, the API's decision.
                await page.get_by_label("Customer id").fill(ada)
                await page.get_by_label("Send step").select_option("cart-email")
                await page.get_by_label("Trigger event properties").fill('{"cart_value": 42}')
                await page.get_by_role("button", name="Preview").click()
                await page.locator("#preview").wait_for()
                assert await editor.input_value() == fixed  # the draft is kept
                frame = page.locator("#email-frame")
                assert await frame.get_attribute("sandbox") == ""
                await frame.scroll_into_view_if_needed()  # a frame out of view is not painted in a screenshot
                body = await page.frame_locator("#email-frame").locator("body").inner_text()
                assert "Hi Ada," in body and "Your cart worth 42 EUR" in body
                api = await stack.http.post(
                    f"/v1/journeys/{journey_id}/preview",
                    json={"step": "cart-email", "customer_id": ada, "event": {"properties": {"cart_value": 42}}},
                )
                assert api.status_code == 200, api.text
                email = api.json()["channels"]["email"]
                assert (
                    await page.locator('[data-channel="email"] [data-field="subject"]').inner_text() == email["subject"]
                )
                # The same text as the API's (up to the unsubscribe link: its token is new each time).
                assert body.split("Unsubscribe: ")[0].strip() == email["text"].split("Unsubscribe: ")[0].strip()
                assert f"Unsubscribe: http://127.0.0.1:{port}/v1/unsubscribe/" in body
                # The text part wraps in its frame: the long unsubscribe link does not run off to the side.
                sideways = "document.documentElement.scrollWidth - document.documentElement.clientWidth"
                await page.set_viewport_size({"width": 390, "height": 900})
                assert await page.frame_locator("#email-frame").locator("html").evaluate(sideways) == 0
                await page.set_viewport_size({"width": 1280, "height": 900})
                summary = api.json()["decision"]["summary"]
                assert summary == "would send on email"
                assert (await page.locator("#decision").inner_text()).startswith("Would send on email")
                await page.screenshot(path=str(ARTIFACTS / "console-editor-preview.png"), full_page=True)
                # The example's text uses `event.cart_url`, which this event lacks: named above the email, as the
                # API names it; without the cart's value as well, both are.
                warning = page.locator('[data-channel="email"] #missing-email')
                assert api.json()["missing"] == {"email": ["event.cart_url"]}
                assert await warning.locator("code").all_inner_texts() == ["event.cart_url"]
                await page.get_by_label("Trigger event properties").fill("{}")
                await page.get_by_role("button", name="Preview").click()
                await warning.locator("code", has_text="event.cart_value").wait_for()
                bare = await stack.http.post(
                    f"/v1/journeys/{journey_id}/preview", json={"step": "cart-email", "customer_id": ada}
                )
                assert bare.json()["missing"]["email"] == ["event.cart_url", "event.cart_value"]
                assert await warning.locator("code").all_inner_texts() == bare.json()["missing"]["email"]
                assert (await warning.inner_text()).startswith(f"Empty for {ada}:")
                assert await warning.is_visible()
                await page.screenshot(path=str(ARTIFACTS / "console-editor-preview-missing.png"), full_page=True)
                await page.get_by_label("Trigger event properties").fill('{"cart_value": 42}')

                # With an HTML part, the frame draws it; a script in it never runs (sandboxed, no allow-scripts).
                html = "<p>Hello <b>{{ customer.first_name }}</b></p><script>document.body.textContent = 'ran'</script>"
                fixed = fixed.replace(
                    "    template:\n      text: |", f'    template:\n      html: "{html}"\n      text: |', 1
                )
                await editor.fill(fixed)
                await page.locator("#issues-summary", has_text="No problem found.").wait_for()
                await page.get_by_role("button", name="Preview").click()
                await page.locator("#preview").wait_for()
                await page.locator("#email-frame").scroll_into_view_if_needed()
                frame_body = page.frame_locator("#email-frame").locator("body")
                assert await frame_body.inner_text() == "Hello Ada"
                assert await frame_body.locator("b").inner_text() == "Ada"
                assert "Hi Ada," in await page.locator(".text-part").text_content()  # type: ignore[operator]

                # SMS and push drawn as a phone shows them, with the texts and the segment count of the API's preview.
                await page.get_by_label("Send step").select_option("sms-offer")
                await page.get_by_role("button", name="Preview").click()
                await page.locator('[data-channel="sms"]').wait_for()
                api = await stack.http.post(
                    f"/v1/journeys/{journey_id}/preview",
                    json={"step": "sms-offer", "customer_id": ada, "event": {"properties": {"cart_value": 42}}},
                )
                sms = api.json()["channels"]["sms"]["text"]
                length = measure(sms)
                assert await page.locator('[data-channel="sms"] [data-field="text"]').inner_text() == sms
                assert re.sub(
                    r"\s+", " ", await page.locator('[data-channel="sms"] [data-field="segments"]').inner_text()
                ) == (f"{length.segments} segment(s) · {length.encoding} · {length.units} characters")
                await page.get_by_label("Send step").select_option("cart-push")
                await page.get_by_role("button", name="Preview").click()
                push = page.locator('[data-channel="push"]')
                await push.wait_for()
                await push.scroll_into_view_if_needed()
                assert await push.locator('[data-field="title"]').inner_text() == "Still thinking it over?"
                await page.screenshot(path=str(ARTIFACTS / "console-editor-preview-push.png"), full_page=True)

                # A test send to myself: at the SMTP sink, marked [TEST], rendered for Ada.
                await page.get_by_label("Send step").select_option("cart-email")
                await page.get_by_label("Send to").fill("me@example.com")
                await page.get_by_role("button", name="Send a test").click()
                result = page.locator("#test-send-result")
                assert (await result.inner_text()).startswith("Test sent on email to me@example.com")
                [mail] = [m for m in await stack.smtp.wait_for(1) if m.rcpt_tos == ["me@example.com"]]
                assert mail.message["Subject"] == "[TEST] " + email["subject"]
                assert "Hi Ada," in mail.message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[union-attr]

                # Publish: version 2, and the customer already running stays on version 1.
                await page.get_by_role("button", name="Publish").click()
                await page.wait_for_url(re.compile(f".*/console/journeys/{journey_id}\\?published=2.*"))
                notice = await page.locator("#notice").inner_text()
                assert (
                    notice
                    == "Version 2 published; 1 customer(s) running keep their version. New entrants take version 2."
                )
                assert "active version 2 " in await page.locator(".meta").inner_text()
                detail = (await stack.http.get(f"/v1/journeys/{journey_id}")).json()
                assert detail["latest_version"] == 2
                assert detail["definition"]["steps"][0]["duration"] == "2h"
                runs = (await stack.http.get(f"/v1/customers/{runner}/journeys")).json()
                assert [(r["version"], r["status"], r["step"]) for r in runs] == [(1, "running", "wait-1-hour")]
                await page.screenshot(path=str(ARTIFACTS / "console-editor-published.png"), full_page=True)

                # Ada enters now: she takes version 2.
                trigger = {
                    "customer_id": ada,
                    "name": f"cart_abandoned_{journey_id[-8:]}",
                    "properties": {"cart_value": 5},
                }
                assert (await stack.http.post("/v1/events", json=trigger)).status_code == 202

                async def on_version_2() -> bool:
                    runs = (await stack.http.get(f"/v1/customers/{ada}/journeys")).json()
                    assert [(r["journey_id"], r["version"]) for r in runs] == [(journey_id, 2)], runs
                    return True

                await eventually(on_version_2, timeout=30)
                await context.close()

                # Without JavaScript, at 390 px: "Check" posts the form and the server lists the problem at its step.
                plain = await browser.new_context(java_script_enabled=False, viewport={"width": 390, "height": 844})
                page = await plain.new_page()
                await sign_in(page, base, WRITE_KEY)
                await page.goto(f"{base}/console/journeys/{journey_id}/edit")
                assert await page.evaluate("document.documentElement.scrollWidth") <= 390
                text = await page.get_by_label("Definition (YAML)").input_value()
                await page.get_by_label("Definition (YAML)").fill(text.replace("duration: 2h", "duration: -5m", 1))
                await page.get_by_role("button", name="Check").click()
                group = page.locator('.issue-group[data-step="wait-1-hour"]')
                assert "duration" in await group.locator(".issue .loc").inner_text()
                assert await page.evaluate("document.documentElement.scrollWidth") <= 390
                await page.screenshot(path=str(ARTIFACTS / "console-editor-390.png"), full_page=True)
                # Publishing that draft is refused with the reason, and publishes nothing.
                await page.get_by_role("button", name="Publish").click()
                assert "Fix the problems" in await page.locator("#publish-error").inner_text()
                assert (await stack.http.get(f"/v1/journeys/{journey_id}")).json()["latest_version"] == 2

                # A new journey: an id already taken is a problem at "id"; a free one publishes version 1.
                await page.goto(f"{base}/console/journeys")
                await page.get_by_role("link", name="New journey").click()
                await page.wait_for_url(re.compile(".*/console/journeys/new$"))
                starter = await page.get_by_label("Definition (YAML)").input_value()
                await page.get_by_label("Definition (YAML)").fill(
                    re.sub(r"^id: .*$", f"id: {journey_id}", starter, count=1, flags=re.M)
                )
                await page.get_by_role("button", name="Check").click()
                taken = page.locator('.issue[data-location="id"] .msg')
                assert (
                    await taken.inner_text()
                    == f"a journey '{journey_id}' exists already: edit it from its page, or choose another id"
                )
                new_id = f"{journey_id}-new"
                await page.get_by_label("Definition (YAML)").fill(
                    re.sub(r"^id: .*$", f"id: {new_id}", starter, count=1, flags=re.M).replace(
                        "event: signed_up", f"event: signed_up_{new_id}"
                    )
                )
                await page.get_by_role("button", name="Publish").click()
                await page.wait_for_url(re.compile(f".*/console/journeys/{new_id}\\?published=1.*"))
                assert (
                    await page.locator("#notice").inner_text()
                    == "Version 1 published: the journey takes entries from now on."
                )
                assert (await stack.http.get(f"/v1/journeys/{new_id}")).json()["latest_version"] == 1
                await plain.close()

                # A read-only key reads the definition, sees no publish or test-send button, and its POSTs are refused.
                reader = await browser.new_context(viewport={"width": 1280, "height": 900})
                page = await reader.new_page()
                await sign_in(page, base, READ_KEY)
                await page.goto(f"{base}/console/journeys/{journey_id}")
                await page.get_by_role("link", name="Read the definition").click()
                definition = page.get_by_label("Definition (YAML)")
                assert await definition.get_attribute("readonly") is not None
                assert "duration: 2h" in await definition.input_value()
                assert await page.get_by_role("button", name="Publish").count() == 0
                assert await page.get_by_role("button", name="Send a test").count() == 0
                assert await page.get_by_role("button", name="Preview").count() == 1  # previewing is reading
                csrf = await page.locator('input[name="csrf"]').first.get_attribute("value") or ""
                refused = await page.request.post(
                    f"{base}/console/journeys/{journey_id}/edit",
                    form={"csrf": csrf, "do": "publish", "definition": text.replace("2h", "3h")},
                )
                assert refused.status == 403
                checked = await page.request.post(
                    f"{base}/console/editor/check",
                    data=json.dumps({"definition": text, "journey": journey_id}),
                    headers={"content-type": "application/json", "x-csrf-token": csrf},
                )
                assert checked.status == 403
                new_page = await page.request.get(f"{base}/console/journeys/new")
                assert new_page.status == 403
                assert (await stack.http.get(f"/v1/journeys/{journey_id}")).json()["latest_version"] == 2
                await reader.close()
            finally:
                await browser.close()


def test_problems_point_at_their_line_of_the_yaml() -> None:
    text = (EXAMPLES / "abandoned-cart.yaml").read_text()
    lines = text.splitlines()
    broken = text.replace("duration: 1h", "duration: soon", 1).replace("timeout: 1d", "timeout: 1d\n    bogus: 1", 1)
    with pytest.raises(JourneyValidationError) as raised:
        validated(broken, "yaml", DEFAULT_LIMITS, 10)
    issues = located(broken, raised.value.issues)
    where = {i["location"]: (i["group_label"], i["line"]) for i in issues}
    assert where["steps[0] (id 'wait-1-hour').duration"] == (
        "Step “wait-1-hour” (steps[0])",
        lines.index("    duration: 1h") + 1,
    )
    assert where["steps[2] (id 'wait-for-click').bogus"] == (
        "Step “wait-for-click” (steps[2])",
        lines.index("    timeout: 1d") + 2,
    )
    # A YAML syntax error points at the line the parser stopped on.
    unbalanced = text.replace("duration: 1h", "duration: [1h", 1)
    with pytest.raises(JourneyValidationError) as raised:
        validated(unbalanced, "yaml", DEFAULT_LIMITS, 10)
    [issue] = located(unbalanced, raised.value.issues)
    assert issue["group"] == "journey" and issue["line"] == lines.index("  - id: cart-email") + 1


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_the_editor_shows_a_definition_that_publishes_the_same(path: Path) -> None:
    journey = validated(path.read_text(), "yaml", DEFAULT_LIMITS, 10)
    shown = as_yaml(canonical(journey))
    assert canonical(validated(shown, "yaml", DEFAULT_LIMITS, 10)) == canonical(journey)
    assert "kind: marketing" not in shown  # defaults left out, as an author leaves them out


def test_the_notice_after_publishing_says_only_what_we_write() -> None:
    assert from_query({"published": "3", "kept": "12"}) == (
        "Version 3 published; 12 customer(s) running keep their version. New entrants take version 3."
    )
    assert from_query({"published": "3", "unchanged": "1"}) == (
        "Nothing new to publish: the definition is the same as version 3."
    )
    assert from_query({"published": "<script>", "kept": "1"}) is None
    assert from_query({"published": "²"}) is None
    assert "unknown" in (from_query({"published": "2", "kept": "lots"}) or "")


def test_every_editor_route_declares_its_role() -> None:
    declared = {
        (sorted(route.methods)[0], route.path): [
            getattr(d.call, "required_role", None) for d in route.dependant.dependencies
        ]
        for route in editor_router.routes
        if isinstance(route, APIRoute)
    }
    assert declared == {
        ("GET", "/console/journeys/new"): ["write"],
        ("POST", "/console/journeys/new"): ["write"],
        ("GET", "/console/journeys/{journey_id}/edit"): ["read"],
        ("POST", "/console/journeys/{journey_id}/edit"): ["write"],
        ("POST", "/console/journeys/{journey_id}/preview"): ["read"],
        ("POST", "/console/editor/check"): ["write"],
        ("POST", "/console/editor/preview"): ["read"],
    }


def test_a_stored_definition_this_release_no_longer_reads_still_opens_as_yaml() -> None:
    old = {"id": "legacy", "name": "Legacy", "trigger": {"event": "e"}, "steps": [{"id": "a", "type": "teleport"}]}
    shown = as_yaml(old)
    assert yaml.safe_load(shown) == old
    assert stored(old) is None


async def test_the_check_as_you_type_answers_bad_input_with_a_4xx(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with _editor_endpoint(time_skipping_env, pool, "/console/editor/check") as (http, check):
        assert (await check(b'{"definition": ""}', "x")).status_code == 401  # not signed in
        csrf = await _signed_in(http, WRITE_KEY)
        refused = {
            b"not json": (400, "body"),
            b"[]": (422, "definition"),
            b'{"definition": 5}': (422, "definition"),
            b'{"definition": "id: x", "journey": "../x"}': (422, "journey"),
            b'{"definition": "id: x", "journey": "nope"}': (404, "journey"),
        }
        for body, (status, field) in refused.items():
            response = await check(body, csrf)
            assert (response.status_code, response.json()["error"]["field"]) == (status, field), body
        assert (await check(b'{"definition": ""}', "forged")).status_code == 403
        # What the author types, however broken, is a list of problems, never an error of the server.
        for text in ["", "id: [", "\x00", "steps: " + "[" * 200, "- a\n- b", "id: x\nsteps: {}"]:
            response = await check(json.dumps({"definition": text}).encode(), csrf)
            assert response.status_code == 200, (text, response.text)
            assert response.json()["valid"] is False and response.json()["issues"], text


async def test_the_preview_as_you_type_answers_bad_input_with_a_4xx(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    async with _editor_endpoint(time_skipping_env, pool, "/console/editor/preview") as (http, preview):
        assert (await preview(b"{}", "x")).status_code == 401  # not signed in
        csrf = await _signed_in(http, WRITE_KEY)
        refused = {
            b"not json": (400, "body"),
            b"[]": (422, "body"),
            b'{"definition": 5}': (422, "definition"),
            b'{"customer_id": ["a"]}': (422, "customer_id"),
            b'{"definition": "id: x", "journey": "../x"}': (422, "journey"),
            b'{"definition": "id: x", "journey": "nope"}': (404, "journey"),
        }
        for body, (status, field) in refused.items():
            response = await preview(body, csrf)
            assert (response.status_code, response.json()["error"]["field"]) == (status, field), body
        assert (await preview(b'{"definition": ""}', "forged")).status_code == 403
        # A draft with a problem, or no such customer: not previewed, and the reason is what the page shows.
        broken = await preview(json.dumps({"definition": "id: [", "customer_id": "ada"}).encode(), csrf)
        assert broken.status_code == 200 and broken.json()["ok"] is False
        assert "Fix the problems listed beside the definition first." in broken.json()["html"]
        text = (EXAMPLES / "abandoned-cart.yaml").read_text().replace("id: abandoned-cart", f"id: {uuid.uuid4()}", 1)
        starter = await preview(json.dumps({"definition": text, "customer_id": "nobody-here"}).encode(), csrf)
        assert starter.status_code == 200 and starter.json()["ok"] is False
        assert "customer_id: unknown customer &#39;nobody-here&#39;" in starter.json()["html"]
        # Whatever the other fields hold, the answer is the reason it cannot preview, never an error of the server.
        for hostile in [
            {"customer_id": "a b<script>"}, {"customer_id": "x" * 5000}, {"customer_id": "\x00"},
            {"customer_id": "ada", "properties": "{"}, {"customer_id": "ada", "properties": "[1]"},
            {"customer_id": "ada", "properties": "1" * 100_000}, {"customer_id": "ada", "step": "\u2028" * 300},
        ]:  # fmt: skip
            response = await preview(json.dumps({"definition": text, **hostile}).encode(), csrf)
            assert response.status_code == 200 and response.json()["ok"] is False, (hostile, response.text)
            assert 'id="preview-error"' in response.json()["html"]
        # A read key previews only what is published: a new journey's draft is refused.
        csrf = await _signed_in(http, READ_KEY)
        response = await preview(json.dumps({"definition": "id: x", "journey": None}).encode(), csrf)
        assert (response.status_code, response.json()["error"]["field"]) == (403, "journey")


async def test_preview_as_you_type_read_key_preview_and_concurrent_publish(stack: Stack) -> None:
    """The preview follows the draft without a button (a slow answer never overwrites a newer one); a read key
    previews the published version but still may not publish or test-send; a publish from a page opened before
    someone else's publish is refused with a link to the new version, and writes nothing."""
    need_chromium()
    from playwright.async_api import Route, async_playwright

    journey_id, _, ada = await _cart_journey(stack)
    port = free_port()
    settings = _console_settings(stack, port)
    ARTIFACTS.mkdir(exist_ok=True)
    api = await stack.http.post(
        f"/v1/journeys/{journey_id}/preview", json={"step": "cart-email", "customer_id": ada, "event": {}}
    )
    assert api.status_code == 200, api.text
    published_subject = api.json()["channels"]["email"]["subject"]
    async with serving(create_app(settings, pool=stack.pool, client=stack.client), port) as base:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                # --- as you type: no button pressed, the preview follows the draft --------------------------------
                context = await browser.new_context(viewport={"width": 1280, "height": 900})
                page = await context.new_page()
                await sign_in(page, base, WRITE_KEY)
                await page.goto(f"{base}/console/journeys/{journey_id}/edit")
                editor = page.get_by_label("Definition (YAML)")
                original = await editor.input_value()
                subject_line = next(line for line in original.splitlines() if line.strip().startswith("subject:"))
                await page.get_by_label("Send step").select_option("cart-email")
                await page.get_by_label("Customer id").fill(ada)  # the preview comes once typing stops
                subject = page.locator('#preview [data-channel="email"] [data-field="subject"]')
                await subject.wait_for()
                assert await subject.inner_text() == published_subject  # the draft is the published version
                indent = subject_line[: len(subject_line) - len(subject_line.lstrip())]
                draft = original.replace(subject_line, indent + 'subject: "Still there, {{ customer.first_name }}?"', 1)
                await editor.fill(draft)
                await page.locator('#preview [data-field="subject"]', has_text="Still there, Ada?").wait_for()
                assert page.url.endswith("/edit")  # nothing was submitted
                frame = page.frame_locator("#email-frame")
                assert "Hi Ada," in await frame.locator("body").inner_text()
                await page.locator("#email-frame").scroll_into_view_if_needed()
                await page.screenshot(path=str(ARTIFACTS / "console-editor-live-preview.png"), full_page=True)

                # A slow answer (held here) arrives after a newer one: the newer one stays.
                held: list[Route] = []
                release = asyncio.Event()

                async def hold_slow(route: Route) -> None:
                    if "SLOW" in (route.request.post_data or ""):
                        held.append(route)
                        await release.wait()
                    await route.continue_()

                async def held_one() -> bool:
                    assert len(held) == 1
                    return True

                await page.route("**/console/editor/preview", hold_slow)
                box = page.locator("#preview-box")
                answered = int(await box.get_attribute("data-answered") or "0")
                await editor.fill(draft.replace("Still there", "SLOW", 1))
                await eventually(held_one, timeout=10)
                await editor.fill(draft.replace("Still there", "FAST", 1))
                await page.locator('#preview [data-field="subject"]', has_text="FAST, Ada?").wait_for()
                release.set()
                await page.locator(f'#preview-box[data-answered="{answered + 2}"]').wait_for()
                assert await subject.inner_text() == "FAST, Ada?"
                await page.unroute("**/console/editor/preview")

                # An unknown customer: the reason replaces the preview, still without a button.
                await page.get_by_label("Customer id").fill("nobody-at-all")
                error = page.locator("#preview-box #preview-error")
                await error.wait_for()
                assert await error.inner_text() == "customer_id: unknown customer 'nobody-at-all'"
                assert await page.locator("#preview").count() == 0
                await context.close()

                # --- a read key previews (JavaScript off: the button posts the form, with its CSRF token) ---------
                reader = await browser.new_context(java_script_enabled=False, viewport={"width": 390, "height": 844})
                page = await reader.new_page()
                await sign_in(page, base, READ_KEY)
                await page.goto(f"{base}/console/journeys/{journey_id}/edit")
                assert await page.get_by_role("button", name="Publish").count() == 0
                assert await page.get_by_role("button", name="Send a test").count() == 0
                await page.get_by_label("Customer id").fill(ada)
                await page.get_by_label("Send step").select_option("cart-email")
                await page.get_by_role("button", name="Preview").click()
                await page.wait_for_url(re.compile(f".*/console/journeys/{journey_id}/preview#try$"))
                assert await page.locator('#preview [data-field="subject"]').inner_text() == published_subject
                assert "Hi Ada," in await page.frame_locator("#email-frame").locator("body").inner_text()
                assert (await page.locator("#decision").inner_text()).startswith("Would send on email")
                assert await page.get_by_role("button", name="Publish").count() == 0
                assert await page.evaluate("document.documentElement.scrollWidth") <= 390
                await page.locator("#email-frame").scroll_into_view_if_needed()
                await page.screenshot(path=str(ARTIFACTS / "console-editor-read-preview-390.png"), full_page=True)
                csrf = await page.locator('input[name="csrf"]').first.get_attribute("value") or ""
                form = {"csrf": csrf, "customer_id": ada, "step": "cart-email", "definition": original}
                forged = await page.request.post(
                    f"{base}/console/journeys/{journey_id}/preview", form={**form, "csrf": "forged"}
                )
                assert forged.status == 403  # a preview is no write, but its form is still checked
                for do in ("publish", "test_send"):
                    refused = await page.request.post(
                        f"{base}/console/journeys/{journey_id}/edit", form={**form, "do": do, "to": "me@example.com"}
                    )
                    assert refused.status == 403, do
                assert (await stack.http.get(f"/v1/journeys/{journey_id}")).json()["latest_version"] == 1
                await reader.close()
                # With JavaScript, the read key's preview follows the customer typed, without a button either.
                reader = await browser.new_context(viewport={"width": 1280, "height": 900})
                page = await reader.new_page()
                await sign_in(page, base, READ_KEY)
                await page.goto(f"{base}/console/journeys/{journey_id}/edit")
                await page.get_by_label("Send step").select_option("cart-email")
                await page.get_by_label("Customer id").fill(ada)
                await page.locator('#preview [data-field="subject"]', has_text=published_subject).wait_for()
                assert page.url.endswith("/edit")
                await reader.close()

                # --- two authors: the later publish is refused, offers the new version, writes nothing ------------
                first = await browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
                second = await browser.new_context(java_script_enabled=False, viewport={"width": 1280, "height": 900})
                one, two = await first.new_page(), await second.new_page()
                await sign_in(one, base, WRITE_KEY)
                await sign_in(two, base, API_KEY)
                for page in (one, two):
                    await page.goto(f"{base}/console/journeys/{journey_id}/edit")
                await one.get_by_label("Definition (YAML)").fill(original.replace("duration: 1h", "duration: 2h", 1))
                await one.get_by_role("button", name="Publish").click()
                await one.wait_for_url(re.compile(f".*/console/journeys/{journey_id}\\?published=2.*"))
                mine = original.replace("duration: 1h", "duration: 3h", 1)
                await two.get_by_label("Definition (YAML)").fill(mine)
                response = await two.request.get(f"{base}/console/journeys/{journey_id}")  # a page still loads
                assert response.status == 200
                async with two.expect_response(f"{base}/console/journeys/{journey_id}/edit") as answer:
                    await two.get_by_role("button", name="Publish").click()
                assert (await answer.value).status == 409
                refusal = await two.locator("#publish-error").inner_text()
                assert refusal.startswith("Version 2 was published after you opened version 1")
                assert await two.get_by_label("Definition (YAML)").input_value() == mine  # the draft is kept
                await two.locator("#publish-error").scroll_into_view_if_needed()
                await two.screenshot(path=str(ARTIFACTS / "console-editor-409.png"), full_page=True)
                await two.set_viewport_size({"width": 390, "height": 844})
                assert await two.evaluate("document.documentElement.scrollWidth") <= 390
                await two.screenshot(path=str(ARTIFACTS / "console-editor-409-390.png"), full_page=True)
                detail = (await stack.http.get(f"/v1/journeys/{journey_id}")).json()
                assert detail["latest_version"] == 2 and detail["definition"]["steps"][0]["duration"] == "2h"
                versions = await journey_store.list_versions(stack.pool, journey_id)
                assert sorted(v.version for v in versions) == [1, 2]
                await two.get_by_role("link", name="Open version 2 in the editor").click()
                await two.wait_for_url(re.compile(f".*/console/journeys/{journey_id}/edit$"))
                assert "duration: 2h" in await two.get_by_label("Definition (YAML)").input_value()
                assert "version 2" in await two.locator(".meta").inner_text()
                await first.close()
                await second.close()
            finally:
                await browser.close()


async def test_a_push_test_send_to_a_device_from_the_editor_in_chromium(pool: asyncpg.Pool, tmp_path: Path) -> None:
    """The device fields appear for a journey with a push step, also as soon as one is typed (and go when it goes);
    a test to an FCM token reaches the fake FCM, rendered for the customer and marked [TEST], and the page says so;
    a token left out is named."""
    need_chromium()
    from playwright.async_api import async_playwright

    from tests.support.providers import FcmFake, running, serve

    tag = uuid.uuid4().hex[:8]
    push = {"title": "{{ customer.first_name }}, your cart", "body": "Still there"}
    step = {"id": "nudge", "type": "send", "channel": "push", "template": push}
    journey = {"id": f"push-editor-{tag}", "name": "Push editor", "trigger": {"event": f"cart-{tag}"}, "steps": [step]}
    await journey_store.publish(pool, validated(json.dumps(journey), "json", DEFAULT_LIMITS, 10))
    ada = f"ada-{tag}"
    await pool.execute("INSERT INTO customers (id, attributes) VALUES ($1, $2)", ada, {"first_name": "Ada"})
    async with running(FcmFake()) as fcm:
        settings = make_settings(
            channel_push="devices",
            fcm_project_id=fcm.project_id,
            fcm_service_account_file=fcm.service_account_file(tmp_path),
            fcm_base_url=fcm.url,
            api_keys=[{"key": WRITE_KEY, "role": "write"}],
        )
        app = create_app(settings, pool=pool, client=None)  # type: ignore[arg-type]  # a test send needs no Temporal
        async with serve(app) as base, async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
            try:
                page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
                await sign_in(page, base, WRITE_KEY)
                # A new journey's starter has no push step: no device fields, until a push step is typed.
                await page.goto(f"{base}/console/journeys/new")
                device_box = page.locator("#test-device")
                assert not await device_box.is_visible()
                draft = {**journey, "id": f"push-new-{tag}"}
                await page.get_by_label("Definition (YAML)").fill(json.dumps(draft, indent=2))
                await device_box.wait_for(state="visible", timeout=10_000)
                await page.get_by_label("Definition (YAML)").fill(
                    json.dumps(
                        {
                            **draft,
                            "steps": [{**step, "channel": "email", "template": {"subject": "Hi", "text": "Hello"}}],
                        }
                    )
                )
                await device_box.wait_for(state="hidden", timeout=10_000)

                await page.goto(f"{base}/console/journeys/{journey['id']}/edit")
                await page.get_by_label("Customer id").fill(ada)
                await page.get_by_label("Device platform").select_option("fcm")
                await page.get_by_role("button", name="Send a test").click()
                error = page.locator("#test-send-error")
                assert await error.inner_text() == "device.token: String should have at least 1 character"

                await page.get_by_label("Device token").fill("qa-phone")
                await page.get_by_role("button", name="Send a test").click()
                result = page.locator("#test-send-result")
                assert (await result.inner_text()).startswith("Test sent on push to fcm device qa-phone, marked [TEST]")
                await result.scroll_into_view_if_needed()
                await page.screenshot(path=str(ARTIFACTS / "console-editor-test-push.png"), full_page=True)
            finally:
                await browser.close()
    assert [(m["token"], m["notification"]["title"]) for m in fcm.sent] == [("qa-phone", "[TEST] Ada, your cart")]
    assert await pool.fetchval("SELECT count(*) FROM messages WHERE customer_id = $1", ada) == 0
