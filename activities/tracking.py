"""Click and open tracking: rewrite a rendered message's links to sealed redirect links, add an open pixel.

Called by the send activity after rendering, before delivery (no database work: the tokens carry everything the
API needs to record the click, see ``activities.links.click_url``). What is rewritten, per channel:

- email: every ``href`` of an ``<a>`` or ``<area>`` in the HTML part, and every bare ``http(s)://`` URL in the
  text part; the HTML part also gets a 1x1 pixel (``/o/{token}``) before ``</body>``;
- sms: every bare ``http(s)://`` URL in the text;
- push: ``url``, ``link`` and ``deep_link``, at the top level or under ``data``, when they are ``http(s)`` URLs.

Never rewritten: links that are not ``http(s)`` (``mailto:``, ``tel:``, app deep links), the message's unsubscribe
and preference links (and any link to those pages), an ``<a>`` marked ``data-parcours-track="false"``, and any
text URL that is exactly the message's ``unsubscribe_url``. The same URL in both parts of an email gets one token.
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Callable
from html.parser import HTMLParser
from typing import Any

from linkify_it import LinkifyIt

from activities import links
from config.settings import Settings

# Only links with an explicit http(s) scheme: "example.com" in a sentence stays text, mailto:/ftp: stay as they are.
_LINKIFY = (
    LinkifyIt(options={"fuzzy_link": False, "fuzzy_email": False, "fuzzy_ip": False})
    .add("ftp:", None)
    .add("mailto:", None)
    .add("//", None)
)
_LINK_TAGS = ("a", "area")
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)
PUSH_LINK_FIELDS = ("url", "link", "deep_link")
NO_TRACK_ATTRIBUTE = "data-parcours-track"


def is_trackable(url: str) -> bool:
    return url.strip().lower().startswith(("http://", "https://"))


class _Links:
    """Decides which URLs of one message are rewritten, and seals each distinct URL once."""

    def __init__(self, settings: Settings, payload: dict[str, str], keep: set[str]) -> None:
        self._settings = settings
        self._payload = payload
        self._keep = {url for url in keep if url}
        self._sealed: dict[str, str] = {}

    def rewrite(self, url: str) -> str:
        if not is_trackable(url) or url in self._keep or links.is_own_link(self._settings, url):
            return url
        if url not in self._sealed:
            self._sealed[url] = links.click_url(self._settings, self._payload, url)
        return self._sealed[url]


def track_content(
    settings: Settings,
    channel: str,
    content: dict[str, Any],
    payload: dict[str, str],
    *,
    keep: set[str],
    now: float | None = None,
) -> dict[str, Any]:
    """``content`` (rendered) with its links rewritten for ``channel``; unchanged for channels without links.

    Args:
        payload: ``links.tracking_payload(...)`` for the message.
        keep: URLs never rewritten (the message's unsubscribe and preference URLs).
    """
    rewriter = _Links(settings, payload, keep)
    out = dict(content)
    if channel == "email":
        if isinstance(out.get("text"), str):
            out["text"] = rewrite_text(out["text"], rewriter.rewrite)
        if isinstance(out.get("html"), str):
            pixel = links.open_url(settings, payload, time.time() if now is None else now)
            out["html"] = add_pixel(rewrite_html(out["html"], rewriter.rewrite), pixel)
    elif channel == "sms":
        if isinstance(out.get("text"), str):
            out["text"] = rewrite_text(out["text"], rewriter.rewrite)
    elif channel == "push":
        _rewrite_push_fields(out, rewriter.rewrite)
        if isinstance(out.get("data"), dict):
            out["data"] = dict(out["data"])
            _rewrite_push_fields(out["data"], rewriter.rewrite)
    return out


def _rewrite_push_fields(fields: dict[str, Any], rewrite: Callable[[str], str]) -> None:
    for name in PUSH_LINK_FIELDS:
        if isinstance(fields.get(name), str):
            fields[name] = rewrite(fields[name])


def rewrite_text(text: str, rewrite: Callable[[str], str]) -> str:
    """``text`` with every explicit http(s) URL replaced by ``rewrite(url)``."""
    matches = _LINKIFY.match(text) or []
    if not matches:
        return text
    parts: list[str] = []
    last = 0
    for match in matches:
        parts.append(text[last : match.index])
        parts.append(rewrite(match.raw))
        last = match.last_index
    parts.append(text[last:])
    return "".join(parts)


class _HrefFinder(HTMLParser):
    """Finds the start tags of links: their offsets in the source and their attributes."""

    def __init__(self, source: str) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, int, str, list[tuple[str, str | None]]]] = []
        self._line_starts = [0]
        for index, char in enumerate(source):
            if char == "\n":
                self._line_starts.append(index + 1)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._found(tag, attrs)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._found(tag, attrs)

    def _found(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raw = self.get_starttag_text()
        if tag not in _LINK_TAGS or raw is None:
            return
        line, column = self.getpos()
        start = self._line_starts[line - 1] + column
        self.found.append((start, start + len(raw), raw, attrs))


def rewrite_html(source: str, rewrite: Callable[[str], str]) -> str:
    """``source`` with the ``href`` of every link tag replaced by ``rewrite(href)``; nothing else changes.

    A tag whose href changes is written out again from its parsed attributes (values escaped, quoted with ``"``).
    """
    finder = _HrefFinder(source)
    finder.feed(source)
    finder.close()
    parts: list[str] = []
    last = 0
    for start, end, raw, attrs in finder.found:
        values = dict(attrs)
        href = values.get("href")
        if href is None or (values.get(NO_TRACK_ATTRIBUTE) or "").strip().lower() == "false":
            continue
        new = rewrite(href.strip())
        if new == href.strip() or source[start:end] != raw:
            continue
        parts.append(source[last:start])
        parts.append(_tag(raw, [(k, new if k == "href" else v) for k, v in attrs]))
        last = end
    parts.append(source[last:])
    return "".join(parts)


def _tag(raw: str, attrs: list[tuple[str, str | None]]) -> str:
    name = re.match(r"<\s*([A-Za-z]+)", raw)
    rendered = "".join(f" {k}" if v is None else f' {k}="{html.escape(v, quote=True)}"' for k, v in attrs)
    closing = "/>" if raw.rstrip().endswith("/>") else ">"
    return f"<{name.group(1) if name else 'a'}{rendered}{closing}"


def add_pixel(source: str, pixel_url: str) -> str:
    """``source`` with a 1x1 image of ``pixel_url`` before the last ``</body>`` (at the end when there is none)."""
    image = (
        f'<img src="{html.escape(pixel_url, quote=True)}" width="1" height="1" alt="" '
        'style="display:block;width:1px;height:1px;border:0;" />'
    )
    ends = list(_BODY_END.finditer(source))
    if not ends:
        return source + image
    at = ends[-1].start()
    return source[:at] + image + source[at:]
