"""The backup service process: one per host that runs databases.

Resources, set up in this order and torn down in reverse: the catalog, then the
archive (crash recovery: half-written uploads dropped) and the WAL streams of this
host's databases. Events arrive in the per-host durable consumer `host-<host_id>`.
The RPCs are fan-out (every host's instance gets each, answering as its host id): an
instance answers about the databases its host runs (or last ran) and stays silent about
the others; RESTORE_STAGE is answered by the instance of the host the new database goes
to, which reads a lost host's history from the shared storage (imported.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from slipway.contracts import backup as bc
from slipway.contracts import snapshot as sc
from slipway.contracts.addons import (
    ADDON_CHANGED,
    ADDON_CREATED,
    ADDON_DESTROYED,
    AddonChanged,
    AddonCreated,
    AddonDestroyed,
)
from slipway.contracts.gateway import APP_DESTROYED, TEAM_SHREDDED, AppDestroyed, TeamShredded
from slipway.contracts.subjects import Service
from slipway.libs import diskwatch
from slipway.libs.bus import context
from slipway.libs.service import Key, ServiceApp
from slipway.libs.storage import Database
from slipway.services.backup import snapshot, store
from slipway.services.backup.archive import Archive
from slipway.services.backup.backupmetrics import BackupAges
from slipway.services.backup.sealing import Sealer
from slipway.services.backup.service import BackupService
from slipway.services.backup.settings import BackupSettings
from slipway.services.backup.snapshots import Snapshots

BACKUPS = Key("backups", BackupService)
SNAPSHOTS = Key("snapshots", Snapshots)


def create_service(settings: BackupSettings) -> ServiceApp:
    """The backup service as a runnable service."""
    service = ServiceApp(
        Service.BACKUP,
        settings=settings,
        description="Slipway's backups: sealed continuous archiving, base backups, restores",
    )
    service.responder = settings.host_id
    ages = BackupAges(service.metrics.registry) if service.metrics.enabled else None

    @service.cleanup_ctx
    async def backups(service: ServiceApp) -> AsyncIterator[None]:
        db = await Database.open(settings.db_path(), store.MIGRATIONS)
        if ages is not None:
            service.metrics.on_scrape(lambda: ages.refresh(db))
        archive = Archive(settings, store.Catalog(db), Sealer(service.bus))
        backups = BackupService(settings, archive)
        service[BACKUPS] = backups
        snapshots = service[SNAPSHOTS] = Snapshots(settings, archive.storage, service.bus)
        await backups.start()
        await snapshots.start()
        try:
            yield
        finally:
            await snapshots.stop()
            await backups.stop()
            await archive.close()
            await db.close()

    _rpcs(service, settings.host_id)
    _snapshot_rpcs(service)
    _events(service, f"host-{settings.host_id}")
    service.snapshot_sources = snapshot.sources(service, settings)
    diskwatch.watch(service, diskwatch.state_folders(settings, "backup"))
    return service


def _rpcs(service: ServiceApp, host_id: str) -> None:
    # Each handler returns None (no answer) for a database another host runs.
    async def runs(addon_id: str) -> bool:
        return await service[BACKUPS].answers(addon_id)

    @service.rpc(bc.BACKUP_CAPTURE)
    async def capture(req: bc.CaptureBackup) -> bc.Backup | None:
        context.require_caller(bc.BACKUP_CAPTURE)
        if not await runs(req.addon_id):
            return None
        return await service[BACKUPS].capture(req)

    @service.rpc(bc.BACKUPS_LIST)
    async def list_backups(req: bc.ListBackups) -> bc.Backups | None:
        context.require_caller(bc.BACKUPS_LIST)
        if not await runs(req.addon_id):
            return None
        return await service[BACKUPS].list(req)

    @service.rpc(bc.BACKUP_GET)
    async def get(req: bc.GetBackup) -> bc.Backup | None:
        context.require_caller(bc.BACKUP_GET)
        if not await runs(req.addon_id):
            return None
        return await service[BACKUPS].get(req)

    @service.rpc(bc.BACKUP_OBJECTS)
    async def objects(req: bc.ListObjects) -> bc.Objects | None:
        context.require_caller(bc.BACKUP_OBJECTS)
        if not await runs(req.addon_id):
            return None
        return await service[BACKUPS].objects(req)

    @service.rpc(bc.BACKUP_OBJECT_READ)
    async def read_object(req: bc.ReadObject) -> bc.ObjectChunk | None:
        context.require_caller(bc.BACKUP_OBJECT_READ)
        if not await runs(req.addon_id):
            return None
        return await service[BACKUPS].read_object(req)

    @service.rpc(bc.RESTORE_STAGE)
    async def stage(req: bc.StageRestore) -> bc.RestoreStaged | None:
        context.require_caller(bc.RESTORE_STAGE)
        if req.host_id != host_id:
            return None  # the new database's host stages it, into its own run folder
        return await service[BACKUPS].stage_restore(req)

    @service.rpc(bc.BACKUP_VERIFY)
    async def verify(req: bc.VerifyBackup) -> bc.VerifyReport | None:
        context.require_caller(bc.BACKUP_VERIFY)
        if not await runs(req.addon_id):
            return None
        return await service[BACKUPS].verify(req)

    @service.rpc(bc.BACKUP_SCHEDULE_GET)
    async def schedule(req: bc.GetBackupSchedule) -> bc.Schedule | None:
        context.require_caller(bc.BACKUP_SCHEDULE_GET)
        if not await runs(req.addon_id):
            return None
        return await service[BACKUPS].schedule(req)

    @service.rpc(bc.BACKUP_HEALTH)
    async def health(req: bc.GetBackupHealth) -> bc.BackupHealth:
        context.require_caller(bc.BACKUP_HEALTH)
        return await service[BACKUPS].health()

    @service.rpc(bc.BACKUP_SCHEDULE_SET)
    async def set_schedule(req: bc.SetBackupSchedule) -> bc.Schedule | None:
        context.require_caller(bc.BACKUP_SCHEDULE_SET)
        if not await runs(req.addon_id):
            return None
        return await service[BACKUPS].set_schedule(req)

    @service.rpc(bc.BACKUP_SCHEDULE_REMOVE)
    async def remove_schedule(req: bc.RemoveBackupSchedule) -> bc.Schedule | None:
        context.require_caller(bc.BACKUP_SCHEDULE_REMOVE)
        if not await runs(req.addon_id):
            return None
        return await service[BACKUPS].remove_schedule(req)


def _snapshot_rpcs(service: ServiceApp) -> None:
    # Platform snapshots: any instance answers (the storage is the record).
    @service.rpc(sc.SNAPSHOT_TAKE)
    async def take(req: sc.TakeSnapshot) -> sc.TakenSnapshot:
        context.require_caller(sc.SNAPSHOT_TAKE)
        info, _ = await service[SNAPSHOTS].take(req.requested_by)
        return sc.TakenSnapshot(snapshot=info)

    @service.rpc(sc.SNAPSHOTS_LIST)
    async def list_snapshots(req: sc.ListSnapshots) -> sc.Snapshots:
        context.require_caller(sc.SNAPSHOTS_LIST)
        return sc.Snapshots(snapshots=await service[SNAPSHOTS].listing())

    @service.rpc(sc.SNAPSHOT_VERIFY)
    async def verify(req: sc.VerifySnapshot) -> sc.SnapshotCheck:
        context.require_caller(sc.SNAPSHOT_VERIFY)
        return await service[SNAPSHOTS].verify(req.snapshot_id)


def _events(service: ServiceApp, purpose: str) -> None:
    @service.event(purpose, ADDON_CREATED)
    async def created(event: AddonCreated) -> None:
        await service[BACKUPS].addon_created(event.addon)

    @service.event(purpose, ADDON_CHANGED)
    async def changed(event: AddonChanged) -> None:
        await service[BACKUPS].addon_changed(event)

    @service.event(purpose, ADDON_DESTROYED)
    async def destroyed(event: AddonDestroyed) -> None:
        await service[BACKUPS].addon_destroyed(event.addon.addon_id)

    @service.event(purpose, APP_DESTROYED)
    async def app_destroyed(event: AppDestroyed) -> None:
        await service[BACKUPS].app_destroyed(event.app_id)

    @service.event(purpose, TEAM_SHREDDED)
    async def team_shredded(event: TeamShredded) -> None:
        await service[BACKUPS].team_shredded(event.team_id)
