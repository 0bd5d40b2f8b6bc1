"""Calendar arithmetic for journeys: times of day in a customer's zone, anniversaries, quiet hours.

Everything takes "now" as an argument and returns UTC instants. The workflow does not call this directly: a
local activity does (``resolve_moment``), so the result is recorded in the history and an update of the time-zone
database never changes what a running journey replays.

Daylight-saving changes follow RFC 5545: a local time that does not exist (the spring-forward gap) is shifted
by the gap (02:30 fires at 03:30); a local time that exists twice (fall back) fires the first time.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from journeys.durations import parse_clock, parse_window

__all__ = ["parse_clock", "parse_window"]

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def zone(name: str | None, default: str = "UTC") -> ZoneInfo:
    """The customer's zone, or the default when it is missing or unknown."""
    for candidate in (name, default, "UTC"):
        if candidate:
            try:
                return ZoneInfo(candidate)
            except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a file name
                continue
    return ZoneInfo("UTC")


def at_local(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The UTC instant of wall-clock ``at`` on ``day`` in ``tz``.

    ``fold=0`` gives the RFC 5545 rules: a time inside a spring-forward gap uses the offset before the gap
    (02:30 becomes 03:30), a repeated time in the fall-back hour is its first occurrence.
    """
    return datetime.combine(day, at, tzinfo=tz).astimezone(UTC)


def shift_local(instant: datetime, tz: ZoneInfo, offset: timedelta) -> datetime:
    """Move ``instant`` by ``offset`` on the wall clock of ``tz``: "-2d" at 10:00 stays at 10:00 across DST."""
    if not offset:
        return instant
    local = instant.astimezone(tz).replace(tzinfo=None) + offset
    return at_local(local.date(), local.time(), tz)


def next_time_of_day(now: datetime, tz: ZoneInfo, at: time, weekdays: tuple[str, ...] | None = None) -> datetime:
    """The next instant (strictly after ``now``) when it is ``at`` in ``tz`` on one of ``weekdays``."""
    allowed = {WEEKDAYS.index(d) for d in weekdays} if weekdays else set(range(7))
    today = now.astimezone(tz).date()
    for add in range(0, 9):
        day = today + timedelta(days=add)
        if day.weekday() in allowed:
            candidate = at_local(day, at, tz)
            if candidate > now:
                return candidate
    raise ValueError("no allowed weekday")  # unreachable with a non-empty weekday list


def next_anniversary(now: datetime, tz: ZoneInfo, anniversary: date, at: time, offset: timedelta) -> datetime:
    """The next yearly occurrence of ``anniversary`` at ``at`` plus ``offset`` that is still ahead of ``now``.

    29 February falls on 28 February in years without it.
    """
    year = now.astimezone(tz).year - 1
    while True:
        day = _same_day_in(anniversary, year)
        candidate = shift_local(at_local(day, at, tz), tz, offset)
        if candidate > now:
            return candidate
        year += 1


def _same_day_in(anniversary: date, year: int) -> date:
    try:
        return anniversary.replace(year=year)
    except ValueError:  # 29 February
        return date(year, 2, 28)


# Dates journeys compute with: far enough from year 1 and 9999 that a zone, an offset of up to a century
# (durations.MAX_DURATION) or a year's step never leaves what datetime can hold.
EARLIEST_YEAR = 1000
LATEST_YEAR = 9000


def parse_moment(value: object, tz: ZoneInfo, at: time) -> datetime | None:
    """A profile attribute as an instant: an ISO date (at ``at`` local time) or date-time (naive: local)."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return at_local(value, at, tz)
    elif isinstance(value, str):
        text = value.strip()
        try:
            if len(text) == 10:
                return at_local(date.fromisoformat(text), at, tz)
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        return None  # at the calendar's edges an offset or a zone would overflow: no usable date
    return moment.astimezone(UTC)


def parse_anniversary(value: object) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            return None
    return None


def quiet_hours_end(now: datetime, tz: ZoneInfo, start: time, end: time) -> datetime | None:
    """When the quiet window that contains ``now`` ends, or None when ``now`` is outside it.

    The window may cross midnight (``21:00``-``08:00``).
    """
    local = now.astimezone(tz)
    clock = local.time().replace(tzinfo=None)
    if start == end:
        return None
    crosses_midnight = start > end
    inside = (clock >= start or clock < end) if crosses_midnight else (start <= clock < end)
    if not inside:
        return None
    day = local.date()
    if crosses_midnight and clock >= start:
        day += timedelta(days=1)
    return at_local(day, end, tz)
