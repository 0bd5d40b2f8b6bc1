"""Validating and publishing journey files, shared by ``parcours journeys publish`` and ``parcours dev``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

import journeys
from journeys import Journey, JourneyIssue, JourneyValidationError, load_journey_file

EXAMPLES_DIR = Path(journeys.__file__).parent / "examples"


@dataclass
class Checked:
    path: Path
    journey: Journey | None = None
    issues: list[JourneyIssue] = field(default_factory=list)


def check_file(path: Path) -> Checked:
    try:
        return Checked(path, journey=load_journey_file(path))
    except JourneyValidationError as exc:
        return Checked(path, issues=exc.issues)
    except (OSError, UnicodeDecodeError) as exc:
        return Checked(path, issues=[JourneyIssue(location="(file)", message=f"cannot read: {exc}")])


async def publish_journey(pool: asyncpg.Pool, journey: Journey) -> tuple[int, bool]:
    """Publish a validated journey; (version, created). An unchanged definition keeps its version."""
    from store.journeys import publish

    return await publish(pool, journey)


def example_files() -> list[Path]:
    return sorted(EXAMPLES_DIR.glob("*.yaml"))
