"""Consent ledger, provider bounces and complaints, SMTP 5xx and data rights (api.routes_privacy), on the real stack."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from store.privacy import pseudonym
from tests.support.stack import API_KEY, Stack, eventually, stack_fixture, unique  # noqa: F401  (registers the fixture)

pytestmark = pytest.mark.devserver


def ses_bounce(address: str, bounce_type: str = "Permanent") -> dict[str, Any]:
    """An SNS notification carrying an SES bounce, as SNS posts it."""
    inner = {
        "notificationType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": address, "status": "5.1.1", "diagnosticCode": "smtp; 550 5.1.1"}],
            "timestamp": "2025-01-01T00:00:00.000Z",
        },
        "mail": {"messageId": "0000014a-f4d4-4f89", "destination": [address]},
    }
    return {
        "Type": "Notification",
        "MessageId": "22b80b92-fdea-4c2c-8f9d-bdfb0c7bf324",
        "TopicArn": "arn:aws:sns:eu-west-1:123456789012:ses-bounces",
        "Message": json.dumps(inner),
        "Timestamp": "2025-01-01T00:00:00.000Z",
    }


async def test_consent_history_lists_every_change_with_source_and_lawful_basis(stack: Stack) -> None:
    customer_id = await stack.customer(consent=False)
    changes = [
        {"channels": {"email": "granted"}, "source": "import", "lawful_basis": "consent"},
        {"topics": {"news": "granted"}, "source": "preference_page", "lawful_basis": "consent"},
        {"topics": {"news": "withdrawn"}, "source": "one_click_unsubscribe"},
        {"channels": {"sms": "granted", "push": "withdrawn"}},
    ]
    for change in changes:
        response = await stack.http.put(f"/v1/customers/{customer_id}/consent", json=change)
        assert response.status_code == 200, response.text

    response = await stack.http.get(f"/v1/customers/{customer_id}/consent/history")
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    seen = [(i["scope"], i["name"], i["status"], i["source"], i["lawful_basis"]) for i in items]
    assert seen[:2] == [
        ("channel", "push", "withdrawn", "api", None),
        ("channel", "sms", "granted", "api", None),
    ] or seen[:2] == [("channel", "sms", "granted", "api", None), ("channel", "push", "withdrawn", "api", None)]
    assert seen[2:] == [
        ("topic", "news", "withdrawn", "one_click_unsubscribe", None),
        ("topic", "news", "granted", "preference_page", "consent"),
        ("channel", "email", "granted", "import", "consent"),
    ]
    assert all(i["recorded_at"] for i in items)
    assert response.json()["next_before"] is None

    # Pages: newest first, ``before`` continues where the previous page stopped.
    first = (await stack.http.get(f"/v1/customers/{customer_id}/consent/history", params={"limit": 3})).json()
    assert len(first["items"]) == 3 and first["next_before"] == first["items"][-1]["id"]
    rest = await stack.http.get(
        f"/v1/customers/{customer_id}/consent/history", params={"limit": 3, "before": first["next_before"]}
    )
    assert [i["id"] for i in first["items"] + rest.json()["items"]] == [i["id"] for i in items]

    unknown = await stack.http.get(f"/v1/customers/{unique('nobody')}/consent/history")
    assert unknown.status_code == 404 and unknown.json()["error"]["field"] == "customer_id"
    bad = await stack.http.get(f"/v1/customers/{customer_id}/consent/history", params={"before": "yesterday"})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "before"


async def test_export_contains_profile_consent_events_and_messages(stack: Stack) -> None:
    journey = stack.journey()
    await stack.publish(journey)
    customer_id = await stack.customer()
    await stack.trigger(customer_id, journey, cart_value=12)
    await stack.message(customer_id, journey["id"])

    response = await stack.http.get(f"/v1/customers/{customer_id}/export")
    assert response.status_code == 200, response.text
    export = response.json()
    assert export["profile"]["id"] == customer_id and export["profile"]["email"] == f"{customer_id}@example.com"
    assert [(c["name"], c["status"]) for c in export["consent"]["history"]] == [("email", "granted")]
    assert [e["name"] for e in export["events"]] == [journey["trigger"]["event"]]
    assert export["events"][0]["properties"] == {"cart_value": 12}
    [sent] = export["messages"]
    assert sent["status"] == "sent" and sent["recipient"] == f"{customer_id}@example.com"
    assert sent["rendered"]["subject"] == journey["steps"][0]["template"]["subject"]
    assert [e["journey_id"] for e in export["journey_entries"]] == [journey["id"]]

    missing = await stack.http.get(f"/v1/customers/{unique('nobody')}/export")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "customer_id"


async def test_erase_exits_running_journey_removes_personal_data_and_keeps_aggregates(stack: Stack) -> None:
    journey = stack.journey()
    await stack.publish(journey)
    customer_id = await stack.customer()
    await stack.trigger(customer_id, journey)
    await stack.message(customer_id, journey["id"])  # the run now waits for "done"
    await stack.pool.execute(
        "INSERT INTO inbox_messages (customer_id, idempotency_key, body) VALUES ($1, $2, 'hi')",
        customer_id,
        unique("inbox"),
    )

    response = await stack.http.delete(f"/v1/customers/{customer_id}")
    assert response.status_code == 200, response.text
    erasure = response.json()
    alias = pseudonym(stack.settings.link_secret.get_secret_value().encode(), customer_id)
    assert erasure["pseudonym"] == alias and erasure["complete"] is True
    assert erasure["runs"]["exited"] == 1 and erasure["runs"]["still_running"] == 0
    assert erasure["this_request"]["customers"] == 1 and erasure["this_request"]["messages"] == 1

    # Personal data: gone.
    db = stack.pool
    for table, column in [
        ("customers", "id"),
        ("consent_events", "customer_id"),
        ("events", "customer_id"),
        ("messages", "customer_id"),
        ("inbox_messages", "customer_id"),
        ("step_outcomes", "customer_id"),
        ("conversions", "customer_id"),
        ("journey_entries", "customer_id"),
    ]:
        assert await db.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", customer_id) == 0, table
    assert await db.fetchval("SELECT count(*) FROM messages WHERE recipient = $1", f"{customer_id}@example.com") == 0
    assert (
        await db.fetchval("SELECT count(*) FROM messages WHERE idempotency_key LIKE '%' || $1 || '%'", customer_id) == 0
    )

    # Aggregates: the run still counts, under the pseudonym, and it ended with reason "erased".
    kept = await db.fetchrow(
        "SELECT status, recipient, rendered FROM messages WHERE customer_id = $1 AND journey_id = $2",
        alias,
        journey["id"],
    )
    assert dict(kept) == {"status": "sent", "recipient": None, "rendered": None}
    outcomes = await db.fetch(
        "SELECT step_id, outcome, detail FROM step_outcomes WHERE customer_id = $1 AND journey_id = $2",
        alias,
        journey["id"],
    )
    by_step = {r["step_id"]: r for r in outcomes}
    assert by_step["hello"]["outcome"] == "sent"
    assert by_step["$exit"]["detail"]["reason"] == "erased"
    assert await db.fetchval("SELECT count(*) FROM journey_entries WHERE customer_id = $1", alias) == 1
    recorded = await db.fetchrow("SELECT requested_at, completed_at, counts FROM erasures WHERE pseudonym = $1", alias)
    assert recorded["completed_at"] is not None and recorded["counts"]["events"] == 1

    # Again: fine, nothing left to do; the export is a 404 now.
    again = await stack.http.delete(f"/v1/customers/{customer_id}")
    assert again.status_code == 200, again.text
    assert again.json()["requests"] == 2 and again.json()["this_request"]["customers"] == 0
    assert (await stack.http.get(f"/v1/customers/{customer_id}/export")).status_code == 404
    assert await db.fetchval("SELECT count(*) FROM step_outcomes WHERE customer_id = $1", alias) == len(outcomes)


async def test_ses_bounce_suppresses_the_address_and_the_next_send_is_skipped(stack: Stack) -> None:
    customer_id = await stack.customer()
    address = f"{customer_id}@example.com"
    response = await stack.http.post("/v1/providers/ses/events", json=ses_bounce(address.upper()))
    assert response.status_code == 200, response.text
    [result] = response.json()["results"]
    assert result == {
        "status": "suppressed",
        "reason": "hard_bounce",
        "channel": "email",
        "address": address,
        "new": True,
        "customers_withdrawn": 1,
    }
    # Delivered twice (SNS is at least once): nothing more happens.
    again = await stack.http.post("/v1/providers/ses/events", json=ses_bounce(address))
    assert again.json()["results"][0]["new"] is False and again.json()["results"][0]["customers_withdrawn"] == 0
    history = (await stack.http.get(f"/v1/customers/{customer_id}/consent/history")).json()["items"]
    assert [(h["name"], h["status"], h["source"]) for h in history] == [
        ("email", "withdrawn", "bounce"),
        ("email", "granted", "api"),
    ]
    # A soft bounce suppresses nothing.
    soft = await stack.http.post("/v1/providers/ses/events", json=ses_bounce("other@example.com", "Transient"))
    assert soft.json()["results"] == [{"status": "ignored"}]

    # Transactional too: the address is dead.
    journey = stack.journey()
    journey["steps"][0]["kind"] = "transactional"
    await stack.publish(journey)
    await stack.trigger(customer_id, journey)
    sent = await stack.message(customer_id, journey["id"])
    assert sent["status"] == "skipped" and sent["reason"] == "suppressed:hard_bounce"
    assert not [m for m in stack.smtp.messages if address in m.rcpt_tos]


async def test_postmark_complaint_with_basic_credentials_suppresses(stack: Stack) -> None:
    customer_id = await stack.customer()
    payload = {
        "RecordType": "SpamComplaint",
        "Type": "SpamComplaint",
        "TypeCode": 512,
        "Email": f"{customer_id}@example.com",
        "MessageID": "00000000-0000-0000-0000-000000000000",
    }
    basic = base64.b64encode(f"postmark:{API_KEY}".encode()).decode()
    response = await stack.http.post(
        "/v1/providers/postmark/events", json=payload, headers={"X-API-Key": "", "Authorization": f"Basic {basic}"}
    )
    assert response.status_code == 200, response.text
    assert response.json()["results"][0]["reason"] == "complaint"
    current = (await stack.http.get(f"/v1/customers/{customer_id}/consent")).json()
    assert current["channels"]["email"] == "withdrawn"
    source = await stack.pool.fetchval(
        "SELECT source FROM consent_current WHERE customer_id = $1 AND name = 'email'", customer_id
    )
    assert source == "complaint"

    wrong = base64.b64encode(b"postmark:nope").decode()
    refused = await stack.http.post(
        "/v1/providers/postmark/events", json=payload, headers={"X-API-Key": "", "Authorization": f"Basic {wrong}"}
    )
    assert refused.status_code == 401


async def test_smtp_550_suppresses_the_address(stack: Stack) -> None:
    journey = stack.journey()
    await stack.publish(journey)
    customer_id = await stack.customer()
    stack.smtp.fail(550)
    await stack.trigger(customer_id, journey)
    failed = await stack.message(customer_id, journey["id"])
    assert failed["status"] == "failed"
    row = await stack.pool.fetchrow(
        "SELECT reason, source FROM suppressions WHERE channel = 'email' AND address = $1", f"{customer_id}@example.com"
    )
    assert dict(row) == {"reason": "hard_bounce", "source": "smtp"}

    second = stack.journey()
    await stack.publish(second)
    await stack.trigger(customer_id, second)
    skipped = await stack.message(customer_id, second["id"])
    assert skipped["status"] == "skipped" and skipped["reason"] == "suppressed:hard_bounce"


BAD_INPUTS: list[tuple[str, Any, int, str]] = [
    ("sendgrid", {"type": "hard_bounce", "address": "a@example.com"}, 404, "provider"),
    ("generic", b"{not json", 400, "body"),
    ("generic", [1, 2], 422, "body"),
    ("generic", {"type": "hard_bounce"}, 422, "address"),
    ("generic", {"type": "exploded", "address": "a@example.com"}, 422, "type"),
    ("generic", {"type": "hard_bounce", "address": "not-an-address"}, 422, "address"),
    ("generic", {"type": "complaint", "channel": "fax", "address": "a@example.com"}, 422, "channel"),
    ("generic", {"events": [{"type": "complaint", "address": 7}]}, 422, "events[0].address"),
    ("generic", {"events": []}, 422, "events"),
    ("ses", {"Type": "Notification", "Message": "{oops"}, 422, "Message"),
    ("ses", {"Type": "Notification", "Message": json.dumps({"notificationType": "Bounce"})}, 422, "Message.bounce"),
    (
        "ses",
        {"notificationType": "Bounce", "bounce": {"bounceType": "Permanent", "bouncedRecipients": [{}]}},
        422,
        "bounce.bouncedRecipients[0].emailAddress",
    ),
    ("postmark", {"RecordType": "Bounce", "Type": "HardBounce"}, 422, "Email"),
    ("postmark", "just a string", 422, "body"),
]


async def test_bad_provider_input_is_a_4xx_naming_the_field(stack: Stack) -> None:
    for provider, body, status, field in BAD_INPUTS:
        kwargs: dict[str, Any] = {"content": body} if isinstance(body, bytes) else {"json": body}
        response = await stack.http.post(f"/v1/providers/{provider}/events", **kwargs)
        assert response.status_code == status, (provider, body, response.text)
        assert response.json()["error"]["field"] == field, (provider, body, response.text)


async def test_provider_webhook_needs_a_key(stack: Stack) -> None:
    body = {"type": "hard_bounce", "address": "a@example.com"}
    response = await stack.http.post("/v1/providers/generic/events", json=body, headers={"X-API-Key": ""})
    assert response.status_code == 401
    bad = await stack.http.post(
        "/v1/providers/generic/events", json=body, headers={"X-API-Key": "", "Authorization": "Basic !!!"}
    )
    assert bad.status_code == 401 and bad.json()["error"]["field"] == "authorization"


async def test_erasure_while_a_segment_run_that_entered_the_customer_is_going_finishes_on_a_later_call(
    stack: Stack,
) -> None:
    """The segment run's history lists the customer until it ends: 202 (not complete) while it runs; called again
    once it has ended, the erasure finds it through the pseudonymised entry and deletes its history."""
    from datetime import UTC, datetime

    from contracts.segment import SEGMENT_WORKFLOW_NAME, SegmentRunInput, schedule_id

    journey = stack.journey()
    await stack.publish(journey)
    customer = await stack.customer()
    run_key = "2026-11-30T10:00:00Z"
    await stack.pool.execute(
        "INSERT INTO journey_entries (journey_id, customer_id, entry_id, version, source, entered_at)"
        " VALUES ($1, $2, $3, 1, 'segment', $4)",
        journey["id"],
        customer,
        f"segment:{journey['id']}:{run_key}:{customer}",
        datetime.now(UTC),
    )
    # A segment run still going (no worker polls its queue, so it stays running until terminated).
    segment_run = await stack.client.start_workflow(
        SEGMENT_WORKFLOW_NAME,
        SegmentRunInput(journey_id=journey["id"], version=1),
        id=f"{schedule_id(journey['id'])}-{run_key}",
        task_queue=unique("no-worker"),
    )

    first = await stack.http.delete(f"/v1/customers/{customer}")
    assert first.status_code == 202, first.text
    assert first.json()["complete"] is False and first.json()["runs"]["segment_runs_running"] == 1
    assert (
        await stack.pool.fetchval("SELECT count(*) FROM customers WHERE id = $1", customer) == 0
    )  # erased all the same

    await segment_run.terminate("the firing ended")
    second = await stack.http.delete(f"/v1/customers/{customer}")
    assert second.status_code == 200, second.text
    assert second.json()["complete"] is True and second.json()["runs"]["segment_runs_running"] == 0
    assert second.json()["runs"]["histories_deleted"] >= 1
