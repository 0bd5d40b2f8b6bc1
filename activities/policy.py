"""What the send activity decides before calling a provider: which channels, may we, may we now.

Pure functions of the request, the customer's profile and settings (the activity supplies the counts from the
database), so every rule can be read and tested on its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from activities.models import Profile, SendRequest
from config.settings import FrequencyCap, Settings
from journeys import calendar
from journeys.durations import format_duration, parse_duration

# Channels that reach a person directly: marketing over them needs the customer's consent.
CONSENT_CHANNELS = ("email", "sms", "push")

# A customer's own frequency preference (profile attribute ``frequency_cap``).
FREQUENCY_PREFERENCES = {"daily": ("1d", 1), "weekly": ("7d", 1), "monthly": ("30d", 1)}


@dataclass(frozen=True)
class Candidate:
    channel: str
    recipient: str | None
    refusal: str | None
    """Why this channel cannot be used for this customer (None: it can)."""


@dataclass(frozen=True)
class Cap:
    limit: int
    per: timedelta
    channel: str | None
    source: str

    def describe(self) -> str:
        scope = f" on {self.channel}" if self.channel else ""
        return f"{self.source} cap: {self.limit} per {format_duration(self.per)}{scope}"


def ordered_channels(
    request: SendRequest, profile: Profile, settings: Settings, *, sms_segments: int | None = 1
) -> tuple[list[str], str]:
    """The channels to try, in order, and why that order.

    ``sms_segments``: for ``cheapest``, the segments the SMS takes as rendered for this customer (an SMS costs
    ``channel_costs.sms`` per segment); None when its text cannot be rendered: SMS then goes last (its cost is
    unknown, and a send on it would fail).
    """
    channels = list(request.candidates or [request.channel])
    if request.strategy == "preferred":
        preferred = profile.attributes.get("preferred_channel")
        if preferred in channels:
            channels.remove(preferred)
            return [preferred, *channels], f"customer's preferred channel ({preferred}) first"
        return channels, "customer has no preferred channel among these: step order"
    if request.strategy == "cheapest":
        costs = {c: channel_cost(c, settings, sms_segments) for c in channels}
        channels.sort(key=lambda c: costs[c])
        shown = ", ".join(f"{c}={_cost_text(costs[c])}" for c in channels)
        if "sms" in channels:
            shown += f"; sms {sms_segments} segment(s)" if sms_segments is not None else "; sms text not renderable"
        return channels, f"cheapest first ({shown})"
    return channels, "step order"


def channel_cost(channel: str, settings: Settings, sms_segments: int | None = 1) -> float:
    """What one message on ``channel`` costs: ``channel_costs``, per segment for SMS; unknown costs are infinite."""
    cost = settings.channel_costs.get(channel, math.inf)
    if channel == "sms":
        return math.inf if sms_segments is None else cost * sms_segments
    return cost


def _cost_text(cost: float) -> str:
    return "unknown" if math.isinf(cost) else f"{round(cost, 6):g}"


def candidate(
    request: SendRequest,
    profile: Profile,
    channel: str,
    settings: Settings,
    topic_defaults: Mapping[str, str] | None = None,
    push_devices: list[str] | None = None,
) -> Candidate:
    recipient = recipient_for(request, profile, channel, settings, push_devices)
    refusal = consent_refusal(request, profile, channel, settings, topic_defaults)
    if refusal is None and recipient is None and channel != "in_app":
        refusal = f"unreachable:{channel}"
    return Candidate(channel, recipient, refusal)


def topic_default(topic: str, settings: Settings, topic_defaults: Mapping[str, str] | None = None) -> str:
    """``opt_in`` or ``opt_out`` for a topic: the API's definition (``topic_defaults``), else the settings' topics,
    else ``opt_out`` (an unknown topic is sent unless withdrawn)."""
    if topic_defaults and topic in topic_defaults:
        return topic_defaults[topic]
    for defined in settings.topics:
        if defined.name == topic:
            return defined.default
    return "opt_out"


def consent_refusal(
    request: SendRequest,
    profile: Profile,
    channel: str,
    settings: Settings,
    topic_defaults: Mapping[str, str] | None = None,
) -> str | None:
    """Why consent forbids this send on this channel, or None. Transactional messages need no marketing consent.

    ``topic_defaults`` (topic -> ``opt_in``/``opt_out``) are the topics defined through the API, which win over
    ``settings.topics``. An opt-in topic needs the customer's explicit grant.
    """
    if request.kind == "transactional":
        return None
    if channel in CONSENT_CHANNELS:
        status = profile.channel_consent.get(channel)
        if status == "withdrawn":
            return f"consent_withdrawn:{channel}"
        if status is None and settings.consent_default == "opt_in":
            return f"no_consent:{channel}"
    if request.topic:
        status = profile.topic_consent.get(request.topic)
        if status == "withdrawn":
            return f"topic_withdrawn:{request.topic}"
        if status is None and topic_default(request.topic, settings, topic_defaults) == "opt_in":
            return f"topic_not_granted:{request.topic}"
    return None


def recipient_for(
    request: SendRequest, profile: Profile, channel: str, settings: Settings, push_devices: list[str] | None = None
) -> str | None:
    """Who the message goes to on ``channel``. Push: the customer's active registered devices
    (``devices:<id>,<id>``), else a ``push_token`` attribute (for the console and webhook adapters)."""
    if channel == "email":
        return profile.email
    if channel == "sms":
        return profile.phone
    if channel == "push":
        if push_devices:
            return "devices:" + ",".join(push_devices)
        token = profile.attributes.get("push_token")
        return str(token) if token else None
    if channel == "webhook":
        url = request.content.get("webhook", {}).get("url") or request.template.get("url")
        return url or settings.webhook_url
    return None


def quiet_hours_end(profile: Profile, settings: Settings, now: datetime) -> datetime | None:
    """When the customer's quiet hours that contain ``now`` end (their own window, else the global one)."""
    window = profile.attributes.get("quiet_hours") or settings.quiet_hours
    if not window or not isinstance(window, str):
        return None
    try:
        start, end = calendar.parse_window(window)
    except ValueError:
        return None  # an unreadable preference is not a reason to never send; the API validates new ones
    return calendar.quiet_hours_end(now, calendar.zone(profile.timezone, settings.default_timezone), start, end)


