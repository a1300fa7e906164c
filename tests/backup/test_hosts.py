"""Several backup hosts: a database whose host is lost is restored on another from storage.

Two backup services on one home (one storage folder, shared as a real installation's
hosts share a mounted folder or a bucket), each with its own catalog: "local", which
streams the database the scheduler runs, and "hostb". Host "local" is lost (its
service stopped, its catalog deleted); RESTORE_STAGE into a run folder of "hostb" is
answered by hostb, which imports the source's history from the signed manifests in
storage, and a database started on that folder has every row streamed before the loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from slipway.contracts import addons as ac
from slipway.contracts import backup as bc
from slipway.contracts.scheduler import LABEL_MANAGED
from slipway.libs import pgwire
from slipway.libs.errors import SlipwayError
from slipway.libs.service import ServiceApp
from slipway.libs.storage import Database
from slipway.services.backup.app import create_service as create_backup
from slipway.services.backup.imported import _apply as imported_apply
from slipway.services.backup.settings import BackupSettings
from slipway.services.backup.store import MIGRATIONS, Catalog, DatabaseRow, ImportedHistory
from slipway.services.scheduler.addons import container_config
from tests.addons.conftest import AddonStack, backup_settings
from tests.addons.test_postgresql import provisioned
from tests.backup.test_backups import sql
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, run_in_background, stop

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

OTHER_HOST = "hostb"
START_TIMEOUT = 120.0


@dataclass
class Host:
    """One host's backup service, running in this loop."""

    settings: BackupSettings
    service: ServiceApp
    task: asyncio.Task[None] | None

    async def lose(self) -> None:
        """The host stops answering and its disk is gone: service stopped, catalog deleted."""
        if self.task is not None:
            await stop(self.service, self.task)
            self.task = None
        db = self.settings.db_path()
        for path in (db, Path(f"{db}-wal"), Path(f"{db}-shm")):
            path.unlink(missing_ok=True)


@pytest.fixture
async def hosts(addon_stack: AddonStack) -> AsyncIterator[tuple[Host, Host]]:
    """The backup services of "local" (the scheduler's engine) and of OTHER_HOST."""
    started: list[Host] = []
    try:
        for host_id in ("local", OTHER_HOST):
            settings = backup_settings(addon_stack, host_id=host_id)
            service = create_backup(settings)
            started.append(Host(settings, service, await run_in_background(service)))
        yield started[0], started[1]
    finally:
        for host in started:
            if host.task is not None:
                await stop(host.service, host.task)


async def written(addons: AddonStack, owner: Api, app: dict[str, Any], name: str) -> list[str]:
    """Rows before and after a base backup, all streamed to storage: the rows, in order."""
    await sql(addons, owner, app, "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2)")
    backup = await owner.ok("POST", f"/apps/{app['name']}/addons/{name}/backups", status=201)
    assert backup["state"] == "completed", backup
    await sql(addons, owner, app, "INSERT INTO t VALUES (3); INSERT INTO t VALUES (4)")
    lsn = pgwire.parse_lsn(await sql(addons, owner, app, "SELECT pg_current_wal_lsn()"))

    async def streamed() -> None:
        wal = await owner.ok("GET", f"/apps/{app['name']}/addons/{name}/wal")
        assert wal["last_lsn"] and pgwire.parse_lsn(wal["last_lsn"]) >= lsn, wal

    await assert_eventually(streamed, timeout=60, interval=0.5)
    return ["1", "2", "3", "4"]


def other_run_folder(host: Host, target: str) -> Path:
    """The new database's run folder on OTHER_HOST, as that host's scheduler makes it."""
    path = bc.addon_run_dir(host.settings.run_root(), OTHER_HOST, target)
    path.mkdir(parents=True)
    path.chmod(0o2770)
    return path


