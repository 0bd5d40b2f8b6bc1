"""The send policy (activities.policy): channel choice, content, quiet hours, frequency caps, topic consent."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from temporalio.testing import WorkflowEnvironment

from activities import policy
from activities.journey import JourneyActivities
from activities.models import Profile, SendRequest
from config.settings import Settings
from contracts.journey import Event, JourneyResult
from store import preferences as preference_store
from tests.support.channels import make_settings
from tests.support.engine import Engine, event, journey_from, make_customer, running_engine
from tests.support.mail import SmtpSink

PARIS = ZoneInfo("Europe/Paris")
CONTENT = {
    "email": {"subject": "By email", "text": "e", "locales": {"fr": {"subject": "Par e-mail"}}},
    "sms": {"text": "By SMS"},
    "push": {"title": "By push", "body": "p"},
}


def one_send(**send: Any) -> dict[str, Any]:
    return {
        "id": "one-send",
        "name": "One send",
        "trigger": {"event": "visited"},
        "steps": [{"id": "message", "type": "send", **send}],
    }


async def only_message(engine: Engine, customer: str) -> asyncpg.Record:
    rows = await engine.messages(customer)
    assert len(rows) == 1
    return rows[0]


async def test_first_usable_channel_in_the_steps_order_and_why_others_were_not(engine: Engine) -> None:
    journey = journey_from(one_send(channels=["push", "sms", "email"], content=CONTENT))
    customer = await make_customer(engine.pool, phone=True, consent=("email", "sms"))  # no push token or consent
    await (await engine.enter(journey, customer)).result()
    row = await only_message(engine, customer)
    assert (row["channel"], row["status"]) == ("sms", "sent")
    assert row["choice"]["chosen"] == "sms"
    assert row["choice"]["refused"] == {"push": "no_consent:push"}
    assert engine.mail_to(customer) == []


async def test_permanent_failure_falls_back_to_the_next_channel(engine: Engine) -> None:
    journey = journey_from(one_send(channels=["email", "sms"], content=CONTENT))
    customer = await make_customer(engine.pool, phone=True, consent=("email", "sms"))
    engine.smtp.fail(550, times=1)
    await (await engine.enter(journey, customer)).result()
    row = await only_message(engine, customer)
    assert (row["channel"], row["status"], row["rendered"]["text"]) == ("sms", "sent", "By SMS")
    assert [f["channel"] for f in row["choice"]["failed"]] == ["email"]
    assert "550" in row["choice"]["failed"][0]["error"]


async def test_every_channel_refused_is_one_skip_listing_the_reasons(engine: Engine) -> None:
    journey = journey_from(one_send(channels=["email", "sms"], content=CONTENT))
    customer = await make_customer(engine.pool, consent=())
    await (await engine.enter(journey, customer)).result()
    row = await only_message(engine, customer)
    assert row["status"] == "skipped"
    assert row["reason"] == "no_usable_channel: no_consent:email; no_consent:sms"


async def test_preferred_channel_first(engine: Engine) -> None:
    journey = journey_from(one_send(channels="preferred", content=CONTENT))
    customer = await make_customer(
        engine.pool, phone=True, push=True, consent=("email", "sms", "push"), attributes={"preferred_channel": "sms"}
    )
    await (await engine.enter(journey, customer)).result()
    row = await only_message(engine, customer)
    assert row["channel"] == "sms"
    assert row["choice"]["why"] == "customer's preferred channel (sms) first"


async def test_cheapest_usable_channel(engine: Engine) -> None:
    journey = journey_from(one_send(channels="cheapest", content=CONTENT))
    everything = await make_customer(engine.pool, phone=True, push=True, consent=("email", "sms", "push"))
    no_push = await make_customer(engine.pool, phone=True, consent=("email", "sms"))
    await (await engine.enter(journey, everything)).result()
    await (await engine.enter(journey, no_push)).result()
    assert (await only_message(engine, everything))["channel"] == "push"
    assert (await only_message(engine, no_push))["channel"] == "email"
    assert (await only_message(engine, no_push))["choice"]["order"] == ["push", "email", "sms"]


async def test_content_follows_the_customers_locale(engine: Engine) -> None:
    journey = journey_from(one_send(channel="email", template=CONTENT["email"]))
    french = await make_customer(engine.pool, locale="fr-FR")
    other = await make_customer(engine.pool, locale="de")
    await (await engine.enter(journey, french)).result()
    await (await engine.enter(journey, other)).result()
    assert [m["Subject"] for m in engine.mail_to(french)] == ["Par e-mail"]
    assert [m["Subject"] for m in engine.mail_to(other)] == ["By email"]


def window_around(now_utc: Any, before: timedelta, after: timedelta) -> str:
    local = now_utc.astimezone(PARIS)
    return f"{(local - before):%H:%M}-{(local + after):%H:%M}"


async def test_quiet_hours_hold_marketing_until_they_end_or_skip_it(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    now = await time_skipping_env.get_current_time()
    window = window_around(now, timedelta(hours=1), timedelta(hours=3))
    async with running_engine(time_skipping_env, pool, smtp_sink, quiet_hours=window) as engine:
        waits = journey_from(one_send(channel="email", template=CONTENT["email"]))
        skips = journey_from(one_send(channel="email", template=CONTENT["email"], quiet_hours="skip"))
        receipt = journey_from(one_send(channel="email", template=CONTENT["email"], kind="transactional"))
        a, b, c = [await make_customer(pool) for _ in range(3)]
        handles = [await engine.enter(waits, a), await engine.enter(skips, b), await engine.enter(receipt, c)]
        for handle in handles:
            await handle.result()

    held = await only_message(engine, a)
    assert held["status"] == "sent"
    assert held["decided_at"].astimezone(PARIS).strftime("%H:%M") == window.split("-")[1]
    assert held["decided_at"] - now >= timedelta(hours=2, minutes=59)
    skipped = await only_message(engine, b)
    assert (skipped["status"], skipped["reason"]) == ("skipped", "quiet_hours")
    sent_at_once = await only_message(engine, c)
    assert sent_at_once["status"] == "sent"
    assert sent_at_once["decided_at"] - now < timedelta(minutes=5)


async def test_a_customers_own_quiet_hours_win(engine: Engine) -> None:
    now = await engine.env.get_current_time()
    own = window_around(now, timedelta(minutes=30), timedelta(hours=1))
    journey = journey_from(one_send(channel="email", template=CONTENT["email"], quiet_hours="skip"))
    customer = await make_customer(engine.pool, attributes={"quiet_hours": own})
    await (await engine.enter(journey, customer)).result()
    assert (await only_message(engine, customer))["reason"] == "quiet_hours"


def daily_drip(**send: Any) -> dict[str, Any]:
    mail = {"type": "send", "channel": "email", **send}
    return {
        "id": "daily",
        "name": "Daily",
        "trigger": {"event": "visited"},
        "steps": [
            {"id": "d1", **mail, "template": {"subject": "1", "text": "x"}},
            {"id": "w1", "type": "wait", "duration": "1d"},
            {"id": "d2", **mail, "template": {"subject": "2", "text": "x"}},
            {"id": "w2", "type": "wait", "duration": "1d"},
            {"id": "d3", **mail, "template": {"subject": "3", "text": "x"}},
        ],
    }


async def test_frequency_cap_skips_or_waits_for_the_next_slot(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    caps = [{"limit": 2, "per": "7d"}]
    async with running_engine(time_skipping_env, pool, smtp_sink, frequency_caps=caps) as engine:
        skipper, waiter = await make_customer(pool), await make_customer(pool)
        await (await engine.enter(journey_from(daily_drip()), skipper)).result()
        await (await engine.enter(journey_from(daily_drip(when_capped="wait")), waiter)).result()

    rows = await engine.messages(skipper)
    assert [(r["step_id"], r["status"]) for r in rows] == [("d1", "sent"), ("d2", "sent"), ("d3", "skipped")]
    assert rows[2]["reason"] == "frequency_cap: global cap: 2 per 7d"
    rows = await engine.messages(waiter)
    assert [r["status"] for r in rows] == ["sent", "sent", "sent"]
    assert rows[2]["decided_at"] - rows[0]["decided_at"] >= timedelta(days=7)


async def test_a_customers_frequency_preference_and_transactional_exemption(engine: Engine) -> None:
    weekly = await make_customer(engine.pool, attributes={"frequency_cap": "weekly"})
    await (await engine.enter(journey_from(daily_drip()), weekly)).result()
    assert [r["status"] for r in await engine.messages(weekly)] == ["sent", "skipped", "skipped"]

    receipts = await make_customer(engine.pool, attributes={"frequency_cap": "weekly"})
    await (await engine.enter(journey_from(daily_drip(kind="transactional")), receipts)).result()
    assert [r["status"] for r in await engine.messages(receipts)] == ["sent", "sent", "sent"]


async def test_concurrent_sends_cannot_both_take_the_last_slot(
    dev_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    # A race wants real time: on the time-skipping server the clock runs on while activities wait for the lock.
    async with running_engine(dev_env, pool, smtp_sink, frequency_caps=[{"limit": 1, "per": "1d"}]) as engine:
        customer = await make_customer(pool)
        journeys = [
            journey_from(one_send(channel="email", template={"subject": f"j{i}", "text": "x"})) for i in range(4)
        ]
        handles = [await engine.enter(j, customer) for j in journeys]
        results = await asyncio.gather(*(h.result() for h in handles), return_exceptions=True)
    failures = [_cause_chain(r) for r in results if isinstance(r, BaseException)]
    assert failures == []
    assert all(isinstance(r, JourneyResult) and r.status == "completed" for r in results)
    statuses = sorted(r["status"] for r in await engine.messages(customer))
    assert statuses == ["sent", "skipped", "skipped", "skipped"]
    assert len(engine.mail_to(customer)) == 1


def _cause_chain(error: BaseException) -> str:
    parts = []
    current: BaseException | None = error
    while current is not None:
        parts.append(f"{type(current).__name__}: {current}")
        current = current.__cause__
    return " <- ".join(parts)


async def test_an_opt_in_topic_defined_through_the_api_needs_a_grant(engine: Engine) -> None:
    topic = f"vip-previews-{uuid.uuid4().hex[:6]}"
    await preference_store.put_topic(engine.pool, topic, label="VIP previews", description="", default="opt_in")
    journey = journey_from(one_send(channel="email", template=CONTENT["email"], topic=topic))
    customer = await make_customer(engine.pool)
    await (await engine.enter(journey, customer)).result()
    assert (await only_message(engine, customer))["reason"] == f"topic_not_granted:{topic}"


async def test_templates_link_the_preference_page(engine: Engine) -> None:
    journey = journey_from(
        one_send(channel="email", template={"subject": "Hi", "text": "Manage: {{ preferences_url }}"})
    )
    customer = await make_customer(engine.pool)
    await (await engine.enter(journey, customer)).result()
    body = engine.mail_to(customer)[0].get_content()
    assert "/preferences/" in body
    assert customer not in body.split("/preferences/", 1)[1]


def test_topic_defaults_opt_in_needs_a_grant_opt_out_and_unknown_send() -> None:
    settings = Settings(topics=[{"name": "news", "default": "opt_in"}, {"name": "tips", "default": "opt_out"}])
    trigger = event("c", "x")

    def refusal(topic: str, consent: dict[str, str], api: dict[str, str] | None = None) -> str | None:
        request = SendRequest(
            idempotency_key="k", journey_id="j", journey_name="J", journey_version=1, step_id="s",
            customer_id="c", entry_id="e", channel="email", template={}, topic=topic, trigger=trigger,
        )  # fmt: skip
        profile = Profile(customer_id="c", channel_consent={"email": "granted"}, topic_consent=consent)
        return policy.consent_refusal(request, profile, "email", settings, api)

    assert refusal("news", {}) == "topic_not_granted:news"
    assert refusal("news", {"news": "granted"}) is None
    assert refusal("news", {"news": "withdrawn"}) == "topic_withdrawn:news"
    assert refusal("tips", {}) is None
    assert refusal("never-defined", {}) is None
    # The API's definition wins over the settings'.
    assert refusal("tips", {}, {"tips": "opt_in"}) == "topic_not_granted:tips"
    assert refusal("news", {}, {"news": "opt_out"}) is None


def cheapest_request(customer: str, sms_text: str, **fields: Any) -> SendRequest:
    return SendRequest(
        idempotency_key=f"cheap:{customer}:{uuid.uuid4().hex[:8]}",
        journey_id="cheap",
        journey_name="Cheap",
        journey_version=1,
        step_id="nudge",
        customer_id=customer,
        entry_id="e1",
        channel="sms",
        template={},
        trigger=Event(event_id="ev", customer_id=customer, name="go", occurred_at=datetime.now(UTC)),
        candidates=["sms", "email"],
        strategy="cheapest",
        content={"sms": {"text": sms_text}, "email": {"subject": "Your cart", "text": "It waits."}},
        **fields,
    )


async def test_cheapest_ranks_sms_by_the_segments_its_text_takes_for_this_customer(pool: asyncpg.Pool) -> None:
    # Email costs more than one SMS segment and less than three.
    settings = make_settings(channel_costs={"email": 0.05, "sms": 0.02})
    sender = JourneyActivities(pool, {}, settings)
    text = "Votre panier vous attend \u2019{{ customer.note }}\u2019"  # curly quotes: UCS-2, 70 then 67 per part
    short = await make_customer(pool, phone=True, consent=("email", "sms"), attributes={"note": "à bientôt"})
    long = await make_customer(pool, phone=True, consent=("email", "sms"), attributes={"note": "x" * 150})

    async with pool.acquire() as conn:
        one = await sender.decide(conn, cheapest_request(short, text), datetime.now(UTC))
        three = await sender.decide(conn, cheapest_request(long, text), datetime.now(UTC))

    assert one.order == ["sms", "email"]
    assert three.order == ["email", "sms"]  # 3 segments: 0.06, over email's 0.05
    assert three.why == "cheapest first (email=0.05, sms=0.06; sms 3 segment(s))"
    assert one.why == "cheapest first (sms=0.02, email=0.05; sms 1 segment(s))"


async def test_cheapest_counts_the_tracked_link_and_puts_an_unrenderable_sms_last(pool: asyncpg.Pool) -> None:
    settings = make_settings(channel_costs={"email": 0.05, "sms": 0.03})
    sender = JourneyActivities(pool, {}, settings)
    customer = await make_customer(pool, phone=True, consent=("email", "sms"))
    # 150 GSM-7 characters: one segment as written, two once the link is rewritten to a longer tracked link.
    link_text = "Your cart: https://s.example/c " + "." * 120
    async with pool.acquire() as conn:
        untracked = await sender.decide(conn, cheapest_request(customer, link_text, track=False), datetime.now(UTC))
        tracked = await sender.decide(conn, cheapest_request(customer, link_text), datetime.now(UTC))
        broken = await sender.decide(conn, cheapest_request(customer, "{% if %}"), datetime.now(UTC))
    assert untracked.order == ["sms", "email"]
    assert tracked.order == ["email", "sms"]
    assert broken.order == ["email", "sms"]
    assert broken.why.endswith("sms text not renderable)")
