"""Published journeys: immutable versions, the latest one per journey, and the journey's status.

``active`` journeys take new entries, ``paused`` ones do not (running customers carry on), ``archived`` ones are
not routed at all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, Literal

import structlog
from pydantic import ValidationError

from journeys.models import Journey
from store.db import Db, transaction

log = structlog.get_logger(__name__)

JourneyStatus = Literal["active", "paused", "archived"]
STATUSES = ("active", "paused", "archived")


def canonical(journey: Journey) -> dict[str, Any]:
    """The definition as stored: JSON-ready, aliases (``else``) and defaults included."""
    return journey.model_dump(mode="json", by_alias=True)


def checksum(journey: Journey) -> str:
    text = json.dumps(canonical(journey), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


class VersionConflict(Exception):
    """``publish(..., expected=...)``: the journey's latest version is no longer the expected one."""

    def __init__(self, journey_id: str, expected: int, latest: int) -> None:
        super().__init__(f"journey '{journey_id}' is at version {latest}, not {expected}")
        self.expected, self.latest = expected, latest


async def publish(db: Db, journey: Journey, *, expected: int | None = None) -> tuple[int, bool]:
    """Publish ``journey`` as a new immutable version; returns ``(version, created)``.

    A definition identical to the latest version's publishes nothing and returns that version with
    ``created=False``. Concurrent publishers of one journey serialise on its row. With ``expected`` (the latest
    version the author started from, 0 for a new journey), a journey at any other version publishes nothing and
    raises ``VersionConflict``: checked under the row's lock, so of two authors who started from one version, one
    publishes and the other is refused.
    """
    digest = checksum(journey)
    async with transaction(db) as conn:
        # Create the journeys row first (version 0) so there is always a row to lock.
        await conn.execute(
            """INSERT INTO journeys (id, name, latest_version, trigger_event) VALUES ($1, $2, 0, $3)
               ON CONFLICT (id) DO NOTHING""",
            journey.id,
            journey.name,
            journey.trigger.event,
        )
        latest = await conn.fetchval("SELECT latest_version FROM journeys WHERE id = $1 FOR UPDATE", journey.id)
        if expected is not None and latest != expected:
            raise VersionConflict(journey.id, expected, latest)
        if latest:
            same = await conn.fetchval(
                "SELECT checksum = $3 FROM journey_versions WHERE journey_id = $1 AND version = $2",
                journey.id,
                latest,
                digest,
            )
            if same:
                return latest, False
        version = latest + 1
        await conn.execute(
            "INSERT INTO journey_versions (journey_id, version, definition, checksum) VALUES ($1, $2, $3, $4)",
            journey.id,
            version,
            canonical(journey),
            digest,
        )
        await conn.execute(
            """UPDATE journeys SET name = $2, trigger_event = $3, latest_version = $4, updated_at = now()
               WHERE id = $1""",
            journey.id,
            journey.name,
            journey.trigger.event,
            version,
        )
        return version, True


_LIST_SQL = """
SELECT j.id, j.name, j.status, j.latest_version, j.trigger_event, j.created_at, j.updated_at,
       v.published_at
  FROM journeys j JOIN journey_versions v ON v.journey_id = j.id AND v.version = j.latest_version
"""


@dataclass(frozen=True)
class JourneyRow:
    """A published journey: its ``journeys`` row and when its latest version was published."""

    id: str
    name: str
    status: JourneyStatus
    latest_version: int
    trigger_event: str
    created_at: datetime
    updated_at: datetime
    published_at: datetime
    definition: dict[str, Any] | None = None
    """The latest version's definition as stored (``get_journey`` only)."""


async def list_journeys(db: Db) -> list[JourneyRow]:
    rows = await db.fetch(_LIST_SQL + " ORDER BY j.id")
    return [JourneyRow(**dict(r)) for r in rows]


