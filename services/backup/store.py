"""The backup catalog (aiosqlite): databases, base backups, objects, manifests, WAL progress.

Nothing here is customer data: ids, numbers, LSNs, sizes, hashes and times. The
row counts a backup records travel sealed, in its `counts` object.

An object becomes visible (listed, restorable) only when the manifest that names it
is stored: objects are recorded with `manifest_seq` NULL while they upload, and the
manifest's row and theirs change in one transaction. A crash in between leaves
orphans that `forget_orphans` finds at the next start.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import aiosqlite

from slipway.contracts.backup import BackupInfo, ObjectInfo, WalStatus
from slipway.libs.storage import Database

MIGRATIONS = (
    """
    CREATE TABLE databases (
        addon_id TEXT PRIMARY KEY,
        addon_name TEXT NOT NULL,
        app_id TEXT NOT NULL,
        team_id TEXT NOT NULL,
        plan TEXT NOT NULL,
        database TEXT NOT NULL,
        host_id TEXT NOT NULL DEFAULT '',
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        destroyed_at REAL
    );
    CREATE TABLE backups (
        addon_id TEXT NOT NULL,
        num INTEGER NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        started_at REAL NOT NULL,
        finished_at REAL,
        size_bytes INTEGER NOT NULL DEFAULT 0,
        stored_bytes INTEGER NOT NULL DEFAULT 0,
        start_lsn INTEGER NOT NULL DEFAULT 0,
        end_lsn INTEGER NOT NULL DEFAULT 0,
        timeline INTEGER NOT NULL DEFAULT 0,
        recipients TEXT NOT NULL DEFAULT '[]',
        error TEXT NOT NULL DEFAULT '',
        verified TEXT NOT NULL DEFAULT '',
        PRIMARY KEY (addon_id, num)
    );
    CREATE TABLE objects (
        key TEXT PRIMARY KEY,
        addon_id TEXT NOT NULL,
        kind TEXT NOT NULL,
        backup_num INTEGER NOT NULL DEFAULT 0,
        part INTEGER NOT NULL DEFAULT 0,
        timeline INTEGER NOT NULL DEFAULT 0,
        segment TEXT NOT NULL DEFAULT '',
        seg_offset INTEGER NOT NULL DEFAULT 0,
        length INTEGER NOT NULL DEFAULT 0,
        start_lsn INTEGER NOT NULL DEFAULT 0,
        end_lsn INTEGER NOT NULL DEFAULT 0,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        created_at REAL NOT NULL,
        manifest_seq INTEGER
    );
    CREATE INDEX objects_by_addon ON objects (addon_id, kind, start_lsn);
    CREATE TABLE manifests (
        addon_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        hash TEXT NOT NULL,
        key TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (addon_id, seq)
    );
    CREATE TABLE wal (
        addon_id TEXT PRIMARY KEY,
        timeline INTEGER NOT NULL,
        stored_lsn INTEGER NOT NULL,
        stored_at REAL NOT NULL
    );
    """,
    # Daily capture times (services/backup/schedules.py) and what expiry removed
    # (services/backup/retention.py).
    """
    CREATE TABLE schedules (
        addon_id TEXT PRIMARY KEY,
        hour INTEGER NOT NULL,
        timezone TEXT NOT NULL,
        enabled INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE expiries (
        addon_id TEXT NOT NULL,
        at REAL NOT NULL,
        manifest_seq INTEGER NOT NULL,
        backups TEXT NOT NULL,
        base_objects INTEGER NOT NULL,
        wal_pieces INTEGER NOT NULL,
        stored_bytes INTEGER NOT NULL,
        PRIMARY KEY (addon_id, manifest_seq)
    );
    """,
    # When each backup was last verified (services/backup/verify.py): the weekly check.
    """
    ALTER TABLE backups ADD COLUMN verified_at REAL;
    """,
    # A database whose history this host imported from storage (services/backup/imported.py)
    # because the host that ran it is gone: read and restored here, never streamed or expired.
    """
    ALTER TABLE databases ADD COLUMN imported INTEGER NOT NULL DEFAULT 0;
    """,
)


@dataclass(frozen=True)
class DatabaseRow:
    addon_id: str
    addon_name: str
    app_id: str
    team_id: str
    plan: str
    database: str
    host_id: str
    state: str  # provisioning, provisioned, destroyed, imported (known from storage only)
    imported: bool = False  # history imported from storage: read-only on this host


@dataclass(frozen=True)
class BackupRow:
    addon_id: str
    num: int
    kind: str
    state: str
    started_at: float
    finished_at: float | None
    size_bytes: int
    stored_bytes: int
    start_lsn: int
    end_lsn: int
    timeline: int
    recipients: list[str]
    error: str
    verified: str
    verified_at: float | None = None


@dataclass(frozen=True)
class ObjectRow:
    key: str
    addon_id: str
    kind: str
    backup_num: int
    part: int
    timeline: int
    segment: str
    offset: int
    length: int
    start_lsn: int
    end_lsn: int
    size: int
    sha256: str
    created_at: float


def iso(ts: float | None) -> str:
    if not ts:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts % 1 * 1e6):06d}Z"


def format_lsn(lsn: int) -> str:
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


class Catalog:
    """The backup service's database."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # ---- databases --------------------------------------------------------------------------

    async def upsert_database(self, row: DatabaseRow) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO databases (addon_id, addon_name, app_id, team_id, plan, database,"
                " host_id, state, created_at) VALUES (?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT (addon_id) DO UPDATE SET addon_name=excluded.addon_name,"
                " plan=excluded.plan, database=excluded.database",
                (
                    row.addon_id,
                    row.addon_name,
                    row.app_id,
                    row.team_id,
                    row.plan,
                    row.database,
                    row.host_id,
                    row.state,
                    time.time(),
                ),
            )

    async def set_state(self, addon_id: str, state: str, host_id: str | None = None) -> None:
        async with self.db.transaction() as conn:
            if host_id is not None:
                await conn.execute(
                    "UPDATE databases SET state=?, host_id=? WHERE addon_id=?",
                    (state, host_id, addon_id),
                )
            else:
                await conn.execute(
                    "UPDATE databases SET state=?,"
                    " destroyed_at=CASE WHEN ?='destroyed' THEN ? ELSE destroyed_at END"
                    " WHERE addon_id=?",
                    (state, state, time.time(), addon_id),
                )

    async def database(self, addon_id: str) -> DatabaseRow | None:
        row = await self.db.fetchone("SELECT * FROM databases WHERE addon_id=?", (addon_id,))
        return _database(row) if row else None

    async def databases(self, *, host_id: str, state: str) -> list[DatabaseRow]:
        rows = await self.db.fetchall(
            "SELECT * FROM databases WHERE host_id=? AND state=?", (host_id, state)
        )
        return [_database(r) for r in rows]

    async def databases_of(self, *, app_id: str = "", team_id: str = "") -> list[DatabaseRow]:
        rows = await self.db.fetchall(
            "SELECT * FROM databases WHERE app_id=? OR team_id=?", (app_id, team_id)
        )
        return [_database(r) for r in rows]

    # ---- base backups -----------------------------------------------------------------------

    async def start_backup(self, addon_id: str, kind: str) -> int:
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "SELECT COALESCE(MAX(num), 0) + 1 FROM backups WHERE addon_id=?", (addon_id,)
            )
            num = int((await cur.fetchone())[0])  # type: ignore[index]
            await conn.execute(
                "INSERT INTO backups (addon_id, num, kind, state, started_at)"
                " VALUES (?,?,?,'running',?)",
                (addon_id, num, kind, time.time()),
            )
        return num

    async def fail_backup(self, addon_id: str, num: int, error: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE backups SET state='failed', error=?, finished_at=?"
                " WHERE addon_id=? AND num=? AND state='running'",
                (error[:500], time.time(), addon_id, num),
            )

    async def fail_running(self) -> int:
        """Mark captures a crash interrupted as failed; how many."""
        async with self.db.transaction() as conn:
            cur = await conn.execute(
                "UPDATE backups SET state='failed', finished_at=?,"
                " error='interrupted: the backup service stopped during the capture'"
                " WHERE state='running'",
                (time.time(),),
            )
            return cur.rowcount

    async def backups(self, addon_id: str) -> list[BackupRow]:
        rows = await self.db.fetchall(
            "SELECT * FROM backups WHERE addon_id=? ORDER BY num DESC", (addon_id,)
        )
        return [_backup(r) for r in rows]

    async def backup(self, addon_id: str, num: int) -> BackupRow | None:
        row = await self.db.fetchone(
            "SELECT * FROM backups WHERE addon_id=? AND num=?", (addon_id, num)
        )
        return _backup(row) if row else None

    async def latest_completed(
        self, addon_id: str, before: float | None = None
    ) -> BackupRow | None:
        if before is None:
            row = await self.db.fetchone(
                "SELECT * FROM backups WHERE addon_id=? AND state='completed'"
                " ORDER BY num DESC LIMIT 1",
                (addon_id,),
            )
        else:
            row = await self.db.fetchone(
                "SELECT * FROM backups WHERE addon_id=? AND state='completed' AND finished_at<=?"
                " ORDER BY num DESC LIMIT 1",
                (addon_id, before),
            )
        return _backup(row) if row else None

    async def set_verified(self, addon_id: str, num: int, result: str, reason: str) -> None:
        """Record a verification's outcome; a failure's reason shows as the backup's error."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE backups SET verified=?, verified_at=?, error=? WHERE addon_id=? AND num=?"
                " AND state='completed'",
                (result, time.time(), reason[:500], addon_id, num),
            )

    async def verified_at(self, addon_id: str, num: int) -> float | None:
        """When backup `num` was last verified (None: never)."""
        row = await self.db.fetchone(
            "SELECT verified_at FROM backups WHERE addon_id=? AND num=?", (addon_id, num)
        )
        return float(row[0]) if row and row[0] is not None else None

    async def last_verified_at(self, addon_id: str) -> float | None:
        """The newest verification of any of the database's backups (None: never)."""
        row = await self.db.fetchone(
            "SELECT MAX(verified_at) FROM backups WHERE addon_id=?", (addon_id,)
        )
        return float(row[0]) if row and row[0] is not None else None

    # ---- objects and manifests --------------------------------------------------------------

    async def add_object(self, row: ObjectRow) -> None:
        """Record an object as it is stored: invisible until its manifest lands."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT OR REPLACE INTO objects (key, addon_id, kind, backup_num, part, timeline,"
                " segment, seg_offset, length, start_lsn, end_lsn, size, sha256, created_at)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    row.key,
                    row.addon_id,
                    row.kind,
                    row.backup_num,
                    row.part,
                    row.timeline,
                    row.segment,
                    row.offset,
                    row.length,
                    row.start_lsn,
                    row.end_lsn,
                    row.size,
                    row.sha256,
                    row.created_at,
                ),
            )

    async def next_manifest(self, addon_id: str) -> tuple[int, str]:
        """The next manifest's sequence number and the previous one's hash ("" for the first)."""
        row = await self.db.fetchone(
            "SELECT seq, hash FROM manifests WHERE addon_id=? ORDER BY seq DESC LIMIT 1",
            (addon_id,),
        )
        return (int(row["seq"]) + 1, str(row["hash"])) if row else (1, "")

    async def commit_manifest(
        self,
        conn: aiosqlite.Connection,
        *,
        addon_id: str,
        seq: int,
        digest: str,
        key: str,
        object_keys: list[str],
    ) -> None:
        """Inside the caller's transaction: the manifest and the objects it names become visible."""
        await conn.execute(
            "INSERT INTO manifests (addon_id, seq, hash, key, created_at) VALUES (?,?,?,?,?)",
            (addon_id, seq, digest, key, time.time()),
        )
        await conn.executemany(
            "UPDATE objects SET manifest_seq=? WHERE key=?", [(seq, k) for k in object_keys]
        )

    async def complete_backup(
        self,
        conn: aiosqlite.Connection,
        *,
        addon_id: str,
        num: int,
        size_bytes: int,
        stored_bytes: int,
        start_lsn: int,
        end_lsn: int,
        timeline: int,
        recipients: list[str],
    ) -> None:
        await conn.execute(
            "UPDATE backups SET state='completed', finished_at=?, size_bytes=?, stored_bytes=?,"
            " start_lsn=?, end_lsn=?, timeline=?, recipients=? WHERE addon_id=? AND num=?",
            (
                time.time(),
                size_bytes,
                stored_bytes,
                start_lsn,
                end_lsn,
                timeline,
                json.dumps(recipients),
                addon_id,
                num,
            ),
        )

    async def manifest_keys(self, addon_id: str) -> list[tuple[int, str, str]]:
        rows = await self.db.fetchall(
            "SELECT seq, hash, key FROM manifests WHERE addon_id=? ORDER BY seq", (addon_id,)
        )
        return [(int(r["seq"]), str(r["hash"]), str(r["key"])) for r in rows]

    async def is_manifest(self, key: str) -> bool:
        return await self.db.fetchone("SELECT 1 FROM manifests WHERE key=?", (key,)) is not None

    async def manifest_range(self, addon_id: str, keys: list[str]) -> list[str]:
        """The manifests from the first to the last one naming `keys`: an unbroken chain."""
        low, high = None, None
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            row = await self.db.fetchone(
                "SELECT MIN(manifest_seq), MAX(manifest_seq) FROM objects"  # noqa: S608 - placeholders
                f" WHERE key IN ({marks})",
                chunk,
            )
            if row and row[0] is not None:
                low = row[0] if low is None else min(low, row[0])
                high = row[1] if high is None else max(high, row[1])
        if low is None:
            return []
        rows = await self.db.fetchall(
            "SELECT key FROM manifests WHERE addon_id=? AND seq BETWEEN ? AND ? ORDER BY seq",
            (addon_id, low, high),
        )
        return [str(r[0]) for r in rows]

    async def base_objects(self, addon_id: str, num: int) -> list[ObjectRow]:
        rows = await self.db.fetchall(
            "SELECT * FROM objects WHERE addon_id=? AND backup_num=? AND kind IN ('base','counts')"
            " AND manifest_seq IS NOT NULL ORDER BY kind, part",
            (addon_id, num),
        )
        return [_object(r) for r in rows]

    async def wal_objects(
        self, addon_id: str, timeline: int, from_lsn: int, created_before: float | None = None
    ) -> list[ObjectRow]:
        """Visible WAL pieces of `timeline` that end after `from_lsn`, in LSN order."""
        sql = (
            "SELECT * FROM objects WHERE addon_id=? AND kind='wal' AND timeline=?"
            " AND end_lsn>? AND manifest_seq IS NOT NULL"
        )
        params: list[object] = [addon_id, timeline, from_lsn]
        if created_before is not None:
            sql += " AND created_at<=?"
            params.append(created_before)
        rows = await self.db.fetchall(sql + " ORDER BY start_lsn, created_at", params)
        return [_object(r) for r in rows]

    async def object(self, key: str) -> ObjectRow | None:
        row = await self.db.fetchone(
            "SELECT * FROM objects WHERE key=? AND manifest_seq IS NOT NULL", (key,)
        )
        return _object(row) if row else None

    async def forget_orphans(self) -> list[str]:
        """Objects stored without a manifest (an interrupted upload): forgotten, keys returned."""
        async with self.db.transaction() as conn:
            cur = await conn.execute("SELECT key FROM objects WHERE manifest_seq IS NULL")
            keys = [str(r[0]) for r in await cur.fetchall()]
            await conn.execute("DELETE FROM objects WHERE manifest_seq IS NULL")
        return keys

    async def forget_objects(self, keys: list[str]) -> None:
        """Forget objects a failed writer stored but never published."""
        async with self.db.transaction() as conn:
            await conn.executemany(
                "DELETE FROM objects WHERE key=? AND manifest_seq IS NULL", [(k,) for k in keys]
            )

    async def visible_keys(self) -> set[str]:
        rows = await self.db.fetchall(
            "SELECT key FROM objects WHERE manifest_seq IS NOT NULL UNION SELECT key FROM manifests"
        )
        return {str(r[0]) for r in rows}

    # ---- history imported from storage (services/backup/imported.py) ----------------------

    async def imported_ids(self) -> set[str]:
        """The databases whose history this host imported: it never expires them."""
        rows = await self.db.fetchall("SELECT addon_id FROM databases WHERE imported=1")
        return {str(r[0]) for r in rows}

    async def clear_imported(self, addon_id: str) -> None:
        """The database now runs on this host: its history (imported) is this host's to keep."""
        async with self.db.transaction() as conn:
            await conn.execute("UPDATE databases SET imported=0 WHERE addon_id=?", (addon_id,))

    async def record_import(self, found: ImportedHistory) -> None:
        """The database's row and what its new manifests say, in one transaction."""
        db = found.db
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT INTO databases (addon_id, addon_name, app_id, team_id, plan, database,"
                " host_id, state, created_at, imported) VALUES (?,?,?,?,?,?,?,?,?,1)"
                " ON CONFLICT (addon_id) DO UPDATE SET imported=1",
                (
                    db.addon_id,
                    db.addon_name,
                    db.app_id,
                    db.team_id,
                    db.plan,
                    db.database,
                    db.host_id,
                    db.state,
                    time.time(),
                ),
            )
            for seq, digest, key, created_at in found.manifests:
                await conn.execute(
                    "INSERT INTO manifests (addon_id, seq, hash, key, created_at)"
                    " VALUES (?,?,?,?,?)",
                    (db.addon_id, seq, digest, key, created_at),
                )
            for obj, seq in found.objects:
                await conn.execute(
                    "INSERT OR REPLACE INTO objects (key, addon_id, kind, backup_num, part,"
                    " timeline, segment, seg_offset, length, start_lsn, end_lsn, size, sha256,"
                    " created_at, manifest_seq) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        obj.key, obj.addon_id, obj.kind, obj.backup_num, obj.part, obj.timeline,
                        obj.segment, obj.offset, obj.length, obj.start_lsn, obj.end_lsn,
                        obj.size, obj.sha256, obj.created_at, seq,
                    ),
                )  # fmt: skip
            for b in found.backups:
                await conn.execute(
                    "INSERT OR REPLACE INTO backups (addon_id, num, kind, state, started_at,"
                    " finished_at, size_bytes, stored_bytes, start_lsn, end_lsn, timeline,"
                    " recipients) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        b.addon_id, b.num, b.kind, b.state, b.started_at, b.finished_at,
                        b.size_bytes, b.stored_bytes, b.start_lsn, b.end_lsn, b.timeline,
                        json.dumps(b.recipients),
                    ),
                )  # fmt: skip
            # Expiry manifests name what went: later manifests win over earlier ones.
            await conn.executemany("DELETE FROM objects WHERE key=?", [(k,) for k in found.removed])
            await conn.executemany(
                "DELETE FROM backups WHERE addon_id=? AND num=?",
                [(db.addon_id, n) for n in found.expired_backups],
            )
            for timeline, through in found.wal_removed:
                await conn.execute(
                    "DELETE FROM objects WHERE addon_id=? AND kind='wal' AND timeline=?"
                    " AND end_lsn<=?",
                    (db.addon_id, timeline, through),
                )
            if found.wal is not None:
                timeline, lsn, at = found.wal
                await conn.execute(
                    "INSERT INTO wal (addon_id, timeline, stored_lsn, stored_at) VALUES (?,?,?,?)"
                    " ON CONFLICT (addon_id) DO UPDATE SET timeline=excluded.timeline,"
                    " stored_lsn=excluded.stored_lsn, stored_at=excluded.stored_at",
                    (db.addon_id, timeline, lsn, at),
                )

    # ---- WAL progress -----------------------------------------------------------------------

    async def wal_position(self, addon_id: str) -> tuple[int, int, float] | None:
        row = await self.db.fetchone(
            "SELECT timeline, stored_lsn, stored_at FROM wal WHERE addon_id=?", (addon_id,)
        )
        if row is None:
            return None
        return int(row["timeline"]), int(row["stored_lsn"]), float(row["stored_at"])

    async def set_wal_position(
        self, conn: aiosqlite.Connection, addon_id: str, timeline: int, lsn: int
    ) -> None:
        await conn.execute(
            "INSERT INTO wal (addon_id, timeline, stored_lsn, stored_at) VALUES (?,?,?,?)"
            " ON CONFLICT (addon_id) DO UPDATE SET timeline=excluded.timeline,"
            " stored_lsn=excluded.stored_lsn, stored_at=excluded.stored_at",
            (addon_id, timeline, lsn, time.time()),
        )


