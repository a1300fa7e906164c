"""Parsing of ps:scale specs, KEY=VALUE assignments and release names."""

from __future__ import annotations

import pytest

from slipway.cli.errors import UsageError
from slipway.cli.specs import (
    ScaleChange,
    parse_assignment,
    parse_assignments,
    parse_release,
    parse_scale,
    parse_scales,
)


def test_scale_absolute_quantity() -> None:
    """`web=3` sets three web dynos."""
    assert parse_scale("web=3") == ScaleChange(type="web", quantity=3)


def test_scale_quantity_and_size() -> None:
    """`web=2:standard-2x` sets quantity and size together."""
    assert parse_scale("web=2:standard-2x") == ScaleChange(
        type="web", quantity=2, size="standard-2x"
    )


def test_scale_increment_and_decrement_are_relative() -> None:
    """`worker+2` and `worker-1` are deltas on the current quantity."""
    assert parse_scale("worker+2") == ScaleChange(type="worker", quantity=2, delta=True)
    assert parse_scale("worker-1") == ScaleChange(type="worker", quantity=-1, delta=True)


def test_scale_size_only() -> None:
    """`web=performance-m` changes the size and leaves the quantity alone."""
    assert parse_scale("web=performance-m") == ScaleChange(type="web", size="performance-m")


def test_scale_hyphenated_process_type() -> None:
    """A process type may contain '-' and still take a decrement."""
    assert parse_scale("my-worker=4") == ScaleChange(type="my-worker", quantity=4)
    assert parse_scale("my-worker-1") == ScaleChange(type="my-worker", quantity=-1, delta=True)


def test_scale_delta_never_goes_below_zero() -> None:
    """Resolving `web-5` against 2 running dynos asks for 0, not -3."""
    assert parse_scale("web-5").resolve(2) == 0
    assert parse_scale("web+1").resolve(2) == 3
    assert parse_scale("web=7").resolve(2) == 7


@pytest.mark.parametrize(
    "spec", ["web", "web=", "=3", "web=1x", "web=-2", "web=1:", "web=1:2:3", "web 1"]
)
def test_scale_rejects_malformed_spec_with_the_accepted_form(spec: str) -> None:
    """A malformed spec is a usage error that shows the syntax."""
    with pytest.raises(UsageError, match=r"Invalid scale argument .* TYPE=QUANTITY\[:SIZE\]"):
        parse_scale(spec)


def test_scale_rejects_a_type_given_twice() -> None:
    """Naming one process type twice is ambiguous."""
    with pytest.raises(UsageError, match="'web' is given more than once"):
        parse_scales(["web=1", "worker=1", "web=2"])


def test_assignment_value_may_contain_equals() -> None:
    """Only the first '=' separates key from value."""
    assert parse_assignment("DATABASE_URL=postgres://u:p@h/db?a=1&b=2") == (
        "DATABASE_URL",
        "postgres://u:p@h/db?a=1&b=2",
    )


def test_assignment_value_may_be_empty() -> None:
    """`KEY=` sets an empty string, as in a shell."""
    assert parse_assignment("EMPTY=") == ("EMPTY", "")


def test_assignment_last_repeat_wins() -> None:
    """A key given twice keeps its last value."""
    assert parse_assignments(["A=1", "B=x=y", "A=2"]) == {"A": "2", "B": "x=y"}


@pytest.mark.parametrize("text", ["NOVALUE", "=value", "SPACE KEY=1"])
def test_assignment_rejects_text_without_a_key(text: str) -> None:
    """Missing '=' or a missing/spaced key is a usage error."""
    with pytest.raises(UsageError):
        parse_assignment(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("v12", "12"), ("V3", "3"), ("7", "7"), ("01234567-89ab", "01234567-89ab")],
)
def test_release_versions_and_ids(text: str, expected: str) -> None:
    """`v12` and `12` name version 12; anything else is passed on as an id."""
    assert parse_release(text) == expected
