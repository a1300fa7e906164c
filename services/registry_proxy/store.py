"""registry-proxy's database: the images pushed per app, the releases that use them, an outbox.

images     one row per (app, digest, tag) pushed through the proxy; `deleted_at` once
           garbage collection removed its manifest
releases   every release the gateway announced: which digest it runs
outbox     IMAGE_PUSHED events, committed with their image row and relayed to JetStream
           (so a push is announced even if NATS was away when its manifest landed)
flags      small persistent facts ("a garbage collection is owed")
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from slipway.contracts.base import encode
from slipway.contracts.registry import ImagePushed
from slipway.libs.storage import Database

MIGRATIONS = (
    """
    CREATE TABLE images (
        app_id     TEXT NOT NULL,
        digest     TEXT NOT NULL,
        tag        TEXT NOT NULL DEFAULT '',
        pushed_at  REAL NOT NULL,
        deleted_at REAL,
        PRIMARY KEY (app_id, digest, tag)
    );
    CREATE TABLE releases (
        release_id   TEXT PRIMARY KEY,
        app_id       TEXT NOT NULL,
        version      INTEGER NOT NULL,
        image_digest TEXT,
        created_at   REAL NOT NULL
    );
    CREATE INDEX releases_by_app ON releases (app_id, version);
    CREATE TABLE outbox (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL UNIQUE,
        payload  BLOB NOT NULL,
        sent_at  REAL
    );
    CREATE TABLE flags (
        name  TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
)

GC_OWED = "gc_owed"


@dataclass(frozen=True)
class Image:
    """One tag (or an untagged push) of one digest in an app's repository."""

    app_id: str
    digest: str
    tag: str
    pushed_at: float


@dataclass(frozen=True)
class Release:
    """The image one release of an app runs."""

    release_id: str
    app_id: str
    version: int
    image_digest: str | None


@dataclass(frozen=True)
class Pending:
    """An outbox row not yet relayed."""

    seq: int
    event_id: str
    payload: bytes


class Store:
    """Typed access to registry-proxy's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, path: Path) -> Store:
        return cls(await Database.open(path, MIGRATIONS))

    async def close(self) -> None:
        await self.db.close()

    async def record_push(self, event: ImagePushed) -> None:
        """A manifest landed: remember the image and queue its IMAGE_PUSHED, atomically."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO images (app_id, digest, tag, pushed_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (app_id, digest, tag)"
                " DO UPDATE SET pushed_at = excluded.pushed_at, deleted_at = NULL",
                (event.app_id, event.digest, event.tag, event.occurred_at),
            )
            await conn.execute(
                "INSERT INTO outbox (event_id, payload) VALUES (?, ?)",
                (event.event_id, encode(event)),
            )

    async def images(self, app_id: str) -> list[Image]:
        """The app's images that are still in the registry, newest first."""
        rows = await self.db.fetchall(
            "SELECT app_id, digest, tag, pushed_at FROM images"
            " WHERE app_id = ? AND deleted_at IS NULL ORDER BY pushed_at DESC, tag",
            (app_id,),
        )
        return [Image(r["app_id"], r["digest"], r["tag"], r["pushed_at"]) for r in rows]

    async def mark_deleted(self, app_id: str, digests: list[str]) -> None:
        """The manifests of `digests` were deleted; a garbage collection now owes their blobs."""
        now = time.time()
        async with self.db.transaction() as conn:
            await conn.executemany(
                "UPDATE images SET deleted_at = ? WHERE app_id = ? AND digest = ?"
                " AND deleted_at IS NULL",
                [(now, app_id, digest) for digest in digests],
            )
            # A counter, not a boolean: a deletion during a collection keeps the debt alive.
            await conn.execute(
                "INSERT INTO flags (name, value) VALUES (?, '1')"
                " ON CONFLICT (name) DO UPDATE SET value = CAST(value AS INTEGER) + 1",
                (GC_OWED,),
            )

    async def record_release(self, release: Release) -> None:
        """Remember which digest a release runs (a redelivered event changes nothing)."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO releases"
                " (release_id, app_id, version, image_digest, created_at) VALUES (?, ?, ?, ?, ?)",
                (
                    release.release_id,
                    release.app_id,
                    release.version,
                    release.image_digest,
                    time.time(),
                ),
            )

    async def releases(self, app_id: str) -> list[Release]:
        """The app's releases, newest first."""
        rows = await self.db.fetchall(
            "SELECT release_id, app_id, version, image_digest FROM releases"
            " WHERE app_id = ? ORDER BY version DESC",
            (app_id,),
        )
        return [
            Release(r["release_id"], r["app_id"], r["version"], r["image_digest"]) for r in rows
        ]

    async def apps_with_releases(self) -> list[str]:
        rows = await self.db.fetchall("SELECT DISTINCT app_id FROM releases ORDER BY app_id")
        return [r["app_id"] for r in rows]

    async def gc_owed(self) -> str | None:
        """A token naming the deletions a collection owes, or None when nothing is owed."""
        row = await self.db.fetchone("SELECT value FROM flags WHERE name = ?", (GC_OWED,))
        return None if row is None else str(row["value"])

    async def gc_done(self, owed: str) -> None:
        """A collection that started when `owed` was read has finished."""
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM flags WHERE name = ? AND value = ?", (GC_OWED, owed))

    async def pending_events(self, limit: int = 100) -> list[Pending]:
        rows = await self.db.fetchall(
            "SELECT seq, event_id, payload FROM outbox WHERE sent_at IS NULL ORDER BY seq LIMIT ?",
            (limit,),
        )
        return [Pending(r["seq"], r["event_id"], bytes(r["payload"])) for r in rows]

    async def mark_sent(self, seq: int) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("UPDATE outbox SET sent_at = ? WHERE seq = ?", (time.time(), seq))
