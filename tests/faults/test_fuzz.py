"""Fuzzing: schemathesis against the API's OpenAPI document; hypothesis on the journey language.

Bounded so the module finishes in well under a minute. Hypothesis runs in a thread (its tests are synchronous)
and hands async work back to the session loop, where the pool, the worker and the API live.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import schemathesis
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from temporalio.testing import WorkflowEnvironment

from api.server import ApiServer
from devstack.postgres import EmbeddedPostgres
from journeys import parse_journey
from journeys.validation import JourneyValidationError
from orchestration.runs import enter_journey
from store import create_pool, migrate
from tests.support.engine import Engine, make_customer
from tests.support.mail import SmtpSink, free_port
from tests.support.stack import API_KEY, Stack, running_stack

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]


FUZZ = settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest_asyncio.fixture
async def fuzz_stack(
    dev_env: WorkflowEnvironment, postgres: EmbeddedPostgres, smtp_sink: SmtpSink
) -> AsyncIterator[Stack]:
    """The stack on a database of its own: the fuzzer writes random topics, customers and journeys."""
    url = await asyncio.to_thread(postgres.ensure_database, f"fuzz_{uuid.uuid4().hex[:8]}")
    await migrate(url)
    pool = await create_pool(url)
    try:
        async with running_stack(dev_env, pool, smtp_sink) as stack:
            yield stack
    finally:
        await pool.close()


async def test_api_schema_fuzzing_no_500_and_responses_match_the_schema(fuzz_stack: Stack) -> None:
    stack = fuzz_stack
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import response_schema_conformance

    port = free_port()
    server = ApiServer(uvicorn.Config(stack.app, host="127.0.0.1", port=port, log_config=None, lifespan="off"))
    serving = asyncio.create_task(server.serve())
    while not server.started:  # noqa: ASYNC110 - uvicorn offers no event
        await asyncio.sleep(0.02)
    schema = schemathesis.openapi.from_dict(stack.app.openapi())
    base = f"http://127.0.0.1:{port}"
    failures: list[str] = []
    calls = 0

    def fuzz(operation: Any) -> None:
        @FUZZ
        @given(case=operation.as_strategy())
        def check(case: Any) -> None:
            nonlocal calls
            calls += 1
            try:
                response = case.call(base_url=base, headers={"X-API-Key": API_KEY}, timeout=20)
                case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis reports failures as a FailureGroup
                detail = " | ".join(str(e)[:200] for e in getattr(exc, "exceptions", [exc]))
                failures.append(f"{operation.method.upper()} {operation.path}: {type(exc).__name__}: {detail}")

        check()

    def fuzz_all() -> None:
        for result in schema.get_all_operations():
            fuzz(result.ok())

    try:
        await asyncio.to_thread(fuzz_all)
    finally:
        server.should_exit = True
        await serving
    print(f"\nschemathesis: {calls} calls, {len(failures)} failures")
    assert not failures, "\n".join(failures[:10])


# --- the journey language ------------------------------------------------------------------------------------

IDS = ["a", "b", "c", "d", "e"]
DURATIONS = ["90s", "1h", "2d", "PT1H", "1w", "soon", "", "0s", "-1h", 5]
CHANNELS = ["email", "sms", "push", "in_app", "webhook", "fax"]
TEMPLATES = [
    {"subject": "Hi {{ customer.first_name }}", "text": "Hello"},
    {"text": "{{ event.name | upcase }}"},
    {"text": "{{ broken | nope }}"},
    {"title": "t", "body": "b"},
    {"payload": {"k": "{{ customer.id }}"}, "url": "http://127.0.0.1:9/hook"},
    {},
]
CONDITIONS = st.lists(
    st.fixed_dictionaries(
        {
            "field": st.sampled_from(["profile.email", "trigger.total", "profile.plan", "x"]),
            "op": st.sampled_from(["eq", "ne", "gt", "exists", "in", "bogus"]),
            "value": st.one_of(st.integers(-5, 5), st.text(max_size=3), st.lists(st.integers(0, 2), max_size=2)),
        }
    ),
    max_size=2,
)


def _step(index: int, ids: list[str], forward: bool) -> st.SearchStrategy[dict[str, Any]]:
    later = [*ids[index + 1 :], "end"] if forward else [*ids, "end", "nowhere"]
    target = st.sampled_from(later)
    sid = ids[index]
    return st.one_of(
        st.fixed_dictionaries(
            {
                "id": st.just(sid),
                "type": st.just("send"),
                "channel": st.sampled_from(CHANNELS[:5] if forward else CHANNELS),
                "template": st.sampled_from(TEMPLATES[:2] if forward else TEMPLATES),
            },
            optional={"next": target, "kind": st.sampled_from(["marketing", "transactional"])},
        ),
        st.fixed_dictionaries(
            {
                "id": st.just(sid),
                "type": st.just("wait"),
                "duration": st.sampled_from(DURATIONS[:5] if forward else DURATIONS),
            },
            optional={"next": target},
        ),
        st.fixed_dictionaries(
            {
                "id": st.just(sid),
                "type": st.just("wait_for"),
                "event": st.sampled_from(["clicked", "purchased"]),
                "timeout": st.sampled_from(DURATIONS[:5] if forward else DURATIONS),
            },
            optional={"on_event": target, "on_timeout": target},
        ),
        st.fixed_dictionaries(
            {
                "id": st.just(sid),
                "type": st.just("branch"),
                "where": CONDITIONS.filter(lambda c: bool(c))
                if not forward
                else st.just([{"field": "profile.email", "op": "exists"}]),
                "then": target,
                "else": target,
            }
        ),
        st.fixed_dictionaries(
            {
                "id": st.just(sid),
                "type": st.just("split"),
                "variants": st.lists(
                    st.fixed_dictionaries(
                        {
                            "name": st.sampled_from(["A", "B", "C"]),
                            "weight": st.integers(0 if not forward else 1, 3),
                            "next": target,
                        }
                    ),
                    min_size=1,
                    max_size=3,
                    unique_by=lambda v: v["name"],
                ),
            }
        ),
        st.fixed_dictionaries(
            {"id": st.just(sid), "type": st.just("wait_until")},
            optional={"at": st.sampled_from(["09:00", "25:00"] if not forward else ["09:00", "18:30"]), "next": target},
        ),
        st.fixed_dictionaries({"id": st.just(sid), "type": st.just("exit"), "reason": st.just("done")}),
    )


@st.composite
def definitions(draw: st.DrawFn, forward: bool) -> dict[str, Any]:
    n = draw(st.integers(1, 5))
    ids = IDS[:n] if forward else draw(st.lists(st.sampled_from([*IDS, "", "a b"]), min_size=1, max_size=5))
    steps = [draw(_step(i, ids, forward)) for i in range(len(ids))]
    definition: dict[str, Any] = {
        "id": f"fz-{uuid.uuid4().hex[:8]}",
        "name": "Fuzzed",
        "trigger": {"event": "fuzz_start"},
        "steps": steps,
    }
    if draw(st.booleans()):
        definition["goal"] = {"event": "purchased"}
    return definition


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["id", "steps", "type", "x"]), inner),
    max_leaves=10,
)
# What parse_journey takes: a mapping, or YAML/JSON text (a document that is not a mapping is refused).
DOCUMENTS = st.one_of(
    st.dictionaries(st.sampled_from(["id", "name", "trigger", "steps", "goal", "x"]), JUNK),
    st.text(alphabet="{}[]:,-'\"\n #abc1", max_size=40),
    st.text(max_size=20),
)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(definition=st.one_of(definitions(forward=False), definitions(forward=True), DOCUMENTS))
def test_random_definitions_only_ever_raise_journey_validation_error(definition: Any) -> None:
    try:
        parse_journey(definition)
    except JourneyValidationError:
        pass


async def test_every_valid_random_journey_runs_to_an_end(engine: Engine) -> None:
    loop = asyncio.get_running_loop()
    customer = await make_customer(engine.pool, phone=True, push=True, consent=("email", "sms", "push"))
    ran: list[str] = []

    async def run(definition: dict[str, Any]) -> None:
        journey = parse_journey(definition)  # a forward-only definition may still be invalid: then skip it
        trigger_id = f"ev-{uuid.uuid4().hex}"
        from tests.support.engine import event

        entered = await enter_journey(
            engine.client,
            journey,
            1,
            event(customer, journey.trigger.event, {"total": 3}, event_id=trigger_id),
            task_queue=engine.settings.task_queue,
        )
        result = await asyncio.wait_for(entered.handle.result(), 30)
        assert result.status in ("completed", "exited", "converted"), result
        ran.append(journey.id)

    @settings(max_examples=25, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(definition=definitions(forward=True))
    def check(definition: dict[str, Any]) -> None:
        try:
            parse_journey(definition)
        except JourneyValidationError:
            return
        asyncio.run_coroutine_threadsafe(run(definition), loop).result(60)

    await asyncio.to_thread(check)
    print(f"\nhypothesis: {len(ran)} valid random journeys ran to an end")
    assert ran
