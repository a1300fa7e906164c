"""Canonical associated data: one encoding per value, no two values alike."""

from __future__ import annotations

import pytest

from slipway.libs.crypto.binding import Binding, Context, canonical


def test_field_boundaries_are_part_of_the_encoding() -> None:
    """Moving bytes from one field to the next changes the encoding."""
    assert canonical("l", [("a", "bc")]) != canonical("l", [("ab", "c")])
    assert Binding("t", "1", "k", "2").canonical() != Binding("t", "12", "k", "x").canonical()


def test_binding_from_mapping_equals_binding() -> None:
    """A {team, app, kind, record} mapping names the same binding as the dataclass."""
    mapping = {"record": "r1", "kind": "config", "app": "a1", "team": "t1"}
    assert Binding.coerce(mapping) == Binding(team="t1", app="a1", kind="config", record="r1")
    assert Binding.coerce(mapping).as_context() == mapping


def test_binding_mapping_needs_exactly_its_keys() -> None:
    """A mapping with a missing or extra key is refused, not silently half-bound."""
    with pytest.raises(ValueError, match="exactly the keys"):
        Binding.coerce({"team": "t", "app": "a", "kind": "k"})
    with pytest.raises(ValueError, match="exactly the keys"):
        Binding.coerce({"team": "t", "app": "a", "kind": "k", "record": "r", "x": "y"})


def test_binding_needs_a_team_kind_and_record() -> None:
    """An empty team, kind or record would bind to nothing in particular: refused."""
    for team, kind, record in (("", "k", "r"), ("t", "", "r"), ("t", "k", "")):
        with pytest.raises(ValueError, match="non-empty"):
            Binding(team=team, app="a", kind=kind, record=record)


def test_context_of_ignores_mapping_order() -> None:
    """Contexts built from dicts in different orders encode the same."""
    assert Context.of("x", {"a": "1", "b": "2"}).canonical() == (
        Context.of("x", {"b": "2", "a": "1"}).canonical()
    )


def test_label_separates_uses() -> None:
    """The same fields under different labels encode differently."""
    assert Context("one", (("a", "1"),)).canonical() != Context("two", (("a", "1"),)).canonical()
