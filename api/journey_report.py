"""The journey report and the channel KPIs, assembled from ``store.reports`` and Temporal visibility.

Shared by ``GET /v1/journeys/{id}/report``, ``GET /v1/reports/channels`` and ``parcours journeys report``. What
each figure means (and its caveats) is in README, "Reports".
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import BaseModel
from temporalio.client import Client

from config.settings import Settings
from journeys.models import Journey, SendStep
from orchestration import visibility
from store import journeys as journey_store
from store import reports

log = structlog.get_logger(__name__)

WAITING_TIMEOUT = timedelta(seconds=3)
"""How long the report waits for Temporal's counts before it answers without them."""
DELIVERY_KNOWN = ("email", "in_app", "webhook")
"""Channels whose provider answer says the message was delivered (a later bounce takes it back)."""


class OutcomeLine(BaseModel):
    outcome: str
    reason: str | None = None
    """``None`` on the outcome's total line; the lines after it break that total down by reason."""
    count: int
    """Visits that ended so (a step visited again in a loop counts each visit)."""


class Funnel(BaseModel):
    """A send step's messages (all channels, or one under ``by_channel``)."""

    channel: str | None = None
    messages: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0
    delivered: int | None = None
    """Sent and not bounced since, on channels that confirm delivery (email, in_app, webhook); else null."""
    bounced: int = 0
    opened: int = 0
    opened_human: int = 0
    clicked: int = 0
    unsubscribed: int = 0
    cost: float = 0.0
    """Sent messages times ``PARCOURS_CHANNEL_COSTS`` (today's rates)."""
    by_channel: list[Funnel] | None = None


class StepReport(BaseModel):
    step_id: str
    type: str
    label: str | None = None
    in_definition: bool = True
    reached: int
    """Distinct entries that went through the step (an outcome is recorded when the step ends)."""
    outcomes: list[OutcomeLine]
    waiting_now: int | None
    """Running customers on this step now (Temporal visibility; ignores the date range); null if unknown."""
    funnel: Funnel | None = None


class ConversionReport(BaseModel):
    converted: int
    revenue: float
    conversion_rate: float | None
    """Conversions / entries in the range; null without entries."""
    median_time_to_convert_seconds: float | None


class ExitLine(BaseModel):
    reason: str
    count: int


class ArmReport(BaseModel):
    step_id: str
    variant: str
    entered: int
    converted: int
    revenue: float
    conversion_rate: float | None


class JourneyReport(BaseModel):
    journey_id: str
    name: str
    definition_version: int
    """The version whose steps (and their order) the report lists."""
    version: int | None
    since: datetime | None
    until: datetime | None
    variant: str | None
    entered: int
    steps: list[StepReport]
    conversions: ConversionReport
    exits: list[ExitLine]
    arms: list[ArmReport]
    waiting_note: str | None = None
    """Why ``waiting_now`` is null (Temporal unreachable), else null."""
    generated_at: datetime


class UnknownVersionError(LookupError):
    """The journey has no such version."""


