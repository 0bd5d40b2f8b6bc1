"""Conditions on event properties and profiles, evaluated the same way in the workflow and in the API.

A condition names a ``field`` (a dotted path), an ``op`` and usually a ``value``. Groups combine conditions with
``all`` or ``any`` and may nest. Evaluation is pure and deterministic, so the workflow can run it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Operator = Literal[
    "eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "contains", "starts_with", "exists", "not_exists"
]
_NO_VALUE = {"exists", "not_exists"}
_MISSING = object()


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid")

    field: str = Field(min_length=1)
    op: Operator = "eq"
    value: Any = None

    @model_validator(mode="after")
    def _value_fits_operator(self) -> Condition:
        if self.op in ("in", "not_in") and not isinstance(self.value, list):
            raise ValueError(f"operator '{self.op}' needs a list value")
        if self.op not in _NO_VALUE and self.value is None and self.op not in ("eq", "ne"):
            raise ValueError(f"operator '{self.op}' needs a value")
        return self

    def evaluate(self, data: dict[str, Any]) -> bool:
        actual = lookup(data, self.field)
        if self.op == "exists":
            return actual is not _MISSING and actual is not None
        if self.op == "not_exists":
            return actual is _MISSING or actual is None
        if actual is _MISSING:
            return self.op in ("ne", "not_in")
        return _compare(self.op, actual, self.value)


class ConditionGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    all: list[Condition | ConditionGroup] | None = None
    any: list[Condition | ConditionGroup] | None = None

    @model_validator(mode="before")
    @classmethod
    def _list_means_all(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {"all": value}
        return value

    @model_validator(mode="after")
    def _exactly_one(self) -> ConditionGroup:
        if (self.all is None) == (self.any is None):
            raise ValueError("a condition group needs exactly one of 'all' or 'any'")
        return self

    def evaluate(self, data: dict[str, Any]) -> bool:
        if self.all is not None:
            return all(item.evaluate(data) for item in self.all)
        return any(item.evaluate(data) for item in self.any or [])

    def fields(self) -> list[str]:
        out: list[str] = []
        for item in self.all or self.any or []:
            out.extend(item.fields() if isinstance(item, ConditionGroup) else [item.field])
        return out


def lookup(data: Any, path: str) -> Any:
    """Follow a dotted path through dicts (and list indexes); ``_MISSING`` when any part is absent."""
    current = data
    for part in path.split("."):
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return _MISSING
    return current


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _compare(op: str, actual: Any, expected: Any) -> bool:
    if op == "eq":
        return actual == expected or (_number(actual) is not None and _number(actual) == _number(expected))
    if op == "ne":
        return not _compare("eq", actual, expected)
    if op in ("gt", "gte", "lt", "lte"):
        left, right = _number(actual), _number(expected)
        if left is None or right is None:
            if isinstance(actual, str) and isinstance(expected, str):
                left_s, right_s = actual, expected
                return {
                    "gt": left_s > right_s,
                    "gte": left_s >= right_s,
                    "lt": left_s < right_s,
                    "lte": left_s <= right_s,
                }[op]
            return False
        return {"gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[op]
    if op == "in":
        return any(_compare("eq", actual, item) for item in expected)
    if op == "not_in":
        return not any(_compare("eq", actual, item) for item in expected)
    if op == "contains":
        if isinstance(actual, str):
            return isinstance(expected, str) and expected in actual
        if isinstance(actual, list | tuple):
            return any(_compare("eq", item, expected) for item in actual)
        if isinstance(actual, dict):
            return expected in actual
        return False
    if op == "starts_with":
        return isinstance(actual, str) and isinstance(expected, str) and actual.startswith(expected)
    raise ValueError(f"unknown operator {op!r}")
