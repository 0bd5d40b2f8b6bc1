"""Values from outside (JSON bodies, YAML and JSON journeys, event properties, CLI options): decoded and checked
once, before anything else sees them, against ``InputLimits``.

What is refused, each time with the dotted path of the offending value: ``NaN``/``Infinity`` and floats that
overflow to them, integers outside ``[-max_integer, max_integer]`` (PostgreSQL ``bigint``, Temporal's int64),
unpaired UTF-16 surrogates (no UTF-8 for them), NUL characters (PostgreSQL text cannot hold them), strings longer
than ``max_string_length``, nesting deeper than ``max_depth``, YAML aliases (a few hundred bytes of "billion
laughs" expand to gigabytes) and YAML values JSON has no word for (dates, binary, sets).

Every check is linear in the size of the document and none recurses in Python, so neither a crafted document nor
a deep one can block the event loop or hit the interpreter's recursion limit.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:  # journeys stay importable in workflow code without reading settings
    from config.settings import Settings

INT64_MAX = 2**63 - 1
_SURROGATE = re.compile(r"[\ud800-\udfff]")


@dataclass(frozen=True)
class InputLimits:
    """Bounds on every value from outside; the API builds them from ``Settings`` (``PARCOURS_MAX_*``)."""

    max_depth: int = 32
    """Nesting of objects and lists (a JSON body, a journey, an event's properties)."""
    max_string_length: int = 100_000
    """Characters in any one string (a template, a property, a key)."""
    max_integer: int = INT64_MAX
    """Integers must lie within ``[-max_integer, max_integer]``."""
    max_properties_bytes: int = 65_536
    """An event's properties, or a profile's attributes, as compact JSON."""
    max_journey_bytes: int = 262_144
    """A journey definition after parsing (YAML included), as compact JSON."""
    max_journey_steps: int = 200
    """Steps in one journey."""


DEFAULT_LIMITS = InputLimits()


def limits_from(settings: Settings) -> InputLimits:
    """The limits ``PARCOURS_MAX_*`` set."""
    return InputLimits(
        max_depth=settings.max_json_depth,
        max_string_length=settings.max_string_length,
        max_integer=settings.max_integer,
        max_properties_bytes=settings.max_properties_bytes,
        max_journey_bytes=settings.max_journey_bytes,
        max_journey_steps=settings.max_journey_steps,
    )


class InputError(ValueError):
    """A value that cannot be taken; ``field`` is its dotted path (``body`` for the document itself)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def __reduce__(self) -> tuple[type[InputError], tuple[str, str]]:
        # Raised in a validation process and re-raised in the API's: pickled with its field and message.
        return (type(self), (self.field, self.message))


def _path(parent: str, key: object) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    return f"{parent}.{key}" if parent else str(key)


def check_value(value: Any, limits: InputLimits = DEFAULT_LIMITS, *, root: str = "", depth: int = 0) -> None:
    """Raise ``InputError`` naming the first value (by path) that breaks a rule; iterative, linear time.

    ``root`` prefixes the paths (``properties``); ``depth`` is the nesting already above the value.
    """
    stack: list[tuple[Any, str, int]] = [(value, root, depth)]
    while stack:
        item, path, level = stack.pop()
        where = path or "body"
        if isinstance(item, str):
            _check_string(item, where, limits)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -limits.max_integer <= item <= limits.max_integer:
                raise InputError(where, f"integer out of range (at most {limits.max_integer} either way)")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise InputError(where, "not a finite number (NaN and Infinity cannot be stored)")
        elif isinstance(item, Unstorable):
            raise InputError(where, item.reason)
        elif isinstance(item, dict | list):
            if level >= limits.max_depth:
                raise InputError(where, f"nested too deeply (at most {limits.max_depth} levels)")
            if isinstance(item, dict):
                for key, child in reversed(list(item.items())):
                    if not isinstance(key, str):
                        raise InputError(_path(path, key), "keys must be strings")
                    _check_string(key, _path(path, key), limits)
                    stack.append((child, _path(path, key), level + 1))
            else:
                for index in range(len(item) - 1, -1, -1):
                    stack.append((item[index], _path(path, index), level + 1))
        else:
            raise InputError(where, f"a {type(item).__name__} is not a JSON value (use a string, number or object)")


def _check_string(text: str, where: str, limits: InputLimits) -> None:
    if len(text) > limits.max_string_length:
        raise InputError(where, f"longer than {limits.max_string_length} characters")
    if "\x00" in text:
        raise InputError(where, "contains a NUL character, which cannot be stored")
    if _SURROGATE.search(text):
        raise InputError(where, "contains an unpaired UTF-16 surrogate (\\ud800-\\udfff), which is not text")


class Unstorable:
    """What the JSON parser puts where a number cannot be taken, so check_value names its path."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def loads_json(raw: str | bytes, limits: InputLimits = DEFAULT_LIMITS, *, check: bool = True) -> Any:
    """Parse JSON and check every value; ``InputError`` (field ``body`` or the value's path) otherwise.

    ``check=False`` leaves the values to the caller's ``check_value`` (a batch checks each item on its own); numbers
    that cannot be taken are then ``Unstorable`` placeholders, which check_value refuses.
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("body", "not UTF-8") from None
    # Integers: refuse the literal before int() spends quadratic time on thousands of digits.
    digits = len(str(limits.max_integer))
    out_of_range = f"integer out of range (at most {limits.max_integer} either way)"

    def parse_int(text: str) -> int | Unstorable:
        if len(text.lstrip("-")) > digits:
            return Unstorable(out_of_range)
        return int(text)

    def parse_float(text: str) -> float | Unstorable:
        number = float(text)
        return number if math.isfinite(number) else Unstorable(f"number {text[:20]} is too large to be stored")

    def parse_constant(name: str) -> Unstorable:
        return Unstorable(f"{name} is not a number JSON allows (NaN and Infinity cannot be stored)")

    try:
        data = json.loads(raw, parse_constant=parse_constant, parse_int=parse_int, parse_float=parse_float)
    except json.JSONDecodeError as exc:
        raise InputError("body", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InputError("body", f"nested too deeply (at most {limits.max_depth} levels)") from None
    if check:
        check_value(data, limits)
    return data


class _SafeNoAliasLoader(yaml.SafeLoader):
    """YAML's safe loader without aliases (``*name``, and so ``<<`` merges): nothing expands past its source."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "aliases (*name) are not allowed: write the value out", event.start_mark
            )
        return super().compose_node(parent, index)


# Timestamps stay text (JSON has no date type and journeys read durations and dates from strings).
_SafeNoAliasLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def loads_yaml(text: str, limits: InputLimits = DEFAULT_LIMITS) -> Any:
    """Parse YAML without aliases and check every value as JSON's; ``InputError`` otherwise."""
    # The composer recurses once per level: refuse deep flow or block nesting before it does.
    try:
        data = yaml.load(text, Loader=_SafeNoAliasLoader)
    except yaml.YAMLError as exc:
        raise InputError("body", f"not valid YAML: {exc}") from None
    except RecursionError:
        raise InputError("body", f"nested too deeply (at most {limits.max_depth} levels)") from None
    except ValueError as exc:  # an integer too long for int()
        raise InputError("body", f"not valid YAML: {exc}") from None
    check_value(data, limits)
    return data


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact JSON (after check_value: always serialisable)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def check_size(value: Any, limit: int, field: str) -> None:
    size = json_size(value)
    if size > limit:
        raise InputError(field, f"{size} bytes as JSON, more than the {limit} allowed")
