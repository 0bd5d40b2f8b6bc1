"""The journey engine end to end: real worker, real PostgreSQL, real SMTP, days skipped by the test server."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import WorkflowHandle
from temporalio.worker import UnsandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities import links
from activities.journey import JourneyActivities
from contracts import search_attributes as sa
from contracts.journey import EVENT_SIGNAL, STATE_QUERY, JourneyProgress, JourneyResult, JourneyState
from tests.support.engine import (
    Engine,
    engine_settings,
    event,
    example,
    journey_from,
    make_customer,
    set_consent,
)
from tests.support.temporal import task_queue
from workers.worker import build_worker, channels_for


async def finish(handle: WorkflowHandle) -> JourneyResult:
    return await handle.result()


async def test_welcome_series_sends_three_emails_over_a_week(engine: Engine) -> None:
    journey = example("welcome-series")
    customer = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer)

    result = await finish(handle)

    assert result.status == "completed"
    mails = engine.mail_to(customer)
    assert [m["Subject"] for m in mails] == [
        "Welcome to Parcours Shop, Ada!",
        "3 things to try this week",
        "10% off your first order",
    ]
    assert mails[0]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "/v1/unsubscribe/" in mails[0]["List-Unsubscribe"]
    rows = await engine.messages(customer)
    assert [(r["step_id"], r["status"]) for r in rows] == [
        ("welcome-email", "sent"),
        ("tips-email", "sent"),
        ("first-order-offer", "sent"),
    ]
    # The week really passed in workflow time: the offer went out seven days after the welcome.
    assert rows[2]["rendered"]["subject"] == "10% off your first order"
    state = await handle.query(STATE_QUERY, result_type=JourneyState)
    sent = {s.step_id: s.started_at for s in state.steps_done}
    assert sent["first-order-offer"] - sent["welcome-email"] >= timedelta(days=7)
    assert await engine.outcomes(customer) == {
        "welcome-email": "sent",
        "wait-2-days": "waited",
        "tips-email": "sent",
        "wait-5-days": "waited",
        "first-order-offer": "sent",
    }
    await engine.save_history(handle, "welcome-series")  # recorded before the send recorded its own outcome
    await engine.save_history(handle, "welcome-series-send-records-outcome")


async def test_goal_ends_the_journey_and_records_the_conversion(engine: Engine) -> None:
    journey = example("welcome-series")
    customer = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer)
    await engine.env.sleep(timedelta(days=1))
    order = event(customer, "order_placed", {"total": 42.5})
    await handle.signal(EVENT_SIGNAL, order)

    result = await finish(handle)

    assert result.status == "converted"
    assert result.conversion_event_id == order.event_id
    assert [m["Subject"] for m in engine.mail_to(customer)] == ["Welcome to Parcours Shop, Ada!"]
    conversion = await engine.pool.fetchrow("SELECT * FROM conversions WHERE customer_id = $1", customer)
    assert conversion["event_id"] == order.event_id
    assert float(conversion["value"]) == 42.5
    assert conversion["last_message_key"].endswith(":welcome-email:1")


async def test_abandoned_cart_without_a_click_sends_email_then_push_then_sms(engine: Engine) -> None:
    journey = example("abandoned-cart")
    customer = await make_customer(engine.pool, phone=True, push=True, consent=("email", "push", "sms"))
    handle = await engine.enter(journey, customer, {"cart_value": 89.9, "item_count": 2, "cart_url": "https://s/c/1"})

    result = await finish(handle)

    assert result.status == "completed"
    rows = await engine.messages(customer)
    assert [(r["step_id"], r["channel"], r["status"]) for r in rows] == [
        ("cart-email", "email", "sent"),
        ("cart-push", "push", "sent"),
        ("sms-offer", "sms", "sent"),
    ]
    assert [m["Subject"] for m in engine.mail_to(customer)] == ["You left 2 item(s) in your cart"]
    # The cart link went out as a tracked link that leads to it.
    [tracked] = re.findall(r"/c/([A-Za-z0-9_-]+)", rows[2]["rendered"]["text"])
    assert links.open_token(engine.settings, tracked, purpose=links.CLICK)["l"] == "https://s/c/1"
    assert (await engine.outcomes(customer))["wait-for-click"] == "timeout"
    state = await handle.query(STATE_QUERY, result_type=JourneyState)
    started = {s.step_id: s.started_at for s in state.steps_done}
    assert started["cart-email"] - started["wait-1-hour"] >= timedelta(hours=1)
    await engine.save_history(handle, "abandoned-cart")


async def test_abandoned_cart_click_skips_the_push(engine: Engine) -> None:
    journey = example("abandoned-cart")
    customer = await make_customer(engine.pool, phone=True, push=True, consent=("email", "push", "sms"))
    handle = await engine.enter(journey, customer, {"cart_value": 10})
    await engine.env.sleep(timedelta(hours=2))
    # A click on another journey's email does not count; this journey's does.
    await handle.signal(EVENT_SIGNAL, event(customer, "email_clicked", {"journey": "newsletter"}))
    click = event(customer, "email_clicked", {"journey": "abandoned-cart"})
    await handle.signal(EVENT_SIGNAL, click)

    result = await finish(handle)

    assert result.status == "completed"
    assert [r["step_id"] for r in await engine.messages(customer)] == ["cart-email", "sms-offer"]
    assert (await engine.outcomes(customer))["wait-for-click"] == "event"
    await engine.save_history(handle, "abandoned-cart-clicked")


async def test_order_during_the_cart_journey_stops_it(engine: Engine) -> None:
    journey = example("abandoned-cart")
    customer = await make_customer(engine.pool, phone=True, push=True, consent=("email", "push", "sms"))
    handle = await engine.enter(journey, customer, {"cart_value": 10})
    await engine.env.sleep(timedelta(hours=3))
    await handle.signal(EVENT_SIGNAL, event(customer, "order_placed", {"total": 10}))

    result = await finish(handle)

    assert result.status == "converted"
    assert [r["step_id"] for r in await engine.messages(customer)] == ["cart-email"]
    # The analytics say where the order came in: the click wait it cut short, then the conversion.
    assert (await engine.outcomes(customer))["wait-for-click"] == "goal"
    conversion = await engine.pool.fetchrow("SELECT value FROM conversions WHERE customer_id = $1", customer)
    assert float(conversion["value"]) == 10
    await engine.save_history(handle, "abandoned-cart-converted")


async def test_trigger_filter_is_the_routers_business_but_the_goal_filter_is_the_workflows(engine: Engine) -> None:
    journey = journey_from(
        {
            "id": "big-spender",
            "name": "Big spender",
            "trigger": {"event": "visited"},
            "goal": {"event": "order_placed", "where": [{"field": "total", "op": "gte", "value": 100}]},
            "steps": [{"id": "wait", "type": "wait", "duration": "3d"}],
        }
    )
    customer = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer)
    await handle.signal(EVENT_SIGNAL, event(customer, "order_placed", {"total": 20}))
    assert (await finish(handle)).status == "completed"


async def test_consent_withdrawn_mid_journey_skips_the_rest_and_says_why(engine: Engine) -> None:
    journey = example("welcome-series")
    customer = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer)
    await engine.env.sleep(timedelta(days=1))
    assert len(engine.mail_to(customer)) == 1
    await set_consent(engine.pool, customer, "channel", "email", "withdrawn")

    await finish(handle)

    assert len(engine.mail_to(customer)) == 1
    rows = await engine.messages(customer)
    assert [(r["step_id"], r["status"], r["reason"]) for r in rows] == [
        ("welcome-email", "sent", None),
        ("tips-email", "skipped", "consent_withdrawn:email"),
        ("first-order-offer", "skipped", "consent_withdrawn:email"),
    ]


async def test_topic_unsubscribe_and_missing_consent_are_respected(engine: Engine) -> None:
    journey = example("welcome-series")
    no_consent = await make_customer(engine.pool, consent=())
    promo_off = await make_customer(engine.pool)
    await set_consent(engine.pool, promo_off, "topic", "promotions", "withdrawn")

    await finish(await engine.enter(journey, no_consent))
    await finish(await engine.enter(journey, promo_off))

    assert engine.mail_to(no_consent) == []
    assert {r["reason"] for r in await engine.messages(no_consent)} == {"no_consent:email"}
    assert [(r["step_id"], r["status"]) for r in await engine.messages(promo_off)] == [
        ("welcome-email", "sent"),
        ("tips-email", "sent"),
        ("first-order-offer", "skipped"),
    ]


async def test_transactional_messages_need_no_marketing_consent(engine: Engine) -> None:
    journey = journey_from(
        {
            "id": "receipt",
            "name": "Receipt",
            "trigger": {"event": "order_placed"},
            "steps": [
                {
                    "id": "receipt",
                    "type": "send",
                    "channel": "email",
                    "kind": "transactional",
                    "template": {"subject": "Order {{ event.order_id }}", "text": "Thanks!"},
                }
            ],
        }
    )
    customer = await make_customer(engine.pool, consent=())
    await set_consent(engine.pool, customer, "channel", "email", "withdrawn")
    await finish(await engine.enter(journey, customer, {"order_id": "A-17"}))
    mails = engine.mail_to(customer)
    assert [m["Subject"] for m in mails] == ["Order A-17"]
    assert mails[0]["List-Unsubscribe"] is None


TWO_CLICKS: dict[str, Any] = {
    "id": "two-clicks",
    "name": "Two clicks",
    "trigger": {"event": "visited"},
    "steps": [
        {
            "id": "first-click",
            "type": "wait_for",
            "event": "clicked",
            "since": "step",
            "timeout": "1d",
            "on_timeout": "end",
        },
        {"id": "first-thanks", "type": "send", "channel": "email", "template": {"subject": "one", "text": "1"}},
        {
            "id": "second-click",
            "type": "wait_for",
            "event": "clicked",
            "since": "step",
            "timeout": "1d",
            "on_timeout": "end",
        },
        {"id": "second-thanks", "type": "send", "channel": "email", "template": {"subject": "two", "text": "2"}},
    ],
}


@pytest.mark.parametrize(("second_id_same", "expected"), [(True, ["one"]), (False, ["one", "two"])])
async def test_the_same_event_id_twice_has_one_effect(engine: Engine, second_id_same: bool, expected: list) -> None:
    journey = journey_from(TWO_CLICKS)
    customer = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer)
    # The click must come after the first wait_for began ("since: step"); a loaded machine could otherwise deliver
    # it with the start, before the step, where it does not count. A query is answered once the run has started.
    assert (await handle.query(STATE_QUERY, result_type=JourneyState)).current_step == "first-click"
    first = event(customer, "clicked")
    await handle.signal(EVENT_SIGNAL, first)
    await engine.env.sleep(timedelta(hours=1))
    await handle.signal(EVENT_SIGNAL, event(customer, "clicked", event_id=first.event_id if second_id_same else None))

    await finish(handle)

    assert [m["Subject"] for m in engine.mail_to(customer)] == expected
    state = await handle.query(STATE_QUERY, result_type=JourneyState)
    assert len([e for e in state.events_seen if e.name == "clicked"]) == len(expected)


async def test_query_and_search_attributes_show_where_the_customer_is(engine: Engine) -> None:
    journey = example("welcome-series")
    customer = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer)
    await engine.env.sleep(timedelta(hours=1))

    state = await handle.query(STATE_QUERY, result_type=JourneyState)
    assert state.current_step == "wait-2-days"
    assert [s.step_id for s in state.steps_done] == ["welcome-email"]
    assert [e.name for e in state.events_seen] == ["signed_up"]
    description = await handle.describe()
    attributes = description.typed_search_attributes
    assert attributes.get(sa.STEP) == "wait-2-days"
    assert attributes.get(sa.CUSTOMER_ID) == customer
    assert attributes.get(sa.JOURNEY_ID) == journey.id
    await handle.terminate("test over")


async def test_operators_find_a_customers_journey_in_visibility(dev_env, pool, smtp_sink) -> None:
    """What the Temporal UI shows: filter by customer, see the step, the journey's name in the summary."""
    settings = engine_settings(smtp_sink)
    journey = example("welcome-series")
    customer = await make_customer(pool)
    async with channels_for(settings, pool) as channels, build_worker(dev_env.client, settings, pool, channels):
        engine = Engine(dev_env, settings, pool, smtp_sink)
        handle = await engine.enter(journey, customer)
        found = []
        for _ in range(100):
            found = [
                w
                async for w in dev_env.client.list_workflows(
                    f'ParcoursCustomerId = "{customer}" AND ParcoursStep = "wait-2-days"'
                )
            ]
            if found:
                break
            await asyncio.sleep(0.1)
        assert [w.id for w in found] == [f"{journey.id}:{customer}"]
        assert found[0].typed_search_attributes.get(sa.JOURNEY_ID) == journey.id
        description = await handle.describe()
        assert await description.static_summary() == f"Welcome series · {customer}"
        assert "wait-2-days" in (await handle.query(STATE_QUERY, result_type=JourneyState)).current_step
        await handle.terminate("test over")


