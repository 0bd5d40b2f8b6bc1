"""The HTTP service: event ingestion and routing, customers, consent, journeys."""

from api.app import create_app
from orchestration.router import EventOutcome, EventRouter, RouteResult

__all__ = ["EventOutcome", "EventRouter", "RouteResult", "create_app"]
