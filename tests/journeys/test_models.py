"""journeys/models.py: a journey's send step and a broadcast share one model of a message (``MessageFields``):
the same fields, checked alike; and a stored journey definition's checksum did not change when they did."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from journeys import parse_journey
from journeys.broadcasts import Broadcast
from journeys.models import MessageFields, SendStep
from journeys.validation import JourneyValidationError
from store.journeys import checksum

DEFINITION: dict[str, Any] = {
    "id": "checksum-fixture",
    "name": "Checksum fixture",
    "trigger": {"event": "signed_up"},
    "steps": [
        {
            "id": "hello",
            "type": "send",
            "label": "Say hello",
            "channel": "email",
            "template": {
                "subject": "Hi {{ customer.first_name }}",
                "text": "Welcome",
                "locales": {"fr": {"subject": "Salut"}},
            },
            "topic": "news",
            "kind": "marketing",
            "quiet_hours": "skip",
            "when_capped": "wait",
            "track": False,
            "next": "nudge",
        },
        {
            "id": "nudge",
            "type": "send",
            "channels": ["push", "email"],
            "content": {
                "push": {"title": "Hey", "body": "Come back"},
                "email": {"subject": "Hey", "text": "Come back"},
            },
            "kind": "transactional",
        },
    ],
}
CHECKSUM_BEFORE_THE_SHARED_MODEL = "ee0204fbab52472b6ab6891f5fa47e02446729fa26b4b76da2063e3d5b09ed86"
"""``store.journeys.checksum`` of DEFINITION, computed on the code before ``MessageFields`` existed (commit
1f800f7): a published version whose checksum changed would be published again as a new version."""


def test_a_stored_definitions_checksum_is_unchanged() -> None:
    assert checksum(parse_journey(DEFINITION)) == CHECKSUM_BEFORE_THE_SHARED_MODEL


def broadcast(**message: Any) -> Broadcast:
    return Broadcast.model_validate(
        {"id": "b", "segment": {"where": [{"field": "profile.a", "op": "exists"}]}, **message}
    )


def step(**message: Any) -> SendStep:
    journey = parse_journey({**DEFINITION, "steps": [{"id": "s", "type": "send", **message}]})
    sent = journey.steps[0]
    assert isinstance(sent, SendStep)
    return sent


@pytest.mark.parametrize(
    ("message", "complaint"),
    [
        ({"channel": "email"}, "needs a 'template'"),
        ({"channel": "fax", "template": {"text": "t"}}, "unknown channel 'fax'"),
        ({"channels": ["sms", "email"], "content": {"email": {"text": "t"}}}, "'content' has nothing for it"),
        ({"channel": "email", "channels": ["email"], "template": {"text": "t"}}, "either 'channel'"),
        ({"channel": "email", "template": {"subject": "s"}}, "needs 'text' or 'html'"),
    ],
)
def test_a_broadcast_and_a_send_step_refuse_the_same_message_alike(message: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        broadcast(**message)
    with pytest.raises(JourneyValidationError, match=complaint):
        step(**message)


def test_a_broadcasts_message_is_the_send_step_its_messages_go_through() -> None:
    message = {
        "channels": "preferred",
        "content": {"sms": {"text": "Sale"}, "email": {"subject": "Sale", "text": "Sale"}},
        "topic": "promotions",
        "quiet_hours": "skip",
        "track": False,
    }
    b = broadcast(**message)
    assert b.send_step().message_fields() == step(**message).message_fields() == b.message_fields()
    assert set(MessageFields.model_fields) <= set(Broadcast.model_fields) & set(SendStep.model_fields)
    assert b.send_step().candidates() == ["sms", "email"]