async def test_branch_on_profile_and_trigger(engine: Engine) -> None:
    journey = journey_from(
        {
            "id": "vip-branch",
            "name": "VIP branch",
            "trigger": {"event": "visited"},
            "steps": [
                {
                    "id": "is-vip",
                    "type": "branch",
                    "then": "vip-mail",
                    "else": "plain-mail",
                    "where": {
                        "any": [
                            {"field": "profile.tier", "op": "eq", "value": "gold"},
                            {"field": "trigger.basket", "op": "gt", "value": 500},
                        ]
                    },
                },
                {
                    "id": "vip-mail",
                    "type": "send",
                    "channel": "email",
                    "next": "end",
                    "template": {"subject": "VIP", "text": "v"},
                },
                {"id": "plain-mail", "type": "send", "channel": "email", "template": {"subject": "Plain", "text": "p"}},
            ],
        }
    )
    gold = await make_customer(engine.pool, attributes={"tier": "gold"})
    big_basket = await make_customer(engine.pool)
    plain = await make_customer(engine.pool)
    await finish(await engine.enter(journey, gold))
    await finish(await engine.enter(journey, big_basket, {"basket": 900}))
    await finish(await engine.enter(journey, plain, {"basket": 9}))
    assert [m["Subject"] for m in engine.mail_to(gold)] == ["VIP"]
    assert [m["Subject"] for m in engine.mail_to(big_basket)] == ["VIP"]
    assert [m["Subject"] for m in engine.mail_to(plain)] == ["Plain"]


