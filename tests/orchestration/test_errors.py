"""What Temporal's RPC failures mean for us (orchestration.errors): one mapping, used at every call site."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from orchestration.errors import Meaning, TemporalUnavailableError, answered, is_not_found, meaning


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (RPCStatusCode.NOT_FOUND, Meaning.NOT_FOUND),
        (RPCStatusCode.ALREADY_EXISTS, Meaning.ALREADY_EXISTS),
        (RPCStatusCode.UNIMPLEMENTED, Meaning.UNSUPPORTED),
        (RPCStatusCode.UNAVAILABLE, Meaning.UNAVAILABLE),
        (RPCStatusCode.DEADLINE_EXCEEDED, Meaning.UNAVAILABLE),
        (RPCStatusCode.RESOURCE_EXHAUSTED, Meaning.UNAVAILABLE),
        (RPCStatusCode.INVALID_ARGUMENT, Meaning.REJECTED),
        (RPCStatusCode.PERMISSION_DENIED, Meaning.REJECTED),
    ],
)
def test_rpc_status_codes_map_to_what_they_mean(status: RPCStatusCode, expected: Meaning) -> None:
    assert meaning(RPCError("boom", status, b"")) is expected
    assert is_not_found(RPCError("boom", status, b"")) is (expected is Meaning.NOT_FOUND)


def test_sdk_and_transport_errors_have_a_meaning_and_others_none() -> None:
    assert meaning(WorkflowAlreadyStartedError("wid", "JourneyWorkflow")) is Meaning.ALREADY_EXISTS
    assert meaning(TimeoutError()) is Meaning.UNAVAILABLE
    assert meaning(ConnectionRefusedError()) is Meaning.UNAVAILABLE
    assert meaning(ValueError("not Temporal's")) is None


async def test_answered_leaves_not_found_as_an_answer_and_defers_the_rest() -> None:
    async def failing(status: RPCStatusCode) -> None:
        raise RPCError("boom", status, b"")

    with pytest.raises(RPCError) as not_found:
        await answered(failing(RPCStatusCode.NOT_FOUND), timedelta(seconds=1))
    assert is_not_found(not_found.value)
    with pytest.raises(TemporalUnavailableError, match="UNAVAILABLE"):
        await answered(failing(RPCStatusCode.UNAVAILABLE), timedelta(seconds=1))

    async def slow() -> None:
        await asyncio.sleep(5)

    with pytest.raises(TemporalUnavailableError):
        await answered(slow(), timedelta(milliseconds=50))
