"""Liquid templates for message content: checked when a journey is published, rendered at send time."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from liquid import Environment
from liquid.exceptions import LiquidError

_ENV = Environment()


class TemplateError(ValueError):
    pass


@lru_cache(maxsize=2048)
def _compile(source: str) -> Any:
    try:
        return _ENV.from_string(source)
    except LiquidError as exc:
        raise TemplateError(_first_line(exc)) from exc


def check_template(source: str) -> None:
    """Raise TemplateError when the template does not parse or uses an unknown filter."""
    template = _compile(source)
    try:
        template.render()
    except LiquidError as exc:
        raise TemplateError(_first_line(exc)) from exc


def render_template(source: str, context: dict[str, Any]) -> str:
    try:
        return str(_compile(source).render(**context))
    except LiquidError as exc:
        raise TemplateError(_first_line(exc)) from exc


def render_value(value: Any, context: dict[str, Any]) -> Any:
    """Render every string inside a value (used for webhook payloads and in-app data)."""
    if isinstance(value, str):
        return render_template(value, context)
    if isinstance(value, dict):
        return {key: render_value(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render_value(item, context) for item in value]
    return value


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
