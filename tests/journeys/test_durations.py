"""Durations as authors write them (90s, 1h30m, 2d, ISO 8601) and what is refused."""

from __future__ import annotations

from datetime import timedelta

import pytest

from journeys.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(minutes=90)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("PT1H", timedelta(hours=1)),
        ("P1DT2H", timedelta(hours=26)),
    ],
)
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected
    assert parse_duration(format_duration(expected)) == expected


@pytest.mark.parametrize("text", ["", "soon", "0s", "1x", "P", "-1h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
