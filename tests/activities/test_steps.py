"""Branch cases with history, profile updates, webhook steps and hand-offs between journeys, end to end."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio.client import WorkflowExecutionStatus

from contracts.journey import EVENT_SIGNAL, workflow_id
from store import events as event_store
from store import journeys as journey_store
from tests.support.engine import Engine, event, journey_from, make_customer
from tests.support.stack import eventually
from tests.support.webhooks import Reply, WebhookSink

MAIL = {"type": "send", "channel": "email"}


def mail(step_id: str, subject: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, **MAIL, "template": {"subject": subject, "text": "x"}, "next": "end", **extra}


async def test_branch_cases_on_purchase_history_and_on_this_journeys_opens(engine: Engine) -> None:
    definition = {
        "id": "history",
        "name": "History",
        "trigger": {"event": "visited"},
        "steps": [
            {
                "id": "who",
                "type": "branch",
                "cases": [
                    {"history": [{"event": "order_placed", "within": "30d"}], "next": "buyer"},
                    {"where": [{"field": "profile.vip", "value": True}], "next": "vip"},
                ],
                "default": "stranger",
            },
            mail("buyer", "Thanks for your recent order"),
            mail("vip", "For our VIPs"),
            mail("stranger", "Nice to meet you"),
        ],
    }
    journey = journey_from(definition)
    now = await engine.env.get_current_time()
    recent = await make_customer(engine.pool)
    old = await make_customer(engine.pool)
    vip = await make_customer(engine.pool, attributes={"vip": True})
    orders = [event(recent, "order_placed"), event(old, "order_placed")]
    orders[0] = orders[0].model_copy(update={"occurred_at": now - timedelta(days=3)})
    orders[1] = orders[1].model_copy(update={"occurred_at": now - timedelta(days=90)})
    await event_store.store_events(engine.pool, orders)

    for customer in (recent, old, vip):
        await (await engine.enter(journey, customer)).result()

    assert [m["Subject"] for m in engine.mail_to(recent)] == ["Thanks for your recent order"]
    assert [m["Subject"] for m in engine.mail_to(old)] == ["Nice to meet you"]
    assert [m["Subject"] for m in engine.mail_to(vip)] == ["For our VIPs"]
    assert (await engine.outcomes(recent))["who"] == "cases[0]"
    assert (await engine.outcomes(old))["who"] == "default"


async def test_branch_on_a_received_event_and_an_updated_profile(engine: Engine) -> None:
    journey = journey_from(
        {
            "id": "quiz",
            "name": "Quiz",
            "trigger": {"event": "signed_up"},
            "steps": [
                {"id": "answer", "type": "wait_for", "event": "quiz_answered", "timeout": "1d", "on_timeout": "end"},
                {"id": "remember", "type": "update_profile", "set": {"style": "{{ event.plan }}-style"}},
                {
                    "id": "route",
                    "type": "branch",
                    "cases": [
                        {"where": [{"field": "events.quiz_answered.size", "op": "gte", "value": 42}], "next": "big"},
                        {"where": [{"field": "profile.style", "value": "pro-style"}], "next": "pro"},
                    ],
                    "default": "end",
                },
                mail("big", "Big sizes"),
                mail("pro", "Pro picks"),
            ],
        }
    )
    customer = await make_customer(engine.pool)
    handle = await engine.enter(journey, customer, {"plan": "pro"})
    await handle.signal(EVENT_SIGNAL, event(customer, "quiz_answered", {"size": 38}))
    await handle.result()
    assert [m["Subject"] for m in engine.mail_to(customer)] == ["Pro picks"]
    attributes = await engine.pool.fetchval("SELECT attributes FROM customers WHERE id = $1", customer)
    assert attributes["style"] == "pro-style"


def scoring(url: str) -> dict[str, Any]:
    return {
        "id": "scoring",
        "name": "Scoring",
        "trigger": {"event": "signed_up"},
        "steps": [
            {
                "id": "score",
                "type": "webhook",
                "url": url,
                "body": {"customer": "{{ customer.id }}", "plan": "{{ event.plan }}"},
                "save_as": "lead",
                "on_failure": "fallback",
            },
            {
                "id": "hot",
                "type": "branch",
                "where": [{"field": "responses.lead.body.score", "op": "gte", "value": 50}],
                "then": "hot-mail",
                "else": "cold-mail",
            },
            mail("hot-mail", "Let's talk"),
            mail("cold-mail", "Some reading"),
            mail("fallback", "Welcome"),
        ],
    }


async def test_webhook_answer_drives_a_branch_and_is_signed(engine: Engine, webhook_sink: WebhookSink) -> None:
    journey = journey_from(scoring(webhook_sink.url))
    customer = await make_customer(engine.pool)
    webhook_sink.enqueue(Reply(500), Reply(200, {"score": 80}))
    await (await engine.enter(journey, customer, {"plan": "pro"})).result()

    assert [m["Subject"] for m in engine.mail_to(customer)] == ["Let's talk"]
    requests = webhook_sink.requests
    assert len(requests) == 2  # retried after the 500
    assert requests[0].json() == {"customer": customer, "plan": "pro"}
    assert requests[0].headers["webhook-id"] == requests[1].headers["webhook-id"]
    assert requests[1].headers["idempotency-key"].endswith(":score:1")
    assert (await engine.outcomes(customer))["score"] == "ok"


async def test_webhook_refusal_goes_to_on_failure(engine: Engine, webhook_sink: WebhookSink) -> None:
    journey = journey_from(scoring(webhook_sink.url))
    customer = await make_customer(engine.pool)
    webhook_sink.set_default(Reply(400, {"error": "unknown plan"}))
    await (await engine.enter(journey, customer)).result()
    assert [m["Subject"] for m in engine.mail_to(customer)] == ["Welcome"]
    assert len(webhook_sink.requests) == 1  # a 4xx is not retried
    assert (await engine.outcomes(customer))["score"] == "failed"


async def test_hand_off_to_another_journey_respects_its_reentry_policy(engine: Engine) -> None:
    target = journey_from(
        {
            "id": "vip-club",
            "name": "VIP club",
            "trigger": {"event": "joined_club"},
            "entry": {"reentry": "once"},
            "steps": [{"id": "pause", "type": "wait", "duration": "1d"}, mail("welcome-vip", "Welcome to the club")],
        }
    )
    await journey_store.publish(engine.pool, target)
    source = journey_from(
        {
            "id": "upgrade",
            "name": "Upgrade",
            "trigger": {"event": "upgraded"},
            "steps": [{"id": "to-club", "type": "start_journey", "journey": target.id}],
        }
    )
    customer = await make_customer(engine.pool)
    await (await engine.enter(source, customer)).result()
    club = engine.client.get_workflow_handle(workflow_id(target.id, customer))
    # Skip the club's day of waiting, then look at the run (a long poll on a handle the test did not start is
    # unreliable on the time-skipping server).
    await engine.env.sleep(timedelta(days=2))
    assert (await club.describe()).status == WorkflowExecutionStatus.COMPLETED
    assert [m["Subject"] for m in engine.mail_to(customer)] == ["Welcome to the club"]
    assert (await engine.outcomes(customer))["to-club"] == "entered"

    # Handed over again by a new entry into the source journey: the club takes each customer once.
    again = await engine.enter(source, customer)
    await again.result()
    rows = await engine.pool.fetch(
        "SELECT outcome FROM step_outcomes WHERE customer_id = $1 AND step_id = 'to-club' ORDER BY id", customer
    )
    assert [r["outcome"] for r in rows] == ["entered", "refused"]
    assert len(engine.mail_to(customer)) == 1


async def test_hand_off_to_a_journey_that_does_not_exist_is_recorded(engine: Engine) -> None:
    journey = journey_from(
        {
            "id": "lost",
            "name": "Lost",
            "trigger": {"event": "visited"},
            "steps": [{"id": "to-nowhere", "type": "start_journey", "journey": "no-such-journey"}],
        }
    )
    customer = await make_customer(engine.pool)
    await (await engine.enter(journey, customer)).result()
    row = await engine.pool.fetchrow(
        "SELECT outcome, detail FROM step_outcomes WHERE customer_id = $1 AND step_id = 'to-nowhere'", customer
    )
    assert (row["outcome"], row["detail"]["reason"]) == ("unavailable", "unknown journey")


async def test_a_webhook_body_may_be_a_liquid_string_sent_as_rendered(
    engine: Engine, webhook_sink: WebhookSink
) -> None:
    journey = journey_from(
        {
            "id": "string-bodies",
            "name": "String bodies",
            "trigger": {"event": "signed_up"},
            "steps": [
                {
                    "id": "xml",
                    "type": "webhook",
                    "url": webhook_sink.url,
                    "headers": {"Content-Type": "application/xml"},
                    "body": "<lead id='{{ customer.id }}' plan='{{ event.plan }}'/>",
                },
                {"id": "plain", "type": "webhook", "url": webhook_sink.url, "body": "{{ customer.id }} signed up"},
            ],
        }
    )
    customer = await make_customer(engine.pool)
    await (await engine.enter(journey, customer, {"plan": "pro"})).result()

    xml, plain = webhook_sink.requests
    assert xml.body.decode() == f"<lead id='{customer}' plan='pro'/>"
    assert xml.headers["content-type"] == "application/xml"
    assert plain.body.decode() == f"{customer} signed up"
    assert plain.headers["content-type"] == "text/plain; charset=utf-8"
    assert plain.headers["webhook-signature"]  # signed like a JSON body
    assert await engine.outcomes(customer) == {"xml": "ok", "plain": "ok"}


async def test_a_retried_webhook_failure_reads_short_and_cause_first_on_the_pending_activity(
    engine: Engine, webhook_sink: WebhookSink
) -> None:
    journey = journey_from(
        {
            "id": "down-crm",
            "name": "Down CRM",
            "trigger": {"event": "signed_up"},
            "steps": [{"id": "score", "type": "webhook", "url": f"{webhook_sink.url}?token=secret", "body": {}}],
        }
    )
    customer = await make_customer(engine.pool)
    webhook_sink.set_default(Reply(503, "Service Unavailable " + "x" * 5000))
    handle = await engine.enter(journey, customer)

    async def failing() -> Any:
        described = await handle.describe()
        pending = described.raw_description.pending_activities
        assert len(pending) == 1 and pending[0].last_failure.message, pending
        return pending[0].last_failure

    failure = await eventually(failing, timeout=20)
    assert failure.message == f"webhook POST {webhook_sink.url} answered 503: Service Unavailable " + "x" * 180
    assert not failure.HasField("cause")  # no chained exception: nothing to exceed the failure size limit
    assert "exceeds size limit" not in failure.message and len(failure.stack_trace) < 2000
    webhook_sink.set_default(Reply(200, {"ok": True}))
    await handle.result()
    assert await engine.outcomes(customer) == {"score": "ok"}
