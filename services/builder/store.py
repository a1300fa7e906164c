"""The builder's database: one row per build, its outcome and its sealed output.

Destroyed apps leave a tombstone (`destroyed_apps`, the app id and when) so that a
build command arriving late for one is refused, and nothing else: their builds and
sealed output are deleted. The connection runs with `secure_delete` (deleted cells
are overwritten with zeros) and the WAL is checkpointed after an app's rows go, so
ciphertext its team's key could still open does not linger in free pages.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from slipway.libs.storage import Database

log = structlog.get_logger("slipway.builder")

MIGRATIONS = (
    """
    CREATE TABLE builds (
        build_id      TEXT PRIMARY KEY,
        app_id        TEXT NOT NULL,
        app_name      TEXT NOT NULL,
        team_id       TEXT NOT NULL,
        status        TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
        started_at    REAL NOT NULL,
        finished_at   REAL,
        duration_s    REAL NOT NULL DEFAULT 0,
        error         TEXT,
        image_ref     TEXT,
        image_digest  TEXT,
        process_types TEXT NOT NULL DEFAULT '{}',
        description   TEXT NOT NULL DEFAULT '',
        output        BLOB
    );
    CREATE INDEX builds_by_app ON builds (app_id, started_at);
    """,
    """
    CREATE TABLE destroyed_apps (
        app_id        TEXT PRIMARY KEY,
        destroyed_at  REAL NOT NULL
    );
    """,
)


@dataclass(frozen=True)
class BuildRecord:
    """One build as stored; `output` is the envelope-encrypted whole output."""

    build_id: str
    app_id: str
    app_name: str
    team_id: str
    status: str
    duration_s: float = 0.0
    error: str | None = None
    image_ref: str | None = None
    image_digest: str | None = None
    process_types: dict[str, str] | None = None
    description: str = ""
    output: bytes | None = None

    @property
    def finished(self) -> bool:
        return self.status != "pending"


class BuildStore:
    """Reads and writes build rows."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, path: Path) -> BuildStore:
        """Open (creating and migrating) the database, with secure deletion on."""
        db = await Database.open(path, MIGRATIONS)
        await db.conn.execute("PRAGMA secure_delete=ON")
        return cls(db)

    async def close(self) -> None:
        await self.db.close()

    async def get(self, build_id: str) -> BuildRecord | None:
        """The build, or None if this builder never saw it."""
        row = await self.db.fetchone("SELECT * FROM builds WHERE build_id = ?", (build_id,))
        if row is None:
            return None
        return BuildRecord(
            build_id=row["build_id"],
            app_id=row["app_id"],
            app_name=row["app_name"],
            team_id=row["team_id"],
            status=row["status"],
            duration_s=row["duration_s"],
            error=row["error"],
            image_ref=row["image_ref"],
            image_digest=row["image_digest"],
            process_types=json.loads(row["process_types"]),
            description=row["description"],
            output=row["output"],
        )

    async def start(self, build_id: str, app_id: str, app_name: str, team_id: str) -> None:
        """Record a build as pending (again, if an earlier attempt died half way)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO builds (build_id, app_id, app_name, team_id, status, started_at)"
                " VALUES (?, ?, ?, ?, 'pending', ?)"
                " ON CONFLICT (build_id) DO UPDATE SET started_at = excluded.started_at",
                (build_id, app_id, app_name, team_id, time.time()),
            )

    async def finish(self, record: BuildRecord) -> None:
        """Record a build's outcome (once; a finished build is never changed)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE builds SET status = ?, finished_at = ?, duration_s = ?, error = ?,"
                " image_ref = ?, image_digest = ?, process_types = ?, description = ?"
                " WHERE build_id = ? AND status = 'pending'",
                (
                    record.status,
                    time.time(),
                    record.duration_s,
                    record.error,
                    record.image_ref,
                    record.image_digest,
                    json.dumps(record.process_types or {}),
                    record.description,
                    record.build_id,
                ),
            )

    async def pending(self) -> list[str]:
        """Ids of builds recorded as started and never finished."""
        rows = await self.db.fetchall("SELECT build_id FROM builds WHERE status = 'pending'")
        return [row["build_id"] for row in rows]

    async def prune(self, older_than_s: float) -> int:
        """Forget finished builds (and tombstones) older than `older_than_s` s; builds gone."""
        cutoff = time.time() - older_than_s
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM destroyed_apps WHERE destroyed_at < ?", (cutoff,))
            cursor = await conn.execute(
                "DELETE FROM builds WHERE status != 'pending' AND finished_at < ?", (cutoff,)
            )
            return cursor.rowcount

    async def save_output(self, build_id: str, sealed: bytes) -> None:
        """Keep a finished build's encrypted output."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE builds SET output = ? WHERE build_id = ?", (sealed, build_id)
            )

    # ---- destroyed apps ------------------------------------------------------------------

    async def mark_destroyed(self, app_id: str) -> None:
        """Leave the app's tombstone: later build commands for it are refused."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO destroyed_apps (app_id, destroyed_at) VALUES (?, ?)",
                (app_id, time.time()),
            )

    async def destroyed(self) -> set[str]:
        """Ids of the apps with a tombstone."""
        rows = await self.db.fetchall("SELECT app_id FROM destroyed_apps")
        return {row["app_id"] for row in rows}

    async def forget_build(self, build_id: str) -> None:
        """Delete one build and its sealed output."""
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM builds WHERE build_id = ?", (build_id,))

    async def forget_app(self, app_id: str) -> int:
        """Delete every build of the app and its sealed output; return how many."""
        async with self.db.transaction() as conn:
            cursor = await conn.execute("DELETE FROM builds WHERE app_id = ?", (app_id,))
            removed = cursor.rowcount
        await self.purge_freed_pages()
        return removed

    async def purge_freed_pages(self) -> None:
        """Checkpoint and truncate the WAL, so deleted rows survive in no older page."""
        try:
            async with self.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
                row = await cursor.fetchone()
            busy = row is not None and int(row[0]) != 0
        except sqlite3.OperationalError:
            busy = True  # a write transaction of a build is open on the connection
        if busy:
            # Busy: SQLite's next checkpoint overwrites those pages; secure_delete zeroed
            # the rows in the database file already.
            log.warning("builder.wal_checkpoint_busy")
