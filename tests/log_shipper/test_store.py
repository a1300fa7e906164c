"""The store's retention: batches past their app's retention or its size bound are deleted."""

from __future__ import annotations

import time
from pathlib import Path

from slipway.libs.storage import Database
from slipway.services.log_shipper import store
from slipway.services.log_shipper.store import BatchRow

DAY = 86400.0


def batch(app_id: str, seq: int, age_days: float, size: int = 100) -> BatchRow:
    at = time.time() - age_days * DAY
    return BatchRow(
        id=f"{app_id}-{seq}",
        app_id=app_id,
        team_id="t",
        host="h",
        first_seq=seq,
        last_seq=seq,
        first_ts=at,
        last_ts=at,
        lines=1,
        size=size,
        sealed_to=None,
        data=b"\x02sealed",
    )


async def ids(db: Database) -> set[str]:
    return {str(r[0]) for r in await db.fetchall("SELECT id FROM batches")}


async def test_old_batches_go_after_the_apps_retention(tmp_path: Path) -> None:
    """Default 7 days; an app with its own retention keeps its batches that long."""
    db = await Database.open(tmp_path / "ls.db", store.MIGRATIONS)
    try:
        await store.apply_retention(db, "long", "t", 30 * DAY, revision=1)
        async with db.transaction() as conn:
            for row in (batch("a", 1, 8), batch("a", 2, 1), batch("long", 3, 8)):
                await store.save_batch(conn, row)
        removed = await store.sweep(db, default_retention=7 * DAY, max_bytes=10**9)
        assert removed == 1
        assert await ids(db) == {"a-2", "long-3"}
    finally:
        await db.close()


async def test_the_oldest_batches_go_when_an_app_passes_its_size_bound(tmp_path: Path) -> None:
    """Newest first, batches are kept while their total fits; other apps are untouched."""
    db = await Database.open(tmp_path / "ls.db", store.MIGRATIONS)
    try:
        async with db.transaction() as conn:
            for seq in range(1, 6):
                await store.save_batch(conn, batch("big", seq, 0, size=400))
            await store.save_batch(conn, batch("small", 9, 0, size=400))
        await store.sweep(db, default_retention=7 * DAY, max_bytes=1000)
        assert await ids(db) == {"big-4", "big-5", "small-9"}
        assert await store.next_seq(db) == 10
    finally:
        await db.close()
