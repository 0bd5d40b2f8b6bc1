"""Identity resolution: anonymous visitors become known customers, profiles merge, journeys carry on once."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import timedelta
from typing import Any

import asyncpg
import yaml
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from activities import links
from contracts import search_attributes as sa
from contracts.journey import STATE_QUERY, JourneyResult, JourneyState
from journeys import parse_journey
from orchestration.errors import is_not_found
from store import customers as customer_store
from store import events as event_store
from store import identity as identity_store
from store import journeys as journey_store
from store.identity import anonymous_profile
from tests.support.engine import EXAMPLES, event, save_history
from tests.support.mail import SmtpSink
from tests.support.stack import Stack, eventually, running_stack, stack_fixture  # noqa: F401


def _cart_journey(tag: str) -> dict[str, Any]:
    definition = yaml.safe_load((EXAMPLES / "abandoned-cart.yaml").read_text())
    definition["id"] = f"abandoned-cart-{tag}"
    definition["trigger"]["event"] = f"cart_abandoned-{tag}"
    definition["goal"]["event"] = f"order_placed-{tag}"
    return definition


async def _publish(stack: Stack, *definitions: dict[str, Any]) -> None:
    """Publish straight to the store: the API's publish also manages schedules, which the test server lacks."""
    for definition in definitions:
        await journey_store.publish(stack.pool, parse_journey(definition))
    await stack.router.refresh()


async def _events(stack: Stack, *events: dict[str, Any]) -> list[dict[str, Any]]:
    response = await stack.http.post("/v1/events", json={"events": list(events)})
    assert response.status_code == 202, response.text
    return response.json()["results"]  # type: ignore[no-any-return]


async def _not_found(stack: Stack, workflow_id: str) -> bool:
    try:
        await stack.client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        return is_not_found(exc)
    return False


