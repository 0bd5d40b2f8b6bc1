"""Preview and test sends of a journey's send step or a broadcast, shared by the API and ``parcours``.

A preview renders the message for a real customer on each of its channels and asks the send policy what it
would do (``JourneyActivities.decide``, the very code a send runs, in a read-only transaction without the row
lock): it writes nothing and delivers nothing. A test send renders the same content for that customer and
delivers it, marked ``[TEST]`` with a ``test:`` key, to an address given by the caller: no consent, cap,
suppression or quiet-hours check (it goes to the operator, not the customer), and no row anywhere, so caps,
reports and the message log never count it. With the ``devices`` push adapter a push test is refused: that
adapter delivers to the customer's own devices, not to an address given. Links are left as written (no tracking:
a click on a test message is nobody's click).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from activities.broadcasts import send_request as broadcast_send_request
from activities.channels.base import OutboundMessage, PermanentDeliveryError
from activities.channels.registry import build_channels, close_channels
from activities.journey import JourneyActivities
from activities.links import unsubscribe_url
from activities.models import SendRequest
from activities.profiles import fetch_profile
from api.schemas import ApiError, is_email
from config.settings import Settings
from contracts.journey import Event
from journeys.broadcasts import Broadcast
from journeys.models import Journey, SendStep
from journeys.templates import TemplateError, noting_undefined
from store.customers import get_customer
from store.db import Pool, transaction

TEST_CHANNELS = ("email", "sms", "push", "webhook")


class PolicyDecision(BaseModel):
    verdict: Literal["send", "skip", "defer"]
    """``send``: would send on ``channel``; ``skip``: would not send, because ``reason``; ``defer``: not now
    (quiet hours, a frequency cap), asked again after ``retry_after_seconds``."""
    channel: str | None
    reason: str | None = None
    order: list[str] = Field(default_factory=list)
    why: str = ""
    refused: dict[str, str] = Field(default_factory=dict)
    retry_after_seconds: float | None = None
    summary: str


class Preview(BaseModel):
    customer_id: str
    channels: dict[str, dict[str, Any]]
    """Rendered content per channel (email ``subject``/``text``/``html``, sms ``text``, push ``title``/``body``...);
    a template that does not render gives ``{"error": ...}``."""
    missing: dict[str, list[str]] = Field(
        default_factory=dict,
        description=(
            "Per channel, the template variables the customer, event or journey lacks, which rendered as an empty "
            'string (e.g. `{"email": ["event.cart_value"]}`); an empty list when every variable had a value. A '
            "variable with a `default` filter or only tested in an `if` is not listed. Sending renders them empty "
            "the same way."
        ),
    )
    decision: PolicyDecision


def journey_send_request(
    journey: Journey, version: int, step: SendStep, customer_id: str, trigger: Event
) -> SendRequest:
    """The request the journey's workflow would make for this step (first visit, this trigger as the entry)."""
    content = step.all_content()
    candidates = step.candidates()
    return SendRequest(
        idempotency_key=f"preview:{journey.id}:{customer_id}:{step.id}",
        journey_id=journey.id,
        journey_name=journey.name,
        journey_version=version,
        step_id=step.id,
        customer_id=customer_id,
        entry_id=trigger.event_id,
        channel=candidates[0],
        template=content[candidates[0]],
        topic=step.topic,
        kind=step.kind,
        trigger=trigger,
        candidates=candidates,
        strategy=step.channels if isinstance(step.channels, str) else "list",
        content=content,
        quiet_hours=step.quiet_hours,
        when_capped=step.when_capped,
        now=trigger.occurred_at,
        track=False,
    )


async def step_request(
    db: Pool,
    journey: Journey,
    version: int,
    step_id: str,
    customer_id: str,
    event_name: str | None = None,
    properties: dict[str, Any] | None = None,
) -> SendRequest:
    """The request of send step ``step_id`` for an existing customer, entered by ``event_name`` (default: the
    journey's trigger) with ``properties``; ApiError naming ``step`` or ``customer_id`` otherwise. ``journey`` may
    be a published version or a definition not published yet (the console's editor)."""
    try:
        step = journey.step(step_id)
    except KeyError:
        raise ApiError(404, f"journey '{journey.id}' has no step '{step_id}'", field="step") from None
    if not isinstance(step, SendStep):
        raise ApiError(422, f"step '{step_id}' is a {step.type} step, not a send", field="step")
    if await get_customer(db, customer_id) is None:
        raise ApiError(404, f"unknown customer '{customer_id}'", field="customer_id")
    trigger = Event(
        event_id=f"preview-{uuid.uuid4().hex}",
        customer_id=customer_id,
        name=event_name or journey.trigger.event,
        properties=properties or {},
        occurred_at=datetime.now(UTC),
    )
    return journey_send_request(journey, version, step, customer_id, trigger)


def broadcast_request(broadcast: Broadcast, customer_id: str, now: datetime) -> SendRequest:
    return broadcast_send_request(broadcast, customer_id, now).model_copy(update={"track": False})


