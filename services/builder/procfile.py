"""Procfile: `<process type>: <command>` per line, as Heroku reads it."""

from __future__ import annotations

import re
from pathlib import Path

from slipway.services.builder.errors import ProcfileError

# Heroku's process type names: letters, digits, dash and underscore.
_LINE = re.compile(r"^([A-Za-z0-9_-]+)[ \t]*:[ \t]*(.+?)\s*$")


def parse_procfile(text: str) -> dict[str, str]:
    """Process types of a Procfile; blank and `#` lines are skipped, anything else is an error."""
    types: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            shown = line.strip()[:60]
            raise ProcfileError(
                f"Procfile line {number} is not `<process type>: <command>`: {shown!r}"
            )
        name, command = match.groups()
        if name in types:
            raise ProcfileError(f"Procfile line {number} declares {name!r} a second time")
        types[name] = command
    return types


def read_procfile(build_dir: Path) -> dict[str, str] | None:
    """The Procfile's process types, or None when the app has no Procfile."""
    path = build_dir / "Procfile"
    if not path.is_file() or path.is_symlink():
        return None
    return parse_procfile(path.read_text(encoding="utf-8", errors="replace"))