async def test_anonymous_cart_then_sign_up_gets_the_cart_email_at_the_identified_address(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    tag = uuid.uuid4().hex[:8]
    journey = _cart_journey(tag)
    visitor, customer = f"cookie-{tag}", f"cust-{tag}"
    address = f"{customer}@example.com"
    async with running_stack(time_skipping_env, pool, smtp_sink) as stack:
        await _publish(stack, journey)

        # An anonymous visitor browses and leaves a cart: the journey starts for their anonymous profile.
        results = await _events(
            stack,
            {"anonymous_id": visitor, "name": "product_viewed", "properties": {"sku": "TRAIL-42"}},
            {
                "anonymous_id": visitor,
                "name": journey["trigger"]["event"],
                "properties": {"cart_value": 89.5, "item_count": 2, "cart_url": f"https://shop.test/cart/{tag}"},
            },
        )
        assert [(r["status"], r["customer_id"], r["routed"]) for r in results] == [
            ("accepted", f"anon:{visitor}", True),
            ("accepted", f"anon:{visitor}", True),
        ]
        run_id = f"{journey['id']}:anon:{visitor}"
        handle = stack.client.get_workflow_handle(run_id, result_type=JourneyResult)

        # They sign up: the visitor is identified as the customer, with an address and consent.
        response = await stack.http.post(
            "/v1/identify",
            json={
                "customer_id": customer,
                "anonymous_ids": [visitor],
                "traits": {"email": address, "attributes": {"first_name": "Ada"}},
                "explicit": True,
                "source": "signup",
                "actor": "web-shop",
            },
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["created"] is True and body["profile"]["email"] == address
        [merge] = body["merges"]
        assert (merge["merged_id"], merge["source"], merge["actor"]) == (f"anon:{visitor}", "signup", "web-shop")
        assert merge["moved"]["events"] == 2 and merge["moved"]["journey_entries"] == 1
        assert merge["runs"] == [{"journey_id": journey["id"], "workflow_id": run_id, "status": "adopted"}]
        consent = await stack.http.put(f"/v1/customers/{customer}/consent", json={"channels": {"email": "granted"}})
        assert consent.status_code == 200

        # The customer's own cart event reaches the adopted run: no second run of the journey.
        [again] = await _events(
            stack, {"customer_id": customer, "name": journey["trigger"]["event"], "properties": {"cart_value": 5}}
        )
        assert again["routed"] is True
        assert await _not_found(stack, f"{journey['id']}:{customer}")

        # An hour later the cart email goes to the identified address, rendered from the visitor's cart.
        await time_skipping_env.sleep(timedelta(hours=1, minutes=1))
        mails = await eventually(lambda: _mail_to(smtp_sink, address))
        assert mails[0]["Subject"] == "You left 2 item(s) in your cart"
        text = mails[0].get_body(("plain",)).get_content()
        [tracked] = re.findall(r"/c/([A-Za-z0-9_-]+)", text)  # the cart link, as a tracked link to it
        assert "Hi Ada" in text
        assert links.open_token(stack.settings, tracked, purpose=links.CLICK)["l"] == f"https://shop.test/cart/{tag}"

        # The customer orders under their own id: the run started for the visitor converts.
        await _events(stack, {"customer_id": customer, "name": journey["goal"]["event"], "properties": {"total": 89.5}})
        result = await handle.result()
        assert result.status == "converted"
        state = await handle.query(STATE_QUERY, result_type=JourneyState)
        assert (state.customer_id, state.entered_as) == (customer, f"anon:{visitor}")
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(sa.CUSTOMER_ID) == customer
        sent = await pool.fetch(
            "SELECT step_id, customer_id, recipient, status FROM messages WHERE idempotency_key LIKE $1", f"{run_id}:%"
        )
        assert [(r["step_id"], r["customer_id"], r["recipient"], r["status"]) for r in sent] == [
            ("cart-email", customer, address, "sent")
        ]
        conversion = await pool.fetchrow(
            "SELECT customer_id, value FROM conversions WHERE journey_id = $1", journey["id"]
        )
        assert (conversion["customer_id"], float(conversion["value"])) == (customer, 89.5)
        await save_history(handle, "abandoned-cart-identified")

        # The visitor's profile id, the merge log and the event history all lead to the customer now.
        profile = await stack.http.get(f"/v1/customers/anon:{visitor}")
        assert profile.json()["id"] == customer
        log = (await stack.http.get(f"/v1/customers/{customer}/merges")).json()
        assert [(m["alias_kind"], m["alias_value"], m["source"], m["runs"][0]["status"]) for m in log] == [
            ("anonymous_id", visitor, "signup", "adopted")
        ]
        names = await pool.fetch("SELECT name FROM events WHERE customer_id = $1 ORDER BY occurred_at", customer)
        assert [r["name"] for r in names][:2] == ["product_viewed", journey["trigger"]["event"]]


async def _mail_to(smtp_sink: SmtpSink, address: str) -> list[Any]:
    return [m.message for m in smtp_sink.messages if address in m.rcpt_tos]


async def test_a_merge_never_puts_a_customer_in_one_journey_twice(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    async with running_stack(time_skipping_env, pool, smtp_sink) as stack:
        running = stack.journey()
        once = stack.journey(entry={"reentry": "once"})
        for journey in (running, once):
            await _publish(stack, journey)
        customer = await stack.customer()
        tag = uuid.uuid4().hex[:8]
        browsing, other_device = f"tab-{tag}", f"phone-{tag}"

        # The customer and one of their anonymous sessions are both in `running`.
        await _events(
            stack,
            {"customer_id": customer, "name": running["trigger"]["event"]},
            {"anonymous_id": browsing, "name": running["trigger"]["event"]},
        )
        # Another anonymous session went through `once` to the end.
        await _events(stack, {"anonymous_id": other_device, "name": once["trigger"]["event"]})
        once_run = stack.client.get_workflow_handle(f"{once['id']}:anon:{other_device}", result_type=JourneyResult)
        await _events(stack, {"anonymous_id": other_device, "name": f"done-{once['id'].removeprefix('j-')}"})
        assert (await once_run.result()).status == "completed"

        response = await stack.http.post(
            "/v1/identify", json={"customer_id": customer, "anonymous_ids": [browsing, other_device]}
        )
        assert response.status_code == 200, response.text
        runs = {m["alias_value"]: m["runs"] for m in response.json()["merges"]}
        assert [r["status"] for r in runs[browsing]] == ["exited"]
        assert [r["status"] for r in runs[other_device]] == ["closed"]

        # The visitor's run left with the reason `merged`; the customer's own run carries on.
        duplicate = stack.client.get_workflow_handle(f"{running['id']}:anon:{browsing}", result_type=JourneyResult)
        assert (await duplicate.result()).exit_reason == "merged"
        state = await stack.client.get_workflow_handle(f"{running['id']}:{customer}").query(
            STATE_QUERY, result_type=JourneyState
        )
        assert state.status == "running"
        # `once` counts the visitor's entry as the customer's: their own trigger is refused.
        await _events(stack, {"customer_id": customer, "name": once["trigger"]["event"]})
        assert await _not_found(stack, f"{once['id']}:{customer}")
        entries = await pool.fetch("SELECT customer_id FROM journey_entries WHERE journey_id = $1", once["id"])
        assert [r["customer_id"] for r in entries] == [customer]
        # Leave no run behind on the shared test server (its timers would wait for this test's worker).
        await _events(stack, {"customer_id": customer, "name": f"done-{running['id'].removeprefix('j-')}"})
        own = stack.client.get_workflow_handle(f"{running['id']}:{customer}", result_type=JourneyResult)
        assert (await own.result()).status == "completed"


async def test_merge_rules_aliases_and_bad_input_through_the_api(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    tag = uuid.uuid4().hex[:8]
    customer, visitor, stranger = f"cust-{tag}", f"cookie-{tag}", f"other-{tag}"
    async with running_stack(time_skipping_env, pool, smtp_sink) as stack:
        http = stack.http

        async def put(customer_id: str, body: dict[str, Any]) -> None:
            response = await http.put(f"/v1/customers/{customer_id}", json=body)
            assert response.status_code == 200, response.text

        # The customer states a colour; a service records a plan; then the visitor's values arrive, newer;
        # then the customer's city, newest.
        first = await http.post(
            "/v1/identify",
            json={"customer_id": customer, "traits": {"attributes": {"colour": "blue"}}, "explicit": True},
        )
        assert first.status_code == 200 and first.json()["merges"] == []
        await put(customer, {"attributes": {"plan": "free"}})
        await put(f"anon:{visitor}", {"locale": "fr", "attributes": {"colour": "red", "plan": "pro", "city": "Lyon"}})
        await put(customer, {"attributes": {"city": "Paris"}})
        grant = await http.put(f"/v1/customers/anon:{visitor}/consent", json={"topics": {"deals": "granted"}})
        assert grant.status_code == 200
        await _events(stack, {"anonymous_id": visitor, "name": "product_viewed"})

        response = await http.post("/v1/identify", json={"customer_id": customer, "anonymous_ids": [visitor]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["profile"]["attributes"] == {"colour": "blue", "plan": "pro", "city": "Paris"}
        assert body["profile"]["locale"] == "fr"
        [merge] = body["merges"]
        assert sorted(merge["fields"]["taken"]) == ["attributes.plan", "locale"]
        assert sorted(merge["fields"]["kept"]) == ["attributes.city", "attributes.colour"]
        history = (await http.get(f"/v1/customers/{customer}/consent/history")).json()["items"]
        assert [(h["name"], h["status"], h["source"]) for h in history] == [("deals", "granted", "merge")]

        # Repeating the call changes nothing and logs nothing.
        again = await http.post("/v1/identify", json={"customer_id": customer, "anonymous_ids": [visitor]})
        assert again.status_code == 200 and again.json()["merges"] == []
        assert len((await http.get(f"/v1/customers/{customer}/merges")).json()) == 1

        # Later events under the visitor's id, or under a linked email in any case, resolve to the customer.
        linked = await http.post(
            "/v1/identify",
            json={"customer_id": customer, "aliases": [{"kind": "email", "value": f"Ada.{tag}@Example.com"}]},
        )
        assert linked.status_code == 200, linked.text
        results = await _events(
            stack,
            {"anonymous_id": visitor, "name": "page_viewed"},
            {"alias": {"kind": "email", "value": f"ada.{tag}@example.com"}, "name": "newsletter_opened"},
            {"alias": {"kind": "email", "value": f"nobody.{tag}@example.com"}, "name": "newsletter_opened"},
            {"name": "page_viewed"},
        )
        assert [r["customer_id"] for r in results[:2]] == [customer, customer]
        assert [(r["status"], r["error"]["field"]) for r in results[2:]] == [
            ("invalid", "alias"),
            ("invalid", "customer_id"),
        ]
        assert "nobody" in results[2]["error"]["message"]

        # Another customer cannot take the visitor: 409 naming the alias, and nothing of the call is written.
        fresh = f"fresh-{tag}"
        taken = await http.post("/v1/identify", json={"customer_id": stranger, "anonymous_ids": [fresh, visitor]})
        assert taken.status_code == 409
        assert taken.json()["error"]["field"] == "anonymous_ids[1]"
        assert customer in taken.json()["error"]["message"]
        [alone] = await _events(stack, {"anonymous_id": fresh, "name": "page_viewed"})
        assert alone["customer_id"] == f"anon:{fresh}"
        assert (await http.get(f"/v1/customers/{stranger}")).status_code == 404

        for bad, field in (
            ({"customer_id": f"anon:{visitor}"}, "customer_id"),
            ({"customer_id": customer, "customer_ids": [customer]}, "customer_ids"),
            ({"customer_id": customer, "anonymous_ids": ["not valid!"]}, "anonymous_ids.0"),
            ({"customer_id": customer, "aliases": [{"kind": "email", "value": "nope"}]}, "aliases.0"),
            ({"customer_id": customer, "aliases": [{"kind": "fax", "value": "1"}]}, "aliases.0.kind"),
            ({"anonymous_ids": [visitor]}, "customer_id"),
        ):
            answer = await http.post("/v1/identify", json=bad)
            assert answer.status_code == 422, (bad, answer.text)
            assert answer.json()["error"]["field"] == field, (bad, answer.text)


async def test_export_and_erase_cover_aliases_merges_and_merged_profiles(stack: Stack, pool: asyncpg.Pool) -> None:
    tag = uuid.uuid4().hex[:8]
    customer, visitor = await stack.customer(), f"cookie-{tag}"
    grant = await stack.http.put(f"/v1/customers/anon:{visitor}/consent", json={"topics": {"deals": "granted"}})
    assert grant.status_code == 404  # no anonymous profile yet: consent needs one
    await stack.http.put(f"/v1/customers/anon:{visitor}", json={"attributes": {"referrer": "ads"}})
    await stack.http.put(f"/v1/customers/anon:{visitor}/consent", json={"topics": {"deals": "granted"}})
    await _events(stack, {"anonymous_id": visitor, "name": "page_viewed"})
    response = await stack.http.post(
        "/v1/identify",
        json={
            "customer_id": customer,
            "anonymous_ids": [visitor],
            "aliases": [{"kind": "phone", "value": "+33 6 12 34 56 78"}],
        },
    )
    assert response.status_code == 200, response.text

    export = (await stack.http.get(f"/v1/customers/{customer}/export")).json()
    assert {(i["kind"], i["value"]) for i in export["identities"]} == {
        ("anonymous_id", visitor),
        ("phone", "+33612345678"),
    }
    assert [m["alias_kind"] for m in export["merges"]] == ["anonymous_id", "phone"]
    assert export["profile"]["attributes"]["referrer"] == "ads"
    assert [e["name"] for e in export["events"]] == ["page_viewed"]
    [merged] = export["merged_profiles"]
    assert merged["id"] == f"anon:{visitor}"
    assert [(c["name"], c["status"]) for c in merged["consent_history"]] == [("deals", "granted")]

    erased = await stack.http.delete(f"/v1/customers/{customer}")
    assert erased.status_code == 200, erased.text
    for sql in (
        "SELECT count(*) FROM identities WHERE customer_id = $1 OR value = $2",
        "SELECT count(*) FROM identity_merges WHERE customer_id = $1 OR alias_value = $2",
        "SELECT count(*) FROM customers WHERE id = $1 OR id = 'anon:' || $2",
        "SELECT count(*) FROM consent_events WHERE customer_id = $1 OR customer_id = 'anon:' || $2",
        "SELECT count(*) FROM events WHERE customer_id = $1 OR anonymous_id = $2",
    ):
        assert await pool.fetchval(sql, customer, visitor) == 0, sql
    assert (await stack.http.get(f"/v1/customers/anon:{visitor}")).status_code == 404


async def test_an_event_arriving_during_an_identify_waits_for_it_and_lands_with_the_customer(
    pool: asyncpg.Pool,
) -> None:
    tag = uuid.uuid4().hex[:8]
    visitor, customer = f"cookie-{tag}", f"cust-{tag}"
    await customer_store.upsert_customer(pool, customer, email=f"{customer}@example.com")
    async with pool.acquire() as blocker, blocker.transaction():
        # Hold the customer's row: the identify below takes its alias locks, then waits here mid-transaction.
        await blocker.execute("SELECT 1 FROM customers WHERE id = $1 FOR UPDATE", customer)
        identify = asyncio.create_task(
            identity_store.identify(pool, customer, [identity_store.Link("anonymous_id", visitor, "anonymous_ids[0]")])
        )
        await asyncio.sleep(0.2)

        async def store() -> event_store.Stored:
            async with pool.acquire() as conn:
                return await event_store.store_resolved(conn, [event(anonymous_profile(visitor), "page_viewed")])

        arriving = asyncio.create_task(store())
        await asyncio.sleep(0.3)
        assert not identify.done()
        assert not arriving.done(), "the event was stored while the merge of its visitor was in progress"
    await identify
    stored = await arriving
    assert stored.customer_ids == [customer]
    assert await pool.fetchval("SELECT count(*) FROM events WHERE customer_id = $1", anonymous_profile(visitor)) == 0


async def test_an_event_with_both_ids_links_the_visitor_to_the_customer(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool, smtp_sink: SmtpSink
) -> None:
    tag = uuid.uuid4().hex[:8]
    visitor, customer = f"cookie-{tag}", f"cust-{tag}"
    async with running_stack(time_skipping_env, pool, smtp_sink) as stack:
        await _events(stack, {"anonymous_id": visitor, "name": "page_viewed"})
        # A logged-in page view carries both ids (as a browser SDK sends them): that is an identification.
        [login] = await _events(stack, {"customer_id": customer, "anonymous_id": visitor, "name": "page_viewed"})
        assert login["customer_id"] == customer
        [later] = await _events(stack, {"anonymous_id": visitor, "name": "page_viewed"})
        assert later["customer_id"] == customer
        [merge] = (await stack.http.get(f"/v1/customers/{customer}/merges")).json()
        assert (merge["alias_value"], merge["source"], merge["actor"], merge["moved"]) == (
            visitor,
            "event",
            "events",
            {"events": 1},
        )
    assert await pool.fetchval("SELECT count(*) FROM events WHERE customer_id = $1", customer) == 3
