"""The typed search attributes Parcours sets on every journey run, in one registry.

The dev server registers them at start (``temporal server start-dev --search-attribute``, see ``cli_flags``), tests
register them through the operator service (``orchestration.search_attributes.register``), production registers them
once with ``temporal operator search-attribute create``.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeIndexedValueType as Indexed
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

JOURNEY_ID = SearchAttributeKey.for_keyword("ParcoursJourneyId")
CUSTOMER_ID = SearchAttributeKey.for_keyword("ParcoursCustomerId")
STEP = SearchAttributeKey.for_keyword("ParcoursStep")
JOURNEY_VERSION = SearchAttributeKey.for_int("ParcoursJourneyVersion")
VARIANT = SearchAttributeKey.for_keyword("ParcoursVariant")
HEALTH = SearchAttributeKey.for_keyword("ParcoursHealth")
"""Unset while all is well, ``step_failed`` (a step failed: see ``ParcoursFailedStep``) or
``stuck`` (reserved: a run whose workflow task keeps failing cannot say so itself; ``parcours ops failures`` finds
those through describe)."""
FAILED_STEP = SearchAttributeKey.for_keyword("ParcoursFailedStep")
"""The id of the last step that failed (a send the provider refused or that ran out of retries, a template that
cannot render, a webhook that failed, a profile update that failed)."""

HEALTH_STEP_FAILED = "step_failed"
HEALTH_STUCK = "stuck"

ALL = (JOURNEY_ID, CUSTOMER_ID, STEP, JOURNEY_VERSION, VARIANT, HEALTH, FAILED_STEP)

_CLI_TYPES = {
    Indexed.KEYWORD: "Keyword",
    Indexed.INT: "Int",
    Indexed.TEXT: "Text",
    Indexed.BOOL: "Bool",
    Indexed.DATETIME: "Datetime",
    Indexed.DOUBLE: "Double",
    Indexed.KEYWORD_LIST: "KeywordList",
}


def at_start(journey_id: str, customer_id: str, version: int, step: str) -> TypedSearchAttributes:
    """The attributes a journey run starts with, so it can be found before its first task runs."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(JOURNEY_ID, journey_id),
            SearchAttributePair(CUSTOMER_ID, customer_id),
            SearchAttributePair(JOURNEY_VERSION, version),
            SearchAttributePair(STEP, step),
        ]
    )


def cli_flags() -> list[str]:
    """``--search-attribute Name=Type`` flags for ``temporal server start-dev``."""
    flags = []
    for key in ALL:
        flags += ["--search-attribute", f"{key.name}={_CLI_TYPES[key.indexed_value_type]}"]
    return flags
