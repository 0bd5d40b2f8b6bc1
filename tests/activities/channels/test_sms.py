"""The Twilio and generic HTTP SMS adapters against a Twilio fake and a plain HTTP receiver."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from activities.channels.base import OutboundMessage, PermanentDeliveryError, TransientDeliveryError
from activities.channels.sms import HttpSmsChannel, TwilioSmsChannel
from config.settings import Settings
from tests.support.providers import TwilioFake, running
from tests.support.webhooks import Reply, WebhookSink


def sms(text: str, to: str = "+33612345678") -> OutboundMessage:
    return OutboundMessage(
        idempotency_key=f"key-{uuid.uuid4().hex}",
        customer_id="cust-1",
        channel="sms",
        recipient=to,
        journey_id="j",
        step_id="s",
        content={"text": text},
    )


def twilio_settings(fake: TwilioFake, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "twilio_account_sid": fake.account_sid,
        "twilio_auth_token": fake.auth_token,
        "twilio_from": "+15005550006",
        "twilio_base_url": fake.url,
        "public_base_url": "https://parcours.example",
    }
    return Settings(**{**values, **overrides})


async def test_twilio_sends_the_documented_form_and_records_segments_and_cost() -> None:
    async with running(TwilioFake()) as fake:
        channel = TwilioSmsChannel(twilio_settings(fake, channel_costs={"sms": 0.05}))
        try:
            result = await channel.deliver(sms("Bonjour ç" + "a" * 70))  # UCS-2, 80 units: 2 segments
        finally:
            await channel.close()
    [message] = fake.messages
    assert result.provider_message_id == message.sid and message.sid.startswith("SM")
    assert (message.to, message.sender) == ("+33612345678", "+15005550006")
    assert message.status_callback == "https://parcours.example/v1/providers/twilio/status"
    assert (result.encoding, result.segments, result.cost) == ("UCS-2", 2, 0.1)


async def test_twilio_with_a_messaging_service_sends_no_from() -> None:
    async with running(TwilioFake()) as fake:
        channel = TwilioSmsChannel(twilio_settings(fake, twilio_from=None, twilio_messaging_service_sid="MG123"))
        try:
            await channel.deliver(sms("hello"))
        finally:
            await channel.close()
    assert fake.messages[0].form.get("MessagingServiceSid") == "MG123" and "From" not in fake.messages[0].form


async def test_twilio_refusals_are_permanent_with_the_code_and_bad_credentials_are_retried() -> None:
    async with running(TwilioFake(opted_out={"+33611111111"})) as fake:
        channel = TwilioSmsChannel(twilio_settings(fake))
        wrong = TwilioSmsChannel(twilio_settings(fake, twilio_auth_token="not-the-token"))
        try:
            with pytest.raises(PermanentDeliveryError) as opted_out:
                await channel.deliver(sms("hi", to="+33611111111"))
            with pytest.raises(PermanentDeliveryError) as invalid:
                await channel.deliver(sms("hi", to="0612"))
            with pytest.raises(TransientDeliveryError) as unauthenticated:
                await wrong.deliver(sms("hi"))
        finally:
            await channel.close()
            await wrong.close()
    assert opted_out.value.response["twilio_code"] == 21610
    assert invalid.value.response["twilio_code"] == 21211
    assert unauthenticated.value.response["twilio_code"] == 20003
    assert fake.messages == []


async def test_a_text_over_the_segment_limit_is_refused_before_the_provider_is_called() -> None:
    async with running(TwilioFake()) as fake:
        channel = TwilioSmsChannel(twilio_settings(fake, sms_max_segments=2))
        try:
            with pytest.raises(PermanentDeliveryError, match="3 segments"):
                await channel.deliver(sms("a" * 307))
            await channel.deliver(sms("a" * 306))
        finally:
            await channel.close()
    assert len(fake.messages) == 1


async def test_generic_http_sms_renders_the_body_template_and_sends_the_idempotency_key(
    webhook_sink: WebhookSink,
) -> None:
    webhook_sink.enqueue(Reply(202, {"message_id": "prov-42"}), 503)
    settings = Settings(
        sms_http_url=webhook_sink.url,
        sms_http_headers={"Authorization": "Key abc"},
        sms_http_body={"destination": "{{ to }}", "content": {"text": "{{ text }}"}, "ref": "{{ idempotency_key }}"},
        sms_http_from="Parcours",
    )
    channel = HttpSmsChannel(settings)
    message = sms("Hello {braces}")
    try:
        result = await channel.deliver(message)
        with pytest.raises(TransientDeliveryError):
            await channel.deliver(message)
    finally:
        await channel.close()
    request = webhook_sink.requests[0]
    assert request.json() == {
        "destination": "+33612345678",
        "content": {"text": "Hello {braces}"},
        "ref": message.idempotency_key,
    }
    assert request.headers["authorization"] == "Key abc"
    assert request.headers["idempotency-key"] == message.idempotency_key
    assert (result.provider_message_id, result.encoding, result.segments) == ("prov-42", "GSM-7", 1)
