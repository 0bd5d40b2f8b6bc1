"""The console's customer timeline and consent history (linked from the customer page).

The timeline merges the customer's events, messages (with the send policy's channel decision) and step outcomes
(per journey) in time order, newest first, one page (``console_page_size``) at a time: the "older" link carries
the cursor of the page's last entry (``?before=``). The consent history is the ``consent_events`` ledger: every
change with its source, lawful basis and time, newest first.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from api.console import session
from api.console.broadcast_pages import READ_PAGE
from api.console.routes import Refused, customer_or_404, render
from api.routes_deps import pool, settings
from store import customers as customer_store
from store import timeline as timeline_store

router = APIRouter(include_in_schema=False)

CONSENT_PAGE = 100


def cursor(entry: timeline_store.Entry) -> str:
    """The ``?before=`` value that pages on after ``entry``."""
    raw = json.dumps([entry.at.isoformat(), entry.key], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _before(value: str | None) -> tuple[datetime, str] | None:
    if value is None:
        return None
    try:
        if len(value) > 2048:
            raise ValueError(value)
        at, key = json.loads(base64.urlsafe_b64decode(value.encode("ascii") + b"=" * (-len(value) % 4)))
        moment = datetime.fromisoformat(at)
        if moment.tzinfo is None or not isinstance(key, str) or len(key) > 300 or "\x00" in key:
            raise ValueError(value)
        return moment, key
    except (ValueError, TypeError, UnicodeError):
        raise Refused(400, "before: not a position in this timeline (follow the page's links)") from None


@router.get("/console/customers/{customer_id}/timeline")
async def timeline_page(
    request: Request, customer_id: str, before: str | None = None, current: session.Session = READ_PAGE
) -> Response:
    position = _before(before)
    customer = await customer_or_404(request, customer_id)
    size = settings(request).console_page_size
    entries = await timeline_store.timeline(pool(request), customer.id, limit=size + 1, before=position)
    more = len(entries) > size
    entries = entries[:size]
    return render(
        request, current, "timeline.html", title=f"Timeline of {customer.id}", customer=customer, entries=entries,
        older=cursor(entries[-1]) if more else None, paged=position is not None, describe=_describe,
    )  # fmt: skip


def _describe(entry: timeline_store.Entry) -> str:
    """One line of detail: an event's properties, a message's channel decision, a step outcome's detail."""
    detail: dict[str, Any] = dict(entry.detail or {})
    if entry.kind == "message":
        return "; ".join(f"{k}: {v}" for k, v in sorted(detail.items())) or "-"
    if entry.kind == "step":
        detail.pop("reason", None)
    text = json.dumps(detail, ensure_ascii=False, default=str, sort_keys=True) if detail else ""
    return text if len(text) <= 200 else text[:199] + "…"


@router.get("/console/customers/{customer_id}/consent")
async def consent_page(
    request: Request,
    customer_id: str,
    before: Annotated[int | None, Query(ge=1, le=2**62)] = None,
    current: session.Session = READ_PAGE,
) -> Response:
    customer = await customer_or_404(request, customer_id)
    db = pool(request)
    changes = await customer_store.consent_history(db, customer.id, limit=CONSENT_PAGE + 1, before=before)
    more = len(changes) > CONSENT_PAGE
    changes = changes[:CONSENT_PAGE]
    state = await customer_store.current_consent(db, customer.id)
    return render(
        request, current, "consent.html", title=f"Consent of {customer.id}", customer=customer, changes=changes,
        state=state, older=changes[-1]["id"] if more else None, paged=before is not None,
    )  # fmt: skip
