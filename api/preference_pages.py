"""Server-rendered HTML of the hosted preference page and the unsubscribe pages.

No JavaScript; every input has a label, groups are fieldsets with legends, the language is declared, colours
meet WCAG AA contrast, and focus is always visible. Every value is escaped.
"""

from __future__ import annotations

from html import escape
from typing import Any
from zoneinfo import available_timezones

from store.preferences import CONSENT_CHANNELS, FREQUENCIES, CustomerPreferences

_CHANNEL_LABELS = {"email": "Email", "sms": "Text messages (SMS)", "push": "Push notifications", "in_app": "In the app"}
_FREQUENCY_LABELS = {
    "daily": "At most one message a day",
    "weekly": "At most one message a week",
    "monthly": "At most one message a month",
    "none": "No limit",
}
_TIMEZONES = sorted(available_timezones())

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;color:#1a1a1a;background:#fff;margin:0;line-height:1.5}
main{max-width:40rem;margin:0 auto;padding:1.5rem}
h1{font-size:1.6rem;margin-top:0}
fieldset{border:1px solid #6b6b6b;border-radius:6px;margin:0 0 1.25rem;padding:.75rem 1rem}
legend{font-weight:600;padding:0 .25rem}
.choice{display:flex;gap:.5rem;align-items:flex-start;margin:.35rem 0}
.choice input{margin-top:.35rem;width:1.1rem;height:1.1rem}
.hint{color:#4a4a4a;font-size:.9rem;display:block}
label.block{display:block;margin:.5rem 0 .2rem;font-weight:500}
input[type=time],input[type=text],select{font:inherit;padding:.3rem .4rem;border:1px solid #6b6b6b;border-radius:4px}
button{font:inherit;font-weight:600;color:#fff;background:#0b4f9c;border:0;border-radius:6px;
  padding:.6rem 1.2rem;cursor:pointer}
button:hover{background:#083b75}
:focus-visible{outline:3px solid #b35c00;outline-offset:2px}
.status{background:#e6f4ea;border:1px solid #1e6b34;color:#12441f;padding:.6rem .9rem;border-radius:6px}
.error{background:#fdecea;border:1px solid #a4251b;color:#6d1710;padding:.6rem .9rem;border-radius:6px}
.error a{color:#6d1710}.field-error{color:#a4251b;font-weight:600;margin:.2rem 0}
a{color:#0b4f9c}
"""

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'"
    ),
}


def headers() -> dict[str, str]:
    return dict(_HEADERS)


def _page(title: str, body: str) -> str:
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n<meta name="robots" content="noindex">\n'
        f"<title>{escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def message_page(title: str, text: str) -> str:
    """A page that only says something (invalid or expired link, unsubscribed)."""
    return _page(title, f"<h1>{escape(title)}</h1>\n<p>{escape(text)}</p>")


def _checkbox(name: str, value: str, label: str, checked: bool, hint: str = "") -> str:
    ident = f"{name}-{value}"
    hint_html = f'<span class="hint" id="{escape(ident)}-hint">{escape(hint)}</span>' if hint else ""
    described = f' aria-describedby="{escape(ident)}-hint"' if hint else ""
    return (
        f'<div class="choice"><input type="checkbox" id="{escape(ident)}" name="{escape(name)}" value="{escape(value)}"'
        f"{' checked' if checked else ''}{described}>"
        f'<label for="{escape(ident)}">{escape(label)}{hint_html}</label></div>'
    )


def _radio(name: str, value: str, label: str, checked: bool) -> str:
    ident = f"{name}-{value}"
    return (
        f'<div class="choice"><input type="radio" id="{escape(ident)}" name="{escape(name)}" value="{escape(value)}"'
        f'{" checked" if checked else ""}><label for="{escape(ident)}">{escape(label)}</label></div>'
    )


def _options(values: list[tuple[str, str]], selected: str | None) -> str:
    return "".join(
        f'<option value="{escape(v)}"{" selected" if v == (selected or "") else ""}>{escape(label)}</option>'
        for v, label in values
    )


_ANCHORS = {"channel": "channels", "topic": "topics", "frequency": "frequencies", "interest": "interests"}
"""Where a field's entry in the error list leads: the fieldset of a group of boxes, else the field itself."""


def preference_page(
    data: CustomerPreferences,
    interests: list[str],
    *,
    action: str,
    saved: bool = False,
    errors: dict[str, str] | None = None,
) -> str:
    """The form, showing the stored preferences; ``errors`` (field name to what is wrong): each is said next to
    its field (``{field}-error``, referenced by the field's ``aria-describedby``) and all in a list at the top."""
    prefs = data.preferences
    errors = errors or {}
    status = ""
    if saved:
        status = '<p class="status" role="status">Saved. Your preferences apply from the next message.</p>'
    if errors:
        items = "".join(
            f'<li><a href="#{_ANCHORS.get(f, f)}">{escape(f"{m} (field {f!r})")}</a></li>' for f, m in errors.items()
        )
        count = "1 thing needs" if len(errors) == 1 else f"{len(errors)} things need"
        status = f'<div class="error" role="alert"><p>{count} fixing; nothing was saved.</p><ul>{items}</ul></div>'

    def problem(field: str) -> str:
        message = errors.get(field)
        return f'<p class="field-error" id="{field}-error">{escape(message)}</p>' if message else ""

    def described(field: str, *also: str) -> str:
        ids = " ".join([*also, f"{field}-error" if field in errors else ""]).strip()
        invalid = ' aria-invalid="true"' if field in errors else ""
        return (f' aria-describedby="{ids}"' if ids else "") + invalid

    def group(field: str) -> str:
        """A fieldset of boxes points at its field's message (no aria-invalid: it is not a control)."""
        return f' aria-describedby="{field}-error"' if field in errors else ""

    channels = "".join(
        _checkbox("channel", c, _CHANNEL_LABELS[c], prefs.channels.get(c, False)) for c in CONSENT_CHANNELS
    )
    topics = "".join(
        _checkbox("topic", t["name"], t["label"] or t["name"], prefs.topics.get(t["name"], False), t["description"])
        for t in data.topics
    )
    topics_block = (
        f'<fieldset id="topics"{group("topic")}><legend>Topics</legend>'
        f'<p class="hint">What we may write to you about.</p>{problem("topic")}{topics}</fieldset>'
        if data.topics or "topic" in errors
        else ""
    )
    frequency = "".join(_radio("frequency", f, _FREQUENCY_LABELS[f], prefs.frequency == f) for f in FREQUENCIES)
    start, _, end = (prefs.quiet_hours or "").partition("-")
    preferred = _options(
        [("", "No preference")] + [(c, _CHANNEL_LABELS[c]) for c in (*CONSENT_CHANNELS, "in_app")],
        prefs.preferred_channel,
    )
    zones = _options([("", "Not set")] + [(z, z) for z in _TIMEZONES], prefs.timezone)
    interest_boxes = "".join(
        _checkbox("interest", i, i.replace("_", " ").capitalize(), i in prefs.interests) for i in interests
    )
    interests_block = (
        f'<fieldset id="interests"{group("interest")}><legend>Your interests</legend>'
        f'<p class="hint">Tell us what you like and we will send what matters to you.</p>'
        f"{problem('interest')}{interest_boxes}</fieldset>"
        if interests or "interest" in errors
        else ""
    )
    who = f" for {escape(data.email)}" if data.email else ""
    body = f"""<h1>Your communication preferences</h1>
<p>Choose how and how often we contact you{who}.</p>
{status}
<form method="post" action="{escape(action)}">
<fieldset id="channels"{group("channel")}><legend>Channels</legend>
<p class="hint">Marketing messages reach you only on the channels you tick.</p>{problem("channel")}{channels}</fieldset>
{topics_block}
<fieldset id="frequencies"{group("frequency")}><legend>How often</legend>{problem("frequency")}{frequency}</fieldset>
<fieldset><legend>Quiet hours</legend>
<p class="hint" id="quiet-hint">No marketing between these times, in your time zone. Leave both empty for none.</p>
<label class="block" for="quiet_start">From</label>
<input type="time" id="quiet_start" name="quiet_start" value="{escape(start)}"{described("quiet_start", "quiet-hint")}>
{problem("quiet_start")}
<label class="block" for="quiet_end">Until</label>
<input type="time" id="quiet_end" name="quiet_end" value="{escape(end)}"{described("quiet_end", "quiet-hint")}>
{problem("quiet_end")}
</fieldset>
<fieldset><legend>About you</legend>
<label class="block" for="preferred_channel">Preferred channel</label>
<select id="preferred_channel" name="preferred_channel"{described("preferred_channel")}>{preferred}</select>
{problem("preferred_channel")}
<label class="block" for="timezone">Time zone</label>
<select id="timezone" name="timezone"{described("timezone")}>{zones}</select>
{problem("timezone")}
<label class="block" for="language">Language</label>
<input type="text" id="language" name="language" value="{escape(prefs.locale or "")}" autocomplete="language"
 size="10"{described("language", "language-hint")}>
<span class="hint" id="language-hint">A language code such as en, fr or fr-CA.</span>
{problem("language")}
</fieldset>
{interests_block}
<button type="submit">Save preferences</button>
</form>"""
    return _page("Your communication preferences", body)


def unsubscribe_confirm_page(what: str, action: str, preferences_action: str | None) -> str:
    prefs = (
        f'<p>Or <a href="{escape(preferences_action)}">choose what you receive</a> instead.</p>'
        if preferences_action
        else ""
    )
    body = f"""<h1>Unsubscribe</h1>
<p>Stop receiving {escape(what)}?</p>
<form method="post" action="{escape(action)}">
<input type="hidden" name="List-Unsubscribe" value="One-Click">
<button type="submit">Unsubscribe</button>
</form>
{prefs}"""
    return _page("Unsubscribe", body)


def describe(payload: dict[str, Any]) -> str:
    topic, channel = payload.get("t"), payload.get("ch")
    if topic:
        return f"messages about “{topic}”"
    return f"marketing by {_CHANNEL_LABELS.get(str(channel), str(channel))}"
