"""Preview and test sends of a journey's send step or a broadcast, shared by the API and ``parcours``.

A preview renders the message for a real customer on each of its channels and asks the send policy what it
would do (``JourneyActivities.decide``, the very code a send runs, in a read-only transaction without the row
lock): it writes nothing and delivers nothing. A test send renders the same content for that customer and
delivers it, marked ``[TEST]`` with a ``test:`` key, to an address given by the caller: no consent, cap,
suppression or quiet-hours check (it goes to the operator, not the customer), and no row anywhere, so caps,
reports and the message log never count it. Links are left as written (no tracking: a click on a test message is
nobody's click).

A push test goes to a device given by the caller (``device``: ``platform`` and ``token``, or for ``web`` the
``subscription``, checked as a registered device is, ``api.routes_devices.DeviceAddress``) over the very sender
the ``devices`` adapter uses for that platform (``DevicesPushChannel.send_to_device``): the customer's own
devices are never read, and the provider's answer changes no stored device (an ``UNREGISTERED`` or ``410`` for the
test token is reported, not acted on). With the ``devices`` adapter a push test needs ``device`` (``to`` would
mean nothing to it); with another push adapter ``to`` works as for the other channels.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from activities.broadcasts import send_request as broadcast_send_request
from activities.channels.base import OutboundMessage, PermanentDeliveryError
from activities.channels.egress import EgressRefusedError
from activities.channels.push import DevicesPushChannel, missing_settings
from activities.channels.registry import build_channels, close_channels
from activities.journey import JourneyActivities
from activities.links import unsubscribe_url
from activities.models import SendRequest
from activities.profiles import fetch_profile
from api.routes_deps import validation_field
from api.routes_devices import DeviceAddress
from api.schemas import ApiError, is_email
from config.settings import Settings
from contracts.journey import Event
from journeys.broadcasts import Broadcast
from journeys.models import Journey, SendStep
from journeys.templates import TemplateError, noting_undefined
from store import test_sends as test_send_store
from store.customers import get_customer
from store.db import Pool, transaction
from store.devices import Device

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
    to: str = Field(
        description="The address, number or URL given; for a device, its token (the subscription's endpoint for web)."
    )
    platform: str | None = Field(default=None, description="A push test to a device: its platform.")
    status: Literal["sent", "failed"]
    provider_message_id: str | None = Field(
        default=None,
        description="The provider's id of the message (FCM's message name, APNs' apns-id, a Web Push location).",
    )
    error: str | None = Field(
        default=None,
        description="Why it failed, with the provider's answer (e.g. `UNREGISTERED (FCM answered 404 NOT_FOUND)`).",
    )
    provider_answer: dict[str, Any] | None = Field(
        default=None,
        description="A push test to a device: the provider's answer as the push adapter reads it (status, codes).",
    )
    test_sends_left: int | None = Field(
        default=None,
        description="How many more test sends this API key may make in the coming hour (`test_sends_per_hour`).",
    )


def parse_device(data: Any) -> DeviceAddress:
    """A test send's ``device``, checked as a device registration is; 422 naming ``device.<field>``."""
    try:
        return DeviceAddress.model_validate(data)
    except ValidationError as exc:
        message, field = validation_field(exc.errors())  # type: ignore[arg-type]
        if field:
            message = message.removeprefix(f"{field}: ")
        name = f"device.{field}" if field else "device"
        raise ApiError(422, f"{name}: {message}", field=name) from None


def _content(sender: JourneyActivities, request: SendRequest, profile: Any, channel: str) -> dict[str, Any]:
    # No unsubscribe link of the customer's in a message that goes to someone else.
    content = sender.render(request, profile, channel, unsubscribe=None)
    if channel == "email" and "subject" in content:
        content["subject"] = f"[TEST] {content['subject']}"
    elif channel == "push" and "title" in content:
        content["title"] = f"[TEST] {content['title']}"
    elif channel == "sms" and "text" in content:
        content["text"] = f"[TEST] {content['text']}"
    return content