async def journey_report(
    db: Any, client: Client | None, settings: Settings, filters: reports.Filters
) -> JourneyReport | None:
    """The report of ``filters.journey_id``; None when there is no such journey."""
    assert filters.journey_id is not None
    row = await journey_store.get_journey(db, filters.journey_id)
    if row is None:
        return None
    definition_version = filters.version or row.latest_version
    journey = await journey_store.get_version(db, filters.journey_id, definition_version)
    if journey is None:
        raise UnknownVersionError(filters.version)
    counts = await asyncio.gather(
        reports.entered(db, filters),
        reports.outcome_counts(db, filters),
        reports.message_counts(db, filters),
        reports.message_engagement(db, filters),
        reports.conversions(db, filters),
        reports.experiment_arms(
            db, filters.journey_id, version=filters.version, since=filters.since, until=filters.until
        ),
    )
    entered, outcomes, messages, engagement, converted, arms = counts
    step_ids = _step_order(journey, outcomes)
    waiting, note = await waiting_now(client, filters, step_ids)
    funnels = _funnels(messages, engagement, settings)
    steps = [_step(journey, sid, outcomes, waiting, funnels) for sid in step_ids]
    return JourneyReport(
        journey_id=journey.id,
        name=journey.name,
        definition_version=definition_version,
        version=filters.version,
        since=filters.since,
        until=filters.until,
        variant=filters.variant,
        entered=entered,
        steps=steps,
        conversions=ConversionReport(
            converted=converted.converted,
            revenue=converted.revenue,
            conversion_rate=_rate(converted.converted, entered),
            median_time_to_convert_seconds=converted.median_seconds_to_convert,
        ),
        exits=_exits(outcomes),
        arms=[ArmReport(**vars(a), conversion_rate=_rate(a.converted, a.entered)) for a in arms],
        waiting_note=note,
        generated_at=datetime.now(UTC),
    )


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _step_order(journey: Journey, outcomes: Iterable[reports.OutcomeCount]) -> list[str]:
    """The definition's steps in order, then the control group, then steps of other versions, then ``$exit``."""
    ordered = [s.id for s in journey.steps]
    if journey.holdout is not None:
        ordered.insert(0, reports.HOLDOUT_STEP)
    seen = {o.step_id for o in outcomes}
    extra = sorted(seen - set(ordered) - {"$exit"}, key=lambda s: (s != reports.HOLDOUT_STEP, s))
    return ordered + extra + (["$exit"] if "$exit" in seen else [])


def _step(
    journey: Journey,
    step_id: str,
    outcomes: Sequence[reports.OutcomeCount],
    waiting: dict[str, int] | None,
    funnels: dict[str, Funnel],
) -> StepReport:
    mine = [o for o in outcomes if o.step_id == step_id]
    definition = next((s for s in journey.steps if s.id == step_id), None)
    step_type = definition.type if definition else (mine[0].step_type if mine else "holdout")
    lines: list[OutcomeLine] = []
    for total in sorted((o for o in mine if o.reason is None), key=lambda o: (-o.visits, o.outcome)):
        lines.append(OutcomeLine(outcome=total.outcome, count=total.visits))
        reasons = [o for o in mine if o.reason is not None and o.outcome == total.outcome]
        lines += [OutcomeLine(outcome=o.outcome, reason=o.reason, count=o.visits) for o in reasons]
    funnel = funnels.get(step_id)
    if funnel is None and (isinstance(definition, SendStep) or step_type == "send"):
        funnel = Funnel(by_channel=[])
    return StepReport(
        step_id=step_id,
        type=step_type,
        label=definition.label if definition else None,
        in_definition=definition is not None or step_id == reports.HOLDOUT_STEP,
        reached=sum(o.entries for o in mine if o.reason is None),
        outcomes=lines,
        waiting_now=None if waiting is None else waiting.get(step_id, 0),
        funnel=funnel,
    )


def _exits(outcomes: Iterable[reports.OutcomeCount]) -> list[ExitLine]:
    """Exit steps and exits on a criterion, request or archiving (``$exit``), by reason."""
    by_reason: dict[str, int] = defaultdict(int)
    for o in outcomes:
        if o.step_type == "exit" and o.reason is not None:
            by_reason[o.reason] += o.visits
    return [ExitLine(reason=r, count=n) for r, n in sorted(by_reason.items(), key=lambda item: (-item[1], item[0]))]


def _funnels(
    messages: Iterable[reports.MessageCount], engagement: Iterable[reports.EngagementCount], settings: Settings
) -> dict[str, Funnel]:
    """Per step id, the funnel over its channels (``by_channel`` sorted by channel)."""
    channels: dict[str, dict[str, Funnel]] = defaultdict(dict)
    bounced_sent: dict[tuple[str, str], int] = {}
    for m in messages:
        cost = m.sent * settings.channel_costs.get(m.channel, 0.0)
        channels[m.step_id][m.channel] = Funnel(
            channel=m.channel, messages=m.messages, sent=m.sent, skipped=m.skipped, failed=m.failed, cost=cost
        )
    for e in engagement:
        funnel = channels[e.step_id].setdefault(e.channel, Funnel(channel=e.channel))
        funnel.opened, funnel.opened_human, funnel.clicked = e.opened, e.opened_human, e.clicked
        funnel.bounced, funnel.unsubscribed = e.bounced, e.unsubscribed
        bounced_sent[(e.step_id, e.channel)] = e.bounced_after_sent
    out: dict[str, Funnel] = {}
    for step_id, by_channel in channels.items():
        for channel, funnel in by_channel.items():
            if channel in DELIVERY_KNOWN:
                funnel.delivered = funnel.sent - bounced_sent.get((step_id, channel), 0)
        out[step_id] = total_funnel([by_channel[c] for c in sorted(by_channel)])
    return out


