"""What the Temporal UI's current details say about a wait: durations as people say them."""

from __future__ import annotations

from datetime import timedelta

from workflows.journey import spoken


def test_durations_read_as_people_say_them() -> None:
    assert spoken(timedelta(days=2)) == "2 days"
    assert spoken(timedelta(days=1, hours=6, minutes=5)) == "1 day 6 hours"
    assert spoken(timedelta(seconds=90)) == "1 minute 30 seconds"
    assert spoken(timedelta(weeks=2)) == "2 weeks"
    assert spoken(timedelta(0)) == "0 seconds"
