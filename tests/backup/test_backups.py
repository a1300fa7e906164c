"""Backups end to end: capture, continuous WAL, point-in-time restore into a new database.

Real PostgreSQL containers on the real Docker engine, the real keyring sealing and
unwrapping, the backup service reaching each database through its run folder's socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import os
from pathlib import Path
from typing import Any

import pytest
import zstandard

from tests.addons.conftest import AddonStack
from tests.addons.test_postgresql import provisioned, psql
from tests.backup.conftest import BackupStack
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, tamper

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

RESTORE_TIMEOUT = 180.0


async def sql(
    addons: AddonStack, owner: Api, app: dict[str, Any], query: str, var: str = "DATABASE_URL"
) -> str:
    """Run `query` as the app would, through its `var` URL; psql's unaligned output."""
    url = (await owner.ok("GET", f"/apps/{app['name']}/config-vars"))[var]
    answer = await psql(addons.scope.network(app["id"]), url, query)
    assert answer.returncode == 0, answer.stderr
    return answer.stdout.strip()


async def streamed_past(owner: Api, app: str, addon: str, after: str) -> dict[str, Any]:
    """Wait until the WAL archive holds everything up to now (a piece stored after `after`)."""

    async def caught_up() -> dict[str, Any]:
        wal: dict[str, Any] = await owner.ok("GET", f"/apps/{app}/addons/{addon}/wal")
        assert wal["streaming"] is True, wal
        assert wal["last_stored_at"] > after, wal
        return wal

    return await assert_eventually(caught_up, timeout=60, interval=0.5)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


async def restored(owner: Api, app: str, name: str) -> dict[str, Any]:
    async def ready() -> dict[str, Any]:
        found: dict[str, Any] = await owner.ok("GET", f"/apps/{app}/addons/{name}")
        if found["provision_message"].startswith("Provisioning failed"):
            raise RuntimeError(found["provision_message"])
        assert found["state"] == "provisioned", found
        return found

    return await assert_eventually(ready, timeout=RESTORE_TIMEOUT, interval=0.5)


def readable(path: Path) -> bytes:
    """A file's bytes, and what zstd makes of them if they are a bare zstd stream (unsealed)."""
    data = path.read_bytes()
    with contextlib.suppress(zstandard.ZstdError):
        data += zstandard.ZstdDecompressor().decompressobj().decompress(data)
    return data


def stored_files(root: Path) -> list[Path]:
    """The regular files under `root` (a service's metrics socket holds no bytes to read)."""
    return [p for d, _, files in os.walk(root) for f in files if (p := Path(d, f)).is_file()]


async def test_point_in_time_restore_gets_exactly_the_rows_committed_before(
    backup_stack: BackupStack,
) -> None:
    """Writes, capture, more writes, a time T, more writes: a restore to T has the first two."""
    stack = backup_stack.addons.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "pitr")
    addon = await provisioned(alice, "pitr")
    await sql(
        backup_stack.addons, alice, app, "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2)"
    )
    backup = await alice.ok("POST", f"/apps/pitr/addons/{addon['name']}/backups", status=201)
    assert backup["state"] == "completed", backup
    assert backup["id"] == "b001"
    await sql(backup_stack.addons, alice, app, "INSERT INTO t VALUES (3)")
    await asyncio.sleep(1.5)  # a gap in time around T, wider than clock granularity
    target = now_iso()
    await asyncio.sleep(1.5)
    await sql(backup_stack.addons, alice, app, "INSERT INTO t VALUES (4)")
    await streamed_past(alice, "pitr", addon["name"], now_iso())

    created = await alice.ok(
        "POST",
        "/apps/pitr/addons",
        {
            "plan": "postgresql:mini",
            "name": "pitr-restored",
            "config": {"restore_from": addon["name"], "to_time": target},
        },
        status=202,
    )
    found = await restored(alice, "pitr", created["name"])
    var = found["config_vars"][0]
    rows = await sql(backup_stack.addons, alice, app, "SELECT n FROM t ORDER BY n", var)
    assert rows.split() == ["1", "2", "3"]
    # The restored database takes writes: it was promoted, not left in recovery.
    await sql(backup_stack.addons, alice, app, "INSERT INTO t VALUES (5)", var)
    # The source kept everything.
    assert (await sql(backup_stack.addons, alice, app, "SELECT count(*) FROM t")) == "4"


