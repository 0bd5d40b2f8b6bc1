"""The customer-value refresh's contract: the computed profile fields, the workflow's name, its schedule's id,
its input (also what a run continues as new with) and result. The models travel in histories: add fields with
defaults only.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

# The computed fields every profile may carry (``profile.clv``, ``customer.orders_count``), stored apart from the
# customer's attributes (``store.customer_values``). An attribute of the same name never shows through them.
VALUE_FIELDS = (
    "orders_count",
    "revenue",
    "first_order_at",
    "last_order_at",
    "average_order_value",
    "clv",
    "clv_model",
    "expected_orders",
    "probability_alive",
    "computed_at",
)

CUSTOMER_VALUES_WORKFLOW_NAME = "CustomerValueWorkflow"
CUSTOMER_VALUES_SCHEDULE_ID = "customer-values"


class CustomerValuesInput(BaseModel):
    """What a refresh computes from (set from the settings when the schedule is made) and, once started, where it
    is: the instant its orders end at, the fitted model, the keyset cursor and the counts."""

    order_event: str = "order_placed"
    value_property: str = "total"
    horizon_days: float = 365
    min_repeat_customers: int = 50
    batch_size: int = 500
    # Filled by the run itself; carried over continue-as-new.
    refresh_id: str | None = None
    as_of: datetime | None = None
    model: dict[str, object] | None = None
    """``measurement.clv.FittedModel`` as a dict (the contract does not import measurement)."""
    after: str | None = None
    customers_scanned: int = 0
    values_written: int = 0


class CustomerValuesResult(BaseModel):
    refresh_id: str
    as_of: datetime
    model: str
    customers_with_orders: int
    values_written: int
    removed: int
