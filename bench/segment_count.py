"""``python -m bench.segment_count --keep DIR``: the exact segment counts with the events index of migration 0022
against the index it replaced, in the same run, and what each costs an insert of events.

Runs on the database ``python -m bench.console --keep DIR`` built and migrated (400,000 customers, 241,323 events,
the segments ``pro-plan``: a profile condition, and ``openers``: an event-history condition). Each round times the
exact count (``store.segments.count_members``) of both segments and an insert of ``--events`` events (one
statement, rolled back) as the schema is (``events_name_time_customer``: (name, occurred_at) INCLUDE customer_id),
then the same inside a transaction that puts back the index it replaced (``events_name_time``: (name,
occurred_at)) and is rolled back. Prints the median of each and the ratio new / old. Run it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from devstack.postgres import EmbeddedPostgres
from store import create_pool, migrate
from store import segments as segment_store

SEGMENTS = ("pro-plan", "openers")
OLD_SCHEMA = (
    "DROP INDEX events_name_time_customer",
    "CREATE INDEX events_name_time ON events (name, occurred_at)",
    "ANALYZE events",
)
INSERT = """INSERT INTO events (event_id, customer_id, name, properties, occurred_at, routed_at)
            SELECT 'bench-seg-' || i, 'bench-seg-c' || (i % 5000), 'email_opened', '{"n": 1}'::jsonb, now(), now()
              FROM generate_series(1, $1::int) i"""


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def measure(conn: asyncpg.Connection, events: int) -> dict[str, float]:
    """One count of each segment, then one insert of ``events`` events (undone by a savepoint)."""
    figures = {}
    for segment_id in SEGMENTS:
        row = await segment_store.get_segment(conn, segment_id)
        assert row is not None, f"segment {segment_id}: build the database with python -m bench.console --keep"
        audience = row.audience()
        figures[f"count {segment_id}"] = await timed(
            lambda a=audience: segment_store.count_members(conn, a, datetime.now(UTC))  # type: ignore[misc]
        )
    inserted = conn.transaction()  # a savepoint inside the old-index transaction
    await inserted.start()
    figures[f"insert {events:,} events"] = await timed(lambda: conn.execute(INSERT, events))
    await inserted.rollback()
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, required=True, help="the folder of python -m bench.console --keep")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    with EmbeddedPostgres(args.keep) as server:
        url = server.ensure_database("bench")
        await migrate(url)
        pool = await create_pool(url, min_size=1, max_size=2)
        try:
            async with pool.acquire() as conn:
                new: dict[str, list[float]] = {}
                old: dict[str, list[float]] = {}
                await measure(conn, args.events)  # warm: plans, caches
                for _ in range(args.rounds):
                    for label, ms in (await measure(conn, args.events)).items():
                        new.setdefault(label, []).append(ms)
                    before = conn.transaction()  # the index as it was before 0022, never committed
                    await before.start()
                    try:
                        for statement in OLD_SCHEMA:
                            await conn.execute(statement)
                        await measure(conn, args.events)  # warm the old index too
                        for label, ms in (await measure(conn, args.events)).items():
                            old.setdefault(label, []).append(ms)
                    finally:
                        await before.rollback()
        finally:
            await pool.close()
    print(f"\n{'median of ' + str(args.rounds) + ' rounds':<28} {'0022 ms':>9} {'before ms':>10} {'ratio':>7}")
    for label in new:
        a, b = statistics.median(new[label]), statistics.median(old[label])
        print(f"{label:<28} {a:9.1f} {b:10.1f} {a / b:7.2f}")


if __name__ == "__main__":
    asyncio.run(main())
