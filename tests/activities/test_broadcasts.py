"""A broadcast batch's heartbeat, against the dev server's real heartbeat timeout (30 s)."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections import Counter
from typing import Any

import asyncpg
import pytest

from contracts.broadcast import BroadcastResult
from journeys.broadcasts import Broadcast
from orchestration.broadcasts import start_broadcast
from store import broadcasts as broadcast_store
from store import create_pool
from tests.support.engine import consenting_customers, running_engine, where_tag
from tests.support.mail import SmtpSink

pytestmark = [pytest.mark.devserver, pytest.mark.timeout(240)]

RECIPIENTS = 30
STALL_SECONDS = 45
"""Longer than the batch's heartbeat timeout (30 s) and the worker's heartbeat throttle after it."""


class GatedSink(SmtpSink):
    """The SMTP sink, answering no DATA until ``gate`` is set (a mail server that stalls); ``waiting``: DATA
    commands it holds."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.waiting = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.waiting += 1
        await asyncio.to_thread(self.gate.wait)
        self.waiting -= 1
        return await super().handle_DATA(server, session, envelope)


async def test_a_batch_stalled_past_its_heartbeat_timeout_with_the_pool_held_sends_nobody_two_copies(
    dev_env: Any, database_url: str, pool: asyncpg.Pool
) -> None:
    """A slow SMTP server stalls the batch's chunk, and meanwhile other work holds every pooled connection of the
    worker (in production: single sends stuck on the same slow server, each holding its transaction). The batch
    must keep heartbeating: a batch timed out while its chunk is on its way is retried, and the retry delivers
    the chunk's pending sends a second time."""
    sink = GatedSink()
    await sink.start()
    worker_pool = await create_pool(database_url, min_size=1, max_size=3)
    held: list[Any] = []
    try:
        async with running_engine(
            dev_env, worker_pool, sink, database_pool_max=3, smtp_connections=1, smtp_timeout_seconds=120
        ) as engine:
            tag = uuid.uuid4().hex
            ids = [f"hb-{tag[:8]}-{i:03d}" for i in range(RECIPIENTS)]
            await consenting_customers(pool, ids, tag)
            b = Broadcast.model_validate(
                {
                    "id": f"hb-{tag[:10]}",
                    "segment": where_tag(tag),
                    "channel": "email",
                    "template": {"subject": "Sale", "text": "Winter sale"},
                }
            )
            assert await broadcast_store.create_broadcast(pool, b) is not None
            handle = await start_broadcast(engine.client, b, task_queue=engine.settings.task_queue)
            assert handle is not None
            while sink.waiting == 0:  # noqa: ASYNC110 - the sink counts in its own thread
                await asyncio.sleep(0.05)
            # The chunk is decided and on its way; now nothing of the worker's gets a connection.
            held = [await worker_pool.acquire() for _ in range(3)]
            attempts = set()
            for _ in range(STALL_SECONDS // 5):
                await asyncio.sleep(5)
                described = await handle.describe()
                attempts |= {a.attempt for a in described.raw_description.pending_activities}
            # The connections come back first, then the server answers: a retried batch would decide again now,
            # find the chunk's sends pending, and deliver them alongside the first attempt.
            for conn in held:
                await worker_pool.release(conn)
            held = []
            await asyncio.sleep(3)
            sink.gate.set()
            result: BroadcastResult = await asyncio.wait_for(handle.result(), 120)
    finally:
        sink.gate.set()
        for conn in held:
            await worker_pool.release(conn)
        await worker_pool.close()
        await sink.stop()
    counts = Counter(rcpt for mail in sink.messages for rcpt in mail.rcpt_tos)
    assert counts == {f"{c}@example.com": 1 for c in ids}, [r for r, n in counts.items() if n > 1]
    assert result.counts.sent == RECIPIENTS
    assert attempts == {1}, "the batch was timed out on its heartbeat and retried"
