"""Formatting: tables, key/value blocks, error lines, times."""

from __future__ import annotations

from slipway.cli import output


def test_table_aligns_columns_without_trailing_spaces() -> None:
    """Columns line up under their titles and no line ends in spaces."""
    text = output.table(
        [{"name": "hello", "team": "acme"}, {"name": "a", "team": ""}],
        [("name", "Name"), ("team", "Team")],
    )
    assert text.splitlines() == [
        "Name   Team",
        "─────  ────",
        "hello  acme",
        "a",
    ]


def test_table_cell_newlines_are_flattened() -> None:
    """A value with line breaks stays on its row."""
    text = output.table([{"d": "two\nlines"}], [("d", "D")])
    assert text.splitlines()[-1] == "two lines"


def test_table_missing_keys_are_empty_cells() -> None:
    """A row lacking a column shows an empty cell, not an error."""
    text = output.table([{"a": "1"}], [("a", "A"), ("b", "B")])
    assert text.splitlines()[-1] == "1"


def test_key_values_align_values() -> None:
    """Values start in the same column, Heroku's styled object."""
    assert output.key_values([("A", "1"), ("LONGER", "2")]).splitlines() == [
        "A:      1",
        "LONGER: 2",
    ]


def test_error_line_is_one_line_with_the_heroku_mark() -> None:
    """Errors are prefixed with ▸ and never span lines."""
    assert output.error_line("Couldn't find\nthat app.") == " ▸    Couldn't find that app."


def test_when_formats_rfc3339_in_utc() -> None:
    """Times are shown in UTC; text that is not a time is shown as is."""
    assert output.when("2024-05-01T12:30:00+02:00") == "2024-05-01 10:30:00 UTC"
    assert output.when("2024-05-01T10:30:00Z") == "2024-05-01 10:30:00 UTC"
    assert output.when("yesterday") == "yesterday"
    assert output.when(None) == ""


def test_name_of_nested_or_plain_relations() -> None:
    """A related resource may be nested ({name}) or plain; missing is empty."""
    assert output.name_of({"id": "1", "name": "acme"}) == "acme"
    assert output.name_of({"id": "1", "email": "a@b"}, "email") == "a@b"
    assert output.name_of("acme") == "acme"
    assert output.name_of(None) == ""


def test_to_json_is_stable() -> None:
    """JSON output sorts keys and keeps non-ASCII text readable."""
    assert output.to_json({"b": 1, "a": "é"}) == '{\n  "a": "é",\n  "b": 1\n}'


def test_plural() -> None:
    """Counts read as English."""
    assert output.plural(1, "entry") == "1 entry"
    assert output.plural(3, "entry") == "3 entries"
    assert output.plural(2, "signed checkpoint") == "2 signed checkpoints"


def test_duration_uses_the_largest_whole_unit() -> None:
    """Token lifetimes read as days, hours, minutes or seconds."""
    assert output.duration(2591997) == "29 days"
    assert output.duration(7200) == "2 hours"
    assert output.duration(61) == "1 minute"
    assert output.duration(9) == "9 seconds"
