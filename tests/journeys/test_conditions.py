"""Conditions of triggers, branches and exits, evaluated on a customer's data."""

from __future__ import annotations

from journeys.conditions import ConditionGroup


def test_conditions() -> None:
    data = {"profile": {"country": "FR", "orders": 3, "tags": ["vip"]}, "trigger": {"total": "42.5"}}
    group = ConditionGroup.model_validate(
        {
            "all": [
                {"field": "profile.country", "op": "in", "value": ["FR", "BE"]},
                {
                    "any": [
                        {"field": "trigger.total", "op": "gte", "value": 40},
                        {"field": "profile.tags", "op": "contains", "value": "vip"},
                    ]
                },
            ]
        }
    )
    assert group.evaluate(data)
    assert not ConditionGroup.model_validate([{"field": "profile.orders", "op": "lt", "value": 3}]).evaluate(data)
    assert ConditionGroup.model_validate([{"field": "profile.missing", "op": "not_exists"}]).evaluate(data)
    assert not ConditionGroup.model_validate([{"field": "profile.missing", "op": "gt", "value": 1}]).evaluate(data)
