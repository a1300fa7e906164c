"""Platform snapshots: every service's state, sealed to the operator's offline recovery key.

A snapshot is taken by one backup service instance (SNAPSHOT_TAKE, hourly or on demand):

    backup  SNAPSHOT_EXPORT (fan-out, to every stateful service)  ->  each instance writes
            its own state (SQLite through the online backup API, its folders) as a tar,
            cut into pieces, each `age(zstd(piece))` sealed to the recovery recipients,
            into a private folder of its own, and answers with the pieces' sizes and hashes
    backup  SNAPSHOT_PIECE_READ, chunk by chunk (MAX_PIECE_READ)  ->  the sealed bytes
    backup  SNAPSHOT_RELEASE                                      ->  the pieces are deleted
    backup  the manifest (every piece's hash and size, the counts each service reported),
            signed by the keyring (SNAPSHOT_MANIFEST_SIGN), stored beside the pieces

No service but the exporting one ever holds its plaintext: the backup service carries
sealed pieces only, and nothing on the platform can open them (the recovery identity is
offline). The keyring's master key is never exported: the keyring seals it to the recovery
recipients itself when it is made (master-key.recovery.age), and that sealed file is
the keyring's part beside its database.

The layout a snapshot has in storage and on a restore machine is `libs/snapshot`'s.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from slipway.contracts import subjects
from slipway.contracts.base import Message, Ok, Rpc, only
from slipway.contracts.subjects import OPERATOR, Service

# The layout version a manifest states; a restore refuses a newer one (libs/snapshot).
FORMAT = 1
MAX_PIECE_READ = 512 * 1024  # bytes per SNAPSHOT_PIECE_READ answer (under NATS's 1 MiB)
EXPORT_TIMEOUT = 1800.0  # seconds the backup service waits for one service's export
# The services that hold state worth a snapshot, in the order they are exported: the
# gateway first, so that what it knows is no newer than what the others hold of it.
EXPORTERS: tuple[Service, ...] = (
    Service.GATEWAY,
    Service.KEYRING,
    Service.BUILDER,
    Service.REGISTRY_PROXY,
    Service.SCHEDULER,
    Service.NETWORK_WIRER,
    Service.LOG_SHIPPER,
    Service.BACKUP,
    Service.MONITOR,
)
SnapshotState = Literal["running", "completed", "failed"]


class ExportState(Message, tag="snapshot.export.v1", frozen=True, kw_only=True):
    """Write this instance's state as sealed pieces for snapshot `snapshot_id`."""

    snapshot_id: str
    recipients: list[str]  # age recipients ("age1...") of the operator's recovery key


class Piece(msgspec.Struct, frozen=True, kw_only=True):
    """One sealed piece of an export: `age(zstd(tar bytes))`; the tar is their concatenation."""

    name: str  # "000.age", "001.age", ...
    size: int  # sealed bytes
    sha256: str  # hex, of the sealed bytes


class ExportedState(Message, tag="snapshot.exported.v1", frozen=True, kw_only=True):
    """What one instance exported: its pieces, what it counted, and what it left out."""

    snapshot_id: str
    service: str
    host_id: str  # the instance's host ("" for a service with one instance per platform)
    pieces: list[Piece]
    plain_bytes: int  # the tar's length, before compression and sealing
    # Rows per table of each database and files per folder, as exported: a dry restore
    # compares what it unpacks with these ("gateway.db:apps" -> 2, "repos/files" -> 31).
    counts: dict[str, int] = {}
    # What this service holds that does not come back from a snapshot, one line each
    # ("build caches: rebuilt on the next push"): a restore lists them, never drops silently.
    left_out: list[str] = []
    schema: dict[str, int] = {}  # each database's migration version ("gateway.db" -> 31)


class ReadPiece(Message, tag="snapshot.piece.read.v1", frozen=True, kw_only=True):
    """Up to `length` sealed bytes of one exported piece, from `offset`."""

    snapshot_id: str
    service: str
    host_id: str = ""
    piece: str
    offset: int = 0
    length: int = MAX_PIECE_READ


class PieceChunk(Message, tag="snapshot.piece.chunk.v1", frozen=True, kw_only=True):
    data: bytes
    eof: bool


class ReleaseExport(Message, tag="snapshot.release.v1", frozen=True, kw_only=True):
    """The snapshot has its pieces (or failed): delete this instance's copies."""

    snapshot_id: str
    host_id: str = ""


def export_rpc(service: Service) -> Rpc[ExportState, ExportedState]:
    """SNAPSHOT_EXPORT of one service: fan-out, every instance answers for its own state."""
    return Rpc(
        service,
        "snapshot.export",
        subjects.rpc(service, "snapshot.export"),
        ExportState,
        ExportedState,
        fanout=True,
        callers=only(Service.BACKUP),
    )


def read_rpc(service: Service) -> Rpc[ReadPiece, PieceChunk]:
    """SNAPSHOT_PIECE_READ of one service; the instance of `host_id` answers."""
    return Rpc(
        service,
        "snapshot.piece.read",
        subjects.rpc(service, "snapshot.piece.read"),
        ReadPiece,
        PieceChunk,
        fanout=True,
        callers=only(Service.BACKUP),
    )


