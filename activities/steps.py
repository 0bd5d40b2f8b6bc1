"""Activities of the steps that are not sends: history checks, profile updates, webhook calls, hand-offs."""

from __future__ import annotations

import json
from typing import Any

import httpx
import structlog
from standardwebhooks.webhooks import Webhook
from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError

from activities.admission import admit, current_journey
from activities.channels.egress import EgressRefusedError, guarded_client
from activities.channels.webhook import RETRYABLE_STATUSES, answered, response_body, signed_headers, unreachable
from activities.models import (
    Handoff,
    HandoffResult,
    HistoryRequest,
    HistoryResult,
    ProfileUpdate,
    ProfileUpdateResult,
    StepContext,
    WebhookAnswer,
    WebhookCall,
)
from activities.profiles import fetch_profile, liquid_context
from config.settings import Settings
from contracts.journey import Event
from journeys.templates import TemplateError, render_value
from store import customers as customer_store
from store import segments as segment_store
from store.db import Pool, connection

log = structlog.get_logger(__name__)


class StepActivities:
    """Activities with their dependencies injected; the worker registers the bound methods."""

    def __init__(self, pool: Pool, client: Client, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self._pool = pool
        self._client = client
        self._settings = settings
        # Journey-authored URLs: every connection is checked on its resolved address (channels.egress).
        self._http = http or guarded_client(settings.webhook_allow_hosts, timeout=settings.webhook_timeout_seconds)
        self._signer = Webhook(settings.webhook_secret.get_secret_value())

    def all(self) -> list[Any]:
        return [self.check_history, self.update_profile, self.call_webhook, self.start_journey]

    @activity.defn(name="check_history")
    async def check_history(self, request: HistoryRequest) -> HistoryResult:
        matches = await segment_store.history_matches(self._pool, request.customer_id, request.conditions, request.now)
        return HistoryResult(matches=matches)

    @activity.defn(name="update_profile")
    async def update_profile(self, update: ProfileUpdate) -> ProfileUpdateResult:
        context = await self._context(update.context)
        try:
            values = render_value(update.set, context)
        except TemplateError as exc:
            raise ApplicationError(f"template error in 'set': {exc}", type="InvalidStep", non_retryable=True) from exc
        updated = await customer_store.update_attributes(self._pool, update.context.customer_id, values)
        return ProfileUpdateResult(updated=updated, attributes=values if updated else {})

    @activity.defn(name="call_webhook")
    async def call_webhook(self, call: WebhookCall) -> WebhookAnswer:
        """One HTTP call. 5xx, 408/409/425/429 and network errors raise (Temporal retries); other 4xx answer."""
        context = await self._context(call.context)
        try:
            body = render_value(call.body, context) if call.body is not None else None
            headers = render_value(call.headers, context)
        except TemplateError as exc:
            return WebhookAnswer(ok=False, error=f"template error: {exc}")
        # A string body goes out as rendered, with the step's own content type (text/plain if it names none); a
        # mapping goes out as JSON.
        given_type = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
        if isinstance(body, str):
            payload, content_type = body, given_type or "text/plain; charset=utf-8"
        else:
            payload = json.dumps(body, separators=(",", ":")) if body is not None else ""
            content_type = "application/json"
        headers = {k: v for k, v in headers.items() if k.lower() != "content-type"}
        headers = {
            **headers,
            **signed_headers(self._signer, call.context.idempotency_key, payload),
            "content-type": content_type,
        }
        try:
            response = await self._http.request(call.method, call.url, content=payload or None, headers=headers)
        except EgressRefusedError as exc:  # never retried: the destination is not allowed
            return WebhookAnswer(ok=False, error=str(exc))
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
            return WebhookAnswer(ok=False, error=f"invalid url: {exc}")
        except httpx.HTTPError as exc:
            # Retried by Temporal. One line, cause first, no chained traceback: it is what the run's pending
            # activity, `parcours ops failures` and the worker's log show.
            raise ApplicationError(unreachable(call.method, call.url, exc), type="WebhookUnreachable") from None
        if response.status_code >= 500 or response.status_code in RETRYABLE_STATUSES:
            raise ApplicationError(answered(call.method, call.url, response), type="WebhookRefused")
        ok = response.is_success
        return WebhookAnswer(
            ok=ok,
            status=response.status_code,
            body=response_body(response),
            error=None if ok else answered(call.method, call.url, response),
        )

    @activity.defn(name="start_journey")
    async def start_journey(self, handoff: Handoff) -> HandoffResult:
        journey, version, unavailable = await current_journey(self._pool, handoff.target_journey)
        if journey is None:
            return HandoffResult(outcome="unavailable", reason=unavailable)
        ctx = handoff.context
        trigger = Event(
            event_id=f"handoff:{ctx.journey_id}:{ctx.entry_id}:{ctx.step_id}",
            customer_id=ctx.customer_id,
            name=f"$journey:{ctx.journey_id}",
            properties={**ctx.trigger.properties, "from_journey": ctx.journey_id, "from_step": ctx.step_id},
            occurred_at=handoff.now,
        )
        outcome = await admit(
            self._pool, self._client, self._settings, journey, version, trigger, handoff.now, "handoff"
        )
        return HandoffResult(outcome=outcome)

    async def _context(self, context: StepContext) -> dict[str, Any]:
        async with connection(self._pool) as conn:
            profile = await fetch_profile(conn, context.customer_id)
        return liquid_context(profile, context.trigger, context.journey_id, context.journey_name, context.step_id)
