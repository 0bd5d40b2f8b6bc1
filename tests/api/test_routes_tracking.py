"""Click and open tracking: links rewritten at send time, the redirect, the events it produces, engagement counts."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import asyncpg
import httpx
import pytest_asyncio
from temporalio.testing import WorkflowEnvironment

from activities import links
from api import routes_tracking
from api.app import create_app
from config.settings import Settings
from journeys import parse_journey
from store import engagement
from store import journeys as journey_store
from tests.support.engine import Engine, make_customer, running_engine
from tests.support.mail import SmtpSink
from tests.support.stack import API_KEY, eventually

BASE = "http://localhost:8000"  # the default public_base_url
TRACKED = re.compile(re.escape(BASE) + r"/c/[A-Za-z0-9_-]+")
PIXEL = re.compile(re.escape(BASE) + r"/o/[A-Za-z0-9_-]+")
GOOGLE_PROXY = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"


def path_of(url: str) -> str:
    return url.removeprefix(BASE)


def click_journey(**send: Any) -> dict[str, Any]:
    """An email with links, then: wait a day for a click on it (``clicked``), else ``no_click``."""
    journey_id = f"click-{uuid.uuid4().hex[:8]}"
    return {
        "id": journey_id,
        "name": "Click",
        "trigger": {"event": f"signed-up-{journey_id}"},
        "steps": [
            {
                "id": "hello",
                "type": "send",
                "channel": "email",
                "template": {
                    "subject": "Your cart",
                    "text": (
                        "Your cart: {{ event.cart_url }}\nCall tel:+33100000000\nUnsubscribe: {{ unsubscribe_url }}"
                    ),
                    "html": (
                        '<html><body><p><a class="cta" href="{{ event.cart_url }}">Your cart</a>'
                        ' <a href="mailto:help@shop.test">Help</a>'
                        ' <a href="https://shop.test/legal" data-parcours-track="false">Legal</a>'
                        ' <a href="{{ unsubscribe_url }}">Unsubscribe</a></p></body></html>'
                    ),
                },
                **send,
            },
            {
                "id": "wait-for-click",
                "type": "wait_for",
                "event": "email_clicked",
                "where": [{"field": "journey", "op": "eq", "value": journey_id}],
                "since": "step",
                "timeout": "1d",
                "on_event": "clicked",
                "on_timeout": "not-clicked",
            },
            {"id": "clicked", "type": "exit", "reason": "clicked"},
            {"id": "not-clicked", "type": "exit", "reason": "no_click"},
        ],
    }


def parts(mail: EmailMessage) -> tuple[str, str]:
    text, html = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def public_api(settings: Settings, pool: asyncpg.Pool, env: WorkflowEnvironment) -> httpx.AsyncClient:
    """The API as a customer's browser or a mail proxy reaches it: no API key."""
    app = create_app(settings, pool=pool, client=env.client)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://parcours.test")


