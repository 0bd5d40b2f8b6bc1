"""Validating and publishing journeys, shared by ``POST /v1/journeys``, the console's editor,
``parcours journeys publish`` and ``parcours dev``: one validation (``validated``) and one publication
(``publish_journey``), so every way in gives the same messages and the same side effects."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
from temporalio.client import Client

import journeys
from config.settings import Settings
from journeys import Journey, JourneyIssue, JourneyValidationError
from journeys.values import DEFAULT_LIMITS, InputLimits

if TYPE_CHECKING:
    from orchestration.router import EventRouter

EXAMPLES_DIR = Path(journeys.__file__).parent / "examples"


@dataclass
class Checked:
    path: Path
    journey: Journey | None = None
    issues: list[JourneyIssue] = field(default_factory=list)


def validated(text: str, fmt: str | None, limits: InputLimits, max_sms_segments: int) -> Journey:
    """The journey in ``text`` (``yaml`` or ``json``), or JourneyValidationError listing every problem by step
    and field, the language's and publishing's (segment entry and its cron, SMS length) together. CPU work: the
    API runs it in its validation processes (``api.validation``)."""
    from journeys.validation import parse_journey

    return parse_journey(text, fmt=fmt, limits=limits, sms_max_segments=max_sms_segments)


def check_file(path: Path, settings: Settings | None = None, limits: InputLimits = DEFAULT_LIMITS) -> Checked:
    from config.settings import get_settings

    try:
        text = path.read_text(encoding="utf-8")
        max_segments = (settings or get_settings()).sms_max_segments
        journey = validated(text, "json" if path.suffix == ".json" else "yaml", limits, max_segments)
        return Checked(path, journey=journey)
    except JourneyValidationError as exc:
        return Checked(path, issues=exc.issues)
    except (OSError, UnicodeDecodeError) as exc:
        return Checked(path, issues=[JourneyIssue(location="(file)", message=f"cannot read: {exc}")])


async def publish_journey(
    pool: asyncpg.Pool,
    journey: Journey,
    *,
    client: Client | None = None,
    settings: Settings | None = None,
    router: EventRouter | None = None,
    expected_version: int | None = None,
) -> tuple[int, bool]:
    """Publish a validated journey; (version, created). An unchanged definition keeps its version. With
    ``expected_version``, a journey published since at another version raises ``store.journeys.VersionConflict``.

    With the API's event ``router``, it routes the new version's trigger and listened events at once. With a
    Temporal ``client`` (and ``settings``), the journey's segment schedule is created or updated too; without, a
    segment journey gets its schedule when it is next published, paused or resumed through the API.
    """
    from store.journeys import get_journey, publish

    if issues := await reference_issues(pool, journey):
        raise JourneyValidationError(issues)
    version, created = await publish(pool, journey, expected=expected_version)
    if router is not None:
        await router.refresh()
    if client is not None and settings is not None:
        from orchestration.schedules import sync_schedule

        row = await get_journey(pool, journey.id)
        if row is not None and row.definition is not None:  # the latest version: a concurrent publisher's too
            latest = Journey.model_validate(row.definition)
            await sync_schedule(client, settings, latest, row.latest_version, row.status)
    return version, created


async def reference_issues(pool: asyncpg.Pool, journey: Journey) -> list[JourneyIssue]:
    """What the definition names that does not exist in the store: a named segment (``entry.segment.ref``).

    A journey naming an unknown segment would publish and then stop every scheduled run with "unknown segment".
    """
    from store.segments import get_segment

    segment = journey.entry.segment
    if segment is None or segment.ref is None or await get_segment(pool, segment.ref) is not None:
        return []
    return [
        JourneyIssue(
            location="entry.segment.ref", field="ref", message=f"unknown segment '{segment.ref}': create it first"
        )
    ]


def example_files() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.yaml"))
