"""The typed search attributes Parcours sets on every journey run, in one registry.

The dev server registers them at start (``temporal server start-dev --search-attribute``), tests register them
through the operator service, production registers them once with ``temporal operator search-attribute create``.
"""

from __future__ import annotations

from temporalio.client import Client
from temporalio.common import SearchAttributeIndexedValueType as Indexed
from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

JOURNEY_ID = SearchAttributeKey.for_keyword("ParcoursJourneyId")
CUSTOMER_ID = SearchAttributeKey.for_keyword("ParcoursCustomerId")
STEP = SearchAttributeKey.for_keyword("ParcoursStep")
JOURNEY_VERSION = SearchAttributeKey.for_int("ParcoursJourneyVersion")
VARIANT = SearchAttributeKey.for_keyword("ParcoursVariant")

ALL = (JOURNEY_ID, CUSTOMER_ID, STEP, JOURNEY_VERSION, VARIANT)

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


async def register(client: Client, namespace: str = "default") -> None:
    """Register the attributes through the operator service (those that exist are left alone)."""
    from temporalio.api.enums.v1 import IndexedValueType
    from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
    from temporalio.service import RPCError, RPCStatusCode

    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        known = set(existing.custom_attributes)
    except RPCError as err:  # the time-skipping test server cannot list them
        if err.status != RPCStatusCode.UNIMPLEMENTED:
            raise
        known = set()
    missing = {
        key.name: IndexedValueType.ValueType(int(key.indexed_value_type)) for key in ALL if key.name not in known
    }
    if missing:
        try:
            await client.operator_service.add_search_attributes(
                AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
            )
        except RPCError as err:
            if err.status != RPCStatusCode.ALREADY_EXISTS:
                raise
