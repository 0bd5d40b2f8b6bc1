"""The console's journey editor: ``/console/journeys/{id}/edit`` and ``/console/journeys/new``.

The definition is YAML in a plain textarea; ``static/editor.js`` adds line numbers, sane Tab keys and validation
as you type, and without JavaScript every button posts the form and the page answers. Each action runs the very
code of the HTTP API, on the definition in the editor (not published yet):

- check: ``api.publishing.validated``, the validation of ``POST /v1/journeys`` (the same messages), each problem
  placed at its line of the YAML; ``POST /console/editor/check`` answers it as JSON while the author types;
- preview: ``api.previews.step_request`` and ``preview``, as ``POST /v1/journeys/{id}/preview``: every channel's
  message rendered for a chosen customer (``templates/preview.html``, shared with the new-broadcast form) and the
  send policy's decision; refreshed as you type (``POST /console/editor/preview``, the newest answer only);
- test send: ``api.previews.test_send_checked``, as ``.../test-send``: marked ``[TEST]``, recorded nowhere; a push
  test goes to the device given (platform and token, or a Web Push subscription's JSON);
- publish: ``api.publishing.publish_journey``, as ``POST /v1/journeys`` (event router refreshed, segment schedule
  synced), then the journey's page says which version was published and that running customers keep theirs.

Reading a definition and previewing it need any key (a read key previews the latest published version, as the
API lets it); the rest needs the role ``write`` (a read key sees the YAML read-only, and no test send or publish).
Publishing a draft opened at an older version than the latest is refused (409) with a link to the new one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import ValidationError

from api import previews
from api.console import notices, previewing, session
from api.console.routes import (
    Reader,
    Refused,
    Writer,
    journey_id_or_404,
    read_form,
    render,
    render_fragment,
    running_now,
)
from api.publishing import publish_journey, validated
from api.routes_deps import event_router, input_limits, off_loop, pool, read_json, settings, temporal
from api.routes_devices import DeviceAddress
from api.schemas import CUSTOMER_ID_PATTERN, ApiError
from journeys.models import Journey, SendStep
from journeys.validation import JourneyIssue, JourneyValidationError
from journeys.values import InputError, loads_json
from store import journeys as journey_store
from store.journeys import JourneyRow, canonical

router = APIRouter(include_in_schema=False)

ACTIONS = ("check", "preview", "test_send", "publish")
PREVIEW_URL = "/console/editor/preview"
JOURNEY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
NEW_JOURNEY = """\
# A new journey: publish it when the problems list is empty.
id: my-journey
name: My journey
trigger:
  event: signed_up
steps:
  - id: welcome
    label: Welcome email
    type: send
    channel: email
    template:
      subject: "Welcome, {{ customer.first_name | default: 'there' }}"
      text: |
        Hi {{ customer.first_name | default: 'there' }},

        Welcome aboard.
  - id: wait-a-day
    type: wait
    duration: 1d
"""


# --- roles ------------------------------------------------------------------------------------------------------


# --- the definition as YAML -------------------------------------------------------------------------------------


class _Dumper(yaml.SafeDumper):
    """YAML as an author writes it: lists indented under their key, multi-line strings (templates) as ``|``
    blocks, long lines left whole."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_Dumper.add_representer(str, _str)


def stored(definition: dict[str, Any] | None) -> Journey | None:
    """A stored definition as a journey; None when it no longer reads (written by an older release, or by hand)."""
    try:
        return Journey.model_validate(definition)
    except ValidationError:
        return None


def as_yaml(definition: dict[str, Any]) -> str:
    """A stored definition as YAML without the defaults it was stored with, when that reads back the same;
    otherwise in full (a definition this release no longer reads, too, so its author can fix it)."""
    journey = stored(definition)
    if journey is None:
        return yaml.dump(definition, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1_000_000)
    short = journey.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    for data in (short, definition):
        text = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1_000_000)
        try:
            if canonical(Journey.model_validate(yaml.safe_load(text))) == canonical(journey):
                return text
        except (yaml.YAMLError, ValueError):
            continue
    return text


# --- problems, each at its line ---------------------------------------------------------------------------------

