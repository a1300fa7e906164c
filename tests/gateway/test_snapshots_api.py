"""`/admin/snapshots`: platform admins take, list and check platform snapshots; nobody else.

The real gateway, keyring and backup service; the scheduler's export is stood in for by a
`FakeExporter` on the real contracts (tests/backup/snapshot_exporters.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.crypto import age
from slipway.services.backup.app import create_service as create_backup
from slipway.services.backup.settings import BackupSettings
from tests.backup.snapshot_exporters import FakeExporter
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, Stack, run_in_background, stop

pytestmark = pytest.mark.integration


@dataclass
class Snapshots:
    stack: Stack
    exporter: FakeExporter
    settings: BackupSettings
    identity: bytes


@pytest.fixture
async def snapshots(
    stack: Stack, bus_factory: Callable[[str], Awaitable[Bus]], tmp_path: Path
) -> AsyncIterator[Snapshots]:
    """The stack plus the backup service, snapshotting one (fake) scheduler."""
    identity = age.generate_identity()
    exporter = await FakeExporter(await bus_factory("scheduler"), Service.SCHEDULER).start()
    settings = BackupSettings(
        nats_url=stack.nats.url,
        home=str(stack.home),
        shutdown_grace=5.0,
        schedule_check_seconds=3600.0,
        backup_storage_dir=str(tmp_path / "objects"),
        recovery_recipients=age.format_recipient(age.public_of(identity)),
        snapshot_interval=0.0,
        snapshot_exporters="scheduler",
    )
    backup = create_backup(settings)
    task = await run_in_background(backup)
    try:
        yield Snapshots(stack, exporter, settings, identity)
    finally:
        await stop(backup, task)


async def finished(api: Api, snapshot_id: str) -> dict[str, Any]:
    async def done() -> dict[str, Any]:
        found: dict[str, Any] = await api.ok("GET", f"/admin/snapshots/{snapshot_id}")
        assert found["state"] != "running"
        return found

    return await assert_eventually(done, timeout=30.0)


async def test_a_platform_admin_takes_lists_and_verifies_a_snapshot(snapshots: Snapshots) -> None:
    """POST answers 202 with the running snapshot; it completes, is listed, and verifies."""
    admin = snapshots.stack.admin
    running = await admin.ok("POST", "/admin/snapshots", status=202)
    assert running["state"] == "running"
    assert running["requested_by"] == admin.email
    done = await finished(admin, running["id"])
    assert done["state"] == "completed", done["error"]
    assert [p["service"] for p in done["parts"]] == ["scheduler"]
    assert done["size"] > 0 and len(done["signer"]) == 64
    listed = await admin.ok("GET", "/admin/snapshots")
    assert [s["id"] for s in listed] == [running["id"]]
    check = await admin.ok("POST", f"/admin/snapshots/{running['id']}/verify")
    assert (check["ok"], check["problems"], check["pieces_checked"]) == (True, [], 2)


async def test_an_unknown_snapshot_is_not_found(snapshots: Snapshots) -> None:
    """A Heroku-style 404 for an id that names nothing (or is no id at all)."""
    admin = snapshots.stack.admin
    for path in ("/admin/snapshots/s20261203T101500Z-3f9a", "/admin/snapshots/nope/verify"):
        method = "POST" if path.endswith("verify") else "GET"
        answer = await admin.request(method, path)
        assert (answer.status, answer.error_id) == (404, "not_found")


async def test_anyone_but_a_platform_admin_is_refused(snapshots: Snapshots) -> None:
    """A team owner gets 403 on every snapshot endpoint, and no snapshot is taken."""
    alice = await snapshots.stack.user("alice@example.com")
    for method, path in (
        ("POST", "/admin/snapshots"),
        ("GET", "/admin/snapshots"),
        ("GET", "/admin/snapshots/s20261203T101500Z-3f9a"),
        ("POST", "/admin/snapshots/s20261203T101500Z-3f9a/verify"),
    ):
        answer = await alice.request(method, path)
        assert (answer.status, answer.error_id) == (403, "forbidden"), (method, path)
        assert "Only a platform admin" in answer.body["message"]
    assert snapshots.exporter.exports == 0
    assert await snapshots.stack.admin.ok("GET", "/admin/snapshots") == []
