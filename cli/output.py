"""Formatting of what commands print: Heroku-style headers, tables, key/value blocks, JSON.

Everything here is pure (text in, text out) so it is tested without a terminal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

ERROR_PREFIX = " ▸    "
APP_MARK = "⬢"


def header(title: str) -> str:
    """A section title as Heroku prints it."""
    return f"=== {title}"


def table(rows: Sequence[Mapping[str, str]], columns: Sequence[tuple[str, str]]) -> str:
    """Rows aligned under `columns`, a list of (key, title); no trailing spaces.

    Missing keys show as empty cells.
    """
    titles = [title for _, title in columns]
    cells = [[_one_line(row.get(key, "")) for key, _ in columns] for row in rows]
    widths = [len(title) for title in titles]
    for line in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, line, strict=True)]
    rules = ["─" * width for width in widths]
    return "\n".join(_aligned(line, widths) for line in [titles, rules, *cells])


def key_values(pairs: Sequence[tuple[str, str]], *, separator: str = ":") -> str:
    """`Key: value` lines with the values aligned, Heroku's styled object."""
    if not pairs:
        return ""
    width = max(len(key) for key, _ in pairs) + len(separator)
    return "\n".join(f"{key + separator:<{width}} {value}".rstrip() for key, value in pairs)


def to_json(data: Any) -> str:
    """The API's own JSON, indented for people and stable for diffs."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)


def error_line(message: str) -> str:
    """One line for stderr, whatever line breaks the message carried."""
    return ERROR_PREFIX + " ".join(message.split())


def when(stamp: object) -> str:
    """An RFC 3339 time as `YYYY-MM-DD HH:MM:SS UTC`; anything else unchanged."""
    if not isinstance(stamp, str) or not stamp:
        return ""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(seconds: int) -> str:
    """A lifetime in the largest whole unit: `30 days`, `5 hours`, `1 minute`, `9 seconds`."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            return plural(seconds // size, unit)
    return plural(max(seconds, 0), "second")


def name_of(value: object, *keys: str) -> str:
    """The first present of `keys` in a nested resource (`{"name": ...}`), or the value itself.

    Heroku nests related resources (`"team": {"id", "name"}`); a server might also
    send the plain name, and a missing relation shows as empty.
    """
    if isinstance(value, Mapping):
        for key in keys or ("name",):
            found = value.get(key)
            if found:
                return str(found)
        return ""
    return "" if value is None else str(value)


def plural(count: int, word: str) -> str:
    """`1 entry`, `2 entries`: English counts for summary lines."""
    if count == 1:
        return f"{count} {word}"
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return f"{count} {word[:-1]}ies"
    return f"{count} {word}s"


def _aligned(cells: Sequence[str], widths: Sequence[int]) -> str:
    padded = [f"{cell:<{width}}" for cell, width in zip(cells, widths, strict=True)]
    return "  ".join(padded).rstrip()


def _one_line(value: object) -> str:
    # A value with a newline would break the table's columns.
    return " ".join(str(value).split()) if value is not None else ""