async def test_send(
    pool: Pool,
    settings: Settings,
    request: SendRequest,
    channel: str,
    to: str | None,
    device: DeviceAddress | None = None,
) -> TestSendResult:
    """Render the message for the customer and deliver it to ``to`` (or, for push, ``device``) only, marked as a
    test; records nothing."""
    sender = JourneyActivities(pool, {}, settings)
    async with transaction(pool, readonly=True) as conn:
        profile = await fetch_profile(conn, request.customer_id)
    content = _content(sender, request, profile, channel)
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
    if device is not None:
        return await _test_push(pool, settings, message, device)
    assert to is not None  # test_send_checked: ``to`` or ``device``
    channels = build_channels(settings, pool=pool)
    try:
        result = await channels[channel].deliver(message)
    except PermanentDeliveryError as exc:
        return TestSendResult(channel=channel, to=to, status="failed", error=str(exc))
    finally:
        await close_channels(channels)
    return TestSendResult(channel=channel, to=to, status="sent", provider_message_id=result.provider_message_id)


async def _test_push(
    pool: Pool, settings: Settings, message: OutboundMessage, address: DeviceAddress
) -> TestSendResult:
    """One push to the device given, over the ``devices`` adapter's sender for its platform; nothing recorded."""
    platform = address.platform
    subscription = address.subscription.model_dump(exclude_none=True) if address.subscription else None
    to = address.recipient
    now = datetime.now(UTC)
    device = Device(
        customer_id=message.customer_id,
        device_id="test-send",
        platform=platform,
        token=address.token,
        subscription=subscription,
        app=None,
        locale=None,
        active=True,
        deactivated_at=None,
        deactivated_reason=None,
        created_at=now,
        updated_at=now,
    )
    # A Web Push endpoint is the caller's URL: the channel checks it as a webhook's (activities.channels.egress), so
    # a test cannot make Parcours call its own network and read the answer.
    try:
        channel = DevicesPushChannel(settings, pool, platforms=[platform], apns_tokens=_APNS_TOKENS)
    except (ValueError, OSError, KeyError) as exc:  # a key file missing or unreadable here
        raise ApiError(
            422, f"{PLATFORM_NAMES[platform]} push is misconfigured here: {exc!s}", field="device.platform"
        ) from None
    try:
        outcome = await channel.send_to_device(device, message)
    except EgressRefusedError as exc:
        raise ApiError(
            422,
            f"{exc} (a test push may reach only public addresses, or PARCOURS_WEBHOOK_ALLOW_HOSTS)",
            field="device.subscription.endpoint",
        ) from None
    finally:
        await channel.close()
    if outcome.verdict == "sent":
        return TestSendResult(
            channel=message.channel,
            to=to,
            platform=platform,
            status="sent",
            provider_message_id=outcome.provider_id,
            provider_answer=outcome.detail,
        )
    return TestSendResult(
        channel=message.channel,
        to=to,
        platform=platform,
        status="failed",
        error=_push_error(platform, outcome.verdict, outcome.detail),
        provider_answer=outcome.detail,
    )


PLATFORM_NAMES = {"fcm": "FCM", "apns": "APNs", "web": "Web Push"}
_APNS_TOKENS: dict[str, tuple[str, float]] = {}
"""The APNs provider tokens of this process's test sends, by key: each test builds its sender anew, and Apple
answers ``TooManyProviderTokenUpdates`` to a new token within 20 minutes of the last, so they share one (renewed
after 50 minutes, as the adapter's)."""


def _push_error(platform: str, verdict: str, detail: dict[str, Any]) -> str:
    """The provider's refusal in a line: its code or reason first, then what it answered."""
    name = PLATFORM_NAMES[platform]
    status = detail.get("status")
    codes = [str(c) for c in detail.get("codes") or []]
    reason = detail.get("reason") or ", ".join(codes) or detail.get("error")
    if status is None:  # no answer (unreachable), or refused before sending (our credentials, the subscription)
        text = f"{name}: {reason}"
    else:
        said = " ".join(str(p) for p in (status, detail.get("error") if codes else None) if p is not None)
        text = f"{reason} ({name} answered {said})" if reason else f"{name} answered {said}"
        if detail.get("body"):
            text += f": {detail['body']}"
    if verdict == "dead":
        text += ": this token can take no push (no stored device was changed)"
    elif verdict == "retry":
        text += ": a passing failure, try again"
    return text


