"""The customer-values schedule on the dev server: made from the settings, fired on demand, removed when off."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from temporalio.client import ScheduleIntervalSpec
from temporalio.service import RPCError

from contracts.customer_values import CUSTOMER_VALUES_SCHEDULE_ID, CUSTOMER_VALUES_WORKFLOW_NAME
from orchestration.customer_values import refresh_now, sync_schedule
from store import customer_values as value_store
from tests.support.stack import Stack, eventually, stack_fixture  # noqa: F401  (registers the fixture)


@pytest.mark.devserver
async def test_the_schedule_follows_the_settings_and_a_refresh_now_computes_values(stack: Stack) -> None:
    order_event = f"bought-{uuid.uuid4().hex[:8]}"
    settings = stack.settings.model_copy(update={"order_event": order_event, "order_value_property": "cart.total"})
    customer_id = await stack.customer()
    for total in (30, 12.5):
        answer = await stack.http.post(
            "/v1/events",
            json={"customer_id": customer_id, "name": order_event, "properties": {"cart": {"total": total}}},
        )
        assert answer.status_code == 202, answer.text

    assert await refresh_now(stack.client, settings) in ("created", "updated")
    handle = stack.client.get_schedule_handle(CUSTOMER_VALUES_SCHEDULE_ID)
    described = await handle.describe()
    assert described.schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(days=1))]
    assert described.schedule.action.workflow == CUSTOMER_VALUES_WORKFLOW_NAME  # type: ignore[attr-defined]

    async def computed() -> dict | None:
        return await value_store.values_of(stack.pool, customer_id)

    values = await eventually(computed, timeout=30)
    assert (values["orders_count"], values["revenue"], values["average_order_value"]) == (2, 42.5, 21.25)
    shown = (await stack.http.get(f"/v1/customers/{customer_id}")).json()["values"]
    assert shown["clv_model"] == "historical_rate" and shown["orders_count"] == 2

    off = settings.model_copy(update={"customer_values_every": "off"})
    assert await sync_schedule(stack.client, off) == "deleted"
    with pytest.raises(RPCError):
        await handle.describe()
    with pytest.raises(ValueError, match="off"):
        await refresh_now(stack.client, off)