async def test_unknown_customer_is_skipped_not_failed(engine: Engine) -> None:
    journey = example("welcome-series")
    ghost = f"ghost-{uuid.uuid4().hex[:8]}"
    result = await finish(await engine.enter(journey, ghost))
    assert result.status == "completed"
    assert {r["reason"] for r in await engine.messages(ghost)} == {"unknown_customer"}


async def test_permanent_smtp_refusal_is_recorded_and_the_journey_goes_on(engine: Engine) -> None:
    journey = example("welcome-series")
    customer = await make_customer(engine.pool)
    # A refusal of this message (policy), not of the mailbox: a 550 5.1.1 would suppress the address (test_privacy).
    engine.smtp.fail("550 5.7.1 Message refused by policy", times=1)
    await finish(await engine.enter(journey, customer))
    rows = await engine.messages(customer)
    assert [r["status"] for r in rows] == ["failed", "sent", "sent"]
    assert rows[0]["reason"].startswith("provider_rejected")
    assert rows[0]["provider_response"]["smtp_code"] == 550
    assert len(engine.mail_to(customer)) == 2


async def test_transient_smtp_errors_are_retried_and_delivered_once(engine: Engine) -> None:
    journey = journey_from(
        {
            "id": "one-mail",
            "name": "One mail",
            "trigger": {"event": "visited"},
            "steps": [{"id": "hello", "type": "send", "channel": "email", "template": {"subject": "Hi", "text": "x"}}],
        }
    )
    customer = await make_customer(engine.pool)
    engine.smtp.fail(451, times=2)
    await finish(await engine.enter(journey, customer))
    rows = await engine.messages(customer)
    assert [(r["status"], r["attempts"]) for r in rows] == [("sent", 3)]
    assert len(engine.mail_to(customer)) == 1


