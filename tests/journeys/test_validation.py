"""The journey language: what an author sees when a definition is right, and when it is wrong."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from journeys import JourneyValidationError, load_journey_file, parse_journey

EXAMPLES = Path(__file__).resolve().parents[2] / "journeys" / "examples"

BASE = {
    "id": "demo",
    "name": "Demo",
    "trigger": {"event": "signed_up"},
    "steps": [
        {"id": "hello", "type": "send", "channel": "email", "template": {"subject": "Hi", "text": "Hello"}},
        {"id": "pause", "type": "wait", "duration": "1d"},
        {"id": "bye", "type": "exit"},
    ],
}


def issues_of(definition: dict) -> list[str]:
    with pytest.raises(JourneyValidationError) as caught:
        parse_journey(definition)
    return [str(issue) for issue in caught.value.issues]


def with_steps(*steps: dict) -> dict:
    definition = copy.deepcopy(BASE)
    definition["steps"] = list(steps)
    return definition


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_examples_are_valid_and_round_trip_through_json(path: Path) -> None:
    journey = load_journey_file(path)
    again = parse_journey(journey.model_dump_json(by_alias=True))
    assert again == journey


def test_yaml_and_json_give_the_same_journey() -> None:
    assert parse_journey(json.dumps(BASE)) == parse_journey(BASE)


def test_steps_follow_the_list_unless_told_otherwise() -> None:
    journey = parse_journey(BASE)
    assert journey.successors("hello") == {"next": "pause"}
    assert journey.successors("pause") == {"next": "bye"}


def test_duplicate_step_id_is_named() -> None:
    send = BASE["steps"][0]
    problems = issues_of(with_steps(send, {"id": "hello", "type": "wait", "duration": "1h"}))
    assert any("steps[1] (id 'hello').id" in p and "duplicate step id 'hello'" in p for p in problems)


def test_unknown_step_reference_names_step_and_field() -> None:
    problems = issues_of(
        with_steps(
            {"id": "w", "type": "wait_for", "event": "clicked", "timeout": "1d", "on_timeout": "nowhere"},
            {"id": "bye", "type": "exit"},
        )
    )
    assert problems == ["steps[0] (id 'w').on_timeout: unknown step 'nowhere' (known: w, bye)"]


def test_unreachable_step_is_reported() -> None:
    problems = issues_of(
        with_steps(
            {"id": "a", "type": "wait", "duration": "1h", "next": "end"},
            {"id": "orphan", "type": "exit"},
        )
    )
    assert problems == ["steps[1] (id 'orphan'): step 'orphan' is unreachable from the first step"]


def test_loop_without_a_wait_is_refused_but_a_loop_with_one_is_fine() -> None:
    send = {"id": "nag", "type": "send", "channel": "sms", "template": {"text": "hi"}}
    problems = issues_of(
        with_steps(
            {**send, "next": "check"},
            {
                "id": "check",
                "type": "branch",
                "where": [{"field": "profile.vip", "op": "eq", "value": True}],
                "then": "nag",
                "else": "end",
            },
        )
    )
    assert len(problems) == 1 and "loop with no wait in it: nag -> check -> nag" in problems[0]

    parse_journey(
        with_steps(
            {**send, "next": "pause"},
            {"id": "pause", "type": "wait", "duration": "1d", "next": "check"},
            {
                "id": "check",
                "type": "branch",
                "where": [{"field": "profile.vip", "op": "eq", "value": True}],
                "then": "nag",
                "else": "end",
            },
        )
    )


def test_unknown_channel_and_malformed_duration_are_named() -> None:
    problems = issues_of(
        with_steps(
            {"id": "fax", "type": "send", "channel": "fax", "template": {"text": "hi"}},
            {"id": "pause", "type": "wait", "duration": "soon"},
        )
    )
    assert any(p.startswith("steps[0] (id 'fax').channel: unknown channel 'fax'") for p in problems)
    assert any(p.startswith("steps[1] (id 'pause').duration: malformed duration 'soon'") for p in problems)


def test_every_error_is_reported_at_once() -> None:
    problems = issues_of(
        {
            "id": "bad id!",
            "name": "",
            "trigger": {},
            "steps": [{"id": "x", "type": "teleport"}, {"type": "wait", "duration": "1h"}],
        }
    )
    joined = "\n".join(problems)
    for expected in ("id:", "name:", "trigger.event:", "steps[0] (id 'x'): unknown step type", "steps[1].id:"):
        assert expected in joined, joined


def test_channel_content_and_templates_are_checked() -> None:
    problems = issues_of(
        with_steps(
            {"id": "mail", "type": "send", "channel": "email", "template": {"text": "no subject"}},
            {"id": "sms", "type": "send", "channel": "sms", "template": {"text": "{% if %}broken"}},
        )
    )
    assert any("steps[0] (id 'mail').template: Value error" not in p and "needs 'subject'" in p for p in problems)
    problems = issues_of(
        with_steps({"id": "sms", "type": "send", "channel": "sms", "template": {"text": "Hi {{ x | nope }}"}})
    )
    assert problems == ["steps[0] (id 'sms').template.text: template error: unknown filter 'nope'"]


def test_branch_fields_must_say_where_they_come_from() -> None:
    problems = issues_of(
        with_steps(
            {"id": "b", "type": "branch", "where": [{"field": "country", "value": "FR"}]}, {"id": "e", "type": "exit"}
        )
    )
    assert problems == [
        "steps[0] (id 'b').where: field 'country' must start with profile. (the customer), trigger. (the trigger "
        "event), events.<name>. (the last such event received) or responses.<name>. (a webhook step's answer)"
    ]


def test_branch_cases_name_their_targets() -> None:
    problems = issues_of(
        with_steps(
            {
                "id": "b",
                "type": "branch",
                "default": "nowhere",
                "cases": [
                    {"history": [{"event": "order_placed", "within": "30d"}], "next": "e"},
                    {"where": [{"field": "profile.vip", "value": True}], "next": "gone"},
                ],
            },
            {"id": "e", "type": "exit"},
        )
    )
    assert problems == [
        "steps[0] (id 'b').cases[1]: unknown step 'gone' (known: b, e)",
        "steps[0] (id 'b').default: unknown step 'nowhere' (known: b, e)",
    ]


def test_not_yaml_at_all() -> None:
    assert issues_of("id: [unclosed")[0].startswith("(document): not valid YAML/JSON")  # type: ignore[arg-type]


def test_an_exit_on_the_goals_own_event_is_flagged() -> None:
    definition = copy.deepcopy(BASE)
    definition["goal"] = {"event": "order_placed"}
    definition["exit_when"] = [{"event": "order_placed"}]
    assert issues_of(definition) == [
        "exit_when[0].event: 'order_placed' is the goal's event: the goal always ends the journey first, so this "
        "exit never happens (remove it, or give the goal a 'within' window)"
    ]
    definition["goal"]["within"] = "7d"
    parse_journey(definition)


def test_templates_of_profile_updates_and_webhooks_are_checked() -> None:
    problems = issues_of(
        with_steps(
            {"id": "remember", "type": "update_profile", "set": {"plan": "{{ event.plan | nope }}"}},
            {"id": "call", "type": "webhook", "url": "https://crm.example/hook", "body": {"x": "{% if %}"}},
        )
    )
    assert problems == [
        "steps[0] (id 'remember').set.plan: template error: unknown filter 'nope'",
        "steps[1] (id 'call').body: template error: missing expression",
    ]


def segment_entry(**segment: object) -> dict:
    definition = copy.deepcopy(BASE)
    definition.pop("trigger")
    definition["entry"] = {"segment": {"where": [{"field": "profile.plan", "op": "eq", "value": "pro"}], **segment}}
    return definition


def test_a_bad_cron_is_reported_with_field_errors_and_reference_errors() -> None:
    definition = segment_entry(cron="61 * * * *")
    definition["steps"][1]["duration"] = "soon"  # a field error: the model does not validate
    definition["steps"][0]["next"] = "nowhere"  # a reference error
    problems = issues_of(definition)
    assert any(p.startswith("entry.segment.cron: ") and "minute '61'" in p for p in problems), problems
    assert any(p.startswith("steps[1] (id 'pause').duration") for p in problems), problems
    assert any("unknown step 'nowhere'" in p for p in problems), problems


def test_a_bad_cron_is_reported_with_the_whole_journey_checks() -> None:
    definition = segment_entry(cron="0 9 * * 8")
    definition["steps"].append({"id": "orphan", "type": "exit"})  # unreachable: found on a valid model
    problems = issues_of(definition)
    assert any(p.startswith("entry.segment.cron: ") and "day of week '8'" in p for p in problems), problems
    assert any("'orphan' is unreachable" in p for p in problems), problems


@pytest.mark.parametrize("cron", ["0 9 * * 1", "*/15 8-18 * * mon-fri", "@daily"])
def test_a_good_cron_passes(cron: str) -> None:
    assert parse_journey(segment_entry(cron=cron)).entry.segment is not None


@pytest.mark.parametrize(
    ("cron", "said"), [("9" * 5000 + " * * * *", "minute"), ("*/" + "9" * 5000 + " * * * *", "step")]
)
def test_a_cron_with_a_huge_number_is_a_problem_not_a_crash(cron: str, said: str) -> None:
    problems = issues_of(segment_entry(cron=cron))
    assert any(p.startswith("entry.segment.cron: ") and said in p for p in problems), problems


def test_validation_errors_survive_the_trip_from_a_validation_process() -> None:
    import pickle

    from journeys.values import InputError

    with pytest.raises(JourneyValidationError) as caught:
        parse_journey(segment_entry(cron="61 * * * *"))
    again = pickle.loads(pickle.dumps(caught.value))
    assert again.issues == caught.value.issues
    error = pickle.loads(pickle.dumps(InputError("steps[0].id", "contains a NUL character")))
    assert (error.field, error.message) == ("steps[0].id", "contains a NUL character")
