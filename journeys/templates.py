"""Liquid templates for message content: checked when a journey is published, rendered at send time."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from liquid import Environment, Undefined
from liquid.exceptions import LiquidError
from markupsafe import Markup


class _Bounded(Environment):
    """Liquid with limits, so neither a journey author nor customer data can make a render run away: loops,
    output, nested renders and local variables are bounded (each error names the limit)."""

    context_depth_limit = 30
    loop_iteration_limit = 10_000
    output_stream_limit = 500_000
    local_namespace_limit = 100_000


_noted: ContextVar[list[str] | None] = ContextVar("noted_undefined", default=None)


class _Noted(Undefined):
    """Liquid's default undefined (it renders as an empty string, so sending is unchanged) that, inside
    ``noting_undefined()``, notes the variable each time one is written out empty. A variable only tested
    (``{% if event.x %}``) or given a fallback (``| default: ...``) is not noted: it did not render empty."""

    __slots__ = ()

    def __str__(self) -> str:
        noted = _noted.get()
        if noted is not None:
            noted.append(self.path())
        return ""

    def path(self) -> str:
        """The variable as the template wrote it (``event.cart_value``), from Liquid's own hint when it has one."""
        suffix = " is undefined"
        if self.hint and self.hint.endswith(suffix):
            return self.hint[: -len(suffix)].strip("'\"")
        # Liquid gives no path for an index out of range: its root variable and the reason.
        return f"{self.name}: {self.hint}" if self.hint else str(self.name)


@contextmanager
def noting_undefined() -> Iterator[list[str]]:
    """Within the block, renders note (in the list yielded, once each, sorted) the variables that rendered
    empty because the customer, event or journey lacks them."""
    noted: list[str] = []
    token = _noted.set(noted)
    try:
        yield noted
    finally:
        _noted.reset(token)
        noted[:] = sorted(set(noted))


def _trusted(value: object) -> Markup:
    """``{{ x | trusted }}``: the author vouches that ``x`` is HTML; it is not escaped."""
    return value if isinstance(value, Markup) else Markup(str(value if value is not None else ""))


def _environment(*, autoescape: bool) -> Environment:
    env = _Bounded(autoescape=autoescape, undefined=_Noted)
    env.filters["trusted"] = _trusted if autoescape else (lambda value: value)
    return env


# Text parts are plain text: values go in as they are. HTML parts escape every value (customer and event data
# included); ``| trusted`` marks HTML the author vouches for.
_ENV = _environment(autoescape=False)
_HTML_ENV = _environment(autoescape=True)


class TemplateError(ValueError):
    pass


@lru_cache(maxsize=2048)
def _compile(source: str, html: bool = False) -> Any:
    try:
        return (_HTML_ENV if html else _ENV).from_string(source)
    except LiquidError as exc:
        raise TemplateError(_first_line(exc)) from exc


def check_template(source: str, *, html: bool = False) -> None:
    """Raise TemplateError when the template does not parse, uses an unknown filter or breaks a limit."""
    template = _compile(source, html)
    try:
        template.render()
    except LiquidError as exc:
        raise TemplateError(_first_line(exc)) from exc


def render_template(source: str, context: dict[str, Any], *, html: bool = False) -> str:
    if "{" not in source and "\r" not in source and len(source) <= _Bounded.output_stream_limit:
        return source  # no tag, no output, no CR (Liquid writes CRLF as LF): Liquid would write it as it is
    try:
        return str(_compile(source, html).render(**context))
    except LiquidError as exc:
        raise TemplateError(_first_line(exc)) from exc


def render_value(value: Any, context: dict[str, Any], *, html_keys: frozenset[str] = frozenset()) -> Any:
    """Render every string inside a value (used for message content, webhook payloads and in-app data).

    Strings under a key of ``html_keys`` (email's ``html``) are HTML: their values are escaped."""
    return _render(value, context, html_keys, html=False)


def _render(value: Any, context: dict[str, Any], html_keys: frozenset[str], *, html: bool) -> Any:
    if isinstance(value, str):
        return render_template(value, context, html=html)
    if isinstance(value, dict):
        return {key: _render(item, context, html_keys, html=html or key in html_keys) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, context, html_keys, html=html) for item in value]
    return value


HTML_KEYS = frozenset({"html"})
"""The content fields rendered as HTML (escaped) in email."""


def template_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in template_strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in template_strings(item)]
    return []


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
