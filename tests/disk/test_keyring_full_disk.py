"""The keyring's audit on a full disk: reads answered with their rows kept in memory,
changes refused with 507, and every row written, in order, once space returns."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipway.libs.errors import InsufficientStorage, disk_full
from slipway.services.gateway.http.errors import http_error
from slipway.services.keyring import store as keyring_store
from slipway.services.keyring.policy import Operation
from slipway.services.keyring.store import AuditRecord, KeyringStore
from tests.conftest import assert_eventually
from tests.disk.loopfs import LoopFs, available

pytestmark = [
    pytest.mark.alone,
    pytest.mark.integration,
    pytest.mark.skipif(available() is not None, reason=available() or ""),
]


@pytest.fixture
def loopfs(tmp_path: Path) -> Iterator[LoopFs]:
    with LoopFs(tmp_path, megabytes=32) as fs:
        yield fs


def record(index: int, operation: Operation = Operation.DECRYPT) -> AuditRecord:
    return AuditRecord(
        at=time.time(),
        caller="gateway",
        operation=operation,
        team_id="team",
        purpose=None,
        outcome="ok",
        detail="",
        request_id=f"r-{index}",
    )


async def test_reads_answered_changes_refused_rows_written_later(
    loopfs: LoopFs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At 0 bytes a read's row waits in memory and the read returns; a change gets 507;
    once freed, every kept row is written before newer ones, in the order they came."""
    monkeypatch.setattr(keyring_store, "AUDIT_RETRY_SECONDS", 0.05)
    store = await KeyringStore.open(loopfs.mount / "keyring.db")
    try:
        await store.append_audit(record(0))
        loopfs.fill_up()
        # Rows until SQLite's pages and WAL run out too: some may still fit.
        for index in range(1, 200):
            await store.append_audit(record(index), read=True)
        assert store.deferred_audit, "the disk never refused a row"
        with pytest.raises(InsufficientStorage, match="keyring's disk is full"):
            await store.append_audit(record(200, Operation.GENERATE))
        loopfs.free()

        async def all_written() -> None:
            assert not store.deferred_audit
            ids = [r.request_id for r in await store.audit()]
            assert ids == [f"r-{i}" for i in range(201)], ids

        await assert_eventually(all_written, timeout=10)
    finally:
        loopfs.free()
        await store.close()


async def test_past_the_bound_a_read_is_refused_not_a_row_dropped(
    loopfs: LoopFs, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Memory for waiting rows is bounded: past it even reads get 507, and no row is lost."""
    monkeypatch.setattr(keyring_store, "MAX_DEFERRED_AUDIT", 3)
    store = await KeyringStore.open(loopfs.mount / "keyring.db")
    try:
        loopfs.fill_up()
        answered = 0

        async def read_until_refused() -> None:
            nonlocal answered
            for index in range(500):
                await store.append_audit(record(index), read=True)
                answered += 1

        with pytest.raises(InsufficientStorage):
            await read_until_refused()
        assert len(store.deferred_audit) == 3
        loopfs.free()
        await store.append_audit(record(999), read=True)
        ids = [r.request_id for r in await store.audit()]
        # Every read that was answered has its row; the refused one has none.
        assert ids == [f"r-{i}" for i in range(answered)] + ["r-999"]
    finally:
        loopfs.free()
        await store.close()


def test_a_full_disk_is_told_apart_from_a_bug() -> None:
    """ENOSPC, SQLITE_FULL and JetStream's no-resources are disk_full; they map to 507."""
    assert disk_full(OSError(28, "No space left on device"))
    full = sqlite3.OperationalError("database or disk is full")
    assert disk_full(full)
    wrapped = RuntimeError("while committing")
    wrapped.__cause__ = full
    assert disk_full(wrapped)
    assert not disk_full(OSError(13, "Permission denied"))
    assert not disk_full(sqlite3.OperationalError("no such table: audit"))

    class NatsApiError(Exception):
        err_code = 10047

    assert disk_full(NatsApiError())
    status, body = http_error(InsufficientStorage("x's state folder is 95 % full"))
    assert (status, body.id) == (507, "insufficient_storage")