def stage_request(addon: dict[str, Any], app: dict[str, Any], target: str) -> bc.StageRestore:
    return bc.StageRestore(
        source_addon_id=addon["id"], app_id=app["id"], target_addon_id=target, host_id=OTHER_HOST
    )


@contextlib.asynccontextmanager
async def database_on(addons: AddonStack, run_dir: Path, database: str) -> AsyncIterator[str]:
    """A database container on `run_dir` (its staged restore): its name once recovered."""
    token = uuid.uuid4().hex[:8]
    scope = addons.scope
    want = ac.AddonDesired(
        addon_id=f"hosts-{token}",
        addon_name=f"hosts{token}",
        app_id=f"hosts-app-{token}",
        app_name="hosts",
        team_id="team",
        plan="postgresql:mini",
        database=database,
        user="urestored",
    )
    labels = {LABEL_MANAGED: scope.managed, ac.LABEL_ADDON: want.addon_id}
    network, volume, name = (
        scope.network(want.app_id),
        scope.container(token),
        scope.container(token),
    )
    config = container_config(want, network, volume, labels, run_dir=run_dir, run_gid=0)
    async with aiodocker.Docker() as docker:
        await docker.networks.create({"Name": network, "Labels": labels})
        await docker.volumes.create({"Name": volume, "Labels": labels})  # type: ignore[no-untyped-call]
        container = await docker.containers.create(config, name=name)
        try:
            await container.start()

            async def promoted() -> None:
                answer = await superuser(name, "postgres", "SELECT pg_is_in_recovery()")
                assert answer == "f", answer

            await assert_eventually(promoted, timeout=START_TIMEOUT, interval=0.5)
            yield name
        finally:
            await container.delete(force=True)
            await aiodocker.volumes.DockerVolume(docker, volume).delete()  # type: ignore[no-untyped-call]


async def superuser(container: str, database: str, query: str) -> str:
    done = await asyncio.to_thread(
        subprocess.run,
        ["docker", "exec", "-i", "-u", str(ac.POSTGRES_UID), container,
         "psql", "-XAtq", "-h", "/run/postgresql", "-d", database, "-c", query],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


async def test_a_lost_hosts_database_is_restored_on_another_host_from_storage(
    addon_stack: AddonStack, hosts: tuple[Host, Host]
) -> None:
    """Host "local" lost with its catalog: hostb stages from storage, every streamed row is back."""
    local, other = hosts
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "lost")
    addon = await provisioned(alice, "lost")
    rows = await written(addon_stack, alice, app, addon["name"])
    database = await sql(addon_stack, alice, app, "SELECT current_database()")

    await local.lose()
    # Nobody holds the database's catalog now: the read says so instead of hanging.
    gone = await alice.request("GET", f"/apps/lost/addons/{addon['name']}/wal")
    assert gone.status == 503, gone.body
    assert "no backup service answered" in json.dumps(gone.body), gone.body

    target = f"restored-{uuid.uuid4().hex[:8]}"
    run_dir = other_run_folder(other, target)
    request = stage_request(addon, app, target)
    staged = await bc.ask(addon_stack.scheduler.bus, bc.RESTORE_STAGE, request, timeout=120)
    assert staged.backup_num == 1
    assert (run_dir / "restore" / "READY").is_file()

    async with database_on(addon_stack, run_dir, database) as restored:
        found = await superuser(restored, database, "SELECT n FROM t ORDER BY n")
    assert found.split() == rows


