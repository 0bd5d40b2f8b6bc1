"""Visibility queries over journey runs, built in one place with every value quoted.

Temporal's list filter is SQL-like; a value goes between double quotes with backslash escapes, so a customer id
that contains a quote or a backslash stays one value and can neither break the query nor widen it.
"""

from __future__ import annotations

from contracts import search_attributes as sa


def literal(value: str) -> str:
    """``value`` as a double-quoted string literal of the list filter."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def runs_query(*, journey_id: str | None = None, customer_id: str | None = None, running: bool | None = None) -> str:
    """The filter for journey runs of ``journey_id`` and/or ``customer_id``; ``running`` True/False: open/closed only.

    Raises:
        ValueError: neither a journey nor a customer was given (the query would list every run).
    """
    if journey_id is None and customer_id is None:
        raise ValueError("a runs query names a journey, a customer or both")
    clauses = []
    if journey_id is not None:
        clauses.append(f"{sa.JOURNEY_ID.name} = {literal(journey_id)}")
    if customer_id is not None:
        clauses.append(f"{sa.CUSTOMER_ID.name} = {literal(customer_id)}")
    if running is not None:
        clauses.append(f'ExecutionStatus {"=" if running else "!="} "Running"')
    return " AND ".join(clauses)
