"""A message preview as the console draws it (``templates/preview.html``), for the journey editor and the
new-broadcast form alike: each channel's content, the template variables the customer or event lacks (they
rendered empty), the email's document for its sandboxed frame (its HTML part, or the text part as a mail client
shows it) and the SMS's segment count, and the send policy's decision."""

from __future__ import annotations

from html import escape
from typing import Any

from api import previews
from journeys.sms import measure

_SHOWN_APART = {"subject", "text", "html", "title", "body", "error", "locales"}


def shown(preview: previews.Preview) -> dict[str, Any]:
    """The preview as ``preview.html`` draws it."""
    channels = []
    for channel, content in preview.channels.items():
        item: dict[str, Any] = {"channel": channel, "content": content, "error": content.get("error")}
        if channel == "email" and not item["error"]:
            html = content.get("html")
            item["html_part"] = bool(html)
            item["frame"] = html if html else text_document(str(content.get("text", "")))
        elif channel == "sms" and not item["error"]:
            length = measure(str(content.get("text", "")))
            item["sms"] = {"encoding": length.encoding, "units": length.units, "segments": length.segments}
        item["extra"] = {k: v for k, v in content.items() if k not in _SHOWN_APART}
        item["missing"] = preview.missing.get(channel, [])
        channels.append(item)
    return {"customer_id": preview.customer_id, "channels": channels, "decision": preview.decision}


def text_document(text: str) -> str:
    """A text-only email as a mail client shows it."""
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><style>body{margin:0;padding:12px;'
        "font:14px/1.5 system-ui,sans-serif;color:#1a1a1a;background:#fff}pre{white-space:pre-wrap;"
        f"overflow-wrap:anywhere;font:inherit;margin:0}}</style></head><body><pre>{escape(text)}</pre></body></html>"
    )