@pytest_asyncio.fixture
async def clicking(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> AsyncIterator[Engine]:
    async with running_engine(time_skipping_env, pool, smtp_sink) as engine:
        yield engine


async def events_of(pool: asyncpg.Pool, customer: str, name: str) -> list[dict[str, Any]]:
    rows = await pool.fetch(
        "SELECT properties FROM events WHERE customer_id = $1 AND name = $2 ORDER BY received_at", customer, name
    )
    return [r["properties"] for r in rows]


async def sent_mail(engine: Engine, customer: str) -> EmailMessage:
    async def arrived() -> list[Any]:
        return engine.mail_to(customer)

    return (await eventually(arrived))[0]  # type: ignore[no-any-return]


async def away_from_a_dedupe_boundary() -> None:
    """Two requests made now fall in the same dedupe bucket (they are milliseconds apart)."""
    left = routes_tracking.DEDUPE_SECONDS - time.time() % routes_tracking.DEDUPE_SECONDS
    if left < 1.5:
        await asyncio.sleep(left + 0.05)


async def test_following_a_link_from_the_received_email_redirects_and_takes_the_on_event_branch(
    clicking: Engine, pool: asyncpg.Pool, time_skipping_env: WorkflowEnvironment
) -> None:
    definition = click_journey()
    journey = parse_journey(definition)
    await journey_store.publish(pool, journey)  # the router knows the journey listens to email_clicked
    customer = await make_customer(pool)
    cart = f"https://shop.test/cart/{uuid.uuid4().hex[:8]}?utm_source=email&x=%C3%A9"
    handle = await clicking.enter(journey, customer, {"cart_url": cart})

    mail = await sent_mail(clicking, customer)
    text, html = parts(mail)
    unsubscribe = mail["List-Unsubscribe"].strip("<>")
    # Both parts: the cart link is a tracked link, the same one (one token per URL), hiding the customer.
    [text_link] = TRACKED.findall(text)
    [html_link] = TRACKED.findall(html)
    assert text_link == html_link
    assert cart not in text and cart.replace("&", "&amp;") not in html and customer not in text_link
    assert f'class="cta" href="{html_link}"' in html
    # Left as they were: the unsubscribe link, mailto:, tel:, and a link marked data-parcours-track="false".
    assert f"Unsubscribe: {unsubscribe}" in text and f'href="{unsubscribe}"' in html
    assert "tel:+33100000000" in text and 'href="mailto:help@shop.test"' in html
    assert '<a href="https://shop.test/legal" data-parcours-track="false">' in html
    # HTML email gets an open pixel before </body>.
    assert re.search(PIXEL.pattern + r'" width="1" height="1"[^>]*/></body>', html)
    [message] = await clicking.messages(customer)

    async with public_api(clicking.settings, pool, time_skipping_env) as browser:
        await away_from_a_dedupe_boundary()
        response = await browser.get(path_of(text_link))
        assert response.status_code == 302, response.text
        assert response.headers["location"] == cart
        assert "no-store" in response.headers["cache-control"]
        again = await browser.get(path_of(html_link))  # a prefetch or a double click, moments later
        assert again.status_code == 302 and again.headers["location"] == cart
        assert (await browser.head(path_of(text_link))).status_code == 302  # link checkers: nothing recorded

    result = await handle.result()  # the day of the wait would pass here: the click must already have arrived
    assert (result.status, result.exit_reason) == ("exited", "clicked")
    assert await events_of(pool, customer, "email_clicked") == [
        {
            "journey": journey.id,
            "step": "hello",
            "message_key": message["idempotency_key"],
            "link": cart,
            "channel": "email",
        }
    ]
    counted = await engagement.message_engagement(pool, message["idempotency_key"])
    assert counted is not None
    assert counted["clicks"] == 1 and counted["first_clicked_at"] is not None and counted["opens"] == 0


async def test_without_a_click_the_timeout_branch_runs(clicking: Engine, pool: asyncpg.Pool) -> None:
    journey = parse_journey(click_journey())
    customer = await make_customer(pool)
    result = await (await clicking.enter(journey, customer, {"cart_url": "https://shop.test/c"})).result()
    assert (result.status, result.exit_reason) == ("exited", "no_click")


async def test_track_false_sends_the_links_as_they_were(clicking: Engine, pool: asyncpg.Pool) -> None:
    journey = parse_journey(click_journey(track=False))
    customer = await make_customer(pool)
    cart = "https://shop.test/cart/untracked"
    await (await clicking.enter(journey, customer, {"cart_url": cart})).result()
    text, html = parts(await sent_mail(clicking, customer))
    assert f"Your cart: {cart}" in text and f'href="{cart}"' in html
    assert not TRACKED.search(text + html) and not PIXEL.search(html)


async def test_sms_and_push_links_are_tracked_too(clicking: Engine, pool: asyncpg.Pool) -> None:
    journey = parse_journey({
        "id": f"mobile-{uuid.uuid4().hex[:8]}", "name": "Mobile", "trigger": {"event": "visited"},
        "steps": [
            {"id": "text", "type": "send", "channel": "sms", "template": {"text": "Cart: {{ event.cart_url }} STOP?"}},
            {"id": "nudge", "type": "send", "channel": "push", "template": {
                "title": "Cart", "body": "Still there", "url": "{{ event.cart_url }}",
                "data": {"url": "{{ event.cart_url }}", "deep_link": "shop://cart"},
            }},
        ],
    })  # fmt: skip
    customer = await make_customer(pool, phone=True, push=True, consent=("sms", "push"))
    cart = "https://shop.test/cart/mobile"
    await (await clicking.enter(journey, customer, {"cart_url": cart})).result()
    sms, push = [r["rendered"] for r in await clicking.messages(customer)]
    assert re.fullmatch(r"Cart: " + TRACKED.pattern + r" STOP\?", sms["text"])
    assert TRACKED.fullmatch(push["url"]) and push["data"]["url"] == push["url"]
    assert push["data"]["deep_link"] == "shop://cart"  # not http(s): an app link stays as it is
    for url, channel in ((TRACKED.search(sms["text"]).group(0), "sms"), (push["url"], "push")):  # type: ignore[union-attr]
        payload = links.open_token(clicking.settings, url.rsplit("/", 1)[1], purpose=links.CLICK)
        assert (payload["l"], payload["ch"]) == (cart, channel)


async def test_tampered_truncated_or_expired_tokens_get_a_400_page_and_no_redirect(
    clicking: Engine, pool: asyncpg.Pool, time_skipping_env: WorkflowEnvironment
) -> None:
    settings = clicking.settings
    message = links.tracking_payload("cust-x", "j:cust-x:e:s:1", "j", "s", "email")
    good = links.click_url(settings, message, "https://shop.test/")
    token = good.rsplit("/", 1)[1]
    flipped = token[:30] + ("A" if token[30] != "A" else "B") + token[31:]
    expired = links.seal(settings, links.CLICK, dict(message, l="https://shop.test/"), -5)
    evil = links.seal(settings, links.CLICK, dict(message, l="javascript:alert(1)"), 60)
    pixel = links.open_url(settings, message, time.time()).rsplit("/", 1)[1]
    unsubscribe = links.unsubscribe_url(settings, "cust-x", "email", None).rsplit("/", 1)[1]
    async with public_api(settings, pool, time_skipping_env) as browser:
        for bad in (flipped, token[:-5], expired, evil, pixel, unsubscribe, "x", "%00%0d%0aLocation:%20x", "A" * 5000):
            response = await browser.get(f"/c/{bad}")
            assert response.status_code == 400, (bad[:40], response.text[:200])
            assert "location" not in response.headers
            assert response.headers["content-type"].startswith("text/html")
            assert "This link is not valid" in response.text and "shop.test" not in response.text
        image = await browser.get(f"/o/{token}")  # a click token is no pixel
        assert image.status_code == 400 and image.headers["content-type"] == "image/gif"
    assert await events_of(pool, "cust-x", "email_clicked") == []


async def test_opens_by_a_proxy_then_by_the_customer(
    clicking: Engine, pool: asyncpg.Pool, time_skipping_env: WorkflowEnvironment
) -> None:
    journey = parse_journey(click_journey())
    customer = await make_customer(pool)
    handle = await clicking.enter(journey, customer, {"cart_url": "https://shop.test/c"})
    _text, html = parts(await sent_mail(clicking, customer))
    [pixel] = PIXEL.findall(html)
    [message] = await clicking.messages(customer)
    key = message["idempotency_key"]
    prompt = clicking.settings.model_copy(update={"tracking_machine_open_seconds": 1.0})
    async with public_api(prompt, pool, time_skipping_env) as browser:
        await away_from_a_dedupe_boundary()
        proxied = await browser.get(path_of(pixel), headers={"User-Agent": GOOGLE_PROXY})
        assert proxied.status_code == 200 and proxied.headers["content-type"] == "image/gif"
        assert proxied.content.startswith(b"GIF89a") and "no-cache" in proxied.headers["cache-control"]
        # Another machine fetch moments later (Apple Mail Privacy Protection's bare "Mozilla/5.0"): the same open.
        assert (await browser.get(path_of(pixel), headers={"User-Agent": "Mozilla/5.0"})).status_code == 200
        await asyncio.sleep(1.1)  # past tracking_machine_open_seconds since delivery
        assert (await browser.get(path_of(pixel), headers={"User-Agent": IPHONE})).status_code == 200
    opened = await events_of(pool, customer, "email_opened")
    assert [(e["machine"], e["message_key"], e["journey"], e["step"], e["channel"]) for e in opened] == [
        (True, key, journey.id, "hello", "email"),  # Google Image Proxy
        (False, key, journey.id, "hello", "email"),  # the customer, on their phone
    ]
    counted = await engagement.message_engagement(pool, key)
    assert counted is not None
    assert (counted["opens"], counted["human_opens"]) == (2, 1)
    assert counted["first_opened_at"] < counted["first_human_opened_at"]
    await handle.terminate()


async def test_right_after_delivery_even_a_browser_open_is_a_machine(
    clicking: Engine, pool: asyncpg.Pool, time_skipping_env: WorkflowEnvironment
) -> None:
    message = links.tracking_payload("cust-y", f"k-{uuid.uuid4().hex}", "j", "s", "email")
    assert routes_tracking.is_machine_open(IPHONE, time.time() - 1, time.time(), 5.0)
    assert not routes_tracking.is_machine_open(IPHONE, time.time() - 10, time.time(), 5.0)
    for agent in ("", "Mozilla/5.0", GOOGLE_PROXY, "YahooMailProxy; https://help.yahoo.com", "curl/8.5.0"):
        assert routes_tracking.is_machine_open(agent, time.time() - 3600, time.time(), 5.0), agent
    # A token for a message nobody has (erased, or never sent): the image, and nothing recorded.
    async with public_api(clicking.settings, pool, time_skipping_env) as browser:
        response = await browser.get(path_of(links.open_url(clicking.settings, message, time.time())))
    assert response.status_code == 200
    assert await events_of(pool, "cust-y", "email_opened") == []


async def test_unsubscribes_bounces_and_complaints_count_on_their_message(
    clicking: Engine, pool: asyncpg.Pool, time_skipping_env: WorkflowEnvironment
) -> None:
    journey = parse_journey(click_journey())
    first, second, third = [await make_customer(pool) for _ in range(3)]
    handles = [await clicking.enter(journey, c, {"cart_url": "https://shop.test/c"}) for c in (first, second, third)]
    mails = [await sent_mail(clicking, c) for c in (first, second, third)]
    keys = [(await clicking.messages(c))[0]["idempotency_key"] for c in (first, second, third)]
    app = create_app(
        Settings.model_validate({**clicking.settings.model_dump(), "api_keys": [API_KEY]}),
        pool=pool,
        client=time_skipping_env.client,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://parcours.test", headers={"X-API-Key": API_KEY}
    ) as api:
        unsubscribe = mails[0]["List-Unsubscribe"].strip("<>")
        for _ in range(2):  # a repeated one-click post counts once
            answer = await api.post(path_of(unsubscribe), data={"List-Unsubscribe": "One-Click"})
            assert answer.status_code == 200, answer.text
        bounce = {"type": "hard_bounce", "address": f"{second}@example.com", "message_id": mails[1]["Message-ID"]}
        assert (await api.post("/v1/providers/generic/events", json=bounce)).status_code == 200
        ses_complaint = {
            "notificationType": "Complaint",
            "complaint": {"complainedRecipients": [{"emailAddress": f"{third}@example.com"}]},
            "mail": {
                "messageId": "0100018f-ses",
                "headers": [{"name": "X-Parcours-Idempotency-Key", "value": mails[2]["X-Parcours-Idempotency-Key"]}],
            },
        }
        response = await api.post("/v1/providers/ses/events", json=ses_complaint)
        assert response.status_code == 200, response.text
        bad = await api.post("/v1/providers/generic/events", json={**bounce, "message_key": 7})
        assert bad.status_code == 422 and bad.json()["error"]["field"] == "message_key"
    marks = []
    for key in keys:
        got = await engagement.message_engagement(pool, key)
        assert got is not None
        marks.append(tuple(got[name] is not None for name in ("unsubscribed_at", "bounced_at", "complained_at")))
    assert marks == [(True, False, False), (False, True, False), (False, False, True)]
    suppression = await pool.fetchval("SELECT detail FROM suppressions WHERE address = $1", f"{second}@example.com")
    assert "message_id" not in suppression  # the message reference is not kept with the suppression
    [row] = await engagement.summary(pool, journey.id)
    assert (row["step_id"], row["sent"], row["unsubscribes"], row["bounces"], row["complaints"]) == (
        "hello", 3, 1, 1, 1
    )  # fmt: skip
    for handle in handles:
        await handle.terminate()
