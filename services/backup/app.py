"""The backup service process: one per host that runs databases.

Resources, set up in this order and torn down in reverse: the catalog, then the
archive (crash recovery: half-written uploads dropped) and the WAL streams of this
host's databases. Events arrive in the per-host durable consumer `host-<host_id>`;
the RPCs are answered by the queue group (one host per installation today: see the
README's backup section for what several hosts still need).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from slipway.contracts import backup as bc
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
from slipway.libs.bus import context
from slipway.libs.service import Key, ServiceApp
from slipway.libs.storage import Database
from slipway.services.backup import store
from slipway.services.backup.archive import Archive
from slipway.services.backup.sealing import Sealer
from slipway.services.backup.service import BackupService
from slipway.services.backup.settings import BackupSettings

BACKUPS = Key("backups", BackupService)


def create_service(settings: BackupSettings) -> ServiceApp:
    """The backup service as a runnable service."""
    service = ServiceApp(
        Service.BACKUP,
        settings=settings,
        description="Slipway's backups: sealed continuous archiving, base backups, restores",
    )

    @service.cleanup_ctx
    async def backups(service: ServiceApp) -> AsyncIterator[None]:
        db = await Database.open(settings.db_path(), store.MIGRATIONS)
        archive = Archive(settings, store.Catalog(db), Sealer(service.bus))
        backups = BackupService(settings, archive)
        service[BACKUPS] = backups
        await backups.start()
        try:
            yield
        finally:
            await backups.stop()
            await archive.close()
            await db.close()

    _rpcs(service)
    _events(service, f"host-{settings.host_id}")
    return service


def _rpcs(service: ServiceApp) -> None:
    @service.rpc(bc.BACKUP_CAPTURE)
    async def capture(req: bc.CaptureBackup) -> bc.Backup:
        context.require_caller(bc.BACKUP_CAPTURE)
        return await service[BACKUPS].capture(req)

    @service.rpc(bc.BACKUPS_LIST)
    async def list_backups(req: bc.ListBackups) -> bc.Backups:
        context.require_caller(bc.BACKUPS_LIST)
        return await service[BACKUPS].list(req)

    @service.rpc(bc.BACKUP_GET)
    async def get(req: bc.GetBackup) -> bc.Backup:
        context.require_caller(bc.BACKUP_GET)
        return await service[BACKUPS].get(req)

    @service.rpc(bc.BACKUP_OBJECTS)
    async def objects(req: bc.ListObjects) -> bc.Objects:
        context.require_caller(bc.BACKUP_OBJECTS)
        return await service[BACKUPS].objects(req)

    @service.rpc(bc.BACKUP_OBJECT_READ)
    async def read_object(req: bc.ReadObject) -> bc.ObjectChunk:
        context.require_caller(bc.BACKUP_OBJECT_READ)
        return await service[BACKUPS].read_object(req)

    @service.rpc(bc.RESTORE_STAGE)
    async def stage(req: bc.StageRestore) -> bc.RestoreStaged:
        context.require_caller(bc.RESTORE_STAGE)
        return await service[BACKUPS].stage_restore(req)

    @service.rpc(bc.BACKUP_VERIFY)
    async def verify(req: bc.VerifyBackup) -> bc.VerifyReport:
        context.require_caller(bc.BACKUP_VERIFY)
        return await service[BACKUPS].verify(req)

    @service.rpc(bc.BACKUP_SCHEDULE_GET)
    async def schedule(req: bc.GetBackupSchedule) -> bc.Schedule:
        context.require_caller(bc.BACKUP_SCHEDULE_GET)
        return await service[BACKUPS].schedule(req)

    @service.rpc(bc.BACKUP_SCHEDULE_SET)
    async def set_schedule(req: bc.SetBackupSchedule) -> bc.Schedule:
        context.require_caller(bc.BACKUP_SCHEDULE_SET)
        return await service[BACKUPS].set_schedule(req)

    @service.rpc(bc.BACKUP_SCHEDULE_REMOVE)
    async def remove_schedule(req: bc.RemoveBackupSchedule) -> bc.Schedule:
        context.require_caller(bc.BACKUP_SCHEDULE_REMOVE)
        return await service[BACKUPS].remove_schedule(req)


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
