"""``parcours dev --demo``: a small population of customers so the Temporal UI and the messages show something.

Customers ``demo-001``... get a profile and consent for email, SMS and push, then sign up (the welcome series
starts); every third one also abandons a cart. The ids of those events are fixed, so running the demo again on
the same data dir changes nothing. Afterwards a trickle of behaviour events (page views, email clicks, orders,
new carts) keeps arriving every few seconds until the stack stops. A named segment, ``demo-pro`` (the demo
customers on the pro plan), gives the console's broadcast form an audience to count, preview and send to.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from temporalio.client import Client

from config.settings import Settings
from contracts.journey import Event
from devstack.console import console

log = structlog.get_logger(__name__)

FIRST_NAMES = [
    "Ada",
    "Grace",
    "Alan",
    "Edsger",
    "Barbara",
    "Donald",
    "Margaret",
    "Ken",
    "Radia",
    "Linus",
    "Frances",
    "John",
]
TIMEZONES = ["Europe/Paris", "America/New_York", "Asia/Tokyo", "UTC", "Europe/Berlin", "America/Sao_Paulo"]
CONSENT_CHANNELS = ("email", "sms", "push")
DEMO_SEGMENT = "demo-pro"


def demo_customer_ids(count: int) -> list[str]:
    return [f"demo-{i:03d}" for i in range(1, count + 1)]


def _event(customer_id: str, name: str, properties: dict[str, Any] | None = None, event_id: str | None = None) -> Event:
    return Event(
        event_id=event_id or str(uuid.uuid4()),
        customer_id=customer_id,
        name=name,
        properties=properties or {},
        occurred_at=datetime.now(UTC),
    )


def _status(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("status")
    return value if isinstance(value, str) else None


async def create_population(pool: asyncpg.Pool, router: Any, count: int) -> list[str]:
    from store.customers import current_consent, record_consent, upsert_customer

    ids = demo_customer_ids(count)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("Demo customers", total=len(ids))
        for index, customer_id in enumerate(ids):
            name = FIRST_NAMES[index % len(FIRST_NAMES)]
            await upsert_customer(
                pool,
                customer_id,
                email=f"{customer_id}@example.com",
                phone=f"+1555010{index:04d}",
                timezone=TIMEZONES[index % len(TIMEZONES)],
                locale="en",
                attributes={"first_name": name, "plan": "free" if index % 2 else "pro", "demo": True},
            )
            channels = (await current_consent(pool, customer_id)).get("channels", {})
            for channel in CONSENT_CHANNELS:
                if _status(channels.get(channel)) != "granted":
                    await record_consent(pool, customer_id, "channel", channel, "granted", source="demo")
            events = [_event(customer_id, "signed_up", {"source": "demo"}, f"demo:{customer_id}:signed_up")]
            if index % 3 == 0:
                events.append(
                    _event(
                        customer_id,
                        "cart_abandoned",
                        {
                            "cart_value": 40 + 7 * index,
                            "currency": "EUR",
                            "item_count": 1 + index % 4,
                            "cart_url": f"https://shop.example/cart/{customer_id}",
                        },
                        f"demo:{customer_id}:cart_abandoned",
                    )
                )
            await router.ingest(events)
            progress.advance(task)
    await identified_visitor(pool, router)
    await demo_segment(pool)
    return ids


async def demo_segment(pool: asyncpg.Pool) -> None:
    """The named segment ``demo-pro``, unless it exists already (an edit of yours stays)."""
    from journeys.models import Audience
    from store.segments import get_segment, put_segment

    if await get_segment(pool, DEMO_SEGMENT) is None:
        where = [
            {"field": "profile.demo", "op": "eq", "value": True},
            {"field": "profile.plan", "op": "eq", "value": "pro"},
        ]
        await put_segment(pool, DEMO_SEGMENT, Audience.model_validate({"where": where}))


async def identified_visitor(pool: asyncpg.Pool, router: Any) -> None:
    """A visitor leaves a cart before signing up: their run (``abandoned-cart:anon:demo-visitor``) carries on for
    ``demo-signup`` after ``identify`` (see README, "Identity"). Safe to repeat."""
    from store.customers import record_consent
    from store.identity import Link, anonymous_profile, identify

    visitor, customer_id = "demo-visitor", "demo-signup"
    cart = {"cart_value": 64, "currency": "EUR", "item_count": 2, "cart_url": "https://shop.example/cart/visitor"}
    await router.ingest([_event(anonymous_profile(visitor), "cart_abandoned", cart, f"demo:{visitor}:cart_abandoned")])
    result = await identify(
        pool,
        customer_id,
        [Link("anonymous_id", visitor, "anonymous_ids[0]")],
        traits={"email": f"{customer_id}@example.com", "attributes": {"first_name": "Grace", "demo": True}},
        explicit=True,
        source="demo",
        actor="demo",
    )
    if result.created:
        await record_consent(pool, customer_id, "channel", "email", "granted", source="demo")
    await router.notify_merges(result.merges)


async def trickle(router: Any, ids: list[str], stop: asyncio.Event, interval: tuple[float, float] = (2.0, 6.0)) -> None:
    rng = random.Random()
    while not stop.is_set():
        try:
            async with asyncio.timeout(rng.uniform(*interval)):
                await stop.wait()
            return
        except TimeoutError:
            pass
        customer_id = rng.choice(ids)
        choices: list[tuple[str, dict[str, Any]]] = [
            ("page_viewed", {"path": rng.choice(["/", "/new", "/sale", "/cart"])}),
            ("email_clicked", {"journey": "abandoned-cart"}),
            ("order_placed", {"total": round(rng.uniform(15, 120), 2), "currency": "EUR"}),
            (
                "cart_abandoned",
                {
                    "cart_value": round(rng.uniform(10, 200), 2),
                    "currency": "EUR",
                    "item_count": rng.randint(1, 5),
                    "cart_url": f"https://shop.example/cart/{customer_id}",
                },
            ),
        ]
        name, properties = rng.choice(choices)
        try:
            await router.ingest([_event(customer_id, name, properties)])
            console.print(f"[dim]demo: {customer_id} {name} {properties}[/]", highlight=False)
        except Exception as exc:  # a failed demo event must not stop the stack
            log.warning("demo.event_failed", customer_id=customer_id, event=name, error=str(exc))


async def run_demo(
    pool: asyncpg.Pool, client: Client, settings: Settings, stop: asyncio.Event, *, customers: int = 12
) -> None:
    from orchestration.router import EventRouter

    router = EventRouter(pool, client, settings)
    ids = await create_population(pool, router, customers)
    console.print(f"[green]{len(ids)} demo customers are in their journeys; a trickle of events follows.[/]")
    await trickle(router, ids, stop)
