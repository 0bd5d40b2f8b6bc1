"""GET /v1/customers/{id} shows the computed values; a PUT of attributes of the same names leaves them alone."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from store import customer_values as value_store
from tests.support.stack import API_KEY, make_settings


async def test_the_api_shows_values_a_put_cannot_change(
    time_skipping_env: WorkflowEnvironment, pool: asyncpg.Pool
) -> None:
    app = create_app(make_settings(), pool=pool, client=time_skipping_env.client)
    customer_id = f"api-cv-{uuid.uuid4().hex[:8]}"
    at = datetime(2026, 2, 1, tzinfo=UTC)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://parcours.test", headers={"X-API-Key": API_KEY}
    ) as api:
        answer = await api.put(f"/v1/customers/{customer_id}", json={"attributes": {"first_name": "Ada"}})
        assert answer.status_code == 200 and answer.json()["values"] is None
        await value_store.write_values(
            pool,
            [value_store.ComputedValue(customer_id, 3, 120.0, at, at, 40.0, 180.25, "historical_rate", 4.5, None)],
            refresh_id="api-test",
            computed_at=at,
        )

        answer = await api.put(f"/v1/customers/{customer_id}", json={"attributes": {"clv": 1, "orders_count": 0}})
        assert answer.status_code == 200
        shown = (await api.get(f"/v1/customers/{customer_id}")).json()

    assert shown["attributes"] == {"first_name": "Ada", "clv": 1, "orders_count": 0}
    values = shown["values"]
    assert (values["orders_count"], values["revenue"], values["clv"], values["clv_model"]) == (
        3, 120.0, 180.25, "historical_rate",
    )  # fmt: skip
    assert datetime.fromisoformat(values["computed_at"].replace("Z", "+00:00")) == at
