"""The backup resources' shapes: a base backup, the WAL archive's state, a stored object."""

from __future__ import annotations

from urllib.parse import quote

from slipway.contracts import backup as bc
from slipway.services.gateway.http import views


class BackupView(views.View, frozen=True, kw_only=True):
    """Slipway's base backup, named like Heroku's `pg:backups` ("b001")."""

    id: str
    num: int
    addon: views.NamedRef
    state: str  # running, completed, failed
    kind: str  # manual, scheduled, final
    created_at: str  # when the capture started
    finished_at: str | None
    size: int  # the database's tar, before compression
    stored_size: int  # the sealed objects, as stored
    start_lsn: str
    end_lsn: str
    timeline: int
    recipients: list[str]  # fingerprints of the keys its objects are sealed to
    verified: str  # "", passed, failed
    error: str
    tables: dict[str, int]  # row counts at capture


class WalView(views.View, frozen=True, kw_only=True):
    """The continuous archive of one database (`pg:backups` shows it as "continuous protection")."""

    addon: views.NamedRef
    streaming: bool
    last_stored_at: str | None
    last_lsn: str | None
    earliest_restore_at: str | None


class ObjectView(views.View, frozen=True, kw_only=True):
    """One stored object a restore needs; `url` downloads its sealed bytes."""

    key: str
    kind: str  # base, counts, wal, manifest
    size: int
    sha256: str
    backup_num: int
    part: int
    segment: str
    offset: int
    length: int
    url: str


def backup_name(num: int) -> str:
    """Heroku's way of naming a backup: b001, b002, ..., b1000."""
    return f"b{num:03d}"


def backup_view(info: bc.BackupInfo, addon: views.NamedRef) -> BackupView:
    return BackupView(
        id=backup_name(info.num),
        num=info.num,
        addon=addon,
        state=info.state,
        kind=info.kind,
        created_at=info.started_at,
        finished_at=info.finished_at or None,
        size=info.size_bytes,
        stored_size=info.stored_bytes,
        start_lsn=info.start_lsn,
        end_lsn=info.end_lsn,
        timeline=info.timeline,
        recipients=list(info.recipients),
        verified=info.verified,
        error=info.error,
        tables=dict(info.tables),
    )


def wal_view(wal: bc.WalStatus, addon: views.NamedRef) -> WalView:
    return WalView(
        addon=addon,
        streaming=wal.streaming,
        last_stored_at=wal.last_stored_at or None,
        last_lsn=wal.last_lsn or None,
        earliest_restore_at=wal.earliest_restore_at or None,
    )


def object_view(found: bc.ObjectInfo, base_url: str) -> ObjectView:
    """`base_url` is the add-on's `.../backup-objects`; the key goes in as one segment."""
    return ObjectView(
        key=found.key,
        kind=found.kind,
        size=found.size,
        sha256=found.sha256,
        backup_num=found.backup_num,
        part=found.part,
        segment=found.segment,
        offset=found.offset,
        length=found.length,
        url=f"{base_url}/{quote(found.key, safe='')}",
    )
