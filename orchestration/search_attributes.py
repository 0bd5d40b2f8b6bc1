"""Registering Parcours' search attributes (``contracts.search_attributes.ALL``) on a server."""

from __future__ import annotations

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.service import RPCError

from contracts.search_attributes import ALL
from orchestration.errors import Meaning, meaning


async def register(client: Client, namespace: str = "default") -> None:
    """Register the attributes through the operator service (those that exist are left alone)."""
    try:
        existing = await client.operator_service.list_search_attributes(
            ListSearchAttributesRequest(namespace=namespace)
        )
        known = set(existing.custom_attributes)
    except RPCError as err:  # the time-skipping test server cannot list them
        if meaning(err) is not Meaning.UNSUPPORTED:
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
            if meaning(err) is not Meaning.ALREADY_EXISTS:
                raise
