"""Turning a journey definition (YAML, JSON or a dict) into a valid Journey, or into a list of errors that each
name the step and the field, so an author can fix every problem in one pass."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from journeys.models import (
    END,
    WAITING_STEPS,
    BranchStep,
    Journey,
    SendStep,
    UpdateProfileStep,
    WaitForStep,
    WebhookStep,
)
from journeys.templates import TemplateError, check_template, template_strings


class JourneyIssue(BaseModel):
    """One problem in a definition. ``location`` reads like ``steps[2] (id 'remind').timeout``."""

    location: str
    step: str | None = None
    field: str | None = None
    message: str

    def __str__(self) -> str:
        return f"{self.location}: {self.message}"


class JourneyValidationError(ValueError):
    def __init__(self, issues: list[JourneyIssue]) -> None:
        self.issues = issues
        super().__init__("invalid journey:\n" + "\n".join(f"  - {issue}" for issue in issues))


def load_journey_file(path: str | Path) -> Journey:
    path = Path(path)
    return parse_journey(path.read_text(encoding="utf-8"), fmt="json" if path.suffix == ".json" else "yaml")


def parse_journey(source: str | bytes | dict[str, Any], fmt: str | None = None) -> Journey:
    """Parse and validate; raise JourneyValidationError listing every problem found."""
    data = _decode(source, fmt)
    try:
        journey = Journey.model_validate(data)
    except ValidationError as exc:
        raise JourneyValidationError(_from_pydantic(exc, data)) from None
    issues = check_journey(journey)
    if issues:
        raise JourneyValidationError(issues)
    return journey


def check_journey(journey: Journey) -> list[JourneyIssue]:
    """The checks that need the whole journey: references, reachability, loops without waits, templates."""
    issues: list[JourneyIssue] = []
    ids = [s.id for s in journey.steps]
    seen: set[str] = set()
    for index, step in enumerate(journey.steps):
        if step.id in seen:
            issues.append(_issue(index, step.id, "id", f"duplicate step id '{step.id}'"))
        seen.add(step.id)
    for index, step in enumerate(journey.steps):
        for field, target in step.targets().items():
            if target and target != END and target not in seen:
                issues.append(_issue(index, step.id, field, f"unknown step '{target}' (known: {', '.join(ids)})"))
        for where, value in _templated_fields(step):
            for text in template_strings(value):
                try:
                    check_template(text)
                except TemplateError as exc:
                    issues.append(_issue(index, step.id, where, f"template error: {exc}"))
    goal = journey.goal
    for index, criterion in enumerate(journey.exit_when):
        if goal is not None and goal.within is None and criterion.event == goal.event:
            issues.append(
                JourneyIssue(
                    location=f"exit_when[{index}].event",
                    field=f"exit_when[{index}].event",
                    message=f"'{criterion.event}' is the goal's event: the goal always ends the journey first, "
                    "so this exit never happens (remove it, or give the goal a 'within' window)",
                )
            )
    if issues:
        return issues  # the graph checks below need valid references

    graph = {s.id: [t for t in journey.successors(s.id).values() if t != END] for s in journey.steps}
    reachable = _reachable(journey.first_step(), graph)
    for index, step in enumerate(journey.steps):
        if step.id not in reachable:
            issues.append(_issue(index, step.id, None, f"step '{step.id}' is unreachable from the first step"))
    for cycle in _cycles_without_wait(journey, graph):
        index = ids.index(cycle[0])
        issues.append(_issue(index, cycle[0], None, f"loop with no wait in it: {' -> '.join([*cycle, cycle[0]])}"))
    return issues


def _decode(source: str | bytes | dict[str, Any], fmt: str | None) -> Any:
    if isinstance(source, dict):
        return source
    text = source.decode("utf-8") if isinstance(source, bytes) else source
    try:
        if fmt == "json" or (fmt is None and text.lstrip().startswith("{")):
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise JourneyValidationError(
            [JourneyIssue(location="(document)", message=f"not valid YAML/JSON: {exc}")]
        ) from None
    nul = find_nul(data) if isinstance(data, dict) else None
    if nul:
        raise JourneyValidationError([JourneyIssue(location=nul, field=nul, message="contains a NUL character")])
    if not isinstance(data, dict):
        raise JourneyValidationError(
            [JourneyIssue(location="(document)", message="a journey must be a mapping with id, name, trigger, steps")]
        )
    return data


def _templated_fields(step: Any) -> list[tuple[str, Any]]:
    """(field path, value) of every field of a step that is rendered with Liquid."""
    if isinstance(step, SendStep):
        prefix = "template" if step.channel is not None else "content.{}"
        return [
            (f"{prefix.format(channel)}.{name}", value)
            for channel, fields in step.all_content().items()
            for name, value in fields.items()
        ]
    if isinstance(step, UpdateProfileStep):
        return [(f"set.{name}", value) for name, value in step.set.items()]
    if isinstance(step, WebhookStep):
        return [("body", step.body), ("headers", step.headers)]
    return []


def find_nul(value: Any, path: str = "") -> str | None:
    """The path of the first NUL character in keys or strings (PostgreSQL text and jsonb cannot hold it)."""
    if isinstance(value, str):
        return path or "(value)" if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return here
            found = find_nul(item, here)
            if found:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = find_nul(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _issue(index: int, step_id: str | None, field: str | None, message: str) -> JourneyIssue:
    where = f"steps[{index}]" + (f" (id '{step_id}')" if step_id else "")
    return JourneyIssue(location=where + (f".{field}" if field else ""), step=step_id, field=field, message=message)


_STEP_TYPES = {"send", "wait", "wait_for", "branch", "exit"}


def _from_pydantic(exc: ValidationError, data: dict[str, Any]) -> list[JourneyIssue]:
    issues = []
    for error in exc.errors():
        loc = list(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "union_tag_invalid":
            message = f"unknown step type: use one of {', '.join(sorted(_STEP_TYPES))}"
        elif error["type"] == "union_tag_not_found":
            message = "a step needs a 'type'"
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            index = loc[1]
            rest = [str(p) for p in loc[2:]]
            if rest and rest[0] in _STEP_TYPES:
                rest = rest[1:]
            raw_steps: list[Any] = data["steps"] if isinstance(data.get("steps"), list) else []
            raw = raw_steps[index] if index < len(raw_steps) else {}
            step_id = raw.get("id") if isinstance(raw, dict) and isinstance(raw.get("id"), str) else None
            issues.append(_issue(index, step_id, ".".join(rest) or None, message))
        else:
            location = ".".join(str(p) for p in loc) or "(document)"
            issues.append(JourneyIssue(location=location, field=location, message=message))
    return issues


def _reachable(start: str, graph: dict[str, list[str]]) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        node = stack.pop()
        if node not in seen:
            seen.add(node)
            stack.extend(graph[node])
    return seen


def _cycles_without_wait(journey: Journey, graph: dict[str, list[str]]) -> list[list[str]]:
    """Cycles made only of steps that do not wait (they would spin forever without time passing)."""
    instant = [s.id for s in journey.steps if not isinstance(s, WAITING_STEPS)]  # list order: stable reports
    sub = {node: [t for t in graph[node] if t in instant] for node in instant}
    cycles, state, path = [], dict.fromkeys(sub, 0), []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for target in sub[node]:
            if state[target] == 1:
                cycles.append(path[path.index(target) :])
            elif state[target] == 0:
                visit(target)
        path.pop()
        state[node] = 2

    for node in sub:
        if state[node] == 0:
            visit(node)
    return cycles


__all__ = [
    "BranchStep",
    "JourneyIssue",
    "JourneyValidationError",
    "WaitForStep",
    "check_journey",
    "find_nul",
    "load_journey_file",
    "parse_journey",
]


def sms_length_issues(journey: Journey, max_segments: int) -> list[JourneyIssue]:
    """SMS texts over ``max_segments`` segments, where publishing can tell: a static text (no Liquid), in every
    locale. A text with Liquid is measured when it is sent (``activities.channels.sms``)."""
    from journeys.sms import is_static, measure

    issues: list[JourneyIssue] = []
    for index, step in enumerate(journey.steps):
        if not isinstance(step, SendStep):
            continue
        fields: list[tuple[str, Any]] = []
        if step.channel == "sms" and step.template:
            fields.append(("template", step.template))
        if step.content and isinstance(step.content.get("sms"), dict):
            fields.append(("content.sms", step.content["sms"]))
        for where, content in fields:
            texts = [(f"{where}.text", content.get("text"))]
            locales = content.get("locales")
            if isinstance(locales, dict):
                texts += [
                    (f"{where}.locales.{k}.text", v.get("text")) for k, v in locales.items() if isinstance(v, dict)
                ]
            for field, text in texts:
                if not isinstance(text, str) or not is_static(text):
                    continue
                length = measure(text)
                if length.segments > max_segments:
                    issues.append(
                        _issue(
                            index,
                            step.id,
                            field,
                            f"SMS text takes {length.segments} segments ({length.units} {length.encoding} units), "
                            f"over the limit of {max_segments} (PARCOURS_SMS_MAX_SEGMENTS)",
                        )
                    )
    return issues
