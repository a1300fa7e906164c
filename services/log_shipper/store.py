"""Log-shipper's database: sealed batches, apps, drains, this host's dynos, metric series.

No column ever holds a log line or a drain URL in plaintext: `batches.data` is
an envelope record (purpose LOGS) and `drains.sealed_url` too. What is in the
clear is bookkeeping only: ids, dyno names, timestamps, sizes.

Dyno output arrives from the dyno init over a socket (receiver.py), with
nothing to resume from: the per-container cursors into Docker's logs that
older versions kept are dropped (migration 3).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import aiosqlite

from slipway.libs.storage import Database

MIGRATIONS = (
    """
    CREATE TABLE apps (
        app_id TEXT PRIMARY KEY,
        team_id TEXT NOT NULL,
        retention_seconds REAL
    );
    CREATE TABLE cursors (
        container_id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        dyno TEXT NOT NULL,
        ts_ns INTEGER NOT NULL,
        count INTEGER NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE batches (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        team_id TEXT NOT NULL,
        host TEXT NOT NULL,
        first_seq INTEGER NOT NULL,
        last_seq INTEGER NOT NULL,
        first_ts REAL NOT NULL,
        last_ts REAL NOT NULL,
        lines INTEGER NOT NULL,
        size INTEGER NOT NULL,
        sealed_to TEXT,
        data BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX batches_by_app ON batches (app_id, last_seq);
    CREATE TABLE drains (
        id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        team_id TEXT NOT NULL,
        token TEXT NOT NULL,
        sealed_url BLOB NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE INDEX drains_by_app ON drains (app_id);
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value INTEGER NOT NULL
    );
    """,
    # The revision of the gateway's LOG_RETENTION_CHANGED last applied (see apply_retention).
    """
    ALTER TABLE apps ADD COLUMN retention_revision INTEGER NOT NULL DEFAULT 0
    """,
    # Docker's logs are no longer read: nothing to resume.
    """
    DROP TABLE cursors
    """,
    # This host's dynos as the scheduler announced them (DYNO_CHANGED, DYNOS_LIST): no
    # Docker client reads their labels any more, and a restart must still know them.
    """
    CREATE TABLE dynos (
        container_id TEXT PRIMARY KEY,
        app_id TEXT NOT NULL,
        team_id TEXT NOT NULL,
        dyno TEXT NOT NULL,
        release INTEGER NOT NULL,
        process_type TEXT NOT NULL,
        state TEXT NOT NULL,
        restarts INTEGER NOT NULL,
        updated_at REAL NOT NULL
    )
    """,
    # Per-app, per-minute metric aggregates (series.py): msgpack of numbers only, a day kept.
    """
    CREATE TABLE series (
        app_id TEXT NOT NULL,
        minute INTEGER NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (app_id, minute)
    );
    CREATE INDEX series_by_minute ON series (minute);
    """,
)


@dataclass(frozen=True, slots=True)
class BatchRow:
    id: str
    app_id: str
    team_id: str
    host: str
    first_seq: int
    last_seq: int
    first_ts: float
    last_ts: float
    lines: int
    size: int
    sealed_to: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class DrainRow:
    id: str
    app_id: str
    team_id: str
    token: str
    sealed_url: bytes
    created_at: float
    updated_at: float


async def next_seq(db: Database) -> int:
    """The first sequence number not yet used by a stored batch of this host."""
    row = await db.fetchone("SELECT value FROM meta WHERE key = 'next_seq'")
    return int(row[0]) if row else 1


async def save_batch(conn: aiosqlite.Connection, batch: BatchRow) -> None:
    """Store a sealed batch (and the next free sequence number), in the caller's transaction."""
    await conn.execute(
        "INSERT INTO batches (id, app_id, team_id, host, first_seq, last_seq, first_ts,"
        " last_ts, lines, size, sealed_to, data, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            batch.id,
            batch.app_id,
            batch.team_id,
            batch.host,
            batch.first_seq,
            batch.last_seq,
            batch.first_ts,
            batch.last_ts,
            batch.lines,
            batch.size,
            batch.sealed_to,
            batch.data,
            time.time(),
        ),
    )
    await conn.execute(
        "INSERT INTO meta (key, value) VALUES ('next_seq', ?)"
        " ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
        (batch.last_seq + 1,),
    )


async def newest_batches(
    db: Database, app_id: str, *, max_lines: int, host: str | None = None
) -> list[BatchRow]:
    """The newest batches of an app holding at least `max_lines` lines, newest first."""
    found: list[BatchRow] = []
    total = 0
    sql = "SELECT * FROM batches WHERE app_id = ? ORDER BY last_seq DESC"
    async with db.conn.execute(sql, (app_id,)) as cursor:
        async for r in cursor:
            row = batch_of(r)
            if host is not None and row.host != host:
                continue
            found.append(row)
            total += row.lines
            if total >= max_lines:
                break
    return found


def batch_of(r: aiosqlite.Row) -> BatchRow:
    return BatchRow(
        id=r["id"],
        app_id=r["app_id"],
        team_id=r["team_id"],
        host=r["host"],
        first_seq=int(r["first_seq"]),
        last_seq=int(r["last_seq"]),
        first_ts=float(r["first_ts"]),
        last_ts=float(r["last_ts"]),
        lines=int(r["lines"]),
        size=int(r["size"]),
        sealed_to=r["sealed_to"],
        data=bytes(r["data"]),
    )


async def all_batches(db: Database, app_id: str) -> list[BatchRow]:
    """Every batch of an app, oldest first (for exports and tests)."""
    rows = await db.fetchall("SELECT * FROM batches WHERE app_id = ? ORDER BY last_seq", (app_id,))
    return [batch_of(r) for r in rows]


async def remember_app(db: Database, app_id: str, team_id: str) -> None:
    """Record which team owns an app (learnt from labels and events)."""
    async with db.transaction() as conn:
        await conn.execute(
            "INSERT INTO apps (app_id, team_id) VALUES (?, ?)"
            " ON CONFLICT (app_id) DO UPDATE SET team_id = excluded.team_id",
            (app_id, team_id),
        )


async def team_of(db: Database, app_id: str) -> str | None:
    row = await db.fetchone("SELECT team_id FROM apps WHERE app_id = ?", (app_id,))
    return str(row[0]) if row else None


async def drop_app(conn: aiosqlite.Connection, app_id: str) -> None:
    """Forget everything held for an app: its history, drains, metric series."""
    for table in ("batches", "drains", "series", "apps"):
        await conn.execute(f"DELETE FROM {table} WHERE app_id = ?", (app_id,))  # noqa: S608


async def drop_team(conn: aiosqlite.Connection, team_id: str) -> None:
    """Forget every app of a team (its key was shredded: the batches are unreadable anyway)."""
    found = await conn.execute("SELECT app_id FROM apps WHERE team_id = ?", (team_id,))
    rows = await found.fetchall()
    for row in rows:
        await drop_app(conn, str(row[0]))
    await conn.execute("DELETE FROM batches WHERE team_id = ?", (team_id,))


async def sweep(db: Database, *, default_retention: float, max_bytes: int) -> int:
    """Delete batches past their app's retention or beyond its size bound; how many went."""
    now = time.time()
    removed = 0
    async with db.transaction() as conn:
        cursor = await conn.execute(
            "DELETE FROM batches WHERE last_ts < ? - coalesce("
            " (SELECT retention_seconds FROM apps WHERE apps.app_id = batches.app_id), ?)",
            (now, default_retention),
        )
        removed += cursor.rowcount
        apps = await (
            await conn.execute(
                "SELECT app_id FROM batches GROUP BY app_id HAVING sum(size) > ?", (max_bytes,)
            )
        ).fetchall()
        for (app_id,) in apps:
            cursor = await conn.execute(
                "DELETE FROM batches WHERE app_id = ? AND last_seq < ("
                " SELECT min(last_seq) FROM (SELECT last_seq, sum(size) OVER"
                " (ORDER BY last_seq DESC) AS kept FROM batches WHERE app_id = ?)"
                " WHERE kept <= ?)",
                (app_id, app_id, max_bytes),
            )
            removed += cursor.rowcount
    return removed


async def drains(db: Database, app_id: str | None = None) -> list[DrainRow]:
    """The drains of one app, or of every app."""
    if app_id is None:
        rows = await db.fetchall("SELECT * FROM drains ORDER BY created_at")
    else:
        rows = await db.fetchall(
            "SELECT * FROM drains WHERE app_id = ? ORDER BY created_at", (app_id,)
        )
    return [
        DrainRow(
            r["id"],
            r["app_id"],
            r["team_id"],
            r["token"],
            bytes(r["sealed_url"]),
            float(r["created_at"]),
            float(r["updated_at"]),
        )
        for r in rows
    ]


async def put_drain(conn: aiosqlite.Connection, drain: DrainRow) -> None:
    await conn.execute(
        "INSERT INTO drains (id, app_id, team_id, token, sealed_url, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
        (
            drain.id,
            drain.app_id,
            drain.team_id,
            drain.token,
            drain.sealed_url,
            drain.created_at,
            drain.updated_at,
        ),
    )


async def delete_drain(conn: aiosqlite.Connection, drain_id: str) -> None:
    await conn.execute("DELETE FROM drains WHERE id = ?", (drain_id,))


async def apply_retention(
    db: Database, app_id: str, team_id: str, seconds: float | None, revision: int
) -> bool:
    """Set the app's retention unless a later revision was applied already; whether it was."""
    # Events may arrive twice or out of order: the highest revision wins, whatever came last.
    async with db.transaction() as conn:
        cursor = await conn.execute(
            "INSERT INTO apps (app_id, team_id, retention_seconds, retention_revision)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (app_id) DO UPDATE SET"
            " retention_seconds = excluded.retention_seconds,"
            " retention_revision = excluded.retention_revision"
            " WHERE excluded.retention_revision > apps.retention_revision",
            (app_id, team_id, seconds, revision),
        )
        return cursor.rowcount == 1


_DYNO_COLUMNS = (
    "container_id, app_id, team_id, dyno, release, process_type, state, restarts, updated_at"
)


async def put_dyno(db: Database, row: tuple[str, str, str, str, int, str, str, int, float]) -> bool:
    """Record a dyno (the `_DYNO_COLUMNS`) unless a later word on it is stored; whether it was."""
    async with db.transaction() as conn:
        cursor = await conn.execute(
            f"INSERT INTO dynos ({_DYNO_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"  # noqa: S608
            " ON CONFLICT (container_id) DO UPDATE SET app_id = excluded.app_id,"
            " team_id = excluded.team_id, dyno = excluded.dyno, release = excluded.release,"
            " process_type = excluded.process_type, state = excluded.state,"
            " restarts = excluded.restarts, updated_at = excluded.updated_at"
            " WHERE excluded.updated_at >= dynos.updated_at",
            row,
        )
        return cursor.rowcount == 1


async def dynos(db: Database) -> list[tuple[str, str, str, str, int, str, str, int, float]]:
    """Every dyno recorded, as `_DYNO_COLUMNS` tuples."""
    rows = await db.fetchall(f"SELECT {_DYNO_COLUMNS} FROM dynos")  # noqa: S608
    return [
        (
            str(r[0]),
            str(r[1]),
            str(r[2]),
            str(r[3]),
            int(r[4]),
            str(r[5]),
            str(r[6]),
            int(r[7]),
            float(r[8]),
        )
        for r in rows
    ]


async def forget_dynos(db: Database, container_ids: list[str]) -> None:
    """Drop dynos gone for good."""
    async with db.transaction() as conn:
        for container_id in container_ids:
            await conn.execute("DELETE FROM dynos WHERE container_id = ?", (container_id,))
