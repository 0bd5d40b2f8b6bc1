"""The test sends' log and their budget per sender (``test_sends``, migration 0023).

A test send goes out without consent, caps or quiet hours (that is its point), to whatever address or device the
caller gives; so it is bounded per sender (a fingerprint of the API key, or ``cli``) over a sliding hour, across
every API process, and each one is written down. ``claim`` decides and writes in one transaction under an
advisory lock on the sender, so two concurrent test sends of one key cannot both take the last place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from store.db import Db, transaction

WINDOW = timedelta(hours=1)
KEPT = timedelta(days=30)
"""How long the log keeps a test send: older rows go at the next claim (whoever's; the table is small, as each key
makes at most ``test_sends_per_hour``)."""

_LOCK_SQL = "SELECT pg_advisory_xact_lock(hashtextextended('parcours.test-send:' || $1, 0))"


@dataclass(frozen=True)
class Claim:
    """A claimed test send: ``left`` more this hour; or a refused one: ``retry_after`` seconds."""

    left: int
    retry_after: float | None = None


async def claim(db: Db, sender: str, channel: str, recipient: str, *, per_hour: int) -> Claim:
    """Take one of ``sender``'s ``per_hour`` test sends and log it; refused (nothing written) when the last hour
    has had them all, with the seconds until the oldest of them leaves the window."""
    async with transaction(db) as conn:
        await conn.execute(_LOCK_SQL, sender)
        now = datetime.now(UTC)
        await conn.execute("DELETE FROM test_sends WHERE sent_at < $1", now - KEPT)
        recent = await conn.fetch(
            "SELECT sent_at FROM test_sends WHERE sender = $1 AND sent_at > $2 ORDER BY sent_at DESC LIMIT $3",
            sender,
            now - WINDOW,
            per_hour,
        )
        if len(recent) >= per_hour:
            frees_at = recent[-1]["sent_at"] + WINDOW
            return Claim(left=0, retry_after=max(1.0, math.ceil((frees_at - now).total_seconds())))
        await conn.execute(
            "INSERT INTO test_sends (sender, channel, recipient, sent_at) VALUES ($1, $2, $3, $4)",
            sender,
            channel,
            recipient,
            now,
        )
    return Claim(left=per_hour - len(recent) - 1)