_STEP_LOCATION = re.compile(r"^steps\[(\d+)\](?: \(id '([^']*)'\))?(?:\.(.*))?$")
_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")
_LINE = re.compile(r"line (\d+)")
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _path(location: str) -> tuple[list[str | int], int | None]:
    """The document path of an issue's location and its step's index (``steps[2] (id 'x').wait.duration``)."""
    parts: list[str | int] = []
    index = None
    rest = location
    if match := _STEP_LOCATION.match(location):
        index = int(match.group(1))
        parts = ["steps", index]
        rest = match.group(3) or ""
    elif location.startswith("("):
        return [], None
    for name, number in _PART.findall(rest):
        parts.append(int(number) if number else int(name) if name.isdigit() else name)
    return parts, index


def _line_at(root: yaml.Node, path: list[str | int]) -> int:
    """The 1-based line of the deepest node of ``path`` found in the composed document."""
    node, line = root, root.start_mark.line + 1
    for part in path:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    node, line = value, key.start_mark.line + 1
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def located(text: str, issues: list[JourneyIssue]) -> list[dict[str, Any]]:
    """The issues as the editor lists them: the API's location and message, the step they belong to, and the line
    of the YAML they point at (None when the document has no such place). Sorted by step, the journey's first."""
    try:
        root = yaml.compose(text, Loader=_Loader) if issues else None
    except (yaml.YAMLError, RecursionError, ValueError):
        root = None
    keyed: list[tuple[tuple[int, int], dict[str, Any]]] = []
    for order, issue in enumerate(issues):
        path, index = _path(issue.location)
        line: int | None = None
        if root is not None and path:
            line = _line_at(root, path)
        elif issue.location.startswith("(") and (found := _LINE.findall(issue.message)):
            line = int(found[-1])
        if index is None:
            group, label = "journey", "The journey"
        else:
            step = issue.step
            group = f"steps[{index}]"
            label = f"Step “{step}” (steps[{index}])" if step else f"Step {index + 1} (steps[{index}])"
        keyed.append(((-1 if index is None else index, order), {
            "location": issue.location, "step": issue.step, "field": issue.field, "message": issue.message,
            "group": group, "group_label": label, "line": line,
        }))  # fmt: skip
    return [item for _, item in sorted(keyed, key=lambda pair: pair[0])]


