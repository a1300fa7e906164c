"""Procfile and `bin/release` YAML, as Heroku writes them (no Docker)."""

from __future__ import annotations

import pytest

from slipway.services.builder.buildpacks import parse_release
from slipway.services.builder.errors import BuildpackFailed, ProcfileError
from slipway.services.builder.procfile import parse_procfile


def test_procfile_types_comments_and_blank_lines() -> None:
    """Each `type: command` line is a process type; comments and blank lines are skipped."""
    text = "# processes\nweb: gunicorn -b 0.0.0.0:$PORT app:app\n\nworker:  python w.py --x=1:2\n"
    assert parse_procfile(text) == {
        "web": "gunicorn -b 0.0.0.0:$PORT app:app",
        "worker": "python w.py --x=1:2",
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("web: a\njust words\n", "Procfile line 2 is not"),
        ("web a b\n", "Procfile line 1 is not"),
        ("we b: x\n", "Procfile line 1 is not"),
        ("web:\n", "Procfile line 1 is not"),
        ("web: a\nweb: b\n", "declares 'web' a second time"),
    ],
)
def test_junk_procfile_lines_are_errors(text: str, message: str) -> None:
    """A line that is not a process type names its number."""
    with pytest.raises(ProcfileError, match=message):
        parse_procfile(text)


def test_release_yaml_subset() -> None:
    """default_process_types and config_vars, quoted or not; other keys are ignored."""
    text = (
        "---\naddons: []\nconfig_vars:\n  A: \"x y\"\n  B: 'it''s'\n"
        "default_process_types:\n  web: bin/start --port $PORT\n  worker: 'q: run'\n"
    )
    types, config = parse_release(text)
    assert types == {"web": "bin/start --port $PORT", "worker": "q: run"}
    assert config == {"A": "x y", "B": "it's"}


def test_release_yaml_in_an_unknown_form_is_an_error() -> None:
    """Flow-style mappings are not parsed; the build says so instead of guessing."""
    with pytest.raises(BuildpackFailed):
        parse_release("default_process_types: {web: x}\n")
