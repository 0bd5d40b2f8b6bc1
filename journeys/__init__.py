"""The journey language: models, validation and loading. Pure Python and pydantic, safe in workflow code."""

from journeys.models import CHANNELS, END, Journey
from journeys.validation import JourneyIssue, JourneyValidationError, load_journey_file, parse_journey

__all__ = [
    "CHANNELS",
    "END",
    "Journey",
    "JourneyIssue",
    "JourneyValidationError",
    "load_journey_file",
    "parse_journey",
]
