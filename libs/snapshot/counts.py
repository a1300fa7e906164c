"""A dry restore's proof: what each part unpacked, counted as its exporter counted it.

Each part of a manifest records counts its exporter made (libs/snapshot/export.py):
`<database file name>:<table>` for the rows of each table (`gateway.db:apps`), and
`<folder>:files` for the regular files under a folder (`gateway/repos:files`). Here the
same things are counted in what was unpacked: databases opened read-only and immutable
(nothing written beside them), files by their member names. A count named by a label
rather than a path (`router-ca:files`) cannot be matched to members and is shown as
not checked, never as a difference.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from slipway.contracts.snapshot import PartInfo
from slipway.libs.snapshot import manifest as layout
from slipway.libs.snapshot.manifest import Manifest
from slipway.libs.snapshot.unpack import Unpacked

_SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True)
class CountRow:
    """One count the manifest records, and what the unpacked part holds."""

    part: str
    key: str
    expected: int
    found: int | None  # None: nothing in the part to count it from
    note: str = ""
    # False for a count named by a label rather than a path ("router-ca:files"): shown, not
    # compared, since nothing in the tar says which members it counted.
    checked: bool = True

    @property
    def ok(self) -> bool:
        """Whether the count matches (or could not be checked)."""
        return not self.checked or self.found == self.expected

    @property
    def verdict(self) -> str:
        """The last column of the printed table."""
        if not self.checked:
            return f"not checked: {self.note}"
        if self.ok:
            return "ok"
        return "DIFFERS" + (f": {self.note}" if self.note else "")


def compare_counts(root: Path, manifest: Manifest, parts: dict[str, Unpacked]) -> list[CountRow]:
    """Each count of the manifest against what its part unpacked under `root`."""
    rows = []
    for part in manifest.parts:
        label = layout.part_name(part.service, part.host_id)
        done = parts.get(label, Unpacked())
        databases = _databases(root, done, part)
        for key, expected in sorted(part.counts.items()):
            row = _count(root, done, databases, key)
            rows.append(dataclasses.replace(row, part=label, expected=expected))
    return rows


def _databases(root: Path, done: Unpacked, part: PartInfo) -> dict[str, list[str]]:
    """The part's SQLite files by file name (counts name a database by it: `gateway.db:apps`)."""
    named = {key.rsplit(":", 1)[0] for key in part.counts if ":" in key}
    found: dict[str, list[str]] = {}
    for name in done.files:
        base = name.rsplit("/", 1)[-1]
        if base in named and _is_sqlite(root / name):
            found.setdefault(base, []).append(name)
    return found


def _count(root: Path, done: Unpacked, databases: dict[str, list[str]], key: str) -> CountRow:
    what, _, detail = key.rpartition(":")
    if not what:
        return CountRow("", key, 0, None, "a count this Slipway cannot read", checked=False)
    if detail == "files" and what not in databases:
        prefix = what.rstrip("/") + "/"
        named = what in done.folders or any(n.startswith(prefix) for n in done.files)
        if "/" not in what.rstrip("/") and not named:
            return CountRow("", key, 0, None, f"{what} names no folder of the part", checked=False)
        # Files under that folder, but not the databases counted on their own.
        counted = {name for names in databases.values() for name in names}
        found = sum(1 for n in done.files if n.startswith(prefix) and n not in counted)
        return CountRow("", key, 0, found)
    paths = databases.get(what, [])
    if len(paths) != 1:
        return CountRow("", key, 0, None, f"{len(paths)} databases named {what} in the part")
    found_rows, note = _rows(root / paths[0], detail)
    return CountRow("", key, 0, found_rows, note)


def _rows(path: Path, table: str) -> tuple[int | None, str]:
    # Read-only and immutable: counting must not leave a -wal or -shm behind.
    uri = path.absolute().as_uri() + "?mode=ro&immutable=1"
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            known = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
            ).fetchone()
            if known is None:
                return None, f"no table {table}"
            quoted = table.replace('"', '""')
            # A name the database itself lists, quoted as an identifier.
            (rows,) = conn.execute(f'SELECT COUNT(*) FROM "{quoted}"').fetchone()  # noqa: S608
    except sqlite3.Error as exc:
        return None, str(exc)
    return int(rows), ""


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(len(_SQLITE_HEADER)) == _SQLITE_HEADER
