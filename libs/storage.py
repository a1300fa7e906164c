"""aiosqlite, the way every service that owns a database uses it.

One file per service under its state folder, WAL mode, `synchronous=FULL` (a
committed transaction survives a power cut), foreign keys on, and numbered
migrations applied at open. Writes go through `transaction()`, which serialises
writers inside the process and rolls back on any exception.

Why FULL everywhere, although WAL with `synchronous=NORMAL` would also survive a
process crash: measured (bench/api.py, issue 17 item 9), NORMAL bought nothing on
the API's paths, since an fsync here costs about 0.25 ms and a request's time went
to moving each statement to aiosqlite's thread and back. So no database trades the
power-loss durability of its last transactions (an audit entry, a config version,
a data key's audit row) for speed; the hand-offs are what `inline_writes` and
`InlineReader` remove.

`claim(conn, message_id)` is the idempotency helper for at-least-once delivery:
inside the same transaction as a handler's effects it records the command or
event id, and returns False when that id was already handled — so a redelivered
message changes nothing, and a crash before commit leaves no half-done work.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
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


class _Connection(aiosqlite.Connection):
    """An aiosqlite connection whose statements can run on the event loop's thread.

    aiosqlite sends every call through `_execute` to its own thread. While `inline`
    is set (by `Database.transaction`, around a transaction's body only) the call runs
    right here instead. Were a later aiosqlite to stop routing through `_execute`,
    every statement would simply go to the thread again, as before.
    """

    inline = False

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.inline:
            return fn(*args, **kwargs)
        # aiosqlite leaves its private `_execute` unannotated.
        return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]


class Database:
    """A service's own SQLite database."""

    def __init__(self, conn: aiosqlite.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path
        self._write_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: Path | str, migrations: Sequence[str] = (), *, inline_writes: bool = False
    ) -> Database:
        """Open (creating) the database and bring its schema up to date.

        `inline_writes`: the statements inside `transaction()` run on the event loop's
        thread; BEGIN (which may wait for another process's lock) and COMMIT (the fsync)
        still run on aiosqlite's thread. A transaction of a dozen short statements then
        costs two thread hand-offs instead of one per statement (three per read through
        a cursor), and transactions are serialised, so this is where a busy writer spent
        its time. Only for a connection used inside `transaction()` alone.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if inline_writes:
            # Made on aiosqlite's thread, used on the loop's too (never both at once:
            # the write lock orders the transactions).
            connector = functools.partial(
                sqlite3.connect, str(path), isolation_level=None, check_same_thread=False
            )
            conn: aiosqlite.Connection = await _Connection(connector, 64)
        else:
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
                self._inline(True)
                try:
                    yield self.conn
                finally:
                    self._inline(False)
            except BaseException:
                await self.conn.execute("ROLLBACK")
                raise
            else:
                await self.conn.execute("COMMIT")

    def _inline(self, on: bool) -> None:
        if isinstance(self.conn, _Connection):
            self.conn.inline = on

    async def fetchone(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.conn.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def close(self) -> None:
        await self.conn.close()


class InlineReader:
    """A read-only connection for point lookups, queried on the event loop's own thread.

    aiosqlite runs every statement on its connection's thread and wakes the loop with
    the answer. For a lookup by primary key that hand-off (a queue, a thread switch,
    the GIL passed back and forth, the loop's self-pipe) costs more than the query:
    under load it was most of an API read's time. A query through an index on a small
    database takes microseconds, so it runs here directly. Use it only for such
    queries: anything that scans or sorts a growing table belongs on the aiosqlite
    reader, which `fallback` names. In WAL mode a reader never waits for the writer;
    the rare moment SQLite still answers "busy" (the WAL being reset) goes to `fallback`
    rather than blocking the loop.
    """

    def __init__(self, path: Path | str, fallback: aiosqlite.Connection) -> None:
        uri = Path(path).resolve().as_uri() + "?mode=ro"
        self._conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA busy_timeout=0")
        self.fallback = fallback

    async def execute_fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """Every row of one query (the aiosqlite method of the same name, without the thread)."""
        try:
            return self._conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError as exc:
            # Extended codes (SQLITE_BUSY_RECOVERY, ...) carry the primary one in the low byte.
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise
        return list(await self.fallback.execute_fetchall(sql, params))

    def close(self) -> None:
        self._conn.close()


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
