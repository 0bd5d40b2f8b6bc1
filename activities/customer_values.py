"""The activities of a customer-value refresh: fit the model on the whole population, then apply it a batch at a
time, then remove what the refresh did not write.

The fit reads every customer's order totals (aggregated in SQL, streamed in chunks with a heartbeat per chunk),
so the population it holds is four numbers per customer, never their orders. A batch reads the totals of one page
of customers (the ``events`` index by customer), predicts with the fitted model and upserts their values.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from temporalio import activity

from activities.customer_value_models import BatchRequest, BatchResult, FitRequest, FitResult, ValueSource
from measurement import clv
from store import customer_values as value_store

log = structlog.get_logger(__name__)


def _path(source: ValueSource) -> list[str]:
    return source.value_property.split(".")


class CustomerValueActivities:
    """Activities with their pool injected; the worker registers the bound methods."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    def all(self) -> list[Any]:
        return [self.fit_customer_values, self.apply_customer_values, self.prune_customer_values]

    @activity.defn(name="fit_customer_values")
    async def fit_customer_values(self, request: FitRequest) -> FitResult:
        source = request.source
        chunks: list[tuple[Any, ...]] = []
        async for chunk in value_store.all_order_totals(self._pool, source.order_event, _path(source), source.as_of):
            chunks.extend(row.as_tuple() for row in chunk)
            activity.heartbeat(len(chunks))
        summary = clv.summary_from_totals(chunks, source.as_of)
        # Fitting is CPU work: off the event loop, so heartbeats and other activities carry on.
        model = await asyncio.to_thread(
            clv.fit, summary, source.as_of, timedelta(days=request.horizon_days), request.min_repeat_customers
        )
        log.info(
            "customer_values.fitted",
            model=model.model,
            customers=len(chunks),
            repeat_customers=model.repeat_customers,
            parameters=model.parameters,
        )
        return FitResult(model=model.model_dump(mode="json"), customers=len(chunks))

    @activity.defn(name="apply_customer_values")
    async def apply_customer_values(self, request: BatchRequest) -> BatchResult:
        """Compute and write the values of the next page of customers. Safe to retry: an upsert of the same values."""
        source = request.source
        model = clv.FittedModel.model_validate(request.model)
        async with self._pool.acquire() as conn:
            ids = await value_store.customer_page(conn, after=request.after, limit=request.limit)
            if not ids:
                return BatchResult(scanned=0, written=0, last=None)
            totals = await value_store.order_totals(conn, ids, source.order_event, _path(source), source.as_of)
            written = 0
            if totals:
                summary = clv.summary_from_totals([t.as_tuple() for t in totals], source.as_of)
                computed = [
                    value_store.ComputedValue(
                        customer_id=v.customer,
                        orders_count=v.orders,
                        revenue=v.revenue,
                        first_order_at=v.first_order,
                        last_order_at=v.last_order,
                        average_order_value=v.average_order_value,
                        clv=v.predicted_value,
                        clv_model=model.model,
                        expected_orders=v.expected_orders,
                        probability_alive=v.probability_alive,
                    )
                    for v in clv.predict(model, summary)
                ]
                written = await value_store.write_values(
                    conn, computed, refresh_id=request.refresh_id, computed_at=source.as_of
                )
        return BatchResult(scanned=len(ids), written=written, last=ids[-1])

    @activity.defn(name="prune_customer_values")
    async def prune_customer_values(self, refresh_id: str) -> int:
        """Remove the values the finished refresh did not write (customers with no orders any more)."""
        removed = await value_store.prune(self._pool, refresh_id)
        log.info("customer_values.pruned", refresh_id=refresh_id, removed=removed)
        return removed
