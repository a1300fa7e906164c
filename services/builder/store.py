"""The builder's database: one row per build, its outcome and its sealed output."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from slipway.libs.storage import Database

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
        return cls(await Database.open(path, MIGRATIONS))

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
        """Forget finished builds older than `older_than_s` seconds; return how many."""
        async with self.db.transaction() as conn:
            cursor = await conn.execute(
                "DELETE FROM builds WHERE status != 'pending' AND finished_at < ?",
                (time.time() - older_than_s,),
            )
            return cursor.rowcount

    async def save_output(self, build_id: str, sealed: bytes) -> None:
        """Keep a finished build's encrypted output."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE builds SET output = ? WHERE build_id = ?", (sealed, build_id)
            )
