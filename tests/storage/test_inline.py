"""libs/storage: statements on the event loop's thread (inline writes, InlineReader)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slipway.libs.storage import Database, InlineReader

SCHEMA = "CREATE TABLE t (v TEXT)"


def _thread_probe(conn: sqlite3.Connection) -> None:
    conn.create_function("thread_id", 0, threading.get_ident)


async def test_inline_transaction_runs_on_the_loop_thread_and_commits(tmp_path: Path) -> None:
    """Inside transaction() a statement runs on the caller's thread; the commit is visible."""
    db = await Database.open(tmp_path / "s.db", [SCHEMA], inline_writes=True)
    try:
        raw = db.conn._conn  # the sqlite3 connection aiosqlite wraps
        assert raw is not None
        _thread_probe(raw)
        async with db.transaction() as conn:
            await conn.execute("INSERT INTO t VALUES ('a')")
            rows = list(await conn.execute_fetchall("SELECT thread_id()"))
        assert rows[0][0] == threading.get_ident()
        other = sqlite3.connect(tmp_path / "s.db")
        assert other.execute("SELECT v FROM t").fetchall() == [("a",)]
        other.close()
    finally:
        await db.close()


async def test_inline_transaction_rolls_back_on_error(tmp_path: Path) -> None:
    """An exception inside an inline transaction leaves nothing behind."""
    db = await Database.open(tmp_path / "s.db", [SCHEMA], inline_writes=True)
    try:

        async def abandoned() -> None:
            async with db.transaction() as conn:
                await conn.execute("INSERT INTO t VALUES ('a')")
                raise RuntimeError("abandon")

        with pytest.raises(RuntimeError):
            await abandoned()
        assert await db.fetchall("SELECT v FROM t") == []
    finally:
        await db.close()


async def test_outside_a_transaction_statements_go_to_the_thread(tmp_path: Path) -> None:
    """Only a transaction's body runs inline: other calls keep aiosqlite's thread."""
    db = await Database.open(tmp_path / "s.db", [SCHEMA], inline_writes=True)
    try:
        raw = db.conn._conn
        assert raw is not None
        _thread_probe(raw)
        row = await db.fetchone("SELECT thread_id()")
        assert row is not None and row[0] != threading.get_ident()
    finally:
        await db.close()


@pytest.fixture
async def reading(tmp_path: Path) -> AsyncIterator[tuple[Database, InlineReader]]:
    """A database (aiosqlite writer) and an inline reader of the same file."""
    db = await Database.open(tmp_path / "s.db", [SCHEMA])
    reader = InlineReader(tmp_path / "s.db", db.conn)
    try:
        yield db, reader
    finally:
        reader.close()
        await db.close()


async def test_inline_reader_sees_committed_rows_only(
    reading: tuple[Database, InlineReader],
) -> None:
    """The inline reader answers from committed data, never a transaction in progress."""
    db, reader = reading
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO t VALUES ('kept')")
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO t VALUES ('pending')")
        rows = await reader.execute_fetchall("SELECT v FROM t ORDER BY v")
    assert [r["v"] for r in rows] == ["kept"]


async def test_inline_reader_is_read_only(reading: tuple[Database, InlineReader]) -> None:
    """A write through the inline reader is refused by SQLite itself."""
    _, reader = reading
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        await reader.execute_fetchall("INSERT INTO t VALUES ('x')")


async def test_inline_reader_hands_a_busy_database_to_its_fallback(
    reading: tuple[Database, InlineReader], tmp_path: Path
) -> None:
    """When SQLite answers busy the query goes to the fallback instead of blocking the loop."""
    db, reader = reading
    # Exclusive locking mode: after its next write this connection keeps the file
    # locked, and every other connection's read answers SQLITE_BUSY.
    await db.conn.execute("PRAGMA locking_mode=EXCLUSIVE")
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO t VALUES ('held')")
    other = sqlite3.connect(f"{(tmp_path / 's.db').as_uri()}?mode=ro", uri=True, timeout=0)
    with pytest.raises(sqlite3.OperationalError):
        other.execute("SELECT v FROM t").fetchall()
    other.close()
    rows = await reader.execute_fetchall("SELECT v FROM t")
    assert [r["v"] for r in rows] == ["held"]