def release_rpc(service: Service) -> Rpc[ReleaseExport, Ok]:
    """SNAPSHOT_RELEASE of one service; every instance forgets that snapshot's pieces."""
    return Rpc(
        service,
        "snapshot.release",
        subjects.rpc(service, "snapshot.release"),
        ReleaseExport,
        Ok,
        fanout=True,
        callers=only(Service.BACKUP),
    )


SNAPSHOT_EXPORT: dict[Service, Rpc[ExportState, ExportedState]] = {
    service: export_rpc(service) for service in EXPORTERS
}
SNAPSHOT_PIECE_READ: dict[Service, Rpc[ReadPiece, PieceChunk]] = {
    service: read_rpc(service) for service in EXPORTERS
}
SNAPSHOT_RELEASE: dict[Service, Rpc[ReleaseExport, Ok]] = {
    service: release_rpc(service) for service in EXPORTERS
}


# ---- taking, listing and checking snapshots (the backup service) ------------------------------


class PartInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One service instance's part of a snapshot, as the manifest records it."""

    service: str
    host_id: str
    pieces: list[Piece]
    plain_bytes: int
    counts: dict[str, int] = {}
    left_out: list[str] = []
    schema: dict[str, int] = {}


class SnapshotInfo(msgspec.Struct, frozen=True, kw_only=True):
    """A snapshot as `admin:snapshots` shows it."""

    id: str  # "s20261203T101500Z-3f9a": sorts by time
    state: SnapshotState
    kind: Literal["manual", "scheduled"]
    started_at: str  # ISO 8601, UTC
    finished_at: str | None = None
    size: int = 0  # sealed bytes stored
    plain_bytes: int = 0
    parts: list[PartInfo] = []
    signer: str = ""  # hex Ed25519 public key that signed the manifest
    location: str = ""  # where the snapshot's folder is ("/srv/backups/platform/s...", "s3://...")
    error: str = ""
    requested_by: str = ""


class TakeSnapshot(Message, tag="snapshot.take.v1", frozen=True, kw_only=True):
    requested_by: str = ""  # a platform admin's email, or "" for the hourly schedule


class ListSnapshots(Message, tag="snapshot.list.v1", frozen=True, kw_only=True):
    pass


class Snapshots(Message, tag="snapshot.list.reply.v1", frozen=True, kw_only=True):
    snapshots: list[SnapshotInfo]


class TakenSnapshot(Message, tag="snapshot.taken.v1", frozen=True, kw_only=True):
    snapshot: SnapshotInfo


class VerifySnapshot(Message, tag="snapshot.verify.v1", frozen=True, kw_only=True):
    """Keyless checks of a stored snapshot: manifest signature, every piece's size and hash."""

    snapshot_id: str


class SnapshotCheck(Message, tag="snapshot.verify.reply.v1", frozen=True, kw_only=True):
    snapshot_id: str
    ok: bool
    problems: list[str] = []  # one readable line each, empty when ok
    pieces_checked: int = 0
    bytes_checked: int = 0


SNAPSHOT_TAKE: Rpc[TakeSnapshot, TakenSnapshot] = Rpc(
    Service.BACKUP,
    "snapshot.take",
    subjects.rpc(Service.BACKUP, "snapshot.take"),
    TakeSnapshot,
    TakenSnapshot,
    callers=only(Service.GATEWAY, OPERATOR),
)
SNAPSHOTS_LIST: Rpc[ListSnapshots, Snapshots] = Rpc(
    Service.BACKUP,
    "snapshot.list",
    subjects.rpc(Service.BACKUP, "snapshot.list"),
    ListSnapshots,
    Snapshots,
    callers=only(Service.GATEWAY, OPERATOR),
)
SNAPSHOT_VERIFY: Rpc[VerifySnapshot, SnapshotCheck] = Rpc(
    Service.BACKUP,
    "snapshot.verify",
    subjects.rpc(Service.BACKUP, "snapshot.verify"),
    VerifySnapshot,
    SnapshotCheck,
    callers=only(Service.GATEWAY, OPERATOR),
)


class SignSnapshotManifest(Message, tag="keyring.snapshot.sign.v1", frozen=True, kw_only=True):
    """Sign `SNAPSHOT_SIGN_PREFIX + canonical manifest` with the platform's signing key."""

    message: bytes


class SnapshotSignature(Message, tag="keyring.snapshot.signature.v1", frozen=True, kw_only=True):
    signature: bytes  # Ed25519, 64 bytes
    public_key: bytes  # the key that made it (32 bytes)


SNAPSHOT_SIGN_PREFIX = b"slipway platform snapshot manifest v1\n"
SNAPSHOT_MANIFEST_SIGN: Rpc[SignSnapshotManifest, SnapshotSignature] = Rpc(
    Service.KEYRING,
    "snapshot.sign",
    subjects.rpc(Service.KEYRING, "snapshot.sign"),
    SignSnapshotManifest,
    SnapshotSignature,
    callers=only(Service.BACKUP),
)
