"""CustomerValueWorkflow: one run per firing of the customer-value schedule (``orchestration.customer_values``).

The whole run computes as of one instant, the time it started: an activity fits the model on every customer's
order totals (``measurement.clv.fit``: BG/NBD + Gamma-Gamma, or the historical-rate fallback when data is thin),
then batches page through the customers by id, apply that one model and write their values; at the end, values
this refresh did not write (a customer whose orders are gone) are removed. Long runs continue as new between
batches, carrying the fitted model, the cursor and the counts, so a refresh never fits twice.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.customer_value_models import BatchRequest, FitRequest, ValueSource
    from activities.customer_values import CustomerValueActivities
    from contracts.customer_values import CUSTOMER_VALUES_WORKFLOW_NAME, CustomerValuesInput, CustomerValuesResult

FIT_TIMEOUT = timedelta(minutes=30)
FIT_HEARTBEAT = timedelta(minutes=2)
BATCH_TIMEOUT = timedelta(minutes=5)
PRUNE_TIMEOUT = timedelta(minutes=10)
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=1), maximum_attempts=10)
# Batches per run before continuing as new, even if Temporal does not suggest it yet.
BATCHES_PER_RUN = 200


@workflow.defn(name=CUSTOMER_VALUES_WORKFLOW_NAME)
class CustomerValueWorkflow:
    @workflow.run
    async def run(self, input: CustomerValuesInput) -> CustomerValuesResult:
        info = workflow.info()
        state = input.model_copy(
            update={
                "refresh_id": input.refresh_id or f"{info.workflow_id}/{info.run_id}",
                "as_of": input.as_of or workflow.now(),
            }
        )
        assert state.as_of is not None and state.refresh_id is not None
        source = ValueSource(order_event=state.order_event, value_property=state.value_property, as_of=state.as_of)
        if state.model is None:
            fitted = await workflow.execute_activity_method(
                CustomerValueActivities.fit_customer_values,
                FitRequest(
                    source=source, horizon_days=state.horizon_days, min_repeat_customers=state.min_repeat_customers
                ),
                start_to_close_timeout=FIT_TIMEOUT,
                heartbeat_timeout=FIT_HEARTBEAT,
                retry_policy=RETRY,
                summary="fit the customer-value model",
            )
            state.model = fitted.model
        for _ in range(BATCHES_PER_RUN):
            batch = await workflow.execute_activity_method(
                CustomerValueActivities.apply_customer_values,
                BatchRequest(
                    source=source, model=state.model, refresh_id=state.refresh_id, after=state.after,
                    limit=state.batch_size,
                ),
                start_to_close_timeout=BATCH_TIMEOUT,
                retry_policy=RETRY,
                summary="compute a batch of customer values",
            )  # fmt: skip
            state.customers_scanned += batch.scanned
            state.values_written += batch.written
            if batch.last is None or batch.scanned < state.batch_size:
                break
            state.after = batch.last
            if workflow.info().is_continue_as_new_suggested():
                workflow.continue_as_new(state)
        else:
            workflow.continue_as_new(state)
        removed = await workflow.execute_activity_method(
            CustomerValueActivities.prune_customer_values,
            state.refresh_id,
            start_to_close_timeout=PRUNE_TIMEOUT,
            retry_policy=RETRY,
            summary="remove stale customer values",
        )
        return CustomerValuesResult(
            refresh_id=state.refresh_id,
            as_of=state.as_of,
            model=str(state.model.get("model", "")),
            customers_with_orders=int(str(state.model.get("customers", 0))),
            values_written=state.values_written,
            removed=removed,
        )
