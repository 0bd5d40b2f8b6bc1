"""Journey validation under hostile definitions: every problem at once, bounded size, no recursion limit."""

from __future__ import annotations

from typing import Any

import pytest

from journeys import parse_journey
from journeys.validation import JourneyValidationError
from journeys.values import InputLimits


def _journey(steps: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": "hostile", "name": "Hostile", "trigger": {"event": "go"}, "steps": steps}


def _issues(source: Any, **kwargs: Any) -> list[str]:
    with pytest.raises(JourneyValidationError) as caught:
        parse_journey(source, **kwargs)
    return [str(issue) for issue in caught.value.issues]


def test_a_bad_field_no_longer_hides_an_unknown_step_reference() -> None:
    issues = _issues(
        _journey(
            [
                {"id": "pause", "type": "wait", "duration": "soon"},
                {"id": "mail", "type": "send", "channel": "fax", "template": {"text": "x"}, "next": "nowhere"},
                {"id": "check", "type": "wait_for", "event": "e", "timeout": "1h", "on_timeout": "cart-pussh"},
                {"id": "split", "type": "split", "variants": [{"name": "a", "weight": 1, "next": "gone"}]},
            ]
        )
    )
    text = "\n".join(issues)
    assert "steps[0] (id 'pause').duration: malformed duration 'soon'" in text
    assert "steps[1] (id 'mail')" in text and "unknown channel 'fax'" in text
    assert "steps[1] (id 'mail').next: unknown step 'nowhere'" in text
    assert "steps[2] (id 'check').on_timeout: unknown step 'cart-pussh'" in text
    assert "steps[3] (id 'split').variants.a: unknown step 'gone'" in text


def test_a_duration_that_would_overflow_is_an_issue_naming_the_step() -> None:
    issues = _issues(_journey([{"id": "forever", "type": "wait", "duration": "999999999999w"}]))
    assert issues == [
        "steps[0] (id 'forever').duration: duration '999999999999w' is longer than the maximum of 36525 days"
    ]


def test_a_date_at_the_edge_of_the_calendar_is_an_issue() -> None:
    issues = _issues(_journey([{"id": "edge", "type": "wait_until", "date": "9999-12-31T23:59:59-12:00"}]))
    assert issues and issues[0].startswith("steps[0] (id 'edge').date: the year must lie between")


def test_yaml_billion_laughs_is_one_issue() -> None:
    bomb = "id: a\nname: b\nx: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    for level in "bcdefghij":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
    issues = _issues(bomb, fmt="yaml")
    assert len(issues) == 1 and "aliases (*name) are not allowed" in issues[0]


def test_size_and_step_count_are_bounded() -> None:
    limits = InputLimits(max_journey_steps=10, max_journey_bytes=5000)
    steps = [{"id": f"s{i}", "type": "wait", "duration": "1h"} for i in range(11)]
    assert _issues(_journey(steps), limits=limits) == [
        "steps: 11 steps, more than the 10 allowed (PARCOURS_MAX_JOURNEY_STEPS)"
    ]
    big = _journey([{"id": "s", "type": "send", "channel": "sms", "template": {"text": "x" * 6000}}])
    [issue] = _issues(big, limits=limits)
    assert "more than the 5000 allowed (PARCOURS_MAX_JOURNEY_BYTES)" in issue


def test_deep_condition_nesting_is_an_issue_not_a_recursion_error() -> None:
    where: Any = {"field": "profile.x", "op": "exists"}
    for _ in range(5000):
        where = {"any": [where]}
    [issue] = _issues(_journey([{"id": "b", "type": "branch", "where": where, "then": "end", "else": "end"}]))
    assert issue.startswith("steps[0].where.any[0].any[0]") and issue.endswith("nested too deeply (at most 32 levels)")


def test_a_long_loop_of_instant_steps_is_found_without_recursion() -> None:
    count = 3000  # far past Python's recursion limit when walked recursively
    steps = [
        {"id": f"s{i}", "type": "update_profile", "set": {"n": i}, "next": f"s{(i + 1) % count}"} for i in range(count)
    ]
    issues = _issues(_journey(steps), limits=InputLimits(max_journey_steps=count, max_journey_bytes=10_000_000))
    assert len(issues) == 1 and issues[0].startswith("steps[0] (id 's0'): loop with no wait in it: s0 -> s1 -> ")


def test_liquid_loops_past_the_limit_are_refused_at_publish() -> None:
    template = {"text": "{% for i in (1..100000000) %}x{% endfor %}"}
    [issue] = _issues(_journey([{"id": "spin", "type": "send", "channel": "sms", "template": template}]))
    assert issue.startswith("steps[0] (id 'spin').template.text: template error:")
