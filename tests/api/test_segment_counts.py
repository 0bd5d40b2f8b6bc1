"""Background segment recounts (api.segment_counts.Recounts): page loads cannot start unbounded scans: one recount
per segment at a time, ``segment_recounts`` at once, none after shutdown, and what ran is kept."""

from __future__ import annotations

import uuid

import asyncpg

from api.segment_counts import Recounts, ago
from config.settings import Settings
from journeys.models import Audience
from store import segments as segment_store
from tests.support.engine import where_tag


async def _segment(pool: asyncpg.Pool) -> segment_store.SegmentRow:
    tag = uuid.uuid4().hex[:8]
    await pool.execute("INSERT INTO customers (id, attributes) VALUES ($1, $2)", f"c-{tag}", {"tag": tag})
    where = Audience.model_validate(where_tag(tag))
    row, _ = await segment_store.put_segment(pool, f"seg-{tag}", where)
    return row


async def test_one_recount_per_segment_and_a_bound_per_process(pool: asyncpg.Pool) -> None:
    one, two = await _segment(pool), await _segment(pool)
    recounts = Recounts(pool, Settings(_env_file=None, segment_recounts=1))  # type: ignore[call-arg]
    try:
        assert recounts.start(one) == "started"
        assert [recounts.start(one) for _ in range(50)] == ["counting"] * 50  # a reload storm starts nothing more
        assert recounts.start(two) == "busy"  # the bound: nothing started for the second segment
        assert recounts.counting(one.id) and not recounts.counting(two.id)
    finally:
        await recounts.close()
    assert not recounts.counting(one.id)
    kept = await segment_store.stored_count(pool, one)
    assert kept is None or kept.members == 1  # cancelled at close, or finished before: never a wrong count
    assert recounts.start(two) == "busy"  # closed: no new recount
    assert await segment_store.stored_count(pool, two) is None


async def test_a_finished_recount_is_kept_and_frees_its_slot(pool: asyncpg.Pool) -> None:
    one, two = await _segment(pool), await _segment(pool)
    recounts = Recounts(pool, Settings(_env_file=None, segment_recounts=1))  # type: ignore[call-arg]
    try:
        assert recounts.start(one) == "started"
        await recounts._running[one.id]
        kept = await segment_store.stored_count(pool, one)
        assert kept is not None and (kept.members, kept.sample) == (1, [f"c-{one.id.removeprefix('seg-')}"])
        assert recounts.start(two) == "started"
    finally:
        await recounts.close()


async def test_a_segment_another_process_is_counting_is_left_to_it(pool: asyncpg.Pool) -> None:
    """Two API replicas behind a balancer: page loads on both must not scan the same segment twice at once."""
    row = await _segment(pool)
    this = Recounts(pool, Settings(_env_file=None, segment_recounts=2))  # type: ignore[call-arg]
    try:
        async with pool.acquire() as held, held.transaction():  # the other replica, in the middle of its count
            assert await held.fetchval(segment_store._RECOUNT_LOCK_SQL, row.id)
            assert this.start(row) == "started"
            await this._running[row.id]
            assert await segment_store.stored_count(pool, row) is None  # nothing counted here meanwhile
        assert this.start(row) == "started"  # the other one is done: this one counts now
        await this._running[row.id]
        kept = await segment_store.stored_count(pool, row)
        assert kept is not None and kept.members == 1
    finally:
        await this.close()


def test_ages_read_as_words() -> None:
    assert [ago(s) for s in (0, 1, 59.9, 60, 3 * 60 + 5, 7200, 86_400 * 3)] == [
        "0 seconds", "1 second", "59 seconds", "1 minute", "3 minutes", "2 hours", "3 days",
    ]  # fmt: skip


async def test_the_app_stops_its_recounts_at_shutdown(pool: asyncpg.Pool) -> None:
    from api.app import create_app
    from tests.support.mail import free_port
    from tests.support.stack import make_settings, serving

    row = await _segment(pool)
    app = create_app(make_settings(), pool=pool, client=None)  # type: ignore[arg-type]  # no Temporal needed
    async with serving(app, free_port()):
        recounts: Recounts = app.state.segment_recounts
        assert recounts.start(row) == "started"
    assert not recounts.counting(row.id)  # cancelled or done: nothing left running
    assert recounts.start(row) == "busy"  # and none starts after shutdown