@dataclass
class ImportedHistory:
    """What new manifests in storage say about one database (services/backup/imported.py)."""

    db: DatabaseRow
    manifests: list[tuple[int, str, str, float]] = field(default_factory=list)  # seq, hash, key, at
    objects: list[tuple[ObjectRow, int]] = field(default_factory=list)  # with the manifest's seq
    backups: list[BackupRow] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    expired_backups: list[int] = field(default_factory=list)
    wal_removed: list[tuple[int, int]] = field(default_factory=list)  # timeline, through LSN
    wal: tuple[int, int, float] | None = None  # timeline, last LSN, when stored


def backup_info(
    row: BackupRow, db: DatabaseRow, tables: dict[str, int] | None = None
) -> BackupInfo:
    """The contract's view of one backup."""
    return BackupInfo(
        id=f"b{row.num:03d}",
        num=row.num,
        addon_id=row.addon_id,
        addon_name=db.addon_name,
        app_id=db.app_id,
        kind=row.kind,  # type: ignore[arg-type]
        state=row.state,  # type: ignore[arg-type]
        started_at=iso(row.started_at),
        finished_at=iso(row.finished_at),
        size_bytes=row.size_bytes,
        stored_bytes=row.stored_bytes,
        start_lsn=format_lsn(row.start_lsn) if row.start_lsn else "",
        end_lsn=format_lsn(row.end_lsn) if row.end_lsn else "",
        timeline=row.timeline,
        recipients=row.recipients,
        error=row.error,
        verified=row.verified,  # type: ignore[arg-type]
        tables=tables or {},
        verified_at=iso(row.verified_at),
    )