async def get_journey(db: Db, journey_id: str) -> JourneyRow | None:
    """The journey with its latest definition."""
    row = await db.fetchrow(
        _LIST_SQL.replace("v.published_at", "v.published_at, v.definition") + " WHERE j.id = $1", journey_id
    )
    return JourneyRow(**dict(row)) if row else None


@dataclass(frozen=True)
class Latest:
    """A journey's status and its latest published version."""

    status: JourneyStatus
    version: int
    definition: dict[str, Any]
    """As stored (``canonical``); ``journey`` parses it."""

    @cached_property
    def journey(self) -> Journey:
        return Journey.model_validate(self.definition)


async def latest(db: Db, journey_id: str) -> Latest | None:
    """The journey's status, latest version and its definition; None when it was never published."""
    row = await db.fetchrow(
        """SELECT j.status, j.latest_version, v.definition FROM journeys j
             JOIN journey_versions v ON v.journey_id = j.id AND v.version = j.latest_version WHERE j.id = $1""",
        journey_id,
    )
    if row is None:
        return None
    return Latest(row["status"], row["latest_version"], row["definition"])


async def get_version(db: Db, journey_id: str, version: int) -> Journey | None:
    """The definition of one published version (None: no such version)."""
    definition = await db.fetchval(
        "SELECT definition FROM journey_versions WHERE journey_id = $1 AND version = $2", journey_id, version
    )
    return Journey.model_validate(definition) if definition is not None else None


@dataclass(frozen=True)
class VersionRow:
    version: int
    published_at: datetime
    checksum: str


async def list_versions(db: Db, journey_id: str) -> list[VersionRow]:
    """Every published version of the journey, newest first (empty: no such journey)."""
    rows = await db.fetch(
        "SELECT version, published_at, checksum FROM journey_versions WHERE journey_id = $1 ORDER BY version DESC",
        journey_id,
    )
    return [VersionRow(**dict(r)) for r in rows]


async def set_status(db: Db, journey_id: str, status: JourneyStatus) -> bool:
    """Set the status; False when there is no such journey."""
    if status not in STATUSES:
        raise ValueError(f"unknown journey status '{status}': use one of {', '.join(STATUSES)}")
    result = await db.execute(
        "UPDATE journeys SET status = $2, updated_at = now() WHERE id = $1 AND latest_version > 0",
        journey_id,
        status,
    )
    return result != "UPDATE 0"


async def active_versions(db: Db) -> list[tuple[str, int, str, Journey]]:
    """``(journey_id, latest version, status, definition)`` for every journey that is not archived."""
    rows = await db.fetch(
        _LIST_SQL.replace("v.published_at", "v.definition") + " WHERE j.status <> 'archived' ORDER BY j.id"
    )
    out: list[tuple[str, int, str, Journey]] = []
    for row in rows:
        journey = _parsed(row["id"], row["latest_version"], row["definition"])
        if journey is not None:
            out.append((row["id"], row["latest_version"], row["status"], journey))
    return out


def _parsed(journey_id: str, version: int, definition: Any) -> Journey | None:
    """A stored definition as a journey; None (logged) when it no longer parses, so one bad row (written by hand,
    or by an older release whose language this one no longer reads) leaves every other journey routing."""
    try:
        return Journey.model_validate(definition)
    except ValidationError as exc:
        log.error("journey.definition_unreadable", journey_id=journey_id, version=version, error=str(exc)[:500])
        return None


async def listened_events(db: Db) -> dict[str, set[str]]:
    """Per non-archived journey, the event names a running customer of any of its versions reacts to.

    Customers keep the version they entered with, so an event an older version waits for must still reach them.
    """
    rows = await db.fetch(
        """SELECT v.journey_id, v.version, v.definition FROM journey_versions v JOIN journeys j ON j.id = v.journey_id
            WHERE j.status <> 'archived'"""
    )
    out: dict[str, set[str]] = {}
    for row in rows:
        journey = _parsed(row["journey_id"], row["version"], row["definition"])
        if journey is not None:
            out.setdefault(row["journey_id"], set()).update(journey.listened_events())
    return out
