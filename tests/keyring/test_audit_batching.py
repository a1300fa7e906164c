"""The keyring's audit rows under concurrent calls: one group commit, every row kept, in order."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from slipway.libs.errors import Internal
from slipway.services.keyring.policy import Operation
from slipway.services.keyring.store import AuditRecord, KeyringStore


def _record(index: int) -> AuditRecord:
    return AuditRecord(
        at=time.time(),
        caller="gateway",
        operation=Operation.GENERATE,
        team_id=f"team-{index}",
        purpose=None,
        outcome="ok",
        detail="",
        request_id=f"r-{index}",
    )


async def test_concurrent_calls_each_return_after_their_row_is_committed(tmp_path: Path) -> None:
    """Fifty calls at once: each returns with its row readable, all in the order they came."""
    store = await KeyringStore.open(tmp_path / "keyring.db")
    try:
        rows = [_record(i) for i in range(50)]

        async def append_then_read(record: AuditRecord) -> bool:
            await store.append_audit(record)
            return record in await store.audit(record.team_id)

        assert all(await asyncio.gather(*(append_then_read(r) for r in rows)))
        assert [r.request_id for r in await store.audit()] == [r.request_id for r in rows]
    finally:
        await store.close()


async def test_an_unwritable_audit_fails_the_call(tmp_path: Path) -> None:
    """When the row cannot be stored the caller gets an error, never a silent success."""
    store = await KeyringStore.open(tmp_path / "keyring.db")
    try:
        await store.db.conn.execute("DROP TABLE audit")
        with pytest.raises(Internal, match="audit"):
            await store.append_audit(_record(1))
    finally:
        await store.close()