def object_info(row: ObjectRow) -> ObjectInfo:
    return ObjectInfo(
        key=row.key,
        kind=row.kind,  # type: ignore[arg-type]
        size=row.size,
        sha256=row.sha256,
        backup_num=row.backup_num,
        part=row.part,
        segment=row.segment,
        offset=row.offset,
        length=row.length,
    )


def wal_status(
    position: tuple[int, int, float] | None, streaming: bool, earliest: float | None
) -> WalStatus:
    if position is None:
        return WalStatus(streaming=streaming, earliest_restore_at=iso(earliest))
    _, lsn, at = position
    return WalStatus(
        streaming=streaming,
        last_stored_at=iso(at),
        last_lsn=format_lsn(lsn),
        earliest_restore_at=iso(earliest),
    )


def _database(row: aiosqlite.Row) -> DatabaseRow:
    return DatabaseRow(
        addon_id=row["addon_id"],
        addon_name=row["addon_name"],
        app_id=row["app_id"],
        team_id=row["team_id"],
        plan=row["plan"],
        database=row["database"],
        host_id=row["host_id"],
        state=row["state"],
        imported=bool(row["imported"]),
    )


def _backup(row: aiosqlite.Row) -> BackupRow:
    return BackupRow(
        addon_id=row["addon_id"],
        num=int(row["num"]),
        kind=row["kind"],
        state=row["state"],
        started_at=float(row["started_at"]),
        finished_at=row["finished_at"],
        size_bytes=int(row["size_bytes"]),
        stored_bytes=int(row["stored_bytes"]),
        start_lsn=int(row["start_lsn"]),
        end_lsn=int(row["end_lsn"]),
        timeline=int(row["timeline"]),
        recipients=list(json.loads(row["recipients"])),
        error=row["error"],
        verified=row["verified"],
        verified_at=row["verified_at"],
    )


def _object(row: aiosqlite.Row) -> ObjectRow:
    return ObjectRow(
        key=row["key"],
        addon_id=row["addon_id"],
        kind=row["kind"],
        backup_num=int(row["backup_num"]),
        part=int(row["part"]),
        timeline=int(row["timeline"]),
        segment=row["segment"],
        offset=int(row["seg_offset"]),
        length=int(row["length"]),
        start_lsn=int(row["start_lsn"]),
        end_lsn=int(row["end_lsn"]),
        size=int(row["size"]),
        sha256=row["sha256"],
        created_at=float(row["created_at"]),
    )
