import pytest

from ditsr_plan.settings.numbers import NumberError, format_steps, parse_steps, parse_weight


@pytest.mark.parametrize(
    ("text", "steps"),
    [("0", 0), ("3000", 3000), ("3k", 3000), ("1.5k", 1500), ("2M", 2_000_000), ("0.5M", 500_000), ("1e3", 1000)],
)
def test_step_counts(text, steps):
    assert parse_steps(text) == steps


@pytest.mark.parametrize(
    ("text", "message"),
    [("1.0005k", "1000.5 steps"), ("1.5", "whole number"), ("-3", "negative"), ("1e13", "too large"), ("x", "not a")],
)
def test_bad_step_counts(text, message):
    with pytest.raises(NumberError, match=message):
        parse_steps(text)


def test_weights():
    assert parse_weight("0.35") == 0.35
    assert parse_weight("1e-4") == 1e-4
    with pytest.raises(NumberError, match="not a weight"):
        parse_weight("3k")
    with pytest.raises(NumberError, match="negative"):
        parse_weight("-0.1")
    with pytest.raises(NumberError, match="finite"):
        parse_weight("1e400")


@pytest.mark.parametrize(
    ("steps", "text"), [(0, "0"), (999, "999"), (3000, "3k"), (1500, "1.5k"), (1234, "1234"), (2_500_000, "2.5M")]
)
def test_format_steps_round_trips(steps, text):
    assert format_steps(steps) == text
    assert parse_steps(text) == steps
