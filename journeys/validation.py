"""Turning a journey definition (YAML, JSON or a dict) into a valid Journey, or into a list of errors that each
name the step and the field, so an author can fix every problem in one pass."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from journeys.cron import cron_problem
from journeys.models import (
    END,
    WAITING_STEPS,
    AnyStep,
    Journey,
    SendStep,
    UpdateProfileStep,
    WebhookStep,
)
from journeys.templates import HTML_KEYS, TemplateError, check_template, template_strings
from journeys.values import DEFAULT_LIMITS, InputError, InputLimits, check_value, json_size, loads_json, loads_yaml


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

    def __reduce__(self) -> tuple[type[JourneyValidationError], tuple[list[JourneyIssue]]]:
        # Raised in a validation process and re-raised in the API's: pickled with its issues.
        return (type(self), (self.issues,))


def load_journey_file(
    path: str | Path, limits: InputLimits = DEFAULT_LIMITS, *, sms_max_segments: int | None = None
) -> Journey:
    path = Path(path)
    return parse_journey(
        path.read_text(encoding="utf-8"),
        fmt="json" if path.suffix == ".json" else "yaml",
        limits=limits,
        sms_max_segments=sms_max_segments,
    )


def parse_journey(
    source: str | bytes | dict[str, Any],
    fmt: str | None = None,
    *,
    limits: InputLimits = DEFAULT_LIMITS,
    sms_max_segments: int | None = None,
) -> Journey:
    """Parse and validate; raise JourneyValidationError listing every problem found (field errors, reference
    errors and a malformed segment cron together). The document is bounded by ``limits`` (size after parsing,
    steps, nesting, strings). With ``sms_max_segments``, static SMS texts longer than that are problems too."""
    data = _decode(source, fmt, limits)
    try:
        journey = Journey.model_validate(data)
    except ValidationError as exc:
        issues = _from_pydantic(exc, data)
        issues += _raw_reference_issues(data, issues)
        raise JourneyValidationError(issues + _cron_issues(_raw_cron(data), issues)) from None
    issues = check_journey(journey)
    issues += _cron_issues(journey.entry.segment.cron if journey.entry.segment else None, issues)
    if sms_max_segments is not None:
        issues += sms_length_issues(journey, sms_max_segments)
    if issues:
        raise JourneyValidationError(issues)
    return journey


_CRON_LOCATION = "entry.segment.cron"


def _raw_cron(data: dict[str, Any]) -> Any:
    entry = data.get("entry")
    segment = entry.get("segment") if isinstance(entry, dict) else None
    return segment.get("cron") if isinstance(segment, dict) else None


def _cron_issues(cron: Any, found: list[JourneyIssue]) -> list[JourneyIssue]:
    """A malformed ``entry.segment.cron`` (unless a problem at that field is reported already)."""
    if not isinstance(cron, str) or any(issue.location == _CRON_LOCATION for issue in found):
        return []
    problem = cron_problem(cron)
    if problem is None:
        return []
    return [JourneyIssue(location=_CRON_LOCATION, field=_CRON_LOCATION, message=problem)]


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
            html = where.rsplit(".", 1)[-1] in HTML_KEYS and isinstance(step, SendStep)
            for text in template_strings(value):
                try:
                    check_template(text, html=html)
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


def _decode(source: str | bytes | dict[str, Any], fmt: str | None, limits: InputLimits) -> Any:
    try:
        if isinstance(source, dict):
            check_value(source, limits)
            data: Any = source
        else:
            text = source.decode("utf-8") if isinstance(source, bytes) else source
            if fmt == "json" or (fmt is None and text.lstrip().startswith("{")):
                data = loads_json(text, limits)
            else:
                data = loads_yaml(text, limits)
    except InputError as exc:
        where = "(document)" if exc.field == "body" else exc.field
        field = None if exc.field == "body" else exc.field
        message = exc.message
        if message.startswith(("malformed JSON: ", "not valid YAML: ")):
            message = "not valid YAML/JSON: " + message.split(": ", 1)[1]
        raise JourneyValidationError([JourneyIssue(location=where, field=field, message=message)]) from None
    if not isinstance(data, dict):
        raise JourneyValidationError(
            [JourneyIssue(location="(document)", message="a journey must be a mapping with id, name, trigger, steps")]
        )
    size = json_size(data)
    if size > limits.max_journey_bytes:
        raise JourneyValidationError(
            [
                JourneyIssue(
                    location="(document)",
                    message=f"the definition is {size} bytes as JSON, more than the {limits.max_journey_bytes} "
                    "allowed (PARCOURS_MAX_JOURNEY_BYTES)",
                )
            ]
        )
    steps = data.get("steps")
    if isinstance(steps, list) and len(steps) > limits.max_journey_steps:
        raise JourneyValidationError(
            [
                JourneyIssue(
                    location="steps",
                    field="steps",
                    message=f"{len(steps)} steps, more than the {limits.max_journey_steps} allowed "
                    "(PARCOURS_MAX_JOURNEY_STEPS)",
                )
            ]
        )
    return data


# Fields of a step (as written) that name another step.
_TARGET_FIELDS = ("next", "on_event", "on_timeout", "then", "else", "default", "on_failure", "on_missing", "on_past")


def _raw_reference_issues(data: dict[str, Any], found: list[JourneyIssue]) -> list[JourneyIssue]:
    """Duplicate ids and references to unknown steps, read from the document as written: reported with the
    field errors, so a bad field does not hide them. Issues already in ``found`` are not repeated."""
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list):
        return []
    ids = [step.get("id") if isinstance(step, dict) else None for step in raw_steps]
    known = list(dict.fromkeys(i for i in ids if isinstance(i, str)))  # in the order written
    already = {issue.location for issue in found}
    issues: list[JourneyIssue] = []
    seen: set[str] = set()
    for index, step in enumerate(raw_steps):
        if not isinstance(step, dict):
            continue
        step_id = ids[index] if isinstance(ids[index], str) else None
        if step_id is not None and step_id in seen:
            issues.append(_issue(index, step_id, "id", f"duplicate step id '{step_id}'"))
        if step_id is not None:
            seen.add(step_id)
        targets = [(name, step.get(name)) for name in _TARGET_FIELDS]
        cases = step.get("cases")
        for case_index, case in enumerate(cases if isinstance(cases, list) else []):
            if isinstance(case, dict):
                targets.append((f"cases[{case_index}]", case.get("next")))
        variants = step.get("variants")
        for variant in variants if isinstance(variants, list) else []:
            if isinstance(variant, dict) and isinstance(variant.get("name"), str):
                targets.append((f"variants.{variant['name']}", variant.get("next")))
        for name, target in targets:
            if isinstance(target, str) and target and target != END and target not in known:
                issue = _issue(index, step_id, name, f"unknown step '{target}' (known: {', '.join(known)})")
                if issue.location not in already:
                    issues.append(issue)
    return issues


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
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return where or "(value)"
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                here = f"{where}.{key}" if where else str(key)
                if "\x00" in str(key):
                    return here
                stack.append((child, here))
        elif isinstance(item, list):
            for index in range(len(item) - 1, -1, -1):
                stack.append((item[index], f"{where}[{index}]"))
    return None


def _issue(index: int, step_id: str | None, field: str | None, message: str) -> JourneyIssue:
    where = f"steps[{index}]" + (f" (id '{step_id}')" if step_id else "")
    return JourneyIssue(location=where + (f".{field}" if field else ""), step=step_id, field=field, message=message)


_STEP_TYPES = {get_args(model.model_fields["type"].annotation)[0] for model in get_args(AnyStep)}


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
    """Cycles made only of steps that do not wait (they would spin forever without time passing).

    Depth-first without recursion: a chain of thousands of steps cannot hit Python's recursion limit."""
    instant = [s.id for s in journey.steps if not isinstance(s, WAITING_STEPS)]  # list order: stable reports
    sub = {node: [t for t in graph[node] if t in instant] for node in instant}
    cycles: list[list[str]] = []
    state = dict.fromkeys(sub, 0)
    for start in sub:
        if state[start] != 0:
            continue
        path: list[str] = [start]
        state[start] = 1
        pending: list[Iterator[str]] = [iter(sub[start])]
        while pending:
            target = next(pending[-1], None)
            if target is None:
                pending.pop()
                state[path.pop()] = 2
            elif state[target] == 1:
                cycles.append(path[path.index(target) :])
            elif state[target] == 0:
                state[target] = 1
                path.append(target)
                pending.append(iter(sub[target]))
    return cycles


__all__ = [
    "JourneyIssue",
    "JourneyValidationError",
    "check_journey",
    "find_nul",
    "load_journey_file",
    "parse_journey",
    "sms_length_issues",
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
