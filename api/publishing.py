"""Validating and publishing journey files, shared by ``parcours journeys publish`` and ``parcours dev``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
from temporalio.client import Client

import journeys
from config.settings import Settings
from journeys import Journey, JourneyIssue, JourneyValidationError, load_journey_file
from journeys.values import DEFAULT_LIMITS, InputLimits

EXAMPLES_DIR = Path(journeys.__file__).parent / "examples"


@dataclass
class Checked:
    path: Path
    journey: Journey | None = None
    issues: list[JourneyIssue] = field(default_factory=list)


def check_file(path: Path, settings: Settings | None = None, limits: InputLimits = DEFAULT_LIMITS) -> Checked:
    from config.settings import get_settings

    try:
        max_segments = (settings or get_settings()).sms_max_segments
        return Checked(path, journey=load_journey_file(path, limits, sms_max_segments=max_segments))
    except JourneyValidationError as exc:
        return Checked(path, issues=exc.issues)
    except (OSError, UnicodeDecodeError) as exc:
        return Checked(path, issues=[JourneyIssue(location="(file)", message=f"cannot read: {exc}")])


async def publish_journey(
    pool: asyncpg.Pool, journey: Journey, *, client: Client | None = None, settings: Settings | None = None
) -> tuple[int, bool]:
    """Publish a validated journey; (version, created). An unchanged definition keeps its version.

    With a Temporal ``client`` (and ``settings``), the journey's segment schedule is created or updated too;
    without, a segment journey gets its schedule when it is next published, paused or resumed through the API.
    """
    from store.journeys import get_journey, publish

    version, created = await publish(pool, journey)
    if client is not None and settings is not None:
        from orchestration.schedules import sync_schedule

        row = await get_journey(pool, journey.id)
        if row is not None:
            await sync_schedule(client, settings, journey, row.latest_version, row.status)
    return version, created


def example_files() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.yaml"))