async def preview(pool: Pool, settings: Settings, request: SendRequest) -> Preview:
    """What the customer would receive on each channel, and what the send policy would decide now."""
    sender = JourneyActivities(pool, {}, settings)
    now = request.now or datetime.now(UTC)
    async with transaction(pool, readonly=True) as conn:
        decision = await sender.decide(conn, request, now)
        profile = decision.profile or await fetch_profile(conn, request.customer_id)
    rendered: dict[str, dict[str, Any]] = {}
    missing: dict[str, list[str]] = {}
    for channel in request.candidates or [request.channel]:
        unsubscribe = _unsubscribe(settings, request, channel)
        with noting_undefined() as missing[channel]:
            try:
                rendered[channel] = sender.render(request, profile, channel, unsubscribe=unsubscribe)
            except TemplateError as exc:
                rendered[channel] = {"error": f"template_error: {exc}"}
    first = decision.usable[0].channel if decision.usable else decision.channel
    if decision.verdict == "send":
        summary = f"would send on {first}"
    elif decision.verdict == "defer":
        summary = f"would wait ({decision.reason}) and send on {first} later"
    else:
        summary = f"would skip because {decision.reason}"
    return Preview(
        customer_id=request.customer_id,
        channels=rendered,
        missing=missing,
        decision=PolicyDecision(
            verdict=decision.verdict,
            channel=first,
            reason=decision.reason,
            order=decision.order,
            why=decision.why,
            refused={c.channel: str(c.refusal) for c in decision.candidates if c.refusal},
            retry_after_seconds=decision.wait.total_seconds() if decision.wait else None,
            summary=summary,
        ),
    )


class TestSendResult(BaseModel):
    channel: str
    to: str
    status: Literal["sent", "failed"]
    provider_message_id: str | None = None
    error: str | None = None


async def test_send(pool: Pool, settings: Settings, request: SendRequest, channel: str, to: str) -> TestSendResult:
    """Render the message for the customer and deliver it to ``to`` only, marked as a test; records nothing."""
    sender = JourneyActivities(pool, {}, settings)
    async with transaction(pool, readonly=True) as conn:
        profile = await fetch_profile(conn, request.customer_id)
    # No unsubscribe link of the customer's in a message that goes to someone else.
    content = sender.render(request, profile, channel, unsubscribe=None)
    if channel == "email" and "subject" in content:
        content["subject"] = f"[TEST] {content['subject']}"
    elif channel == "push" and "title" in content:
        content["title"] = f"[TEST] {content['title']}"
    elif channel == "sms" and "text" in content:
        content["text"] = f"[TEST] {content['text']}"
    message = OutboundMessage(
        idempotency_key=f"test:{uuid.uuid4().hex}",
        customer_id=request.customer_id,
        channel=channel,
        recipient=to,
        kind=request.kind,
        topic=request.topic,
        journey_id=f"test:{request.journey_id}",
        step_id=request.step_id,
        content=content,
    )
    channels = build_channels(settings, pool=pool)
    try:
        result = await channels[channel].deliver(message)
    except PermanentDeliveryError as exc:
        return TestSendResult(channel=channel, to=to, status="failed", error=str(exc))
    finally:
        await close_channels(channels)
    return TestSendResult(channel=channel, to=to, status="sent", provider_message_id=result.provider_message_id)


def _unsubscribe(settings: Settings, request: SendRequest, channel: str) -> str | None:
    if request.kind != "marketing" or channel != "email":
        return None
    return unsubscribe_url(settings, request.customer_id, channel, request.topic, request.idempotency_key)


async def test_send_checked(
    pool: Pool, settings: Settings, request: SendRequest, channel: str | None, to: str
) -> TestSendResult:
    """``test_send`` with the caller's input checked: 422 naming ``channel``, ``to`` or the template."""
    offered = request.candidates or [request.channel]
    chosen = channel or offered[0]
    if chosen not in offered:
        raise ApiError(422, f"the message has no '{chosen}' content (it has: {', '.join(offered)})", field="channel")
    if chosen not in TEST_CHANNELS:
        raise ApiError(422, f"no test sends on {chosen}: use one of {', '.join(TEST_CHANNELS)}", field="channel")
    if chosen == "push" and settings.channel_push == "devices":
        # That adapter delivers to the customer's own registered devices, whatever ``to`` says.
        raise ApiError(
            422,
            "no push test sends with the 'devices' push adapter: it would reach the customer's own devices, not "
            "'to'; test on email, or preview the push",
            field="channel",
        )
    if chosen == "email" and not is_email(to):
        raise ApiError(422, "not an email address", field="to")
    if chosen == "webhook" and not to.startswith(("http://", "https://")):
        raise ApiError(422, "a webhook test goes to an http(s) URL", field="to")
    try:
        return await test_send(pool, settings, request, chosen, to)
    except TemplateError as exc:
        raise ApiError(422, f"template error: {exc}", field=f"content.{chosen}") from None
