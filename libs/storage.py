"""aiosqlite, the way every service that owns a database uses it.

One file per service under its state folder, WAL mode, `synchronous=FULL` (a
committed transaction survives a power cut), foreign keys on, and numbered
migrations applied at open. Writes go through `transaction()`, which serialises
writers inside the process and rolls back on any exception.

`claim(conn, message_id)` is the idempotency helper for at-least-once delivery:
inside the same transaction as a handler's effects it records the command or
event id, and returns False when that id was already handled — so a redelivered
message changes nothing, and a crash before commit leaves no half-done work.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

_PROCESSED = """
CREATE TABLE IF NOT EXISTS processed_messages (
    message_id TEXT PRIMARY KEY,
    handled_at REAL NOT NULL
)
"""


class Database:
    """A service's own SQLite database."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path | str, migrations: Sequence[str] = ()) -> Database:
        """Open (creating) the database and bring its schema up to date."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = await aiosqlite.connect(path, isolation_level=None)
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=FULL")
        await conn.execute("PRAGMA foreign_keys=ON")
        await conn.execute("PRAGMA busy_timeout=5000")
        db = cls(conn, path)
        await db._migrate([_PROCESSED, *migrations])
        return db

    async def _migrate(self, migrations: Sequence[str]) -> None:
        async with self.transaction() as conn:
            row = await (await conn.execute("PRAGMA user_version")).fetchone()
            current = int(row[0]) if row else 0
            for version, script in enumerate(migrations, start=1):
                if version <= current:
                    continue
                for statement in _statements(script):
                    await conn.execute(statement)
                # PRAGMA takes no parameters; version is an int we computed.
                await conn.execute(f"PRAGMA user_version={version}")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction (BEGIN IMMEDIATE); committed on success, rolled back on error."""
        async with self._write_lock:
            await self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            else:
                await self.conn.execute("COMMIT")

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def close(self) -> None:
        await self.conn.close()


async def claim(conn: aiosqlite.Connection, message_id: str) -> bool:
    """Record `message_id` as handled; False if it already was (skip the work)."""
    # OR IGNORE swallows only the primary-key clash; every other column is given.
    cursor = await conn.execute(
        "INSERT OR IGNORE INTO processed_messages (message_id, handled_at) VALUES (?, ?)",
        (message_id, time.time()),
    )
    return cursor.rowcount == 1


def _statements(script: str) -> list[str]:
    # Split where SQLite itself says a statement ends, so that trigger bodies
    # (`BEGIN ...; END`) and semicolons inside string literals stay whole.
    statements: list[str] = []
    current = ""
    for piece in script.split(";"):
        current += piece + ";"
        if sqlite3.complete_statement(current):
            if current.strip(" \n\t;"):
                statements.append(current.strip())
            current = ""
    if current.strip(" \n\t;"):
        raise ValueError(f"incomplete SQL statement in migration: {current.strip()!r}")
    return statements
