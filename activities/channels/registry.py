"""Which adapter delivers each channel, as the settings say (``PARCOURS_CHANNEL_<NAME>``)."""

from __future__ import annotations

import httpx
import structlog

from activities.channels.base import Channel
from activities.channels.console import ConsoleChannel
from activities.channels.email import SmtpEmailChannel
from activities.channels.push import DevicesPushChannel
from activities.channels.sms import HttpSmsChannel, TwilioSmsChannel
from activities.channels.webhook import WebhookChannel
from config.settings import ChannelBackend, Settings
from store.db import Pool

CHANNEL_NAMES = ("email", "sms", "push", "in_app", "webhook")

log = structlog.get_logger()


def _backend(settings: Settings, name: str) -> ChannelBackend:
    backend: ChannelBackend = getattr(settings, f"channel_{name}")
    return backend


def build_channels(
    settings: Settings,
    *,
    inbox: Channel | None = None,
    http_client: httpx.AsyncClient | None = None,
    pool: Pool | None = None,
) -> dict[str, Channel]:
    """One adapter per channel name.

    Args:
        inbox: the in-app inbox adapter, for channels whose backend is ``inbox``. It needs the database
            pool, so the caller builds it; without one those channels log to the console.
        http_client: shared by webhook and SMS adapters (and then closed by its owner, not by ``close_channels``).
        pool: the database pool, for the ``devices`` push adapter (it reads and deactivates devices).
    """
    channels: dict[str, Channel] = {}
    for name in CHANNEL_NAMES:
        backend = _backend(settings, name)
        channel: Channel
        if backend == "smtp":
            channel = SmtpEmailChannel(settings, name=name)
        elif backend == "webhook":
            channel = WebhookChannel(settings, http_client, name=name)
        elif backend == "twilio":
            channel = TwilioSmsChannel(settings, http_client, name=name)
        elif backend == "http":
            channel = HttpSmsChannel(settings, http_client, name=name)
        elif backend == "devices":
            if pool is None:
                raise ValueError(f"channel {name!r}: the devices push adapter needs the database pool")
            channel = DevicesPushChannel(settings, pool, name=name)
        elif backend == "inbox" and inbox is not None:
            channel = inbox
        elif backend == "inbox":
            log.warning(
                "inbox channel unavailable, delivering to the console instead",
                channel=name,
                reason="build_channels was given no inbox adapter",
            )
            channel = ConsoleChannel(name)
        elif backend == "console":
            channel = ConsoleChannel(name)
        else:
            raise ValueError(f"unknown backend {backend!r} for channel {name!r}")
        channels[name] = channel
    return channels


async def close_channels(channels: dict[str, Channel]) -> None:
    """Close every adapter once, even if closing one of them fails."""
    seen: set[int] = set()
    for name, channel in channels.items():
        if id(channel) in seen:
            continue
        seen.add(id(channel))
        try:
            await channel.close()
        except Exception:
            log.exception("closing channel failed", channel=name)