class RecordingFailsOnce(JourneyActivities):
    """The SMTP server accepts the mail, then recording its answer fails once (a crash, a lost connection)."""

    failed = False

    async def _record(self, record, status, *args, **kwargs):  # type: ignore[no-untyped-def]
        if status == "sent" and not RecordingFailsOnce.failed:
            RecordingFailsOnce.failed = True
            raise ConnectionError("connection to PostgreSQL lost after the provider accepted the message")
        return await super()._record(record, status, *args, **kwargs)


async def test_send_retried_after_the_smtp_server_accepted_delivers_one_email(dev_env, pool, smtp_sink) -> None:
    settings = engine_settings(smtp_sink)
    journey = journey_from(
        {
            "id": "retry-once",
            "name": "Retry once",
            "trigger": {"event": "visited"},
            "steps": [{"id": "hello", "type": "send", "channel": "email", "template": {"subject": "Hi", "text": "x"}}],
        }
    )
    customer = await make_customer(pool)
    async with channels_for(settings, pool) as channels:
        activities = RecordingFailsOnce(pool, channels, settings)
        worker = build_worker(dev_env.client, settings, pool, channels, activities=activities)
        async with worker:
            engine = Engine(dev_env, settings, pool, smtp_sink)
            await finish(await engine.enter(journey, customer))
    assert RecordingFailsOnce.failed
    assert len(engine.mail_to(customer)) == 1
    rows = await engine.messages(customer)
    assert [(r["status"], r["attempts"]) for r in rows] == [("sent", 2)]