async def test_a_tampered_manifest_in_storage_stops_the_import_naming_it(
    addon_stack: AddonStack, hosts: tuple[Host, Host]
) -> None:
    """A manifest changed in storage (its signature no longer matches): the import refuses."""
    local, other = hosts
    stack = addon_stack.stack
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "tampered")
    addon = await provisioned(alice, "tampered")
    await written(addon_stack, alice, app, addon["name"])
    await local.lose()

    # The newest manifest, changed so that nothing after it could notice: only its
    # signature tells.
    manifests = sorted((other.settings.storage_root() / addon["id"] / "manifests").iterdir())
    assert len(manifests) >= 3, manifests  # WAL pieces, the base backup, more WAL
    original = manifests[-1].read_bytes()
    body = json.loads(original)
    body["manifest"]["created_at"] += 3600
    manifests[-1].write_text(json.dumps(body, sort_keys=True))

    target = f"restored-{uuid.uuid4().hex[:8]}"
    run_dir = other_run_folder(other, target)
    request = stage_request(addon, app, target)
    with pytest.raises(SlipwayError) as refused:
        await bc.ask(addon_stack.scheduler.bus, bc.RESTORE_STAGE, request, timeout=120)
    assert refused.value.code == "integrity_error", refused.value
    assert f"manifest {addon['id']}/manifests/{manifests[-1].name}" in refused.value.message
    assert "not signed" in refused.value.message
    assert not (run_dir / "restore").exists()

    # Put back, but one manifest in the middle of the chain gone: refused, naming the gap.
    manifests[-1].write_bytes(original)
    manifests[1].unlink()
    with pytest.raises(SlipwayError) as gap:
        await bc.ask(addon_stack.scheduler.bus, bc.RESTORE_STAGE, request, timeout=120)
    assert gap.value.code == "integrity_error", gap.value
    assert f"manifest 2 of {addon['id']} is missing" in gap.value.message
    assert not (run_dir / "restore").exists()


def _object(key: str, kind: str, **fields: Any) -> dict[str, Any]:
    return {"key": key, "kind": kind, "size": 10, "sha256": "00" * 32, **fields}


async def test_an_import_honours_the_expiry_manifests(tmp_path: Path) -> None:
    """Backups and WAL an `expiry` manifest names are not imported; the rest is, positioned."""
    base = {"kind": "base", "timeline": 1, "size_bytes": 100}
    manifests: list[dict[str, Any]] = [
        {**base, "backup_num": 1, "start_lsn": "0/2000028", "end_lsn": "0/2000100",
         "objects": [_object("a/base/000001/00000", "base", backup_num=1)]},
        {"kind": "wal", "timeline": 1, "start_lsn": "0/2000000", "end_lsn": "0/2000200",
         "objects": [_object("a/wal/1", "wal", segment="000000010000000000000002", length=0x200)]},
        {**base, "backup_num": 2, "start_lsn": "0/3000028", "end_lsn": "0/3000100",
         "objects": [_object("a/base/000002/00000", "base", backup_num=2)]},
        {"kind": "wal", "timeline": 1, "start_lsn": "0/3000000", "end_lsn": "0/3000300",
         "objects": [_object("a/wal/2", "wal", segment="000000010000000000000003", length=0x300)]},
        {"kind": "expiry", "expired_backups": [1], "removed": ["a/base/000001/00000"],
         "wal_removed": [{"timeline": 1, "through_lsn": "0/2000200", "pieces": 1}]},
    ]  # fmt: skip
    history = ImportedHistory(db=DatabaseRow("a", "a", "app", "team", "", "", "", "imported"))
    for seq, manifest in enumerate(manifests, 1):
        history.manifests.append((seq, f"{seq:064x}", f"a/manifests/{seq:08d}", 1000.0 + seq))
        imported_apply(history, manifest, seq, 1000.0 + seq)
    db = await Database.open(tmp_path / "catalog.db", MIGRATIONS)
    try:
        catalog = Catalog(db)
        await catalog.record_import(history)
        assert [b.num for b in await catalog.backups("a")] == [2]
        assert [o.key for o in await catalog.wal_objects("a", 1, -1)] == ["a/wal/2"]
        assert await catalog.wal_position("a") == (1, 0x3000300, 1004.0)
        assert await catalog.imported_ids() == {"a"}
        assert await catalog.next_manifest("a") == (6, f"{5:064x}")
    finally:
        await db.close()
