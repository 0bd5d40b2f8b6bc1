"""Values from outside: what journeys.values refuses, and that it names where."""

from __future__ import annotations

import pytest

from journeys.values import InputError, InputLimits, check_value, loads_json, loads_yaml


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"a": NaN}', "a"),
        ('{"a": {"b": [1, Infinity]}}', "a.b[1]"),
        ('{"a": -Infinity}', "a"),
        ('{"a": 1e999}', "a"),  # a float literal that overflows to infinity
        ('{"big": ' + "9" * 5000 + "}", "big"),  # thousands of digits: refused before int() reads them
        ('{"big": 9223372036854775808}', "big"),  # one past bigint
        ('{"s": "lone \\ud800 surrogate"}', "s"),
        ('{"s": "x\\u0000y"}', "s"),
        ('{"k\\u0000": 1}', "k\x00"),
        ('{"events": [{"x": "\\udfff"}]}', "events[0].x"),
    ],
)
def test_json_values_no_store_can_take_are_refused_by_path(raw: str, field: str) -> None:
    with pytest.raises(InputError) as caught:
        loads_json(raw)
    assert caught.value.field == field


def test_paired_surrogates_and_ordinary_values_pass() -> None:
    data = loads_json('{"emoji": "\\ud83d\\ude00", "n": -9223372036854775807, "f": 1.5e300, "ok": [true, null]}')
    assert data == {"emoji": "😀", "n": -(2**63 - 1), "f": 1.5e300, "ok": [True, None]}


def test_nesting_past_the_limit_is_refused_shallow_or_deep() -> None:
    limits = InputLimits(max_depth=8)
    loads_json("[" * 8 + "]" * 8, limits)
    with pytest.raises(InputError, match="nested too deeply"):
        loads_json("[" * 9 + "]" * 9, limits)
    with pytest.raises(InputError, match="nested too deeply"):  # past Python's recursion limit too
        loads_json("[" * 100_000 + "]" * 100_000)


def test_strings_over_the_limit_are_refused() -> None:
    with pytest.raises(InputError) as caught:
        check_value({"a": ["x" * 1001]}, InputLimits(max_string_length=1000))
    assert caught.value.field == "a[0]"


def test_yaml_aliases_are_refused_so_a_billion_laughs_is_one_error() -> None:
    bomb = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for level in "bcdefghij":
        previous = chr(ord(level) - 1)
        bomb += f"{level}: &{level} [" + ",".join([f"*{previous}"] * 9) + "]\n"
    with pytest.raises(InputError, match="aliases"):
        loads_yaml(bomb)
    with pytest.raises(InputError, match="aliases"):
        loads_yaml("base: &b {x: 1}\nother:\n  <<: *b\n")


def test_yaml_non_finite_numbers_and_deep_nesting_are_refused() -> None:
    with pytest.raises(InputError) as caught:
        loads_yaml("steps:\n  - value: .nan\n")
    assert caught.value.field == "steps[0].value"
    with pytest.raises(InputError, match="nested too deeply"):
        loads_yaml("[" * 50_000 + "]" * 50_000)
    with pytest.raises(InputError):
        loads_yaml("n: " + "9" * 5000)


def test_yaml_dates_stay_text() -> None:
    assert loads_yaml("date: 2026-01-01\nat: 2026-01-01T09:00:00Z\n") == {
        "date": "2026-01-01",
        "at": "2026-01-01T09:00:00Z",
    }
