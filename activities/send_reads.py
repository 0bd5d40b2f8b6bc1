"""Where the send policy reads a customer's state: one statement per question, or a batch's answers read at once.

``SendReads`` asks PostgreSQL each question as the send comes to it (a journey's single send: the customer row
under lock, the key, consent, topics, devices, suppression, recent marketing). ``BatchReads`` answers the same
questions for a whole batch of sends from a handful of set-based statements run once, inside the batch's
transaction and after every customer row of the batch is locked (``customer_store.lock_customers``): what it
holds is what each single send would have read under its own lock, since nothing that changes it (a consent
change, an erasure, another send to the customer) can commit while the batch decides. The batch delivers after
that transaction (``JourneyActivities.send_batch``), so these answers are never used once delivery begins.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime, timedelta

from activities.models import SendRequest
from store import customers as customer_store
from store import devices as device_store
from store import messages as message_store
from store import preferences as preference_store
from store import suppressions
from store.db import Connection


class SendReads:
    """One statement per question, on the send's connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.besides: list[str] = []
        """Idempotency keys frequency caps do not count: the sends being decided (a batch's pending rows)."""
        self.lock = asyncio.Lock()
        """Held around every statement a send of a batch runs on the shared connection (one at a time)."""

    async def customer(self, customer_id: str, *, lock: bool) -> customer_store.Customer | None:
        return await customer_store.get_customer(self.conn, customer_id, lock=lock)

    async def existing(self, idempotency_key: str) -> message_store.MessageStatus | None:
        return await message_store.message_status(self.conn, idempotency_key)

    async def consent(self, customer_id: str) -> list[customer_store.Consent]:
        return await customer_store.consent_of(self.conn, customer_id)

    async def topic_defaults(self) -> dict[str, str]:
        return await preference_store.topic_defaults(self.conn)

    async def devices(self, customer_id: str) -> list[str]:
        return await device_store.active_device_ids(self.conn, customer_id)

    async def suppression(self, channel: str, address: str | None) -> str | None:
        return await suppressions.suppression_for(self.conn, channel, address)

    async def marketing_sent_since(self, customer_id: str, since: datetime) -> list[message_store.SentMessage]:
        return await message_store.marketing_sent_since(self.conn, customer_id, since, besides=self.besides)


class BatchReads(SendReads):
    """A batch's answers, read in one statement per kind of question after its customers are locked."""

    CAP_HORIZON = timedelta(days=31)
    """How far back recent marketing is read for everyone at once: the longest cap a customer's own preference
    names (``monthly``: 30 days), with a day to spare. A longer cap (global, or a customer's ``{limit, per}``)
    reads that customer's history on its own."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(conn)
        self._customers: dict[str, customer_store.Customer] = {}
        self._existing: dict[str, message_store.MessageStatus] = {}
        self._consent: dict[str, list[customer_store.Consent]] = {}
        self._topics: dict[str, str] = {}
        self._devices: dict[str, list[str]] | None = None
        self._suppressed: dict[tuple[str, str], str] = {}
        self._recent: dict[str, list[message_store.SentMessage]] = {}
        self._since: datetime | None = None

    @classmethod
    async def load(cls, conn: Connection, requests: Sequence[SendRequest], now: datetime) -> BatchReads:
        """Lock the batch's customers (in id order), then read everything their sends will ask."""
        reads = cls(conn)
        reads.besides = [r.idempotency_key for r in requests]
        ids = sorted({r.customer_id for r in requests})
        reads._customers = await customer_store.lock_customers(conn, ids)
        present = list(reads._customers)
        reads._existing = await message_store.message_statuses(conn, [r.idempotency_key for r in requests])
        reads._consent = await customer_store.consents_of(conn, present)
        reads._topics = await preference_store.topic_defaults(conn)
        if any("push" in (r.candidates or [r.channel]) for r in requests):
            reads._devices = await device_store.active_device_ids_many(conn, present)
        addresses = [
            (channel, c.email if channel == "email" else c.phone)
            for c in reads._customers.values()
            for channel in ("email", "sms")
        ]
        reads._suppressed = await suppressions.suppressions_for(conn, addresses)
        if any(r.kind == "marketing" for r in requests):
            reads._since = now - cls.CAP_HORIZON
            reads._recent = await message_store.marketing_sent_since_many(
                conn, present, reads._since, besides=reads.besides
            )
        return reads

    async def customer(self, customer_id: str, *, lock: bool) -> customer_store.Customer | None:
        return self._customers.get(customer_id)

    async def existing(self, idempotency_key: str) -> message_store.MessageStatus | None:
        return self._existing.get(idempotency_key)

    async def consent(self, customer_id: str) -> list[customer_store.Consent]:
        return self._consent.get(customer_id, [])

    async def topic_defaults(self) -> dict[str, str]:
        return self._topics

    async def devices(self, customer_id: str) -> list[str]:
        if self._devices is None:
            async with self.lock:
                return await super().devices(customer_id)
        return self._devices.get(customer_id, [])

    async def suppression(self, channel: str, address: str | None) -> str | None:
        if not address or channel not in ("email", "sms"):
            return None
        return self._suppressed.get((channel, suppressions.normalize_address(channel, address)))

    async def marketing_sent_since(self, customer_id: str, since: datetime) -> list[message_store.SentMessage]:
        if self._since is None or since < self._since:
            async with self.lock:
                return await super().marketing_sent_since(customer_id, since)
        return [m for m in self._recent.get(customer_id, []) if m.decided_at > since]
