"""SMS length: which encoding a text needs and how many segments (parts of a concatenated SMS) it takes.

A text made only of characters of the GSM 03.38 default alphabet goes as GSM-7: 160 characters fit one SMS; a
longer text is split into parts of 153 (7 septets go to the concatenation header). A character of the alphabet's
extension table (``^ { } \\ [ ~ ] | €`` and form feed) takes two septets, an escape and itself, and the two are
never split across parts. Any other character (an emoji, ``ç``, a curly quote) turns the whole text into UCS-2:
70 UTF-16 code units in one SMS, parts of 67; a character outside the Basic Multilingual Plane takes two units,
never split either. Providers bill per segment, so the segment count is what a message costs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Encoding = Literal["GSM-7", "UCS-2"]

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

SINGLE = {"GSM-7": 160, "UCS-2": 70}
"""Units that fit one SMS."""
PART = {"GSM-7": 153, "UCS-2": 67}
"""Units per part of a concatenated SMS."""


@dataclass(frozen=True)
class SmsLength:
    encoding: Encoding
    units: int
    """Septets (GSM-7) or UTF-16 code units (UCS-2)."""
    segments: int


def encoding_of(text: str) -> Encoding:
    return "GSM-7" if all(c in GSM7_BASIC or c in GSM7_EXTENSION for c in text) else "UCS-2"


def _width(c: str, encoding: Encoding) -> int:
    if encoding == "GSM-7":
        return 2 if c in GSM7_EXTENSION else 1
    return 2 if ord(c) > 0xFFFF else 1


def measure(text: str) -> SmsLength:
    """The encoding, length in units and number of segments of ``text`` (an empty text is one segment)."""
    encoding = encoding_of(text)
    widths = [_width(c, encoding) for c in text]
    units = sum(widths)
    if units <= SINGLE[encoding]:
        return SmsLength(encoding, units, 1)
    part, segments, used = PART[encoding], 1, 0
    for width in widths:
        if used + width > part:  # a two-unit character is never split: it starts the next part
            segments += 1
            used = 0
        used += width
    return SmsLength(encoding, units, segments)


_LIQUID = re.compile(r"{{|{%")


def is_static(text: str) -> bool:
    """Whether a template is its own rendering (no Liquid output or tags), so its length is known at publish."""
    return _LIQUID.search(text) is None
