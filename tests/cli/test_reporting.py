"""``parcours journeys experiments`` and ``parcours attribution`` print tables with the figures of the rows in the
database (recorded through the store, as the worker records them); run in process with typer's CliRunner."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
from scipy.stats import chi2_contingency
from statsmodels.stats.proportion import confint_proportions_2indep
from typer.testing import CliRunner

from cli.main import app
from contracts.journey import Event
from journeys import parse_journey
from store import journeys as journey_store
from store.conversions import Conversion, record_conversion
from store.events import store_events
from store.messages import NewMessage, insert_message
from store.outcomes import StepOutcome, record_outcomes

AT = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "PARCOURS_DATABASE_URL": database_url,
        "PARCOURS_DATA_DIR": str(tmp_path),
        "PARCOURS_CHANNEL_COSTS": '{"email": 0.5, "sms": 2.0}',
        "COLUMNS": "220",
    }


async def invoke(args: list[str], variables: dict[str, str]) -> Any:
    return await asyncio.to_thread(CliRunner().invoke, app, args, env=variables)


def row(output: str, *first_cells: str) -> list[str]:
    """The cells of the table line that starts with ``first_cells``."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip("│┃").split("│")]
        if tuple(cells[: len(first_cells)]) == first_cells:
            return cells
    raise AssertionError(f"no row {first_cells!r} in:\n{output}")


async def split_journey(pool: asyncpg.Pool, tag: str) -> str:
    journey = parse_journey(
        {
            "id": f"exp-{tag}",
            "name": "Experiments CLI",
            "trigger": {"event": f"signup_{tag}"},
            "goal": {"event": f"order_{tag}", "value_property": "total"},
            "steps": [
                {
                    "id": "offer",
                    "type": "split",
                    "variants": [{"name": "plain", "weight": 1}, {"name": "bold", "weight": 1}],
                },
                {"id": "hello", "type": "send", "channel": "email", "template": {"subject": "Hi", "text": "t"}},
            ],
        }
    )
    await journey_store.publish(pool, journey)
    return journey.id


async def enter(pool: asyncpg.Pool, jid: str, variant: str, entered: int, converted: int, value: float) -> None:
    """``entered`` entries that took ``variant``, the first ``converted`` of them converting with ``value``."""
    outcomes = []
    for i in range(entered):
        customer = f"{jid}-{variant}-{i}"
        outcomes.append(
            StepOutcome(
                jid, 1, customer, f"e-{customer}", "offer", 1, "split", variant, {"variant": variant},
                f"{jid}:{customer}", "run", AT,
            )
        )  # fmt: skip
        if i < converted:
            await record_conversion(
                pool,
                Conversion(
                    jid, 1, customer, f"e-{customer}", f"ev-{customer}", "order", value, variant, None,
                    AT + timedelta(hours=1), {"offer": variant},
                ),
            )  # fmt: skip
    await record_outcomes(pool, outcomes)


