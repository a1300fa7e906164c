"""The backup service's endpoints: base backups, the WAL archive's state, sealed objects, restores.

Every object the backup service stores is `age(zstd(bytes))`, sealed to the team's
recipients (the keyring's `BACKUP_RECIPIENTS_GET`). Restores always make a new database:

    gateway   ADDON_CREATED{addon.restore=RestoreFrom}  ->  scheduler
    scheduler RESTORE_STAGE (rpc)                      ->  backup writes the plain base backup
              and the WAL up to the target into the new add-on's run folder `restore/`
    scheduler starts the container: PostgreSQL recovers to the target and promotes

The run folder of an add-on (`addon_run_dir`) is mounted at `/run/slipway` in its
container: PostgreSQL's second socket (the backup service's door, reachable by its
user's group only), `archive/` (archive_command's fallback copies) and `restore/`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar

import msgspec

from slipway.contracts import subjects
from slipway.contracts.base import Event, EventSpec, Message, Rpc, only
from slipway.contracts.subjects import Service

if TYPE_CHECKING:
    from slipway.libs.bus import Bus

BackupState = Literal["running", "completed", "failed"]
BackupKind = Literal["manual", "scheduled", "final"]
ObjectKind = Literal["base", "wal", "counts", "manifest"]
Verification = Literal["", "passed", "failed"]

MOUNT = "/run/slipway"  # the run folder inside the database's container
BACKUP_ROLE = "slipway_backup"  # PostgreSQL role of the backup service (trust on the socket only)
REPLICATION_SLOT = "slipway_backup"
MAX_OBJECT_READ = 1024 * 1024  # bytes per ReadObject answer
CAPTURE_TIMEOUT = 3600.0  # seconds a caller waits for a capture or a staged restore
ASK_TIMEOUT = 10.0  # seconds a caller waits for a read's answer


def addon_run_root(addon_run_dir: str, home: str | Path) -> Path:
    """Where the add-ons' run folders live: SLIPWAY_ADDON_RUN_DIR, or `<home>/run/addons`."""
    return Path(addon_run_dir) if addon_run_dir else Path(home) / "run" / "addons"


def addon_run_dir(root: str | Path, host_id: str, addon_id: str) -> Path:
    """The run folder of one add-on on one host (mounted at MOUNT in its container)."""
    return Path(root) / host_id / addon_id


class BackupInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One base backup, as `pg:backups` shows it."""

    id: str  # "b001": the add-on's backup number, Heroku's way
    num: int
    addon_id: str
    addon_name: str
    app_id: str
    kind: BackupKind
    state: BackupState
    started_at: str
    finished_at: str = ""
    size_bytes: int = 0  # the database's tar, before compression
    stored_bytes: int = 0  # sealed objects, as stored
    start_lsn: str = ""
    end_lsn: str = ""
    timeline: int = 0
    recipients: list[str] = []  # fingerprints of the keys the objects are sealed to
    error: str = ""
    verified: Verification = ""
    tables: dict[str, int] = {}  # row counts at capture, "schema.table" -> rows
    verified_at: str = ""  # the last verification's end (services/backup/verify.py)


class WalStatus(msgspec.Struct, frozen=True, kw_only=True):
    """The continuous archive of one database: how fresh, how far back."""

    streaming: bool = False
    last_stored_at: str = ""
    last_lsn: str = ""
    earliest_restore_at: str = ""  # the oldest completed base backup's end


class ObjectInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One stored object. `base`: part `part` of backup `backup_num`'s zstd-compressed tar;
    `wal`: bytes [offset, offset+length) of WAL segment `segment`; `counts`: the backup's
    row counts (JSON); all three sealed. `manifest`: signed JSON, not sealed (no customer data).
    """

    key: str
    kind: ObjectKind
    size: int
    sha256: str  # of the stored bytes: checkable without any key
    backup_num: int = 0
    part: int = 0
    segment: str = ""  # 24 hex digits: timeline, log, segment
    offset: int = 0
    length: int = 0  # plain bytes of a WAL piece


class CaptureBackup(Message, tag="backup.capture.v1", frozen=True, kw_only=True):
    addon_id: str
    app_id: str
    kind: BackupKind = "manual"


class ListBackups(Message, tag="backup.list.v1", frozen=True, kw_only=True):
    addon_id: str
    app_id: str


class Backups(Message, tag="backup.backups.v1", frozen=True, kw_only=True):
    backups: list[BackupInfo] = []
    wal: WalStatus = WalStatus()


class GetBackup(Message, tag="backup.get.v1", frozen=True, kw_only=True):
    addon_id: str
    app_id: str
    num: int = 0  # 0: the latest completed


