"""Five-field cron expressions (``minute hour day-of-month month day-of-week``, or a macro such as ``@daily``),
as a segment journey's ``entry.segment.cron`` takes them: checked at publish, with every other problem of the
journey, before Temporal's schedule ever sees them."""

from __future__ import annotations

import re

_CRON_FIELDS = (
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day of month", 1, 31),
    ("month", 1, 12),
    ("day of week", 0, 7),
)
_CRON_NAMES = {
    3: {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())},
    4: {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())},
}
_CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_CRON_ITEM = re.compile(r"^(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/([0-9]+))?$")


def cron_problem(expression: str) -> str | None:
    """What is wrong with a five-field cron expression (``minute hour day month weekday``), or None."""
    text = expression.strip().lower()
    if text in _CRON_MACROS:
        return None
    fields = text.split()
    if len(fields) != 5:
        return (
            f"malformed cron '{expression}': use five fields 'minute hour day-of-month month day-of-week' "
            f"(e.g. '0 9 * * 1') or one of {', '.join(_CRON_MACROS)}"
        )
    for index, (value, (name, low, high)) in enumerate(zip(fields, _CRON_FIELDS, strict=True)):
        names = _CRON_NAMES.get(index, {})
        for item in value.split(","):
            match = _CRON_ITEM.match(item)
            if match is None:
                return f"malformed cron '{expression}': bad {name} '{item}'"
            span, step = match.groups()
            if step is not None and (len(step) > 4 or int(step) == 0):
                return f"malformed cron '{expression}': a step of {step} in the {name}"
            if span == "*":
                continue
            bounds = []
            for part in span.split("-"):
                number = names.get(part, int(part) if part.isdigit() and len(part) <= 4 else None)
                if number is None or not low <= number <= high:
                    return f"malformed cron '{expression}': {name} '{part}' is not in {low}-{high}"
                bounds.append(number)
            if len(bounds) == 2 and bounds[0] > bounds[1]:
                return f"malformed cron '{expression}': {name} range '{span}' runs backwards"
    return None
