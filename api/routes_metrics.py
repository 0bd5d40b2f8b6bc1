"""``GET /metrics``: Prometheus' text format (config/metrics.py), on the API's own port.

It needs an API key with the read role (Prometheus sends it with ``authorization: {credentials: ...}``, a bearer
token) unless ``PARCOURS_METRICS_PUBLIC=true`` (a network that only the scraper reaches). Each scrape reads the
outbox's depth and the age of its oldest event from PostgreSQL; if that read fails, the other metrics are still
served and the outbox gauges keep their last values.
"""

from __future__ import annotations

import asyncio

import structlog
from fastapi import APIRouter, Request
from fastapi.responses import Response

from api.routes_deps import check_role, pool, presented_key, settings
from config import metrics
from store import events as event_store

router = APIRouter(tags=["health"])
log = structlog.get_logger(__name__)

OUTBOX_READ_TIMEOUT_SECONDS = 2.0


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
    summary="Prometheus metrics",
)
async def get_metrics(request: Request) -> Response:
    """Parcours' metrics in Prometheus' text format (a read key, unless PARCOURS_METRICS_PUBLIC)."""
    if not settings(request).metrics_public:
        check_role(request, presented_key(request), "read")
    try:
        async with asyncio.timeout(OUTBOX_READ_TIMEOUT_SECONDS):
            stats = await event_store.outbox_stats(pool(request))
    except Exception as exc:  # the database is down: the rest of the metrics still say so
        log.warning("metrics.outbox_unavailable", error=repr(exc))
    else:
        metrics.OUTBOX_EVENTS.set(stats.depth)
        metrics.OUTBOX_OLDEST_SECONDS.set(stats.oldest_age_seconds)
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