class Backup(Message, tag="backup.backup.v1", frozen=True, kw_only=True):
    backup: BackupInfo


class ListObjects(Message, tag="backup.objects.list.v1", frozen=True, kw_only=True):
    """The sealed objects a restore of backup `num` (to `to_time`) needs, manifests included."""

    addon_id: str
    app_id: str
    num: int = 0
    to_time: str = ""


class Objects(Message, tag="backup.objects.v1", frozen=True, kw_only=True):
    objects: list[ObjectInfo] = []


class ReadObject(Message, tag="backup.object.read.v1", frozen=True, kw_only=True):
    addon_id: str
    app_id: str
    key: str
    offset: int = 0
    length: int = MAX_OBJECT_READ


class ObjectChunk(Message, tag="backup.object.chunk.v1", frozen=True, kw_only=True):
    data: bytes
    eof: bool


class StageRestore(Message, tag="backup.restore.stage.v1", frozen=True, kw_only=True):
    """Write a restore of `source_addon_id` into the run folder of `target_addon_id`."""

    source_addon_id: str
    app_id: str
    target_addon_id: str
    host_id: str
    num: int = 0  # the base backup; 0: the latest one that ends before `to_time`
    to_time: str = ""  # ISO 8601; "": everything archived


class RestoreStaged(Message, tag="backup.restore.staged.v1", frozen=True, kw_only=True):
    backup_num: int
    to_time: str = ""
    end_lsn: str = ""  # the last WAL byte staged


BACKUP_CAPTURE: Rpc[CaptureBackup, Backup] = Rpc(
    Service.BACKUP,
    "capture",
    subjects.rpc(Service.BACKUP, "capture"),
    CaptureBackup,
    Backup,
    fanout=True,
    callers=only(Service.GATEWAY),
)
BACKUPS_LIST: Rpc[ListBackups, Backups] = Rpc(
    Service.BACKUP,
    "list",
    subjects.rpc(Service.BACKUP, "list"),
    ListBackups,
    Backups,
    fanout=True,
    callers=only(Service.GATEWAY),
)
BACKUP_GET: Rpc[GetBackup, Backup] = Rpc(
    Service.BACKUP,
    "get",
    subjects.rpc(Service.BACKUP, "get"),
    GetBackup,
    Backup,
    fanout=True,
    callers=only(Service.GATEWAY),
)
BACKUP_OBJECTS: Rpc[ListObjects, Objects] = Rpc(
    Service.BACKUP,
    "objects",
    subjects.rpc(Service.BACKUP, "objects"),
    ListObjects,
    Objects,
    fanout=True,
    callers=only(Service.GATEWAY),
)
BACKUP_OBJECT_READ: Rpc[ReadObject, ObjectChunk] = Rpc(
    Service.BACKUP,
    "object.read",
    subjects.rpc(Service.BACKUP, "object.read"),
    ReadObject,
    ObjectChunk,
    fanout=True,
    callers=only(Service.GATEWAY),
)
RESTORE_STAGE: Rpc[StageRestore, RestoreStaged] = Rpc(
    Service.BACKUP,
    "restore.stage",
    subjects.rpc(Service.BACKUP, "restore.stage"),
    StageRestore,
    RestoreStaged,
    fanout=True,
    callers=only(Service.SCHEDULER),
)


# ---- verification: a backup restored into a throwaway database and checked -----------------
#
#   gateway (or the weekly schedule) BACKUP_VERIFY -> backup checks signatures, chain, objects
#   and WAL without any key, then DATABASE_VERIFY -> scheduler makes a throwaway run folder,
#   asks RESTORE_STAGE into it (as for a restore), runs the database there with no network,
#   and answers what it found; backup compares, records, publishes BACKUP_VERIFIED, which the
#   gateway audits (and, for a failure, tells the app's logs).

CheckStatus = Literal["passed", "failed", "skipped"]
VerifyTrigger = Literal["manual", "scheduled"]


class VerifyCheck(msgspec.Struct, frozen=True, kw_only=True):
    """One check of a verification: "signatures", "chain", "objects", "wal",
    "pg_verifybackup", "recovery", "row_counts"."""

    name: str
    status: CheckStatus
    detail: str = ""


class VerifyBackup(Message, tag="backup.verify.v1", frozen=True, kw_only=True):
    addon_id: str
    app_id: str
    num: int = 0  # 0: the latest completed
    actor: str = ""  # who asked (for the audit entry); "" for the schedule


class VerifyReport(Message, tag="backup.verify.report.v1", frozen=True, kw_only=True):
    backup: BackupInfo  # with `verified` as recorded
    checks: list[VerifyCheck] = []


