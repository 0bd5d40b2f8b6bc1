"""Calendar arithmetic in the customer's time zone, daylight-saving changes included."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta

import pytest

from journeys import calendar as timing

PARIS = timing.zone("Europe/Paris")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_next_morning_in_the_customers_zone() -> None:
    # 22:00 UTC on a Monday is 23:00 in Paris: the next 09:00 there is Tuesday 08:00 UTC.
    assert timing.next_time_of_day(utc(2026, 1, 5, 22), PARIS, time(9)) == utc(2026, 1, 6, 8)
    # Before 09:00 local the same day counts.
    assert timing.next_time_of_day(utc(2026, 1, 6, 6), PARIS, time(9)) == utc(2026, 1, 6, 8)


def test_weekdays_only_skip_the_weekend() -> None:
    friday_evening = utc(2026, 1, 9, 18)
    assert timing.next_time_of_day(friday_evening, PARIS, time(9), ("mon", "tue", "wed", "thu", "fri")) == utc(
        2026, 1, 12, 8
    )


def test_daylight_saving_changes() -> None:
    # Spring forward in Paris: 29 March 2026, 02:00 -> 03:00. 09:00 local is 07:00 UTC after the change.
    assert timing.next_time_of_day(utc(2026, 3, 28, 12), PARIS, time(9)) == utc(2026, 3, 29, 7)
    # 02:30 does not exist that night: shifted by the gap, as RFC 5545 says (03:30 local, 01:30 UTC).
    assert timing.next_time_of_day(utc(2026, 3, 28, 12), PARIS, time(2, 30)) == utc(2026, 3, 29, 1, 30)
    # Fall back: 25 October 2026, 03:00 -> 02:00. 02:30 happens twice; the first one counts (00:30 UTC).
    assert timing.next_time_of_day(utc(2026, 10, 24, 12), PARIS, time(2, 30)) == utc(2026, 10, 25, 0, 30)
    # A whole day across the change is 23 or 25 hours of UTC time, but the same wall-clock time.
    before = timing.next_time_of_day(utc(2026, 10, 24, 0), PARIS, time(9))
    after = timing.next_time_of_day(before, PARIS, time(9))
    assert after - before == timedelta(hours=25)


def test_day_offsets_move_the_wall_clock_not_the_stopwatch() -> None:
    # Paris falls back on Sunday 25 October 2026. Two days before Monday 26 October 10:00 (winter time, 09:00 UTC)
    # is Saturday 24 October 10:00, still summer time: 08:00 UTC, not 48 hours earlier (09:00 UTC, 11:00 local).
    deadline = timing.at_local(date(2026, 10, 26), time(10), PARIS)
    assert deadline == utc(2026, 10, 26, 9)
    assert timing.shift_local(deadline, PARIS, -timedelta(days=2)) == utc(2026, 10, 24, 8)
    assert timing.shift_local(deadline, PARIS, timedelta(hours=2)) == utc(2026, 10, 26, 11)


def test_birthday_every_year_and_leap_days() -> None:
    now = utc(2026, 6, 1)
    assert timing.next_anniversary(now, PARIS, date(1990, 7, 14), time(9), timedelta(0)) == utc(2026, 7, 14, 7)
    # Already past this year: next year.
    assert timing.next_anniversary(now, PARIS, date(1990, 2, 3), time(9), timedelta(0)) == utc(2027, 2, 3, 8)
    # 29 February in a year without one: the 28th.
    assert timing.next_anniversary(now, PARIS, date(2000, 2, 29), time(9), timedelta(0)) == utc(2027, 2, 28, 8)
    # A day before, as an offset.
    assert timing.next_anniversary(now, PARIS, date(1990, 7, 14), time(9), -timedelta(days=1)) == utc(2026, 7, 13, 7)


def test_profile_dates() -> None:
    assert timing.parse_moment("2026-12-01", PARIS, time(9)) == utc(2026, 12, 1, 8)
    assert timing.parse_moment("2026-12-01T10:00:00Z", PARIS, time(9)) == utc(2026, 12, 1, 10)
    assert timing.parse_moment("2026-12-01T10:00:00", PARIS, time(9)) == utc(2026, 12, 1, 9)
    assert timing.parse_moment("not a date", PARIS, time(9)) is None
    assert timing.parse_moment(None, PARIS, time(9)) is None


def test_quiet_hours_across_midnight() -> None:
    start, end = timing.parse_window("21:00-08:00")
    # 22:30 Paris (21:30 UTC in winter): quiet until 08:00 Paris next day.
    assert timing.quiet_hours_end(utc(2026, 1, 5, 21, 30), PARIS, start, end) == utc(2026, 1, 6, 7)
    # 06:00 Paris: quiet until 08:00 the same day.
    assert timing.quiet_hours_end(utc(2026, 1, 6, 5), PARIS, start, end) == utc(2026, 1, 6, 7)
    # Noon: not quiet.
    assert timing.quiet_hours_end(utc(2026, 1, 6, 11), PARIS, start, end) is None


def test_unknown_zone_falls_back() -> None:
    assert timing.zone("Mars/Olympus", "Europe/Paris") == PARIS
    assert timing.zone(None) == timing.zone("UTC")


@pytest.mark.parametrize("bad", ["9", "25:00", "nine", "09:00-", "x-y"])
def test_malformed_clock_times(bad: str) -> None:
    with pytest.raises(ValueError):
        timing.parse_window(bad) if "-" in bad else timing.parse_clock(bad)