async def test_a_canary_row_is_in_no_stored_object(backup_stack: BackupStack) -> None:
    """The canary is in the database, in WAL and a base backup: never readable in storage."""
    stack = backup_stack.addons.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "canary")
    addon = await provisioned(alice, "canary")
    canary = "canary-" + os.urandom(8).hex()
    # The canary is hex: nothing to quote.
    create = f"CREATE TABLE s (v text); INSERT INTO s VALUES ('{canary}')"  # noqa: S608
    await sql(backup_stack.addons, alice, app, create)
    await alice.ok("POST", f"/apps/canary/addons/{addon['name']}/backups", status=201)
    await sql(backup_stack.addons, alice, app, f"INSERT INTO s VALUES ('{canary}-wal')")  # noqa: S608
    await streamed_past(alice, "canary", addon["name"], now_iso())
    files = stored_files(backup_stack.storage)
    kinds = {p.relative_to(backup_stack.storage).parts[1] for p in files}
    assert {"base", "wal", "manifests"} <= kinds
    for path in files:
        assert canary.encode() not in readable(path), path
    # The catalog holds no customer data either.
    for path in stored_files(backup_stack.settings.home_path / "backup"):
        assert canary.encode() not in path.read_bytes(), path


async def test_a_flipped_byte_in_a_stored_object_stops_the_restore_naming_it(
    backup_stack: BackupStack,
) -> None:
    """A changed byte in a base part: the restore fails and names that object."""
    stack = backup_stack.addons.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "flip")
    addon = await provisioned(alice, "flip")
    await sql(backup_stack.addons, alice, app, "CREATE TABLE t (n int); INSERT INTO t VALUES (1)")
    await alice.ok("POST", f"/apps/flip/addons/{addon['name']}/backups", status=201)
    part = backup_stack.storage / addon["id"] / "base" / "000001" / "00000"
    data = bytearray(part.read_bytes())
    data[len(data) // 2] ^= 0x01
    part.write_bytes(bytes(data))

    created = await alice.ok(
        "POST",
        "/apps/flip/addons",
        {"plan": "postgresql:mini", "config": {"restore_from": addon["name"]}},
        status=202,
    )

    async def failed() -> str:
        found = await alice.ok("GET", f"/apps/flip/addons/{created['name']}")
        assert found["provision_message"].startswith("Provisioning failed"), found
        return str(found["provision_message"])

    message = await assert_eventually(failed, timeout=RESTORE_TIMEOUT, interval=0.5)
    assert f"{addon['id']}/base/000001/00000" in message


async def test_a_missing_wal_piece_is_reported_as_a_gap(backup_stack: BackupStack) -> None:
    """A WAL piece gone from the catalog and storage: the restore plan names the missing range."""
    stack = backup_stack.addons.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "gap")
    addon = await provisioned(alice, "gap")
    await sql(backup_stack.addons, alice, app, "CREATE TABLE t (n int)")
    await alice.ok("POST", f"/apps/gap/addons/{addon['name']}/backups", status=201)
    for n in range(3):  # three flushes at least: pieces after the backup's end
        await sql(backup_stack.addons, alice, app, f"INSERT INTO t VALUES ({n})")  # noqa: S608
        await streamed_past(alice, "gap", addon["name"], now_iso())
    listed = await alice.ok("GET", f"/apps/gap/addons/{addon['name']}/backups/b001/objects")
    wal = [o for o in listed if o["kind"] == "wal"]
    assert len(wal) >= 3, listed
    victim = wal[1]
    (backup_stack.storage / victim["key"]).unlink()
    db = backup_stack.settings.db_path()
    await tamper(db, "DELETE FROM objects WHERE key = ?", (victim["key"],))

    answer = await alice.get(f"/apps/gap/addons/{addon['name']}/backups/b001/objects")
    assert answer.status == 409, (answer.status, answer.body)
    assert "is missing" in answer.body["message"], answer.body
    assert victim["segment"] in answer.body["message"]


async def test_a_destroyed_add_on_comes_back_from_its_final_backup(
    backup_stack: BackupStack,
) -> None:
    """Destroy takes a final backup; a restore from the destroyed add-on has its last rows."""
    stack = backup_stack.addons.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "final")
    addon = await provisioned(alice, "final")
    await sql(backup_stack.addons, alice, app, "CREATE TABLE t (n int); INSERT INTO t VALUES (7)")
    await alice.ok("DELETE", f"/apps/final/addons/{addon['name']}")
    listed = await alice.ok("GET", f"/apps/final/addons/{addon['id']}/backups")
    assert [(b["id"], b["kind"], b["state"]) for b in listed] == [("b001", "final", "completed")]

    created = await alice.ok(
        "POST",
        "/apps/final/addons",
        {"plan": "postgresql:mini", "config": {"restore_from": addon["id"]}},
        status=202,
    )
    found = await restored(alice, "final", created["name"])
    var = found["config_vars"][0]
    assert (await sql(backup_stack.addons, alice, app, "SELECT n FROM t", var)) == "7"