class BackupVerified(Event, tag="backup.verified.v1", frozen=True, kw_only=True):
    """A verification's outcome: audited by the gateway; a failure also goes to the app's logs."""

    addon_id: str
    addon_name: str
    app_id: str
    team_id: str
    num: int
    result: Literal["passed", "failed"]
    reason: str = ""  # the failed checks, for people (no customer data)
    trigger: VerifyTrigger = "manual"
    actor: str = ""


class VerifyDatabase(Message, tag="scheduler.addon.verify.v1", frozen=True, kw_only=True):
    """Restore backup `num` of `source_addon_id` into a throwaway database and look at it."""

    source_addon_id: str
    app_id: str
    team_id: str
    host_id: str  # where the backup service stages (its own host)
    num: int
    plan: str
    database: str
    to_time: str = ""
    timeout: float = 1800.0  # seconds the database may take to recover


class DatabaseChecked(Message, tag="scheduler.addon.verify.found.v1", frozen=True, kw_only=True):
    started: bool = False  # the server ran and left recovery (consistent, promoted)
    error: str = ""  # why it did not
    tables: dict[str, int] = {}  # rows of every table of `database`, counted inside
    verifybackup: CheckStatus = "skipped"  # pg_verifybackup on the unpacked base backup
    verifybackup_output: str = ""


BACKUP_VERIFY: Rpc[VerifyBackup, VerifyReport] = Rpc(
    Service.BACKUP,
    "verify",
    subjects.rpc(Service.BACKUP, "verify"),
    VerifyBackup,
    VerifyReport,
    fanout=True,
    callers=only(Service.GATEWAY),
)
DATABASE_VERIFY: Rpc[VerifyDatabase, DatabaseChecked] = Rpc(
    Service.SCHEDULER,
    "addon.verify",
    subjects.rpc(Service.SCHEDULER, "addon.verify"),
    VerifyDatabase,
    DatabaseChecked,
    callers=only(Service.BACKUP),
)
BACKUP_VERIFIED: EventSpec[BackupVerified] = EventSpec(
    subjects.evt("backup", "verified"), BackupVerified, publishers=only(Service.BACKUP)
)


# ---- daily capture schedules and retention (services/backup/schedules.py, retention.py) ----


class BackupSchedule(msgspec.Struct, frozen=True, kw_only=True):
    """When a database's daily base backup is taken, and how long its backups are kept."""

    addon_id: str
    addon_name: str
    enabled: bool = True  # False after `pg:backups:unschedule`
    hour: int = 0  # 0-23, local to `timezone`
    timezone: str = "UTC"  # an IANA zone name
    default: bool = True  # no `pg:backups:schedule` yet: a stable hour chosen per database
    next_at: str = ""  # ISO 8601, UTC; "" while unscheduled
    keep_daily: int = 0  # the plan's retention (contracts/addons.py AddonPlan)
    keep_weekly: int = 0
    keep_monthly: int = 0
    last_expiry: str = ""  # "<when>: N backups, N WAL pieces, N bytes"; "" for never


class GetBackupSchedule(Message, tag="backup.schedule.get.v1", frozen=True, kw_only=True):
    addon_id: str
    app_id: str


class SetBackupSchedule(Message, tag="backup.schedule.set.v1", frozen=True, kw_only=True):
    """Take the daily backup at `hour`:00 in `timezone` (Heroku's `--at '02:00 UTC'`)."""

    addon_id: str
    app_id: str
    hour: int
    timezone: str = "UTC"


class RemoveBackupSchedule(Message, tag="backup.schedule.remove.v1", frozen=True, kw_only=True):
    """No more scheduled backups (manual captures and the WAL archive go on)."""

    addon_id: str
    app_id: str


class Schedule(Message, tag="backup.schedule.v1", frozen=True, kw_only=True):
    schedule: BackupSchedule


def parse_at(text: str) -> tuple[int, str]:
    """Heroku's `--at` ("02:00 UTC", "2:00 America/New_York"; no zone: UTC) as (hour, zone).

    ValueError says what is wrong. Only whole hours, like Heroku's schedules.
    """
    parts = text.split()
    if not parts or len(parts) > 2:
        raise ValueError(f"{text[:60]!r} is not a time: use 'HH:00 TZ', e.g. '02:00 UTC'")
    clock, zone = parts[0], parts[1] if len(parts) == 2 else "UTC"
    hour, _, minutes = clock.partition(":")
    if not hour.isdigit() or not 0 <= int(hour) <= 23 or minutes not in ("", "00"):
        raise ValueError(f"{clock[:20]!r} is not a whole hour: use HH:00, from 00:00 to 23:00")
    check_timezone(zone)
    return int(hour), zone


