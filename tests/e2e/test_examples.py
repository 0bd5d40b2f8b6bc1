"""The example journeys of journeys/examples/, each run end to end on the time-skipping server.

What is asserted is what customers receive (mail at the SMTP sink, message rows with their channel and rendered
content, at which local time) and what is recorded (step outcomes, entries, conversions with variant and value).
Each test that runs a whole example keeps its history for the replay corpus (``PARCOURS_RECORD_HISTORIES=1``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from contracts.journey import EVENT_SIGNAL, EXIT_SIGNAL, STATE_QUERY, ExitRequest, JourneyResult, JourneyState
from contracts.journey import workflow_id as journey_workflow_id
from contracts.segment import SegmentRunInput, SegmentRunResult
from journeys.models import Journey
from store import entries as entry_store
from store import journeys as journey_store
from tests.support.engine import Engine, event, example, make_customer, running_engine
from tests.support.mail import SmtpSink
from tests.support.webhooks import Reply, WebhookSink
from workflows.bucketing import bucket
from workflows.segment import SegmentEntryWorkflow

PARIS = ZoneInfo("Europe/Paris")  # make_customer's time zone


def local(instant: datetime) -> datetime:
    return instant.astimezone(PARIS)


def minute(instant: datetime) -> datetime:
    """The local minute of an instant (a timer fires on the minute; the workflow's clock reads a few ms later)."""
    return local(instant).replace(second=0, microsecond=0)


async def sent(engine: Engine, customer: str) -> list[tuple[str, str, str]]:
    """(step, channel, status) of every message decided for the customer, in order."""
    return [(r["step_id"], r["channel"], r["status"]) for r in await engine.messages(customer)]


async def add_order(pool: asyncpg.Pool, customer_id: str, now: datetime, days_ago: float) -> None:
    """An order in the customer's event history (what segments count), ``days_ago`` before ``now``."""
    await pool.execute(
        "INSERT INTO events (event_id, customer_id, name, properties, occurred_at, routed_at) "
        "VALUES ($1, $2, 'order_placed', $3, $4, now())",
        f"ev-{uuid.uuid4().hex}",
        customer_id,
        {"total": 50},
        now - timedelta(days=days_ago),
    )


# --- win-back ----------------------------------------------------------------------------------------------


def only_cohort(journey: Journey, cohort: str) -> Journey:
    """The example with its segment narrowed to this test's customers (the test database is shared)."""
    data = journey.model_dump(mode="json", by_alias=True)
    segment = data["entry"]["segment"]
    segment["where"] = {"all": [segment["where"], {"field": "profile.cohort", "op": "eq", "value": cohort}]}
    return Journey.model_validate(data)


async def test_win_back_enters_lapsed_customers_holds_out_ten_percent_and_ab_tests_the_rest(engine: Engine) -> None:
    pool, cohort = engine.pool, uuid.uuid4().hex[:8]
    journey = only_cohort(example("win-back"), cohort)
    segment = journey.entry.segment
    assert segment is not None and segment.cron == "0 7 * * *"
    assert journey.holdout is not None and journey.holdout.percent == 10
    await journey_store.publish(pool, journey)
    now = await engine.env.get_current_time()  # the server's clock, ahead of the wall clock after earlier skips

    def role(customer_id: str) -> str:
        """What the journey will do with this customer: the same bucketing as the workflow's."""
        if bucket(journey.id, customer_id, "holdout") < 0.10:
            return "holdout"
        return "miss-you" if bucket(journey.id, customer_id, "offer-test") < 0.5 else "discount"

    # Lapsed customers (last order 90 days ago), one per role: draw customers outside the cohort until each role
    # has one, then bring that one into the cohort.
    lapsed: dict[str, str] = {}
    for _ in range(500):
        if len(lapsed) == 3:
            break
        customer = await make_customer(pool, attributes={"country": "FR", "cohort": f"{cohort}-spare"})
        if role(customer) not in lapsed:
            lapsed[role(customer)] = customer
            await pool.execute(
                "UPDATE customers SET attributes = attributes || $2 WHERE id = $1", customer, {"cohort": cohort}
            )
            await add_order(pool, customer, now, days_ago=90)
    held, miss_you, discount = lapsed["holdout"], lapsed["miss-you"], lapsed["discount"]
    await pool.execute(
        "UPDATE customers SET locale = 'fr-FR', attributes = attributes || $2 WHERE id = $1",
        miss_you,
        {"country": "BE"},
    )

    # Not lapsed, or not for this journey: none of them may enter.
    recent_buyer = await make_customer(pool, attributes={"country": "FR", "cohort": cohort})
    await add_order(pool, recent_buyer, now, days_ago=10)
    await add_order(pool, recent_buyer, now, days_ago=90)
    never_bought = await make_customer(pool, attributes={"country": "FR", "cohort": cohort})
    long_gone = await make_customer(pool, attributes={"country": "FR", "cohort": cohort})
    await add_order(pool, long_gone, now, days_ago=400)
    abroad = await make_customer(pool, attributes={"country": "US", "cohort": cohort})
    await add_order(pool, abroad, now, days_ago=90)
    no_email = await make_customer(pool, email=False, attributes={"country": "FR", "cohort": cohort})
    await add_order(pool, no_email, now, days_ago=90)
    outsiders = [recent_buyer, never_bought, long_gone, abroad, no_email]

    # One firing of the segment schedule, run directly. The test server would skip time while the entry
    # activity runs (it cannot see it), firing the entrants' timers: run it on the server's clock without skipping.
    with engine.env.auto_time_skipping_disabled():
        run: SegmentRunResult = await engine.client.execute_workflow(
            SegmentEntryWorkflow.run,
            SegmentRunInput(journey_id=journey.id, version=1, run_key="day-1"),
            id=f"segment:{journey.id}-day-1",
            task_queue=engine.settings.task_queue,
            result_type=SegmentRunResult,
        )
    assert (run.members, run.entered, run.refused, run.already_running) == (3, 3, 0, 0), run
    entries = await entry_store.entries(pool, journey.id)
    assert sorted(e["customer_id"] for e in entries) == sorted(lapsed.values())

    def handle(customer: str) -> WorkflowHandle[Any, JourneyResult]:
        return engine.client.get_workflow_handle(journey_workflow_id(journey.id, customer), result_type=JourneyResult)

    async with cleaned_up(*(handle(c) for c in lapsed.values())):
        # Day 3: the held-out customer orders anyway. Day 10: the French "miss you" customer orders.
        await engine.env.sleep(timedelta(days=3))
        await handle(held).signal(EVENT_SIGNAL, event(held, "order_placed", {"total": 59.9}))
        await engine.env.sleep(timedelta(days=7))
        await handle(miss_you).signal(EVENT_SIGNAL, event(miss_you, "order_placed", {"total": 120}))

        # Past the 14-day window every run has ended (handles from get_workflow_handle do not skip time: sleep).
        await engine.env.sleep(timedelta(days=5))
        results = {name: await handle(customer).result() for name, customer in lapsed.items()}

        # The control group: counted, never messaged, its order recorded as a holdout conversion.
        assert (results["holdout"].status, results["holdout"].variant) == ("converted", "holdout")
        assert engine.mail_to(held) == [] and await engine.messages(held) == []
        assert await engine.outcomes(held) == {"$holdout": "converted"}
        # Variant "miss-you", French: the French "we miss you" email, a week later the bestsellers, then the order.
        assert (results["miss-you"].status, results["miss-you"].variant) == ("converted", "miss-you")
        assert [m["Subject"] for m in engine.mail_to(miss_you)] == [
            "Vous nous manquez, Ada",
            "Les pièces les plus portées ce mois-ci",
        ]
        assert "COMEBACK15" not in str(engine.mail_to(miss_you)[0].get_body())
        # Variant "discount": the 15% email, the bestsellers; no order in 14 days: no conversion.
        assert (results["discount"].status, results["discount"].variant) == ("completed", "discount")
        discount_mail = engine.mail_to(discount)
        assert [m["Subject"] for m in discount_mail] == [
            "15% off your next order, Ada",
            "What everyone is wearing this month",
        ]
        assert "COMEBACK15" in str(discount_mail[0].get_body())
        assert await engine.outcomes(discount) == {
            "offer-test": "discount",
            "discount-email": "sent",
            "wait-a-week": "waited",
            "bestsellers-email": "sent",
            "conversion-window": "waited",
        }

        conversions = await pool.fetch(
            "SELECT customer_id, variant, value, last_message_key FROM conversions WHERE journey_id = $1", journey.id
        )
        by_customer = {r["customer_id"]: r for r in conversions}
        assert set(by_customer) == {held, miss_you}
        assert (by_customer[held]["variant"], float(by_customer[held]["value"])) == ("holdout", 59.9)
        assert by_customer[held]["last_message_key"] is None
        assert (by_customer[miss_you]["variant"], float(by_customer[miss_you]["value"])) == ("miss-you", 120.0)
        assert by_customer[miss_you]["last_message_key"].endswith(":bestsellers-email:1")

        for outsider in outsiders:
            assert engine.mail_to(outsider) == []
            assert await entry_store.entries(pool, journey.id, outsider) == []
        await engine.save_history(handle(miss_you), "win-back")


# --- limited-time offer --------------------------------------------------------------------------------------


async def test_limited_time_offer_email_at_once_then_a_push_at_nine_the_day_before_the_last_day(
    engine: Engine,
) -> None:
    journey = example("limited-time-offer")
    now = await engine.env.get_current_time()
    last_day = (local(now) + timedelta(days=6)).date()
    offer = {"offer_code": "AUTUMN20", "discount_percent": 20, "last_day": last_day.isoformat()}
    with_push = await make_customer(engine.pool, push=True, consent=("email", "push"))
    french_no_push = await make_customer(engine.pool, locale="fr-FR")
    handle = await engine.enter(journey, with_push, offer)
    french = await engine.enter(journey, french_no_push, offer)

    assert (await handle.result()).status == "completed"
    assert (await french.result()).status == "completed"

    rows = await engine.messages(with_push)
    assert [(r["step_id"], r["channel"], r["status"]) for r in rows] == [
        ("offer-email", "email", "sent"),
        ("reminder", "push", "sent"),
    ]
    [offer_mail] = engine.mail_to(with_push)
    assert offer_mail["Subject"] == f"20% off, just for you, until {last_day.day} {last_day:%B}"
    assert "AUTUMN20" in str(offer_mail.get_body())
    assert rows[0]["decided_at"] - now < timedelta(minutes=5)
    # The reminder is decided at 09:00 in the customer's zone, the day before the offer's last day.
    reminder_at = local(rows[1]["decided_at"])
    assert (reminder_at.date(), reminder_at.hour, reminder_at.minute) == (last_day - timedelta(days=1), 9, 0)
    assert rows[1]["rendered"]["title"] == "Your 20% off ends tomorrow"
    assert "AUTUMN20" in rows[1]["rendered"]["body"]
    # The run stays until the offer is over (midnight after its last day), so a last-day order still converts.
    state = await handle.query(STATE_QUERY, result_type=JourneyState)
    over = next(s for s in state.steps_done if s.step_id == "offer-over")
    until = datetime.fromisoformat(over.detail["until"])
    assert local(until) == datetime.combine(last_day + timedelta(days=1), datetime.min.time(), tzinfo=PARIS)
    attributes = await engine.pool.fetchval("SELECT attributes FROM customers WHERE id = $1", with_push)
    assert attributes["offer_last_day"] == last_day.isoformat()
    assert await engine.outcomes(with_push) == {
        "remember-last-day": "updated",
        "offer-email": "sent",
        "morning-before-last-day": "waited",
        "reminder": "sent",
        "offer-over": "waited",
    }

    # No push for this customer: the reminder goes by email, in French, at the same local time.
    french_rows = await engine.messages(french_no_push)
    assert [(r["step_id"], r["channel"]) for r in french_rows] == [("offer-email", "email"), ("reminder", "email")]
    assert french_rows[1]["choice"]["refused"] == {"push": "no_consent:push"}
    assert [m["Subject"] for m in engine.mail_to(french_no_push)] == [
        f"-20 % rien que pour vous, jusqu'au {last_day:%d/%m}",
        "Dernière chance : votre remise de 20 % se termine demain",
    ]
    assert local(french_rows[1]["decided_at"]).hour == 9
    await engine.save_history(handle, "limited-time-offer")


async def test_an_order_before_the_reminder_ends_the_offer_journey_without_a_push(engine: Engine) -> None:
    journey = example("limited-time-offer")
    now = await engine.env.get_current_time()
    last_day = (local(now) + timedelta(days=6)).date()
    customer = await make_customer(engine.pool, push=True, consent=("email", "push"))
    offer = {"offer_code": "AUTUMN20", "discount_percent": 20, "last_day": last_day.isoformat()}
    handle = await engine.enter(journey, customer, offer)
    await engine.env.sleep(timedelta(days=2))
    order = event(customer, "order_placed", {"total": 80})
    await handle.signal(EVENT_SIGNAL, order)

    result = await handle.result()

    assert (result.status, result.conversion_event_id) == ("converted", order.event_id)
    assert await sent(engine, customer) == [("offer-email", "email", "sent")]
    assert (await engine.outcomes(customer))["morning-before-last-day"] == "goal"
    value = await engine.pool.fetchval("SELECT value FROM conversions WHERE customer_id = $1", customer)
    assert float(value) == 80.0


# --- birthday ------------------------------------------------------------------------------------------------


def nine_am(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time().replace(hour=9), tzinfo=PARIS)


async def leave(handle: WorkflowHandle[Any, JourneyResult]) -> JourneyResult:
    """End a journey that loops forever, as an operator would."""
    await handle.signal(EXIT_SIGNAL, ExitRequest(reason="test over"))
    return await handle.result()


@contextlib.asynccontextmanager
async def cleaned_up(*handles: WorkflowHandle[Any, Any]) -> AsyncIterator[None]:
    """Whatever happens in the block, leave no run behind: a timer firing after this test's worker is gone
    would stall time skipping for the tests that follow."""
    try:
        yield
    finally:
        for handle in handles:
            with contextlib.suppress(RPCError):
                await handle.terminate("test over")


async def test_birthday_email_at_nine_local_on_the_birthday_and_again_the_next_year(engine: Engine) -> None:
    journey = example("birthday")
    assert journey.entry.reentry == "once" and journey.entry.segment is not None
    now = await engine.env.get_current_time()
    upcoming = local(now).date() + timedelta(days=10)
    if (upcoming.month, upcoming.day) == (2, 29):
        upcoming += timedelta(days=1)
    born = upcoming.replace(year=1990)
    customer = await make_customer(engine.pool, locale="de-DE", attributes={"birthday": born.isoformat()})
    handle = await engine.enter(journey, customer)  # as its daily segment would
    async with cleaned_up(handle):
        await engine.env.sleep(timedelta(days=11))
        rows = await engine.messages(customer)
        assert [(r["step_id"], r["status"]) for r in rows] == [("birthday-email", "sent")]
        assert minute(rows[0]["decided_at"]) == nine_am(upcoming)
        assert [m["Subject"] for m in engine.mail_to(customer)] == [
            "Alles Gute zum Geburtstag, Ada! Ein Geschenk für Sie"
        ]
        # Back to the wait: the next birthday, a year later.
        state = await handle.query(STATE_QUERY, result_type=JourneyState)
        assert state.status == "running" and state.current_step == "next-birthday"

        await engine.env.sleep(timedelta(days=366))
        rows = await engine.messages(customer)
        assert [r["step_id"] for r in rows] == ["birthday-email", "birthday-email"]
        assert minute(rows[1]["decided_at"]) == nine_am(upcoming.replace(year=upcoming.year + 1))
        assert rows[1]["idempotency_key"].endswith(":birthday-email:2")
        assert len(engine.mail_to(customer)) == 2

        result = await leave(handle)
        assert (result.status, result.exit_reason) == ("exited", "test over")
        await engine.save_history(handle, "birthday")


async def test_a_29_february_birthday_is_celebrated_on_28_february_in_other_years(engine: Engine) -> None:
    journey = example("birthday")
    now = await engine.env.get_current_time()
    # Every birthday from now up to and including the next 29 February.
    expected: list[date] = []
    year = local(now).year
    while not expected or expected[-1].day != 29:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        day = date(year, 2, 29 if leap else 28)
        if nine_am(day) > now:
            expected.append(day)
        year += 1
    customer = await make_customer(engine.pool, attributes={"birthday": "1996-02-29"})
    handle = await engine.enter(journey, customer)
    async with cleaned_up(handle):
        await engine.env.sleep(nine_am(expected[-1]) - now + timedelta(days=1))

        rows = await engine.messages(customer)
        assert [minute(r["decided_at"]) for r in rows] == [nine_am(d) for d in expected]
        assert all(r["status"] == "sent" for r in rows)
        assert [m["Subject"] for m in engine.mail_to(customer)] == ["Happy birthday, Ada! A gift inside"] * len(
            expected
        )
        await leave(handle)


async def test_a_customer_without_a_birthday_leaves_at_once(engine: Engine) -> None:
    customer = await make_customer(engine.pool)
    result = await (await engine.enter(example("birthday"), customer)).result()
    assert result.status == "completed"
    assert await engine.outcomes(customer) == {"next-birthday": "no_date"}
    assert engine.mail_to(customer) == []


# --- onboarding with channel fallback ------------------------------------------------------------------------


async def test_onboarding_goes_by_push_else_sms_else_email_in_the_customers_language(engine: Engine) -> None:
    journey = example("onboarding-fallback")
    french_with_app = await make_customer(
        engine.pool, phone=True, push=True, consent=("email", "sms", "push"), locale="fr-FR"
    )
    no_device = await make_customer(engine.pool, phone=True, consent=("email", "sms", "push"))  # no push token
    email_only = await make_customer(engine.pool, phone=True, consent=("email",))  # a phone, but no SMS consent
    handles = {c: await engine.enter(journey, c) for c in (french_with_app, no_device, email_only)}
    for handle in handles.values():
        assert (await handle.result()).status == "completed"

    rows = await engine.messages(french_with_app)
    assert [(r["step_id"], r["channel"], r["status"]) for r in rows] == [
        ("welcome", "push", "sent"),
        ("finish-account", "push", "sent"),
    ]
    assert rows[0]["rendered"]["title"] == "Bienvenue chez Parcours Shop"
    assert rows[1]["rendered"]["title"] == "Votre compte est presque prêt"
    assert rows[0]["choice"]["order"] == ["push", "sms", "email"] and rows[0]["choice"]["refused"] == {}
    assert rows[1]["decided_at"] - rows[0]["decided_at"] >= timedelta(days=1)
    assert engine.mail_to(french_with_app) == []

    rows = await engine.messages(no_device)
    assert [(r["channel"], r["status"]) for r in rows] == [("sms", "sent"), ("sms", "sent")]
    assert rows[0]["choice"]["refused"] == {"push": "unreachable:push"}
    assert rows[0]["rendered"]["text"].startswith("Parcours Shop: welcome Ada!")
    assert rows[0]["recipient"] == "+33600000000"

    rows = await engine.messages(email_only)
    assert [(r["channel"], r["status"]) for r in rows] == [("email", "sent"), ("email", "sent")]
    assert rows[0]["choice"]["refused"] == {"push": "no_consent:push", "sms": "no_consent:sms"}
    assert [m["Subject"] for m in engine.mail_to(email_only)] == [
        "Welcome to Parcours Shop, Ada",
        "Your account is almost ready",
    ]
    await engine.save_history(handles[french_with_app], "onboarding-fallback")


async def test_onboarding_stops_when_the_account_is_completed(engine: Engine) -> None:
    customer = await make_customer(engine.pool, phone=True, push=True, consent=("email", "sms", "push"))
    handle = await engine.enter(example("onboarding-fallback"), customer)
    await engine.env.sleep(timedelta(hours=5))
    await handle.signal(EVENT_SIGNAL, event(customer, "account_completed"))

    result = await handle.result()

    assert (result.status, result.exit_reason) == ("exited", "account completed")
    assert await sent(engine, customer) == [("welcome", "push", "sent")]
    outcomes = await engine.outcomes(customer)
    assert (outcomes["wait-1-day"], outcomes["$exit"]) == ("exit", "exit")
    assert "finish-account" not in outcomes


async def test_onboarding_falls_back_when_a_channel_refuses_for_good(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink, webhook_sink: WebhookSink
) -> None:
    # Push goes through a push gateway (the webhook adapter here), which says the device token is dead.
    webhook_sink.set_default(Reply(410, {"error": "device token expired"}))
    async with running_engine(
        time_skipping_env, pool, smtp_sink, channel_push="webhook", webhook_url=webhook_sink.url
    ) as engine:
        journey = example("onboarding-fallback")
        dead_token = await make_customer(pool, phone=True, push=True, consent=("email", "sms", "push"))
        # Email is the last resort: a permanent SMTP refusal of the nudge fails that message, recorded as such.
        email_only = await make_customer(pool, consent=("email",))
        await (await engine.enter(journey, dead_token)).result()
        handle = await engine.enter(journey, email_only)
        await engine.env.sleep(timedelta(hours=1))
        smtp_sink.fail(550, times=1)
        assert (await handle.result()).status == "completed"

    rows = await engine.messages(dead_token)
    assert [(r["step_id"], r["channel"], r["status"]) for r in rows] == [
        ("welcome", "sms", "sent"),
        ("finish-account", "sms", "sent"),
    ]
    assert [f["channel"] for f in rows[0]["choice"]["failed"]] == ["push"]
    assert "410" in rows[0]["choice"]["failed"][0]["error"]
    pushes = [r.json() for r in webhook_sink.requests]
    assert [(p["step_id"], p["payload"]["title"]) for p in pushes] == [
        ("welcome", "Welcome to Parcours Shop"),
        ("finish-account", "Your account is almost ready"),
    ]

    rows = await engine.messages(email_only)
    assert [(r["step_id"], r["channel"], r["status"]) for r in rows] == [
        ("welcome", "email", "sent"),
        ("finish-account", "email", "failed"),
    ]
    assert rows[1]["reason"].startswith("provider_rejected:") and "550" in rows[1]["reason"]
    assert [f["channel"] for f in rows[1]["choice"]["failed"]] == ["email"]
    assert [m["Subject"] for m in engine.mail_to(email_only)] == ["Welcome to Parcours Shop, Ada"]
