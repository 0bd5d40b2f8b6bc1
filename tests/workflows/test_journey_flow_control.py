"""Exit criteria, conversion windows, A/B splits, holdouts and calendar waits, end to end."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import CancelledError

from contracts.journey import EVENT_SIGNAL, EXIT_SIGNAL, STATE_QUERY, ExitRequest, JourneyResult, JourneyState
from tests.support.engine import Engine, event, journey_from, make_customer
from workflows.bucketing import bucket

MAIL = {"subject": "Hello", "text": "hi"}


def drip(**extra: Any) -> dict[str, Any]:
    """Three emails a day apart."""
    return {
        "id": "drip",
        "name": "Drip",
        "trigger": {"event": "signed_up"},
        "steps": [
            {"id": "one", "type": "send", "channel": "email", "template": {**MAIL, "subject": "one"}},
            {"id": "wait-1", "type": "wait", "duration": "1d"},
            {"id": "two", "type": "send", "channel": "email", "template": {**MAIL, "subject": "two"}},
            {"id": "wait-2", "type": "wait", "duration": "1d"},
            {"id": "three", "type": "send", "channel": "email", "template": {**MAIL, "subject": "three"}},
        ],
        **extra,
    }


async def test_exit_event_during_a_wait_ends_the_journey_with_its_reason(engine: Engine) -> None:
    journey = journey_from(drip(exit_when=[{"event": "unsubscribed", "reason": "unsubscribed from everything"}]))
    customer = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer)
    await engine.env.sleep(timedelta(hours=3))
    await handle.signal(EVENT_SIGNAL, event(customer, "unsubscribed"))

    result: JourneyResult = await handle.result()

    assert (result.status, result.exit_reason) == ("exited", "unsubscribed from everything")
    assert [m["Subject"] for m in engine.mail_to(customer)] == ["one"]
    outcomes = await engine.outcomes(customer)
    assert outcomes["$exit"] == "exit"
    assert "two" not in outcomes


async def test_profile_exit_criterion_is_checked_before_every_step(engine: Engine) -> None:
    journey = journey_from(
        drip(exit_when=[{"where": [{"field": "profile.plan", "op": "eq", "value": "paid"}], "reason": "upgraded"}])
    )
    customer = await make_customer(engine.pool, attributes={"plan": "trial"})
    handle = await engine.enter(journey, customer)
    await engine.env.sleep(timedelta(hours=30))
    await engine.pool.execute(
        'UPDATE customers SET attributes = attributes || \'{"plan": "paid"}\' WHERE id = $1', customer
    )

    result: JourneyResult = await handle.result()

    assert (result.status, result.exit_reason) == ("exited", "upgraded")
    assert [m["Subject"] for m in engine.mail_to(customer)] == ["one", "two"]


async def test_goal_outside_its_window_neither_converts_nor_stops(engine: Engine) -> None:
    journey = journey_from(drip(goal={"event": "order_placed", "within": "12h"}))
    late = await make_customer(engine.pool)
    handle = await engine.enter(journey, late)
    await engine.env.sleep(timedelta(hours=20))
    await handle.signal(EVENT_SIGNAL, event(late, "order_placed"))
    assert (await handle.result()).status == "completed"
    assert len(engine.mail_to(late)) == 3

    early = await make_customer(engine.pool)
    handle = await engine.enter(journey, early)
    await engine.env.sleep(timedelta(hours=2))
    await handle.signal(EVENT_SIGNAL, event(early, "order_placed"))
    assert (await handle.result()).status == "converted"


def ab_journey(**extra: Any) -> dict[str, Any]:
    return {
        "id": "ab",
        "name": "A/B",
        "trigger": {"event": "signed_up"},
        "goal": {"event": "order_placed"},
        "steps": [
            {
                "id": "test",
                "type": "split",
                "variants": [
                    {"name": "a", "weight": 1, "next": "mail-a"},
                    {"name": "b", "weight": 3, "next": "mail-b"},
                ],
            },
            {
                "id": "mail-a",
                "type": "send",
                "channel": "email",
                "next": "pause",
                "template": {**MAIL, "subject": "variant a"},
            },
            {"id": "mail-b", "type": "send", "channel": "email", "template": {**MAIL, "subject": "variant b"}},
            {"id": "pause", "type": "wait", "duration": "2d"},
        ],
        **extra,
    }


async def test_split_sends_each_customer_one_stable_variant_and_conversions_carry_it(engine: Engine) -> None:
    journey = journey_from(ab_journey())
    customers = [await make_customer(engine.pool) for _ in range(12)]
    variants = {}
    for customer in customers:
        handle = await engine.enter(journey, customer)
        await engine.env.sleep(timedelta(hours=1))
        await handle.signal(EVENT_SIGNAL, event(customer, "order_placed"))
        result: JourneyResult = await handle.result()
        assert result.status == "converted"
        variants[customer] = result.variant
        assert [m["Subject"] for m in engine.mail_to(customer)] == [f"variant {result.variant}"]
    # The same bucketing decides every time: recompute it from journey, customer and step.
    for customer, variant in variants.items():
        expected = "a" if bucket(journey.id, customer, "test") * 4 < 1 else "b"
        assert variant == expected
    rows = await engine.pool.fetch("SELECT customer_id, variant FROM conversions WHERE journey_id = $1", journey.id)
    assert {r["customer_id"]: r["variant"] for r in rows} == variants
    assert set(Counter(variants.values())) <= {"a", "b"}


async def test_a_run_through_two_splits_keeps_both_assignments_with_its_conversion(engine: Engine) -> None:
    definition = ab_journey()
    definition["steps"][1]["next"] = "offer"  # after either mail, a second split
    definition["steps"].insert(
        3,
        {
            "id": "offer",
            "type": "split",
            "variants": [{"name": "free_shipping", "weight": 1}, {"name": "ten_percent", "weight": 1}],
        },
    )
    journey = journey_from(definition)
    customer = await make_customer(engine.pool)
    while bucket(journey.id, customer, "test") * 4 >= 1:  # a customer the first split sends to variant a
        customer = await make_customer(engine.pool)
    offer = "free_shipping" if bucket(journey.id, customer, "offer") * 2 < 1 else "ten_percent"

    handle = await engine.enter(journey, customer)
    await engine.env.sleep(timedelta(hours=1))
    await handle.signal(EVENT_SIGNAL, event(customer, "order_placed", {"total": 30}))
    result: JourneyResult = await handle.result()

    assert result.status == "converted"
    assert result.variant == offer  # the last split, as before
    row = await engine.pool.fetchrow("SELECT variant, variants FROM conversions WHERE customer_id = $1", customer)
    assert (row["variant"], row["variants"]) == (offer, {"test": "a", "offer": offer})
    await engine.save_history(handle, "ab-two-splits-assignments-kept")


async def test_holdout_is_counted_receives_nothing_and_its_conversions_are_recorded(engine: Engine) -> None:
    journey = journey_from(ab_journey(holdout={"percent": 50, "observe_for": "3d"}))
    held, treated = None, None
    while held is None or treated is None:
        customer = await make_customer(engine.pool)
        if bucket(journey.id, customer, "holdout") < 0.5:
            held = held or customer
        else:
            treated = treated or customer

    handle = await engine.enter(journey, held)
    await engine.env.sleep(timedelta(days=1))
    await handle.signal(EVENT_SIGNAL, event(held, "order_placed"))
    result: JourneyResult = await handle.result()
    assert (result.status, result.variant) == ("converted", "holdout")
    assert engine.mail_to(held) == []
    assert await engine.messages(held) == []
    assert (await engine.outcomes(held)) == {"$holdout": "converted"}
    conversion = await engine.pool.fetchrow("SELECT variant FROM conversions WHERE customer_id = $1", held)
    assert conversion["variant"] == "holdout"

    handle = await engine.enter(journey, treated)
    assert (await handle.result()).variant in ("a", "b")
    assert len(engine.mail_to(treated)) == 1


async def test_wait_until_a_weekday_morning_in_the_customers_zone(engine: Engine) -> None:
    entered = await engine.env.get_current_time()
    journey = journey_from(
        {
            "id": "morning",
            "name": "Morning",
            "trigger": {"event": "signed_up"},
            "steps": [
                {"id": "morning", "type": "wait_until", "at": "09:00", "weekdays": ["mon", "tue", "wed", "thu", "fri"]},
                {"id": "hello", "type": "send", "channel": "email", "template": MAIL},
            ],
        }
    )
    customer = await make_customer(engine.pool)  # Europe/Paris
    handle = await engine.enter(journey, customer)
    await handle.result()
    state: JourneyState = await handle.query(STATE_QUERY, result_type=JourneyState)
    sent_at = next(s.started_at for s in state.steps_done if s.step_id == "hello")
    local = sent_at.astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute) == (9, 0)
    assert local.weekday() < 5
    assert timedelta(0) < sent_at - entered <= timedelta(days=3, hours=1)


async def test_wait_until_a_profile_date_with_an_offset_and_a_yearly_birthday(engine: Engine) -> None:
    now = await engine.env.get_current_time()  # the test server's clock, days ahead of the wall clock
    in_ten_days = (now + timedelta(days=10)).date().isoformat()
    journey = journey_from(
        {
            "id": "trial",
            "name": "Trial ends",
            "trigger": {"event": "signed_up"},
            "steps": [
                {
                    "id": "before-end",
                    "type": "wait_until",
                    "attribute": "trial_ends_at",
                    "offset": "-2d",
                    "at": "10:00",
                },
                {"id": "reminder", "type": "send", "channel": "email", "template": MAIL},
                {
                    "id": "birthday",
                    "type": "wait_until",
                    "attribute": "profile.birthday",
                    "every_year": True,
                    "at": "09:00",
                },
                {"id": "wishes", "type": "send", "channel": "email", "template": {**MAIL, "subject": "Happy birthday"}},
            ],
        }
    )
    customer = await make_customer(engine.pool, attributes={"trial_ends_at": in_ten_days, "birthday": "1992-02-29"})
    no_dates = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer)
    await handle.result()
    state: JourneyState = await handle.query(STATE_QUERY, result_type=JourneyState)
    started = {s.step_id: s.started_at for s in state.steps_done}
    paris = ZoneInfo("Europe/Paris")
    reminder = started["reminder"].astimezone(paris)
    assert reminder.date().isoformat() == (datetime.fromisoformat(in_ten_days) - timedelta(days=2)).date().isoformat()
    assert reminder.hour == 10
    wishes = started["wishes"].astimezone(paris)
    assert (wishes.month, wishes.day, wishes.hour) in ((2, 28, 9), (2, 29, 9))

    # Without the date, the journey ends there: no reminder about a trial that has no end.
    await (await engine.enter(journey, no_dates)).result()
    assert (await engine.outcomes(no_dates)) == {"before-end": "no_date"}
    assert engine.mail_to(no_dates) == []


async def test_an_exit_request_ends_a_waiting_journey_with_its_reason(engine: Engine) -> None:
    journey = journey_from(drip())
    customer = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer)
    await engine.env.sleep(timedelta(hours=2))
    await handle.signal(EXIT_SIGNAL, ExitRequest(reason="archived"))

    result: JourneyResult = await handle.result()

    assert (result.status, result.exit_reason) == ("exited", "archived")
    assert [m["Subject"] for m in engine.mail_to(customer)] == ["one"]
    outcomes = await engine.outcomes(customer)
    assert outcomes["wait-1"] == "exit"
    assert outcomes["$exit"] == "exit"


async def test_a_cancelled_run_records_why_the_customer_left(engine: Engine) -> None:
    journey = journey_from(drip())
    customer = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer)
    await engine.env.sleep(timedelta(hours=2))
    await handle.cancel()

    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    row = await engine.pool.fetchrow(
        "SELECT detail FROM step_outcomes WHERE customer_id = $1 AND step_id = '$exit'", customer
    )
    assert row["detail"]["reason"] == "cancelled"
    assert len(engine.mail_to(customer)) == 1


def offer_reminder() -> dict[str, Any]:
    return {
        "id": "offer",
        "name": "Offer",
        "trigger": {"event": "offer_granted"},
        "steps": [
            {"id": "offer-mail", "type": "send", "channel": "email", "template": {**MAIL, "subject": "Your offer"}},
            {
                "id": "day-before",
                "type": "wait_until",
                "attribute": "trigger.ends_at",
                "offset": "-1d",
                "at": "09:00",
                "on_past": "end",
            },
            {"id": "reminder", "type": "send", "channel": "email", "template": {**MAIL, "subject": "Ends tomorrow"}},
        ],
    }


async def test_wait_until_a_trigger_date_time_at_a_time_of_day_and_skip_when_past(engine: Engine) -> None:
    journey = journey_from(offer_reminder())
    now = await engine.env.get_current_time()
    paris = ZoneInfo("Europe/Paris")
    ends = (now + timedelta(days=5)).astimezone(paris).replace(hour=23, minute=59, second=0, microsecond=0)
    customer = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer, {"ends_at": ends.isoformat()})
    await handle.result()
    state: JourneyState = await handle.query(STATE_QUERY, result_type=JourneyState)
    reminder = next(s.started_at for s in state.steps_done if s.step_id == "reminder").astimezone(paris)
    assert (reminder.date(), reminder.hour, reminder.minute) == ((ends - timedelta(days=1)).date(), 9, 0)

    # Less than a day left: the reminder's moment has passed, and on_past says to end there.
    late = await make_customer(engine.pool)
    now = await engine.env.get_current_time()
    soon = (now + timedelta(hours=2)).isoformat()
    await (await engine.enter(journey, late, {"ends_at": soon})).result()
    assert [m["Subject"] for m in engine.mail_to(late)] == ["Your offer"]
    assert (await engine.outcomes(late))["day-before"] == "past"