def caps_for(profile: Profile, settings: Settings) -> list[Cap]:
    caps = [_cap(c, "global") for c in settings.frequency_caps]
    preference = profile.attributes.get("frequency_cap")
    if isinstance(preference, str) and preference in FREQUENCY_PREFERENCES:
        per, limit = FREQUENCY_PREFERENCES[preference]
        caps.append(Cap(limit, parse_duration(per), None, f"customer's {preference}"))
    elif isinstance(preference, dict) and "limit" in preference and "per" in preference:
        try:
            caps.append(Cap(int(preference["limit"]), parse_duration(preference["per"]), None, "customer's"))
        except (TypeError, ValueError):
            pass
    return caps


def _cap(cap: FrequencyCap, source: str) -> Cap:
    return Cap(cap.limit, parse_duration(cap.per), cap.channel, source)


def cap_blocking(
    caps: list[Cap], channel: str, sent: list[tuple[str, datetime]], now: datetime
) -> tuple[Cap, timedelta] | None:
    """The first cap this send would break, and how long until a slot frees up; None when none is reached.

    ``sent`` lists the customer's recent marketing messages as (channel, when, on the journey's clock).
    """
    for cap in caps:
        if cap.channel is not None and cap.channel != channel:
            continue
        # No upper bound: a send decided a moment ago may hold the lock after one decided later was recorded.
        window = sorted(t for c, t in sent if (cap.channel is None or c == cap.channel) and t > now - cap.per)
        if len(window) >= cap.limit:
            if cap.limit == 0:
                return cap, cap.per
            oldest_counted = window[len(window) - cap.limit]
            return cap, max(oldest_counted + cap.per - now, timedelta(seconds=1))
    return None


def localized(fields: dict[str, Any], locale: str | None) -> dict[str, Any]:
    """Content for the customer's locale: exact (``fr-CA``), then language (``fr``), else the defaults."""
    locales = fields.get("locales") or {}
    base = {k: v for k, v in fields.items() if k != "locales"}
    if not locale or not isinstance(locales, dict):
        return base
    normalized = {str(k).lower().replace("_", "-"): v for k, v in locales.items()}
    wanted = locale.lower().replace("_", "-")
    override = normalized.get(wanted) or normalized.get(wanted.split("-")[0])
    return {**base, **override} if isinstance(override, dict) else base