def check_timezone(zone: str) -> str:
    """`zone` if it names an IANA time zone (or UTC); ValueError otherwise."""
    import zoneinfo

    if zone.upper() == "UTC":
        return "UTC"
    try:
        zoneinfo.ZoneInfo(zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{zone[:60]!r} is not a time zone: use UTC or a name like America/New_York"
        ) from None
    return zone


BACKUP_SCHEDULE_GET: Rpc[GetBackupSchedule, Schedule] = Rpc(
    Service.BACKUP,
    "schedule.get",
    subjects.rpc(Service.BACKUP, "schedule.get"),
    GetBackupSchedule,
    Schedule,
    fanout=True,
    callers=only(Service.GATEWAY),
)
BACKUP_SCHEDULE_SET: Rpc[SetBackupSchedule, Schedule] = Rpc(
    Service.BACKUP,
    "schedule.set",
    subjects.rpc(Service.BACKUP, "schedule.set"),
    SetBackupSchedule,
    Schedule,
    fanout=True,
    callers=only(Service.GATEWAY),
)
BACKUP_SCHEDULE_REMOVE: Rpc[RemoveBackupSchedule, Schedule] = Rpc(
    Service.BACKUP,
    "schedule.remove",
    subjects.rpc(Service.BACKUP, "schedule.remove"),
    RemoveBackupSchedule,
    Schedule,
    fanout=True,
    callers=only(Service.GATEWAY),
)


# ---- several hosts: each backup service answers for its own host's databases --------------
#
# Each host's backup service has its own catalog, so the RPCs above are fan-out: every
# instance gets every request (answering as its host id, `service.responder`) and stays
# silent about databases another host runs; RESTORE_STAGE is answered by the instance of
# the new database's host (`StageRestore.host_id`), which imports a lost host's history
# from the shared storage's signed manifests (services/backup/imported.py).

ReqT = TypeVar("ReqT", bound=Message)
RepT = TypeVar("RepT", bound=Message)


async def ask(
    bus: Bus,
    rpc: Rpc[ReqT, RepT],
    request: ReqT,
    *,
    timeout: float = ASK_TIMEOUT,
    host: str | None = None,
) -> RepT:
    """The answer of the backup service of the host running the database `request` is about.

    `host`, when the caller knows where the database runs, is the answer preferred (an
    instance that has not heard of the database yet answers NotFound). An error answer is
    raised; no answer at all (after `timeout`) is Unavailable, saying that the database's
    host is not reachable.
    """
    # Contracts import nothing of libs at import time.
    from slipway.libs.errors import Unavailable

    found = await bus.gather(rpc, request, timeout=timeout, settle=0.05)
    if host and host in found.errors:
        raise found.errors[host]
    if found.replies:
        # Several only about a database not placed yet, which every host answers alike.
        return found.replies[host] if host in found.replies else found.replies[min(found.replies)]
    if found.errors:
        raise found.errors[min(found.errors)]
    raise Unavailable(
        f"no backup service answered {rpc.name}: the host holding the database's backups"
        " is not reachable (or no backup service runs)"
    )


# ---- health: what the monitor asks each host's backup service --------------------------------
#
#   monitor BACKUP_HEALTH (fan-out) -> every backup service answers for the databases it runs:
#   the facts (last capture, the last scheduled slot, WAL progress, last verification); the
#   monitor judges (overdue after its grace, WAL silent, a verification that failed).


class GetBackupHealth(Message, tag="backup.health.get.v1", frozen=True, kw_only=True):
    pass


class DatabaseHealth(msgspec.Struct, frozen=True, kw_only=True):
    addon_id: str
    addon_name: str
    app_id: str
    host_id: str
    schedule_enabled: bool
    # The latest scheduled capture time at or before now (epoch s), or the database's
    # creation when later: a slot before it existed is not one it missed.
    last_slot_at: float
    last_backup_started_at: float | None = None  # the newest completed base backup
    last_backup_finished_at: float | None = None
    wal_stored_at: float | None = None  # the last WAL the archive stored
    last_verification: str = ""  # "passed", "failed", "" never
    last_verified_at: float | None = None


class BackupHealth(Message, tag="backup.health.v1", frozen=True, kw_only=True):
    host_id: str
    databases: list[DatabaseHealth] = []


BACKUP_HEALTH: Rpc[GetBackupHealth, BackupHealth] = Rpc(
    Service.BACKUP,
    "health",
    subjects.rpc(Service.BACKUP, "health"),
    GetBackupHealth,
    BackupHealth,
    fanout=True,
    callers=only(Service.MONITOR),
)
