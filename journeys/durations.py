"""Durations as journey authors write them: ``90s``, ``15m``, ``1h30m``, ``2d``, ``1w``, or ISO 8601 ``PT1H``."""

from __future__ import annotations

import re
from datetime import time, timedelta

_SHORT = re.compile(r"^\s*(?:(\d+)\s*w)?\s*(?:(\d+)\s*d)?\s*(?:(\d+)\s*h)?\s*(?:(\d+)\s*m)?\s*(?:(\d+)\s*s)?\s*$")
_ISO = re.compile(r"^P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")


def parse_offset(value: object) -> timedelta:
    """A signed duration such as ``-1d`` or ``+2h`` (or 0)."""
    if isinstance(value, str) and value.strip() in ("0", "0s", ""):
        return timedelta(0)
    if isinstance(value, str) and value.strip().startswith("-"):
        return -parse_duration(value.strip()[1:])
    if isinstance(value, str) and value.strip().startswith("+"):
        return parse_duration(value.strip()[1:])
    if isinstance(value, timedelta):
        return value
    return parse_duration(value)


def format_offset(value: timedelta) -> str:
    return "-" + format_duration(-value) if value < timedelta(0) else format_duration(value)


def parse_duration(value: object) -> timedelta:
    """Parse a duration; raise ValueError with the accepted forms when it is malformed or not positive."""
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, bool):
        raise ValueError(f"malformed duration {value!r}")
    elif isinstance(value, int | float):
        result = timedelta(seconds=value)
    elif isinstance(value, str):
        text = value.strip()
        match = _ISO.match(text.upper()) if text[:1] in ("P", "p") else _SHORT.match(text.lower())
        if not text or match is None or not any(match.groups()):
            raise ValueError(
                f"malformed duration {value!r}: use a number with units w/d/h/m/s such as '1h30m' or '2d', "
                "or ISO 8601 such as 'PT1H'"
            )
        weeks, days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
        result = timedelta(weeks=weeks, days=days, hours=hours, minutes=minutes, seconds=seconds)
    else:
        raise ValueError(f"malformed duration {value!r}: expected text such as '1h' or '2d'")
    if result <= timedelta(0):
        raise ValueError(f"duration {value!r} must be longer than zero")
    return result


def format_duration(value: timedelta) -> str:
    """The shortest ``1d2h``-style text for a duration (the inverse of parse_duration)."""
    total = int(value.total_seconds())
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, total = divmod(total, size)
        if amount:
            parts.append(f"{amount}{unit}")
    return "".join(parts) or "0s"


def parse_clock(value: str) -> time:
    """``HH:MM`` (24 h) as a time; ValueError naming the accepted form."""
    try:
        hours, minutes = value.strip().split(":")
        return time(int(hours), int(minutes))
    except (ValueError, AttributeError):
        raise ValueError(f"malformed time of day {value!r}: use HH:MM, e.g. '09:00'") from None


def parse_window(value: str) -> tuple[time, time]:
    """``HH:MM-HH:MM`` as (start, end)."""
    try:
        start, end = value.split("-")
    except (ValueError, AttributeError):
        raise ValueError(f"malformed time window {value!r}: use HH:MM-HH:MM, e.g. '21:00-08:00'") from None
    return parse_clock(start), parse_clock(end)