def _unsubscribe(settings: Settings, request: SendRequest, channel: str) -> str | None:
    if request.kind != "marketing" or channel != "email":
        return None
    return unsubscribe_url(settings, request.customer_id, channel, request.topic, request.idempotency_key)


def key_sender(key: str | None) -> str:
    """Who a test send is counted against (``store.test_sends``): a fingerprint of the API key, never the key."""
    return "key:" + hashlib.sha256((key or "").encode()).hexdigest()[:16]


CLI_SENDER = "cli"
"""The sender of ``parcours ... test-send`` (an operator on a machine with the database's URL)."""


async def test_send_checked(
    pool: Pool,
    settings: Settings,
    request: SendRequest,
    channel: str | None,
    to: str | None,
    device: DeviceAddress | None = None,
    *,
    sender: str,
) -> TestSendResult:
    """``test_send`` with the caller's input checked: 422 naming ``channel``, ``to``, ``device``, the device's
    platform when it is not configured here, or the template; 429 with ``Retry-After`` past ``sender``'s
    ``test_sends_per_hour`` (a test send skips consent, caps and quiet hours, so a key cannot make it a relay)."""
    offered = request.candidates or [request.channel]
    # A device says push: the test goes on push without naming the channel, whichever channel comes first.
    chosen = channel or ("push" if device is not None and "push" in offered else offered[0])
    if chosen not in offered:
        raise ApiError(422, f"the message has no '{chosen}' content (it has: {', '.join(offered)})", field="channel")
    if chosen not in TEST_CHANNELS:
        raise ApiError(422, f"no test sends on {chosen}: use one of {', '.join(TEST_CHANNELS)}", field="channel")
    if device is not None:
        if chosen != "push":
            raise ApiError(
                422, f"a device is for push test sends; the {chosen} test goes to 'to' instead", field="device"
            )
        if to:
            raise ApiError(422, "give either 'to' or 'device', not both", field="device")
        missing = missing_settings(settings, device.platform)
        if missing:
            raise ApiError(
                422,
                f"{PLATFORM_NAMES[device.platform]} push is not configured here: set {' and '.join(missing)}",
                field="device.platform",
            )
    elif chosen == "push" and settings.channel_push == "devices":
        # That adapter delivers to devices, not to an address: the test needs one.
        raise ApiError(
            422,
            'a push test goes to a device: give "device": {"platform": "fcm" or "apns", "token": ...} or '
            '{"platform": "web", "subscription": {"endpoint": ..., "keys": {...}}}',
            field="device",
        )
    elif not to:
        raise ApiError(422, f"the {chosen} test's recipient is required", field="to")
    elif chosen == "email" and not is_email(to):
        raise ApiError(422, "not an email address", field="to")
    elif chosen == "webhook" and not to.startswith(("http://", "https://")):
        raise ApiError(422, "a webhook test goes to an http(s) URL", field="to")
    recipient = device.recipient if device is not None else to or ""
    claimed = await test_send_store.claim(pool, sender, chosen, recipient[:500], per_hour=settings.test_sends_per_hour)
    if claimed.retry_after is not None:
        raise ApiError(
            429,
            f"this key has made its {settings.test_sends_per_hour} test sends of the last hour "
            f"(test_sends_per_hour); the next one in {claimed.retry_after:.0f} s",
            field="to" if device is None else "device",
            headers={"Retry-After": f"{claimed.retry_after:.0f}"},
        )
    try:
        result = await test_send(pool, settings, request, chosen, to, device)
    except TemplateError as exc:
        raise ApiError(422, f"template error: {exc}", field=f"content.{chosen}") from None
    return result.model_copy(update={"test_sends_left": claimed.left})
