"""Procfile: `<process type>: <command>` per line, as Heroku reads it."""

from __future__ import annotations

import re
from pathlib import Path

from slipway.libs import safefs
from slipway.services.builder.errors import ProcfileError

PROCFILE_MAX_BYTES = 64 * 1024

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
    """The Procfile's process types, or None when the app has no Procfile.

    Read without following a link (a chain of links inside a source can point out
    of it) and bounded; a Procfile that is a link or a special file fails the build.
    """
    try:
        data = safefs.read_optional(build_dir, "Procfile", max_bytes=PROCFILE_MAX_BYTES)
    except safefs.SafePathError as exc:
        raise ProcfileError(f"{exc.message}; make the Procfile a plain file") from None
    if data is None:
        return None
    return parse_procfile(data.decode("utf-8", errors="replace"))
