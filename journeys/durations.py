"""Durations as journey authors write them: ``90s``, ``15m``, ``1h30m``, ``2d``, ``1w``, or ISO 8601 ``PT1H``."""

from __future__ import annotations

import math
import re
from datetime import time, timedelta

# Linear time whatever the input: a token is at most 12 digits, a unit and spaces, read one after the other (no
# nested or adjacent unbounded quantifiers that a crafted string could make backtrack).
_TOKEN = re.compile(r"(\d{1,12})[ \t]*([wdhms])[ \t]*")
_ISO = re.compile(r"P(?:(\d{1,12})W)?(?:(\d{1,12})D)?(?:T(?:(\d{1,12})H)?(?:(\d{1,12})M)?(?:(\d{1,12})S)?)?")
_UNITS = "wdhms"
_SECONDS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
MAX_DURATION = timedelta(days=36_525)
"""Durations and offsets are at most a century: far past any journey, and far inside what date arithmetic takes."""
_MAX_TEXT = 100


def parse_offset(value: object) -> timedelta:
    """A signed duration such as ``-1d`` or ``+2h`` (or 0)."""
    if isinstance(value, str) and value.strip() in ("0", "0s", ""):
        return timedelta(0)
    if isinstance(value, str) and value.strip().startswith("-"):
        return -parse_duration(value.strip()[1:])
    if isinstance(value, str) and value.strip().startswith("+"):
        return parse_duration(value.strip()[1:])
    if isinstance(value, timedelta):
        return value if not value else parse_duration(abs(value)) * (-1 if value < timedelta(0) else 1)
    if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
        return -parse_duration(-value)
    return parse_duration(value)


def format_offset(value: timedelta) -> str:
    return "-" + format_duration(-value) if value < timedelta(0) else format_duration(value)


def _malformed(value: object) -> ValueError:
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    return ValueError(
        f"malformed duration {shown}: use a number with units w/d/h/m/s such as '1h30m' or '2d', "
        "or ISO 8601 such as 'PT1H'"
    )


def _seconds_of(text: str) -> int | None:
    """Seconds of ``1h30m``-style text (units in order, each once), or None when malformed."""
    total, position, last = 0, 0, -1
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            return None
        unit = _UNITS.index(match.group(2))
        if unit <= last:
            return None
        last, position = unit, match.end()
        total += int(match.group(1)) * _SECONDS[match.group(2)]
    return total if last >= 0 else None


def parse_duration(value: object) -> timedelta:
    """Parse a duration; raise ValueError with the accepted forms when it is malformed, not positive or over
    ``MAX_DURATION``. Linear in the length of the text."""
    seconds: float
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, bool):
        raise _malformed(value)
    elif isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError(f"duration {value!r} is not a finite number of seconds")
        seconds = value
    elif isinstance(value, str):
        text = value.strip()
        if not text or len(text) > _MAX_TEXT:
            raise _malformed(value)
        if text[:1] in ("P", "p"):
            match = _ISO.fullmatch(text.upper())
            if match is None or not any(match.groups()):
                raise _malformed(value)
            found = sum(int(g) * _SECONDS[u] for g, u in zip(match.groups(), _UNITS, strict=True) if g)
        else:
            parsed = _seconds_of(text.lower())
            if parsed is None:
                raise _malformed(value)
            found = parsed
        seconds = found
    else:
        raise ValueError(f"malformed duration {type(value).__name__}: expected text such as '1h' or '2d'")
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be longer than zero")
    if seconds > MAX_DURATION.total_seconds():
        raise ValueError(f"duration {str(value)[:40]!r} is longer than the maximum of {MAX_DURATION.days} days")
    return value if isinstance(value, timedelta) else timedelta(seconds=seconds)


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