def total_funnel(parts: list[Funnel]) -> Funnel:
    """The sum of ``parts`` (``delivered``: of the channels that know it), keeping them under ``by_channel``."""
    known = [p.delivered for p in parts if p.delivered is not None]
    return Funnel(
        messages=sum(p.messages for p in parts),
        sent=sum(p.sent for p in parts),
        skipped=sum(p.skipped for p in parts),
        failed=sum(p.failed for p in parts),
        delivered=sum(known) if known else None,
        bounced=sum(p.bounced for p in parts),
        opened=sum(p.opened for p in parts),
        opened_human=sum(p.opened_human for p in parts),
        clicked=sum(p.clicked for p in parts),
        unsubscribed=sum(p.unsubscribed for p in parts),
        cost=sum(p.cost for p in parts),
        by_channel=parts,
    )


async def waiting_now(
    client: Client | None, filters: reports.Filters, step_ids: Sequence[str]
) -> tuple[dict[str, int] | None, str | None]:
    """Running runs of the journey per current step, or None and why when Temporal cannot say.

    The version and variant filters apply; the date range does not (this is now).
    """
    if client is None:
        return None, "Temporal is not configured: waiting_now is unknown"
    assert filters.journey_id is not None
    try:
        counts = await visibility.running_by_step(
            client, filters.journey_id, step_ids, version=filters.version, variant=filters.variant,
            rpc_timeout=WAITING_TIMEOUT,
        )  # fmt: skip
    except Exception as exc:  # best effort: the report answers without the live counts
        log.warning("report.waiting_unknown", journey_id=filters.journey_id, error=repr(exc))
        return None, f"Temporal did not answer ({type(exc).__name__}): waiting_now is unknown"
    return counts, None


# --- channels -------------------------------------------------------------------------------------------------


class ChannelKpi(Funnel):
    """One channel across journeys. Rates are over delivered messages (sent, where delivery is unknown)."""

    open_rate: float | None = None
    """Human opens / delivered."""
    click_rate: float | None = None
    unsubscribe_rate: float | None = None
    converted: int = 0
    """Conversions whose last message sent before converting went out on this channel (last touch)."""
    revenue: float = 0.0
    cost_per_conversion: float | None = None


class ChannelReport(BaseModel):
    since: datetime | None
    until: datetime | None
    channels: list[ChannelKpi]
    generated_at: datetime


async def channel_report(db: Any, settings: Settings, filters: reports.Filters) -> ChannelReport:
    """Every channel's volume, engagement, conversions and cost in the range, across journeys."""
    scope = reports.Filters(since=filters.since, until=filters.until)
    messages, engagement, conversions = await asyncio.gather(
        reports.message_counts(db, scope), reports.message_engagement(db, scope), reports.channel_conversions(db, scope)
    )
    funnel = _funnels(messages, engagement, settings).get("")
    parts = {p.channel: p for p in (funnel.by_channel or []) if p.channel} if funnel else {}
    won = {c.channel: c for c in conversions}
    kpis = []
    for channel in sorted(parts.keys() | won.keys()):
        part = parts.get(channel) or Funnel(channel=channel)
        base = part.delivered if part.delivered is not None else part.sent
        converted = won[channel].converted if channel in won else 0
        kpi = ChannelKpi(**part.model_dump(exclude={"by_channel"}))
        kpi.open_rate, kpi.click_rate = _rate(part.opened_human, base), _rate(part.clicked, base)
        kpi.unsubscribe_rate = _rate(part.unsubscribed, part.sent)
        kpi.converted, kpi.revenue = converted, won[channel].revenue if channel in won else 0.0
        kpi.cost_per_conversion = part.cost / converted if converted else None
        kpis.append(kpi)
    return ChannelReport(since=filters.since, until=filters.until, channels=kpis, generated_at=datetime.now(UTC))