def grouped(issues: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[str, dict[str, Any]] = {}
    for issue in issues:
        if issue["group"] not in groups:
            groups[issue["group"]] = {"group": issue["group"], "label": issue["group_label"], "step": issue["step"],
                                      "issues": []}  # fmt: skip
        groups[issue["group"]]["issues"].append(issue)
    return list(groups.values())


def _send_steps(journey: Journey | None) -> list[dict[str, Any]]:
    if journey is None:
        return []
    return [
        {"id": s.id, "label": s.label or s.id, "channels": s.candidates()}
        for s in journey.steps
        if isinstance(s, SendStep)
    ]


async def _check(request: Request, text: str, row: JourneyRow | None) -> tuple[Journey | None, list[dict[str, Any]]]:
    """The journey in ``text``, or None with the problems: the API's validation, then what this editor adds (an
    edited journey keeps its id; a new one takes an id not used yet)."""
    config = settings(request)
    issues: list[JourneyIssue] = []
    journey: Journey | None = None
    try:
        journey = await off_loop(request, validated, text, "yaml", input_limits(request), config.sms_max_segments)
    except JourneyValidationError as exc:
        issues = exc.issues
    if journey is not None:
        if row is not None and journey.id != row.id:
            issues = [JourneyIssue(location="id", field="id", message=f"this editor publishes journey '{row.id}': "
                                   "keep its id (to start another journey, use “New journey”)")]  # fmt: skip
        elif row is None and await journey_store.get_journey(pool(request), journey.id) is not None:
            issues = [JourneyIssue(location="id", field="id", message=f"a journey '{journey.id}' exists already: "
                                   "edit it from its page, or choose another id")]  # fmt: skip
        if issues:
            journey = None
    return journey, await off_loop(request, located, text, issues)


# --- pages ------------------------------------------------------------------------------------------------------


@dataclass
class Draft:
    """What the editor's form holds."""

    text: str
    base_version: int | None = None
    customer_id: str = ""
    step: str = ""
    properties: str = ""
    to: str = ""
    channel: str = ""
    device_platform: str = ""
    device_token: str = ""
    """A push test's device: its token, or for ``web`` the subscription as JSON."""
    errors: dict[str, str] = field(default_factory=dict)
    """Per action (``preview``, ``test_send``, ``publish``): why it could not be done."""

    @classmethod
    def from_form(cls, form: dict[str, str]) -> Draft:
        base = form.get("base_version", "")
        return cls(
            text=form.get("definition", "").replace("\r\n", "\n"),
            base_version=int(base) if base.isascii() and base.isdigit() and len(base) < 10 else None,
            customer_id=form.get("customer_id", "").strip(),
            step=form.get("step", "").strip(),
            properties=form.get("properties", "").strip(),
            to=form.get("to", "").strip(),
            channel=form.get("channel", "").strip(),
            device_platform=form.get("device_platform", "").strip(),
            device_token=form.get("device_token", "").strip(),
        )

    def device(self) -> DeviceAddress | None:
        """The push test's device, checked as the API checks it (422 naming ``device.<field>``); None: none given."""
        if not self.device_platform:
            return None
        data: dict[str, Any] = {"platform": self.device_platform}
        if self.device_platform != "web":
            data["token"] = self.device_token
        else:
            try:
                data["subscription"] = json.loads(self.device_token)
            except ValueError:
                raise ApiError(
                    422, 'the subscription as JSON: {"endpoint": ..., "keys": {...}}', field="device.subscription"
                ) from None
        return previews.parse_device(data)


def _page(
    request: Request,
    current: session.Session,
    row: JourneyRow | None,
    draft: Draft,
    *,
    journey: Journey | None,
    issues: list[dict[str, Any]] | None,
    status: int = 200,
    **results: Any,
) -> Response:
    title = f"Edit {row.name}" if row else "New journey"
    steps = _send_steps(journey or (stored(row.definition) if row else None))
    # The page holds a preview (shown now, or drawn by editor.js as you type), and its script asks the server.
    return render(
        request, current, "editor.html", status=status, shows_preview=True, title=title, row=row,
        draft=draft, issues=issues, groups=grouped(issues or []), may_write=current.may("write"), send_steps=steps,
        test_channels=previews.TEST_CHANNELS, check_url="/console/editor/check", preview_url=PREVIEW_URL,
        **results,
    )  # fmt: skip


async def _row(request: Request, journey_id: str) -> JourneyRow:
    row = await journey_store.get_journey(pool(request), journey_id_or_404(journey_id))
    if row is None or row.definition is None:
        raise Refused(404, f"unknown journey '{journey_id}'")
    return row


@router.get("/console/journeys/new")
async def new_page(request: Request, current: Writer) -> Response:
    return _page(request, current, None, Draft(NEW_JOURNEY), journey=None, issues=None)


@router.post("/console/journeys/new")
async def new_post(request: Request, current: Writer) -> Response:
    return await _act(request, current, None)


@router.get("/console/journeys/{journey_id}/edit")
async def edit_page(request: Request, journey_id: str, current: Reader) -> Response:
    row = await _row(request, journey_id)
    draft = Draft(await off_loop(request, as_yaml, row.definition), base_version=row.latest_version)
    return _page(request, current, row, draft, journey=stored(row.definition), issues=None)


@router.post("/console/journeys/{journey_id}/edit")
async def edit_post(request: Request, journey_id: str, current: Writer) -> Response:
    return await _act(request, current, await _row(request, journey_id))


@router.post("/console/journeys/{journey_id}/preview")
async def preview_post(request: Request, journey_id: str, current: Reader) -> Response:
    """The editor's "Preview" button. Any key may preview, as with ``POST /v1/journeys/{id}/preview``: a key that
    may write previews the draft in the editor, a read key the latest published version (what it reads)."""
    row = await _row(request, journey_id)
    draft = Draft.from_form(await read_form(request, current))
    return await _preview_page(request, current, row, draft)


@router.post("/console/editor/preview")
async def live_preview(request: Request, current: Reader) -> Response:
    """JSON for the preview as you type: ``{"definition", "journey", "customer_id", "step", "properties"}`` →
    ``{"ok", "html"}``, ``html`` being the page's preview part (``editor_preview.html``) to swap in. What cannot be
    previewed (a problem in the draft, an unknown customer) is ``ok: false`` with the reason in ``html``; a
    request that is not one of the editor's is a 4xx naming the field. Same session and CSRF header as the check;
    a read key previews the latest published version whatever ``definition`` holds."""
    if not session.csrf_ok(settings(request), current, request.headers.get("x-csrf-token")):
        raise ApiError(403, "the security token does not match this session: reload the page", field="x-csrf-token")
    body = await read_json(request, check=False)
    if not isinstance(body, dict):
        raise ApiError(422, "send a JSON object", field="body")
    form: dict[str, str] = {}
    for name in ("definition", "customer_id", "step", "properties"):
        value = body.get(name, "")
        if not isinstance(value, str):
            raise ApiError(422, "a string", field=name)
        form[name] = value
    journey_id = body.get("journey")
    row = await _named_journey(request, journey_id)
    if row is not None and row.definition is None:
        raise ApiError(404, f"unknown journey '{journey_id}'", field="journey")
    if row is None and not current.may("write"):
        raise ApiError(403, f"your API key has the role '{current.role}'; a new journey needs 'write'", field="journey")
    _, _, shown, error, _ = await _previewed(request, current, row, Draft.from_form(form))
    html = render_fragment("editor_preview.html", preview=shown, error=error)
    return JSONResponse({"ok": error is None, "html": html}, headers={"Cache-Control": "no-store"})


async def _named_journey(request: Request, journey_id: Any) -> JourneyRow | None:
    """The journey a script's ``journey`` field names (None for a new journey's draft); 422/404 naming it."""
    if journey_id is None:
        return None
    if not isinstance(journey_id, str) or not JOURNEY_ID.match(journey_id):
        raise ApiError(422, "a journey id, or null for a new journey", field="journey")
    row = await journey_store.get_journey(pool(request), journey_id)
    if row is None:
        raise ApiError(404, f"unknown journey '{journey_id}'", field="journey")
    return row


@router.post("/console/editor/check")
async def check(request: Request, current: Writer) -> Response:
    """JSON for the editor's validation as you type: ``{"definition": "...", "journey": "id" or null}`` →
    ``{"valid", "issues", "send_steps"}``. Same session, role and CSRF token (header ``X-CSRF-Token``) as a form."""
    if not session.csrf_ok(settings(request), current, request.headers.get("x-csrf-token")):
        raise ApiError(403, "the security token does not match this session: reload the page", field="x-csrf-token")
    body = await read_json(request, check=False)  # the definition is checked as the API checks a journey
    if not isinstance(body, dict) or not isinstance(body.get("definition"), str):
        raise ApiError(422, 'send {"definition": "..."}', field="definition")
    row = await _named_journey(request, body.get("journey"))
    journey, issues = await _check(request, body["definition"], row)
    return JSONResponse(
        {"valid": journey is not None, "issues": issues, "send_steps": _send_steps(journey)},
        headers={"Cache-Control": "no-store"},
    )


# --- the form's actions -----------------------------------------------------------------------------------------


async def _act(request: Request, current: session.Session, row: JourneyRow | None) -> Response:
    form = await read_form(request, current)
    action = form.get("do", "check")
    if action not in ACTIONS:
        raise Refused(400, f"do: one of {', '.join(ACTIONS)}")
    draft = Draft.from_form(form)
    if action == "preview":
        return await _preview_page(request, current, row, draft)
    journey, issues = await _check(request, draft.text, row)
    if journey is None:
        if action != "check":
            draft.errors[action] = "Fix the problems listed beside the definition first."
        return _page(request, current, row, draft, journey=None, issues=issues, status=422)
    if action == "check":
        return _page(request, current, row, draft, journey=journey, issues=issues)
    if action == "publish":
        return await _publish(request, current, row, draft, journey)
    try:
        send = await _send_request(request, journey, (row.latest_version if row else 0) + 1, draft)
        sent = await previews.test_send_checked(
            pool(request),
            settings(request),
            send,
            draft.channel or None,
            draft.to or None,
            draft.device(),
            sender=previews.key_sender(current.key),
        )
    except ApiError as exc:
        named = not exc.field or exc.message.startswith(f"{exc.field}: ")  # a body check names its field already
        draft.errors[action] = exc.message if named else f"{exc.field}: {exc.message}"
        return _page(request, current, row, draft, journey=journey, issues=issues, status=exc.status)
    return _page(request, current, row, draft, journey=journey, issues=issues, test_send=sent)


async def _preview_page(request: Request, current: session.Session, row: JourneyRow | None, draft: Draft) -> Response:
    journey, issues, shown, error, status = await _previewed(request, current, row, draft)
    if error is not None:
        draft.errors["preview"] = error
    return _page(request, current, row, draft, journey=journey, issues=issues, status=status, preview=shown)


async def _previewed(
    request: Request, current: session.Session, row: JourneyRow | None, draft: Draft
) -> tuple[Journey | None, list[dict[str, Any]] | None, dict[str, Any] | None, str | None, int]:
    """The preview the editor shows: (journey, its problems, the preview or None, why not, the page's status).
    A key that may write previews ``draft.text`` as the next version; a read key the latest published version
    (``draft.text`` is set to it, as the read-only page shows it)."""
    if current.may("write"):
        journey, issues = await _check(request, draft.text, row)
        version = (row.latest_version if row else 0) + 1
        if journey is None:
            return None, issues, None, "Fix the problems listed beside the definition first.", 422
    else:
        assert row is not None and row.definition is not None  # callers: a new journey needs "write"
        draft.text = await off_loop(request, as_yaml, row.definition)
        journey, issues, version = stored(row.definition), None, row.latest_version
        if journey is None:
            return None, None, None, f"version {version} no longer reads as a journey of this release", 409
    try:
        send = await _send_request(request, journey, version, draft)
        shown = await previews.preview(pool(request), settings(request), send)
    except ApiError as exc:
        return journey, issues, None, f"{exc.field}: {exc.message}" if exc.field else exc.message, exc.status
    return journey, issues, previewing.shown(shown), None, 200


async def _send_request(request: Request, journey: Journey, version: int, draft: Draft) -> Any:
    if not re.fullmatch(CUSTOMER_ID_PATTERN, draft.customer_id):
        raise ApiError(422, "a customer id (1-200 of A-Z a-z 0-9 . _ @ + : = -)", field="customer_id")
    properties: Any = {}
    if draft.properties:
        try:
            properties = loads_json(draft.properties, input_limits(request))
        except InputError as exc:
            raise ApiError(422, exc.message, field="properties") from None
        if not isinstance(properties, dict):
            raise ApiError(422, 'a JSON object, like {"cart_value": 42}', field="properties")
    step = draft.step or next((s["id"] for s in _send_steps(journey)), "")
    return await previews.step_request(pool(request), journey, version, step, draft.customer_id, None, properties)


async def _publish(
    request: Request, current: session.Session, row: JourneyRow | None, draft: Draft, journey: Journey
) -> Response:
    db = pool(request)
    expected = draft.base_version if row is not None else 0
    if row is not None and expected is not None:
        latest = await journey_store.get_journey(db, row.id)
        if latest is not None and latest.latest_version != expected:
            return await _conflict(request, current, row, draft, journey, latest.latest_version)
    # Everyone running now entered an earlier version, and keeps it.
    running = await running_now(temporal(request), journey.id) if row is not None else 0
    try:  # checked again under the journey's lock: of two authors publishing at once, one is refused
        version, created = await publish_journey(
            db, journey, client=temporal(request), settings=settings(request), router=event_router(request),
            expected_version=expected,
        )  # fmt: skip
    except journey_store.VersionConflict as exc:
        return await _conflict(request, current, row, draft, journey, exc.latest)
    return RedirectResponse(
        f"/console/journeys/{journey.id}?{notices.published_query(version, created, running)}#notice", status_code=303
    )


async def _conflict(
    request: Request, current: session.Session, row: JourneyRow | None, draft: Draft, journey: Journey, latest: int
) -> Response:
    """409: the journey was published since the editor was opened; the draft stays, with a link to the new version."""
    if row is None:
        draft.errors["publish"] = (
            f"A journey '{journey.id}' was published while you wrote this one: choose another id, or edit that one."
        )
    else:
        draft.errors["publish"] = (
            f"Version {latest} was published after you opened version {draft.base_version}: "
            "copy your changes, reload the editor and apply them to the latest version."
        )
    newer = await journey_store.get_journey(pool(request), journey.id)
    return _page(request, current, row, draft, journey=journey, issues=[], status=409, newer=newer)
