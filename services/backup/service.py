"""One host's backup service: its databases, their WAL streams, captures, schedules, reads.

The databases come from the add-on events (every backup service reads them all and
keeps those the scheduler placed on its host); the RPC handlers in app.py call the
methods here. A database's backups outlive it: a destroyed add-on's final backup
stays listed and restorable. A database restored in place (a platform restored on a
fresh machine) gets a base backup as soon as it streams on its new timeline
(`needs_fresh_base`); its history before the restore stays as it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from pathlib import Path

import structlog

from slipway.contracts import backup as bc
from slipway.contracts.addons import AddonChanged, AddonDesired
from slipway.services.backup import restore as restores
from slipway.services.backup.archive import Archive
from slipway.services.backup.capture import Captures
from slipway.services.backup.errors import NotFound
from slipway.services.backup.imported import Importer
from slipway.services.backup.restore import Stager
from slipway.services.backup.retention import Retention
from slipway.services.backup.schedules import Schedules, last_slot
from slipway.services.backup.settings import BackupSettings
from slipway.services.backup.store import (
    BackupRow,
    DatabaseRow,
    backup_info,
    object_info,
    wal_status,
)
from slipway.services.backup.verify import Verifier
from slipway.services.backup.walstream import WalStreamer

log = structlog.get_logger("slipway.backup")

CATCH_UP_ATTEMPTS = 10  # x retry_seconds: a keyring starting beside this service answers


class BackupService:
    """What the handlers call."""

    def __init__(self, settings: BackupSettings, archive: Archive) -> None:
        self.settings = settings
        self.archive = archive
        self.catalog = archive.catalog
        self.captures = Captures(archive)
        self.stager = Stager(archive)
        self.verifier = Verifier(archive, self.stager)
        self.retention = Retention(archive)
        self.importer = Importer(archive)
        self.schedules = Schedules(self.catalog, settings.schedule_retry_seconds)
        self._expired_at = 0.0  # monotonic time of the last expiry run
        self.streamers: dict[str, WalStreamer] = {}
        self._scheduler: asyncio.Task[None] | None = None
        self._fresh: dict[str, asyncio.Task[None]] = {}  # fresh base backups, per database

    # ---- which requests are this host's (the RPCs are fan-out: every host gets each) --------

    async def runs(self, addon_id: str) -> bool:
        """Whether this host runs (or last ran) the database: it answers every request about it.

        A database whose history this host imported from storage is read here only to stage
        a restore: reads are the running host's, whose catalog is never behind.
        """
        db = await self.catalog.database(addon_id)
        if db is None:
            return False
        # Not placed yet: every host answers (alike), and keeps the schedule asked for in
        # case the database lands on it.
        return db.host_id == self.settings.host_id or (db.host_id == "" and not db.imported)

    async def answers(self, addon_id: str) -> bool:
        """Whether this host answers a request about the database.

        Its own, and one it has not heard of (NotFound, as every host says, until the
        add-on's events arrive; a caller that knows the host waits for that one's answer).
        """
        return await self.catalog.database(addon_id) is None or await self.runs(addon_id)

    def run_dir(self, db: DatabaseRow) -> Path:
        return bc.addon_run_dir(self.settings.run_root(), db.host_id, db.addon_id)

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self._catch_up()
        await self.archive.recover()
        for db in await self.catalog.databases(host_id=self.settings.host_id, state="provisioned"):
            self._stream(db)
        self._scheduler = asyncio.create_task(self._schedule_loop(), name="backup-schedule")

    async def _catch_up(self) -> None:
        """Import what storage holds beyond this catalog about this host's own databases.

        After a platform restore the catalog is the snapshot's copy, older than the shared
        storage, where the lost machine went on archiving (WAL, base backups, manifests).
        Read first, before the crash recovery would drop objects whose manifest it lacks,
        before expiry or the stream write a manifest number already taken in storage, and
        before a restore plans. Usually there is nothing newer and nothing is asked."""
        for db in await self.catalog.databases(host_id=self.settings.host_id, state="provisioned"):
            for attempt in range(CATCH_UP_ATTEMPTS):
                try:
                    row = await self.importer.bring_up_to_date(db.addon_id, db.app_id)
                except Exception as exc:  # the keyring may still be starting
                    if attempt + 1 == CATCH_UP_ATTEMPTS:
                        log.error("catalog behind storage", addon=db.addon_name, error=str(exc))
                    else:
                        await asyncio.sleep(self.settings.retry_seconds)
                    continue
                if row.imported:
                    await self.catalog.clear_imported(db.addon_id)  # still this host's own
                break

    async def stop(self) -> None:
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler
        await self.verifier.stop()
        for task in list(self._fresh.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for streamer in list(self.streamers.values()):
            await streamer.stop()
        self.streamers.clear()

    def _stream(self, db: DatabaseRow) -> None:
        streamer = self.streamers.get(db.addon_id)
        if streamer is None:
            streamer = self.streamers[db.addon_id] = WalStreamer(
                self.archive, db, self.run_dir(db), on_session=self._session_began
            )
        streamer.start()

    # ---- a database restored in place ------------------------------------------------------

    async def needs_fresh_base(self, addon_id: str, timeline: int) -> bool:
        """Whether the database runs on a newer timeline than its newest completed backup.

        So it is after a restore in place (a platform restored on a fresh machine, the
        scheduler's recovery.py): PostgreSQL promoted it onto a new timeline, whose WAL
        follows no base backup yet. Its old backups and WAL stay as they are, restorable."""
        latest = await self.catalog.latest_completed(addon_id)
        return latest is not None and 0 < latest.timeline < timeline

    def _session_began(self, streamer: WalStreamer) -> None:
        running = self._fresh.get(streamer.db.addon_id)
        if running is None or running.done():
            self._fresh[streamer.db.addon_id] = asyncio.create_task(
                self._fresh_base(streamer), name=f"fresh-base-{streamer.db.addon_id}"
            )

    async def _fresh_base(self, streamer: WalStreamer) -> None:
        """Take a base backup right away when the database began a new timeline."""
        addon_id = streamer.db.addon_id
        try:
            if not await self.needs_fresh_base(addon_id, streamer.timeline):
                return
            db = await self.catalog.database(addon_id)
            if db is None or db.state != "provisioned" or db.host_id != self.settings.host_id:
                return
            if addon_id in self.captures.running:
                return  # a capture under way is that backup
            log.info("fresh base backup", addon=db.addon_name, timeline=streamer.timeline)
            await self.captures.capture(db, self.run_dir(db), "scheduled")
        except Exception as exc:  # the next session, or the schedule loop, tries again
            log.warning("fresh base backup failed", addon=streamer.db.addon_name, error=str(exc))

    async def _unstream(self, addon_id: str) -> None:
        streamer = self.streamers.pop(addon_id, None)
        if streamer is not None:
            await streamer.stop()

    # ---- what the add-on events say ---------------------------------------------------------

    async def addon_created(self, want: AddonDesired) -> None:
        await self.catalog.upsert_database(
            DatabaseRow(
                addon_id=want.addon_id,
                addon_name=want.addon_name,
                app_id=want.app_id,
                team_id=want.team_id,
                plan=want.plan,
                database=want.database,
                host_id="",
                state="provisioning",
            )
        )

    async def addon_changed(self, event: AddonChanged) -> None:
        db = await self.catalog.database(event.addon_id)
        if db is None:
            return
        if event.state == "provisioned":
            await self.catalog.set_state(db.addon_id, "provisioned", event.host_id)
            if event.host_id == self.settings.host_id:
                if db.imported:
                    # Its chain goes on from here: the manifests imported are its start.
                    await self.catalog.clear_imported(db.addon_id)
                found = await self.catalog.database(db.addon_id)
                assert found is not None
                self._stream(found)
        elif event.state == "deprovisioned":
            await self._unstream(db.addon_id)
            await self.catalog.set_state(db.addon_id, "destroyed")

    async def addon_destroyed(self, addon_id: str) -> None:
        # The gateway took the final backup before it said so; the stream ends here.
        await self._unstream(addon_id)
        await self.catalog.set_state(addon_id, "destroyed")

    async def app_destroyed(self, app_id: str) -> None:
        for db in await self.catalog.databases_of(app_id=app_id):
            await self.addon_destroyed(db.addon_id)

    async def team_shredded(self, team_id: str) -> None:
        # Its objects no longer open for anyone the platform serves; the streams stop.
        for db in await self.catalog.databases_of(team_id=team_id):
            await self.addon_destroyed(db.addon_id)
        self.archive.sealer.forget(team_id)

    # ---- captures and schedules -------------------------------------------------------------

    async def _db(self, addon_id: str, app_id: str) -> DatabaseRow:
        db = await self.catalog.database(addon_id)
        if db is None or db.app_id != app_id:
            raise NotFound(f"no database {addon_id} in this app")
        return db

    async def capture(self, req: bc.CaptureBackup) -> bc.Backup:
        db = await self._db(req.addon_id, req.app_id)
        if db.state != "provisioned" or db.host_id != self.settings.host_id:
            raise NotFound(f"{db.addon_name} is not running on this backup service's host")
        row = await self.captures.capture(db, self.run_dir(db), req.kind)
        return bc.Backup(backup=backup_info(row, db))

    async def _schedule_loop(self) -> None:
        while True:
            try:
                await self.scheduled_captures()
            except Exception as exc:  # a schedule must outlive one bad database
                log.warning("scheduled captures failed", error=str(exc))
            self.verifier.start_due()  # SLIPWAY_VERIFY_DAYS, in the background
            if time.monotonic() - self._expired_at >= self.settings.retention_check_seconds:
                self._expired_at = time.monotonic()
                try:
                    # An imported database's history is its own host's to expire.
                    busy = self.verifier.running | await self.catalog.imported_ids()
                    await self.retention.run(busy=busy)
                except Exception as exc:  # expiry is retried at the next run
                    log.warning("expiry failed", error=str(exc))
            await asyncio.sleep(self.settings.schedule_check_seconds)

    async def scheduled_captures(self) -> None:
        """Capture every database of this host whose daily slot passed without a backup."""
        for db in await self.catalog.databases(host_id=self.settings.host_id, state="provisioned"):
            streamer = self.streamers.get(db.addon_id)
            if streamer is None or not streamer.streaming:
                continue  # a backup needs the database up; the stream says it is
            if db.addon_id in self.captures.running:
                continue
            fresh = await self.needs_fresh_base(db.addon_id, streamer.timeline)
            if not fresh and not await self.schedules.due(db, time.time()):
                continue
            try:
                await self.captures.capture(db, self.run_dir(db), "scheduled")
            except Exception:
                self.schedules.failed(db.addon_id, time.time())
            else:
                self.schedules.succeeded(db.addon_id)

    async def schedule(self, req: bc.GetBackupSchedule) -> bc.Schedule:
        db = await self._db(req.addon_id, req.app_id)
        return bc.Schedule(schedule=await self.schedules.view(db, self.retention, time.time()))

    async def health(self) -> bc.BackupHealth:
        """The facts about this host's databases the monitor judges (contracts/backup.py)."""
        now = time.time()
        found = []
        for db in await self.catalog.databases(host_id=self.settings.host_id, state="provisioned"):
            slot = await self.schedules.slot(db.addon_id)
            latest = await self.catalog.latest_completed(db.addon_id)
            verified = await self._last_verification(db.addon_id)
            wal = await self.catalog.wal_position(db.addon_id)
            # A slot that passed before the database existed is none of its own: its first
            # capture is due from its creation (the schedule loop takes it at once), so a
            # database just provisioned is not reported late for yesterday's slot.
            since = max(last_slot(now, slot.hour, slot.timezone), await self._created(db))
            found.append(
                bc.DatabaseHealth(
                    addon_id=db.addon_id,
                    addon_name=db.addon_name,
                    app_id=db.app_id,
                    host_id=db.host_id,
                    schedule_enabled=slot.enabled,
                    last_slot_at=since,
                    last_backup_started_at=latest.started_at if latest else None,
                    last_backup_finished_at=latest.finished_at if latest else None,
                    wal_stored_at=wal[2] if wal else None,
                    last_verification=verified[0] if verified else "",
                    last_verified_at=verified[1] if verified else None,
                )
            )
        return bc.BackupHealth(host_id=self.settings.host_id, databases=found)

    async def _created(self, db: DatabaseRow) -> float:
        row = await self.catalog.db.fetchone(
            "SELECT created_at FROM databases WHERE addon_id=?", (db.addon_id,)
        )
        return float(row[0]) if row else 0.0

    async def _last_verification(self, addon_id: str) -> tuple[str, float] | None:
        newest = None
        for row in await self.catalog.backups(addon_id):
            if row.verified_at is not None and (newest is None or row.verified_at > newest[1]):
                newest = (row.verified, row.verified_at)
        return newest

    async def set_schedule(self, req: bc.SetBackupSchedule) -> bc.Schedule:
        db = await self._db(req.addon_id, req.app_id)
        await self.schedules.set(db.addon_id, req.hour, req.timezone)
        return bc.Schedule(schedule=await self.schedules.view(db, self.retention, time.time()))

    async def remove_schedule(self, req: bc.RemoveBackupSchedule) -> bc.Schedule:
        db = await self._db(req.addon_id, req.app_id)
        await self.schedules.remove(db.addon_id)
        return bc.Schedule(schedule=await self.schedules.view(db, self.retention, time.time()))

    # ---- reads ------------------------------------------------------------------------------

    async def list(self, req: bc.ListBackups) -> bc.Backups:
        db = await self._db(req.addon_id, req.app_id)
        rows = await self.catalog.backups(db.addon_id)
        streamer = self.streamers.get(db.addon_id)
        completed = [r for r in rows if r.state == "completed"]
        earliest = min((r.finished_at or 0 for r in completed), default=None)
        return bc.Backups(
            backups=[backup_info(r, db) for r in rows],
            wal=wal_status(
                await self.catalog.wal_position(db.addon_id),
                streamer is not None and streamer.streaming,
                earliest,
            ),
        )

    async def get(self, req: bc.GetBackup) -> bc.Backup:
        db = await self._db(req.addon_id, req.app_id)
        row: BackupRow | None
        if req.num:
            row = await self.catalog.backup(db.addon_id, req.num)
        else:
            row = await self.catalog.latest_completed(db.addon_id)
        if row is None:
            raise NotFound("no such backup")
        return bc.Backup(backup=backup_info(row, db))

    async def objects(self, req: bc.ListObjects) -> bc.Objects:
        db = await self._db(req.addon_id, req.app_id)
        chosen = await restores.plan(self.archive, db.addon_id, req.num, req.to_time)
        rows = [*chosen.base, *([chosen.counts] if chosen.counts else []), *chosen.wal]
        infos = [object_info(r) for r in rows]
        # The manifests that name them, so the download can be checked offline.
        for key in await self.catalog.manifest_range(db.addon_id, [r.key for r in rows]):
            sealed = await self.archive.storage.read(key)
            infos.append(
                bc.ObjectInfo(
                    key=key,
                    kind="manifest",
                    size=len(sealed),
                    sha256=hashlib.sha256(sealed).hexdigest(),
                )
            )
        return bc.Objects(objects=infos)

    async def read_object(self, req: bc.ReadObject) -> bc.ObjectChunk:
        db = await self._db(req.addon_id, req.app_id)
        if not req.key.startswith(f"{db.addon_id}/"):
            raise NotFound("no such object")
        row = await self.catalog.object(req.key)
        if row is None and not await self.catalog.is_manifest(req.key):
            raise NotFound("no such object")
        length = max(0, min(req.length, bc.MAX_OBJECT_READ))
        data = await self.archive.storage.read(req.key, max(req.offset, 0), length + 1)
        return bc.ObjectChunk(data=data[:length], eof=len(data) <= length)

    async def stage_restore(self, req: bc.StageRestore) -> bc.RestoreStaged:
        """Stage into this host's run folder; a source run elsewhere comes from storage."""
        if self.verifier.stages(req):  # a throwaway database of a verification
            return await self.verifier.stage(req)
        source = await self.catalog.database(req.source_addon_id)
        if source is None or source.host_id != self.settings.host_id:
            # Its host may be gone with its catalog: the shared storage's signed manifests
            # are the history (checked, then imported; later ones on each restore).
            await self.importer.bring_up_to_date(req.source_addon_id, req.app_id)
        elif req.source_addon_id == req.target_addon_id:
            # Restored in place after a platform restore: this catalog is the snapshot's
            # copy, and storage may hold what the lost machine archived after it (WAL, a
            # base backup). Imported first, so the restore reaches the newest point and
            # the next manifest or backup number never takes one already in storage.
            await self.importer.bring_up_to_date(req.source_addon_id, req.app_id)
            await self.catalog.clear_imported(req.source_addon_id)  # still this host's own
        return await self.stager.stage(req)

    async def verify(self, req: bc.VerifyBackup) -> bc.VerifyReport:
        db = await self._db(req.addon_id, req.app_id)
        return await self.verifier.verify(db, req.num, actor=req.actor)
