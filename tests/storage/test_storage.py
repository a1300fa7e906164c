"""libs/storage: migrations and the idempotency helper on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipway.libs.storage import Database, _statements, claim


def test_trigger_bodies_and_literals_stay_whole() -> None:
    """A trigger's inner semicolons and a ';' inside a string do not split a statement."""
    script = """
    CREATE TABLE t (v TEXT);
    INSERT INTO t VALUES ('a;b');
    CREATE TRIGGER no_delete BEFORE DELETE ON t BEGIN SELECT RAISE(ABORT, 'no'); END;
    """
    assert len(_statements(script)) == 3


def test_incomplete_statement_is_refused() -> None:
    """A migration ending inside a trigger body is an error, not a silent partial schema."""
    with pytest.raises(ValueError, match="incomplete"):
        _statements("CREATE TRIGGER x BEFORE DELETE ON t BEGIN SELECT 1;")


async def test_claim_is_true_once_per_message(tmp_path: Path) -> None:
    """The first claim of a message id succeeds, a second one reports it was handled."""
    db = await Database.open(tmp_path / "s.db")
    try:
        async with db.transaction() as conn:
            assert await claim(conn, "m-1") is True
            assert await claim(conn, "m-1") is False
    finally:
        await db.close()


async def test_migrations_apply_once_across_reopen(tmp_path: Path) -> None:
    """Reopening with the same migrations leaves the schema and data as they were."""
    migrations = ["CREATE TABLE t (v TEXT)"]
    db = await Database.open(tmp_path / "s.db", migrations)
    async with db.transaction() as conn:
        await conn.execute("INSERT INTO t VALUES ('kept')")
    await db.close()
    db = await Database.open(tmp_path / "s.db", migrations)
    try:
        assert [r["v"] for r in await db.fetchall("SELECT v FROM t")] == ["kept"]
    finally:
        await db.close()