async def test_experiments_prints_each_arm_with_the_comparison_to_the_control(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    jid = await split_journey(pool, tag)
    await enter(pool, jid, "plain", 100, 10, 20.0)
    await enter(pool, jid, "bold", 100, 20, 30.0)

    printed = await invoke(["journeys", "experiments", jid], env(database_url, tmp_path))
    assert printed.exit_code == 0, printed.output
    assert "Split step offer (control: plain)" in printed.output
    plain = row(printed.output, "plain (control)")
    assert plain[1:6] == ["100", "10", "10.0%", "200.00", "2.00"]
    bold = row(printed.output, "bold")
    assert bold[1:6] == ["100", "20", "20.0%", "600.00", "6.00"]
    assert bold[7] == "+10.0 pts"
    # The interval and the p-value as the libraries compute them (pooled z-test = chi-square without correction).
    low, high = confint_proportions_2indep(20, 100, 10, 100, method="newcomb")
    assert bold[8] == f"{100 * low:+.1f} to {100 * high:+.1f}"
    p = chi2_contingency([[20, 80], [10, 90]], correction=False).pvalue
    assert bold[9] == f"{p:.3f}" == "0.048"
    assert "Verdict:" in printed.output

    # The same, limited to a day when nobody entered: no arms.
    empty = await invoke(["journeys", "experiments", jid, "--since", "2026-04-01"], env(database_url, tmp_path))
    assert empty.exit_code == 0 and "no split step or holdout has arms yet" in empty.output


async def test_experiments_of_an_unknown_journey_or_version_fails(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    jid = await split_journey(pool, uuid.uuid4().hex[:8])
    unknown = await invoke(["journeys", "experiments", "no-such-journey"], env(database_url, tmp_path))
    assert unknown.exit_code == 1 and "unknown journey 'no-such-journey'" in unknown.output
    version = await invoke(["journeys", "experiments", jid, "--version", "7"], env(database_url, tmp_path))
    assert version.exit_code == 1 and f"journey '{jid}' has no version 7" in version.output


async def sent(pool: asyncpg.Pool, customer: str, journey: str, step: str, channel: str, at: datetime) -> None:
    key = f"{journey}:{customer}:{step}"
    await insert_message(
        pool,
        NewMessage(
            key, journey, 1, step, customer, f"e-{customer}", channel, None, "marketing", "sent", None, "to",
            None, None, None, None, 1, at, None,
        ),
    )  # fmt: skip
    await pool.execute("UPDATE messages SET sent_at = $2, created_at = $2 WHERE idempotency_key = $1", key, at)


async def test_attribution_prints_the_credit_of_each_step(
    pool: asyncpg.Pool, database_url: str, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    ada, bob, cy = (f"{name}-{tag}" for name in ("ada", "bob", "cy"))
    # Ada: an email two days and an SMS one day before her order of 90. Bob: an email 10 days before his order of
    # 30, outside the 7-day window. Cy: an email but no order (his message is no one's touch).
    await sent(pool, ada, "welcome", "intro", "email", AT - timedelta(days=2))
    await sent(pool, ada, "welcome", "reminder", "sms", AT - timedelta(days=1))
    await sent(pool, bob, "welcome", "intro", "email", AT - timedelta(days=10))
    await sent(pool, cy, "welcome", "intro", "email", AT - timedelta(days=1))
    event = f"order_{tag}"
    await store_events(
        pool,
        [
            Event(event_id=f"o1-{tag}", customer_id=ada, name=event, properties={"total": 90}, occurred_at=AT),
            Event(event_id=f"o2-{tag}", customer_id=bob, name=event, properties={"total": 30}, occurred_at=AT),
        ],
    )
    variables = env(database_url, tmp_path)

    linear = await invoke(["attribution", "--event", event, "--model", "linear"], variables)
    assert linear.exit_code == 0, linear.output
    assert "model linear · window 7d" in linear.output
    assert "Conversions 2 · revenue 120.00 · unattributed 1 (30.00)" in linear.output
    # Journey, step, channel, touches, conversions, revenue, cost, return on cost.
    assert row(linear.output, "welcome", "reminder")[2:] == ["sms", "1", "0.50", "45.00", "2.0000", "22.50x"]
    assert row(linear.output, "welcome", "intro")[2:] == ["email", "1", "0.50", "45.00", "0.5000", "90.00x"]

    last = await invoke(["attribution", "--event", event, "--model", "last", "--window", "14d"], variables)
    assert last.exit_code == 0, last.output
    # A 14-day window reaches Bob's email: each order goes to its latest message.
    assert "Conversions 2 · revenue 120.00 · unattributed 0 (0.00)" in last.output
    assert row(last.output, "welcome", "reminder")[2:] == ["sms", "1", "1.00", "90.00", "2.0000", "45.00x"]
    assert row(last.output, "welcome", "intro")[2:] == ["email", "2", "1.00", "30.00", "1.0000", "30.00x"]

    # An event nobody sent: nothing to credit, no error.
    nothing = await invoke(["attribution", "--event", f"never_{tag}", "--model", "data_driven"], variables)
    assert nothing.exit_code == 0, nothing.output
    assert "Conversions 0 · revenue 0.00 · unattributed 0 (0.00)" in nothing.output

    bad = await invoke(["attribution", "--event", event, "--model", "causal"], variables)
    assert bad.exit_code == 1 and "model: must be one of" in bad.output