async def test_a_run_resumes_from_carried_progress(engine: Engine) -> None:
    """What continue-as-new carries is enough to pick up at the right step without repeating sends."""
    journey = example("welcome-series")
    customer = await make_customer(engine.pool)
    trigger = event(customer, "signed_up")
    from contracts.journey import WORKFLOW_NAME, JourneyInput, workflow_id

    progress = JourneyProgress(
        current_step="tips-email",
        visits={"welcome-email": 1, "wait-2-days": 1},
        events=[trigger],
        seen_event_ids=[trigger.event_id],
        steps_done_total=2,
    )
    handle = await engine.client.start_workflow(
        WORKFLOW_NAME,
        JourneyInput(
            journey_id=journey.id,
            journey_version=1,
            definition=journey,
            customer_id=customer,
            trigger=trigger,
            progress=progress,
        ),
        id=workflow_id(journey.id, customer),
        task_queue=engine.settings.task_queue,
        result_type=JourneyResult,
    )
    result = await finish(handle)
    assert result.steps_done_total == 5
    assert [m["Subject"] for m in engine.mail_to(customer)] == ["3 things to try this week", "10% off your first order"]


async def test_the_bench_knob_runs_journeys_without_the_sandbox(time_skipping_env, pool, smtp_sink) -> None:
    """``bench/run.py --unsandboxed`` measures what the sandbox costs: its worker really drops the sandbox (the
    default keeps it), and journeys still run to the end."""
    settings = engine_settings(smtp_sink)
    journey = example("welcome-series")
    customer = await make_customer(pool)
    async with channels_for(settings, pool) as channels:
        default = build_worker(time_skipping_env.client, settings, pool, channels, task_queue=task_queue())
        assert isinstance(default.config()["workflow_runner"], SandboxedWorkflowRunner)
        worker = build_worker(time_skipping_env.client, settings, pool, channels, sandboxed=False)
        assert isinstance(worker.config()["workflow_runner"], UnsandboxedWorkflowRunner)
        async with worker:
            engine = Engine(time_skipping_env, settings, pool, smtp_sink)
            result = await finish(await engine.enter(journey, customer))
    assert result.status == "completed"
    assert len(engine.mail_to(customer)) == 3
