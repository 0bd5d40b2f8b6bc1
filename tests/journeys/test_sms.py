"""SMS encoding and segment counts at the boundaries: what a text costs to send."""

from __future__ import annotations

import pytest

from journeys import parse_journey
from journeys.sms import measure
from journeys.validation import sms_length_issues


@pytest.mark.parametrize(
    ("text", "encoding", "segments"),
    [
        ("a" * 160, "GSM-7", 1),
        ("a" * 161, "GSM-7", 2),
        ("a" * 306, "GSM-7", 2),  # 2 x 153
        ("a" * 307, "GSM-7", 3),
        ("é" * 160, "GSM-7", 1),  # é is in the GSM 03.38 alphabet
        ("a" * 158 + "€", "GSM-7", 1),  # € takes two septets: 160
        ("a" * 159 + "€", "GSM-7", 2),  # 161 septets
        # 306 septets would fit two parts, but the escape pair never straddles them: 152, then 2 + 152 > 153.
        ("a" * 152 + "[" + "a" * 152, "GSM-7", 3),
        ("a" * 69 + "ç", "UCS-2", 1),  # ç is not GSM-7: 70 UCS-2 units
        ("a" * 70 + "ç", "UCS-2", 2),
        ("ç" * 134, "UCS-2", 2),  # 2 x 67
        ("ç" * 135, "UCS-2", 3),
        ("a" * 68 + "😀", "UCS-2", 1),  # an emoji is a surrogate pair: 70 units
        ("a" * 66 + "😀" + "a" * 66, "UCS-2", 3),  # 134 units, but the surrogate pair is not split
    ],
)
def test_segments_at_the_boundaries(text: str, encoding: str, segments: int) -> None:
    length = measure(text)
    assert (length.encoding, length.segments) == (encoding, segments)


def test_units_count_extension_characters_twice_and_surrogates_twice() -> None:
    assert measure("{}").units == 4
    assert measure("😀").units == 2


def _journey(text: str) -> dict[str, object]:
    return {
        "id": "sms-limit",
        "name": "SMS limit",
        "trigger": {"event": "go"},
        "steps": [{"id": "offer", "type": "send", "channel": "sms", "template": {"text": text}}],
    }


def test_publish_refuses_a_static_text_over_the_segment_limit_and_names_the_field() -> None:
    journey = parse_journey(_journey("a" * 307))
    [issue] = sms_length_issues(journey, max_segments=2)
    assert issue.field == "template.text" and "3 segments" in issue.message
    assert sms_length_issues(journey, max_segments=3) == []


def test_a_text_with_liquid_is_measured_when_sent_not_at_publish() -> None:
    journey = parse_journey(_journey("{{ customer.first_name }}" + "a" * 400))
    assert sms_length_issues(journey, max_segments=1) == []
