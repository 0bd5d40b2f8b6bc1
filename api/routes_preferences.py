"""The preference center: topics (API), the hosted preference page and one-click unsubscribe (public, by link).

The public pages need no API key: the sealed token in the path is the credential (see ``activities.links``).
Forms post to the same path, so a cross-site page cannot forge a post without already holding the token, and a
POST a browser sends from another origin than ``public_base_url`` is refused (``_check_origin``); one-click
unsubscribe POSTs from mail providers (RFC 8058) carry no ``Origin`` and keep working.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlsplit
from zoneinfo import available_timezones

import asyncpg
from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, ConfigDict, Field

from activities import links
from api import preference_pages as pages
from api.routes_deps import ADMIN, READ, pool, read_model, settings
from api.schemas import ApiError, StorableText
from config.settings import Settings
from journeys import calendar
from store import customers as customer_store
from store import engagement
from store import identity as identity_store
from store import preferences as store
from store.preferences import CONSENT_CHANNELS, FREQUENCIES, Preferences

router = APIRouter()

Pool = Annotated[asyncpg.Pool, Depends(pool)]
AppSettings = Annotated[Settings, Depends(settings)]
TopicName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", description="The topic's name")]
_LOCALE = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})*$")
_ZONES = available_timezones()
_MAX_TOKEN = 2048


# --- topics (API key) --------------------------------------------------------------------------------------


class TopicIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: StorableText = Field(default="", max_length=200)
    description: StorableText = Field(default="", max_length=2000)
    default: Literal["opt_in", "opt_out"] = Field(
        description="opt_in: not subscribed until the customer says yes; opt_out: subscribed unless withdrawn"
    )


class TopicOut(BaseModel):
    name: str
    label: str
    description: str
    default: Literal["opt_in", "opt_out"]
    source: Literal["api", "settings"]


@router.get("/v1/topics", response_model=list[TopicOut], tags=["topics"], dependencies=[READ])
async def list_topics(db: Pool, config: AppSettings) -> list[dict[str, Any]]:
    """Every topic: those defined through the API, then those from ``PARCOURS_TOPICS`` not redefined."""
    return await store.list_topics(db, config)


@router.get("/v1/topics/{name}", response_model=TopicOut, tags=["topics"], dependencies=[READ])
async def get_topic(name: TopicName, db: Pool, config: AppSettings) -> dict[str, Any]:
    topic = await store.get_topic(db, config, name)
    if topic is None:
        raise ApiError(404, f"unknown topic '{name}'", field="name")
    return topic


@router.put(
    "/v1/topics/{name}",
    response_model=TopicOut,
    tags=["topics"],
    dependencies=[ADMIN],
    openapi_extra={
        "requestBody": {"required": True, "content": {"application/json": {"schema": TopicIn.model_json_schema()}}}
    },
)
async def put_topic(name: TopicName, request: Request, db: Pool) -> dict[str, Any]:
    """Define or redefine a topic; this definition wins over ``PARCOURS_TOPICS`` from the very next send."""
    body = await read_model(request, TopicIn)
    return await store.put_topic(db, name, label=body.label, description=body.description, default=body.default)


# --- public pages ------------------------------------------------------------------------------------------


def _html(content: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(content, status_code=status, headers=pages.headers())


class _PageError(Exception):
    def __init__(self, response: HTMLResponse) -> None:
        self.response = response


def _open(config: Settings, token: str, purpose: str) -> dict[str, Any]:
    try:
        if len(token) > _MAX_TOKEN:
            raise links.InvalidLink("the link is too long")
        return links.open_token(config, token, purpose=purpose)
    except links.ExpiredLink:
        raise _PageError(
            _html(
                pages.message_page(
                    "This link has expired",
                    "For your security, links in our messages work for a limited time. "
                    "Use the link in a more recent message from us.",
                ),
                410,
            )
        ) from None
    except links.InvalidLink:
        raise _PageError(
            _html(
                pages.message_page(
                    "This link is not valid",
                    "The link may have been changed or cut off when it was copied. "
                    "Open it again from the message we sent you, or copy the whole address.",
                ),
                400,
            )
        ) from None


async def _customer(db: asyncpg.Pool, payload: dict[str, Any]) -> str:
    """The customer a link was made for; a profile merged since stands for the customer it merged into."""
    return await identity_store.resolve_customer(db, str(payload.get("c")))


def _gone() -> HTMLResponse:
    return _html(pages.message_page("This link no longer works", "We have no record for this link any more."), 410)


def public_origin(config: Settings) -> str:
    """``scheme://host[:port]`` of ``public_base_url``, as a browser writes it in ``Origin`` (default ports left
    out)."""
    url = urlsplit(config.public_base_url)
    scheme, host = url.scheme.lower(), (url.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = url.port
    default = {"http": 80, "https": 443}.get(scheme)
    return f"{scheme}://{host}" + (f":{port}" if port and port != default else "")


def _check_origin(request: Request, config: Settings) -> None:
    """Refuse a POST a browser sent from another site (cross-site request forgery).

    A browser names the page a form comes from in ``Origin``: it must be the origin of ``public_base_url``
    (``null``, which browsers send under the pages' ``no-referrer`` policy and from sandboxed frames, only with
    ``Sec-Fetch-Site: same-origin``). Without ``Origin``, ``Sec-Fetch-Site: cross-site`` is refused
    too. A POST with neither comes from a program, not a browser page: a mail provider's RFC 8058 one-click
    unsubscribe, or a script that holds the link already (the sealed token is the credential).
    """
    origin = request.headers.get("origin")
    fetch_site = request.headers.get("sec-fetch-site", "").strip().lower()
    if origin is not None:
        origin = origin.strip().lower().rstrip("/")
        if origin == public_origin(config):
            return
        # The pages' own ``Referrer-Policy: no-referrer`` makes browsers send ``Origin: null`` with their form;
        # the browser's ``Sec-Fetch-Site`` (which no page can set) then says where it comes from.
        if origin == "null" and fetch_site == "same-origin":
            return
    elif fetch_site != "cross-site":
        return
    raise _PageError(
        _html(
            pages.message_page(
                "This form was sent from another site",
                "For your security, change your preferences from the page we sent you a link to.",
            ),
            403,
        )
    )


async def _form(request: Request) -> dict[str, list[str]]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if content_type not in ("", "application/x-www-form-urlencoded"):
        raise _PageError(
            _html(pages.message_page("Unsupported form", "Send the form as application/x-www-form-urlencoded."), 415)
        )
    try:
        return parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=1000)
    except (UnicodeDecodeError, ValueError):
        raise _PageError(_html(pages.message_page("Unreadable form", "The form could not be read."), 400)) from None


class _FormErrors(ValueError):
    """Every field of the form that is wrong, each with what is wrong with it (in the form's order)."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{message} (field '{field}')" for field, message in errors.items()))
        self.errors = errors


def _one(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[-1].strip()


def _parse_preferences(form: dict[str, list[str]], current: store.CustomerPreferences, config: Settings) -> Preferences:
    """The preferences the form asks for; raises ``_FormErrors`` naming every field that is wrong."""
    errors: dict[str, str] = {}
    chosen_channels = set(form.get("channel", []))
    if unknown := chosen_channels - set(CONSENT_CHANNELS):
        errors["channel"] = f"unknown channel '{sorted(unknown)[0]}'"
    topic_names = {t["name"] for t in current.topics}
    chosen_topics = set(form.get("topic", []))
    if unknown := chosen_topics - topic_names:
        errors["topic"] = f"unknown topic '{sorted(unknown)[0]}'"
    frequency = _one(form, "frequency") or "none"
    if frequency not in FREQUENCIES:
        errors["frequency"] = f"choose one of {', '.join(FREQUENCIES)}"
    start, end = _one(form, "quiet_start"), _one(form, "quiet_end")
    quiet_hours = None
    if start or end:
        if not (start and end):
            errors["quiet_end" if start else "quiet_start"] = "give both the start and the end of quiet hours"
        else:
            try:
                calendar.parse_window(f"{start}-{end}")
                quiet_hours = f"{start}-{end}"
            except ValueError:
                errors["quiet_start"] = "quiet hours must be times such as 21:00 and 08:00"
    preferred = _one(form, "preferred_channel") or None
    if preferred is not None and preferred not in (*CONSENT_CHANNELS, "in_app"):
        errors["preferred_channel"] = f"unknown channel '{preferred}'"
    timezone = _one(form, "timezone") or None
    if timezone is not None and timezone not in _ZONES:
        errors["timezone"] = f"unknown time zone '{timezone}'"
    locale = _one(form, "language") or None
    if locale is not None and not _LOCALE.match(locale):
        errors["language"] = f"'{locale}' is not a language code such as en, fr or fr-CA"
    chosen_interests = form.get("interest", [])
    if unknown_interests := set(chosen_interests) - set(config.interests):
        errors["interest"] = f"unknown interest '{sorted(unknown_interests)[0]}'"
    if errors:
        raise _FormErrors(errors)
    # Interests no longer offered on the page are kept: the customer did not take them back.
    kept = [i for i in current.preferences.interests if i not in config.interests]
    return Preferences(
        channels={c: c in chosen_channels for c in CONSENT_CHANNELS},
        topics={t: t in chosen_topics for t in topic_names},
        frequency=frequency,
        quiet_hours=quiet_hours,
        preferred_channel=preferred,
        timezone=timezone,
        locale=locale,
        interests=[i for i in config.interests if i in chosen_interests] + kept,
    )


@router.get("/preferences/{token}", response_class=HTMLResponse, tags=["preference center"])
async def preference_page(token: str, request: Request, db: Pool, config: AppSettings) -> HTMLResponse:
    """The customer's preference page (link from ``activities.links.preferences_url``)."""
    try:
        payload = _open(config, token, links.PREFERENCES)
    except _PageError as exc:
        return exc.response
    data = await store.load_preferences(db, config, await _customer(db, payload))
    if data is None:
        return _gone()
    return _html(pages.preference_page(data, config.interests, action=request.url.path))


@router.post("/preferences/{token}", response_class=HTMLResponse, tags=["preference center"])
async def save_preference_page(token: str, request: Request, db: Pool, config: AppSettings) -> HTMLResponse:
    """Save the form; answers the page again, saying "Saved" (or, with 400, naming every field that is wrong, each
    next to its field and all in a list at the top)."""
    try:
        payload = _open(config, token, links.PREFERENCES)
        _check_origin(request, config)
        form = await _form(request)
    except _PageError as exc:
        return exc.response
    customer_id = await _customer(db, payload)
    data = await store.load_preferences(db, config, customer_id)
    if data is None:
        return _gone()
    try:
        wanted = _parse_preferences(form, data, config)
    except _FormErrors as exc:
        page = pages.preference_page(data, config.interests, action=request.url.path, errors=exc.errors)
        return _html(page, 400)
    try:
        await store.save_preferences(db, config, customer_id, wanted)
    except customer_store.UnknownCustomerError:
        return _gone()
    saved = await store.load_preferences(db, config, customer_id)
    if saved is None:
        return _gone()
    return _html(pages.preference_page(saved, config.interests, action=request.url.path, saved=True))


@router.get("/v1/unsubscribe/{token}", response_class=HTMLResponse, tags=["preference center"])
async def unsubscribe_page(token: str, request: Request, config: AppSettings) -> HTMLResponse:
    """A confirmation page with a button. A GET never unsubscribes: mail scanners follow links."""
    try:
        payload = _open(config, token, links.UNSUBSCRIBE)
    except _PageError as exc:
        return exc.response
    prefs = links.preferences_url(config, str(payload.get("c")))
    prefs_path = "/preferences/" + prefs.rsplit("/preferences/", 1)[1]
    return _html(pages.unsubscribe_confirm_page(pages.describe(payload), request.url.path, prefs_path))


@router.post("/v1/unsubscribe/{token}", response_class=HTMLResponse, tags=["preference center"])
async def one_click_unsubscribe(token: str, request: Request, db: Pool, config: AppSettings) -> HTMLResponse:
    """RFC 8058 one-click unsubscribe: body ``List-Unsubscribe=One-Click``. Withdraws the message's topic (or its
    channel when it had none), source ``one_click_unsubscribe``; effective for the very next send."""
    try:
        payload = _open(config, token, links.UNSUBSCRIBE)
        _check_origin(request, config)  # mail providers' one-click POSTs carry no Origin
        form = await _form(request)
    except _PageError as exc:
        return exc.response
    if _one(form, "List-Unsubscribe") != "One-Click":
        return _html(
            pages.message_page(
                "Unsubscribe not confirmed",
                "The request must carry List-Unsubscribe=One-Click (field 'List-Unsubscribe').",
            ),
            400,
        )
    topic, channel = payload.get("t"), payload.get("ch")
    scope: Literal["channel", "topic"] = "topic" if topic else "channel"
    name = str(topic) if topic else str(channel)
    try:
        await customer_store.record_consent(
            db,
            await _customer(db, payload),
            scope,
            name,
            "withdrawn",
            source="one_click_unsubscribe",  # type: ignore[arg-type]
        )
    except customer_store.UnknownCustomerError:
        return _gone()
    if isinstance(payload.get("k"), str):  # links made since engagement tracking name their message
        await engagement.record_report(db, "unsubscribe", message_key=payload["k"])
    return _html(
        pages.message_page("You are unsubscribed", f"You will not receive {pages.describe(payload)} any more.")
    )
