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
from typing import Literal

import msgspec

from slipway.contracts import subjects
from slipway.contracts.base import Message, Rpc, only
from slipway.contracts.subjects import Service

BackupState = Literal["running", "completed", "failed"]
BackupKind = Literal["manual", "scheduled", "final"]
ObjectKind = Literal["base", "wal", "counts", "manifest"]
Verification = Literal["", "passed", "failed"]

MOUNT = "/run/slipway"  # the run folder inside the database's container
BACKUP_ROLE = "slipway_backup"  # PostgreSQL role of the backup service (trust on the socket only)
REPLICATION_SLOT = "slipway_backup"
MAX_OBJECT_READ = 1024 * 1024  # bytes per ReadObject answer
CAPTURE_TIMEOUT = 3600.0  # seconds a caller waits for a capture or a staged restore


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
    callers=only(Service.GATEWAY),
)
BACKUPS_LIST: Rpc[ListBackups, Backups] = Rpc(
    Service.BACKUP,
    "list",
    subjects.rpc(Service.BACKUP, "list"),
    ListBackups,
    Backups,
    callers=only(Service.GATEWAY),
)
BACKUP_GET: Rpc[GetBackup, Backup] = Rpc(
    Service.BACKUP,
    "get",
    subjects.rpc(Service.BACKUP, "get"),
    GetBackup,
    Backup,
    callers=only(Service.GATEWAY),
)
BACKUP_OBJECTS: Rpc[ListObjects, Objects] = Rpc(
    Service.BACKUP,
    "objects",
    subjects.rpc(Service.BACKUP, "objects"),
    ListObjects,
    Objects,
    callers=only(Service.GATEWAY),
)
BACKUP_OBJECT_READ: Rpc[ReadObject, ObjectChunk] = Rpc(
    Service.BACKUP,
    "object.read",
    subjects.rpc(Service.BACKUP, "object.read"),
    ReadObject,
    ObjectChunk,
    callers=only(Service.GATEWAY),
)
RESTORE_STAGE: Rpc[StageRestore, RestoreStaged] = Rpc(
    Service.BACKUP,
    "restore.stage",
    subjects.rpc(Service.BACKUP, "restore.stage"),
    StageRestore,
    RestoreStaged,
    callers=only(Service.SCHEDULER),
)
