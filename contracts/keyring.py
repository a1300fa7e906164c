"""The keyring's RPCs: data keys, KEK rotation, crypto-shredding, customer keys, audit signing,
and the keys backups are sealed to (age X25519 recipients) and their manifests signed with.

The keyring is the only holder of the master key. Callers get data keys
(plaintext for immediate use, wrapped for storage beside the ciphertext) and
never see a key-encryption key. Which service may ask for which purpose is
enforced by the keyring on every call; the caller is the service whose reply
inbox the request came from (see `subjects.caller_of`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

import msgspec

from slipway.contracts import subjects
from slipway.contracts.base import Message, Ok, Rpc, only
from slipway.contracts.subjects import OPERATOR, Service


class Purpose(StrEnum):
    """What a data key protects; part of the policy table and of the associated data."""

    CONFIG = "config"
    LOGS = "logs"
    BACKUP = "backup"
    BUILD_SOURCE = "build-source"
    BUILD_CACHE = "build-cache"


class GenerateDataKey(Message, tag="keyring.datakey.generate.v1", frozen=True, kw_only=True):
    team_id: str
    purpose: Purpose
    # Bound into the wrapped key's associated data: the same context must be given to decrypt.
    context: dict[str, str] = {}


class DataKey(Message, tag="keyring.datakey.v1", frozen=True, kw_only=True):
    plaintext: bytes
    wrapped: bytes
    kek_version: int


class DecryptDataKey(Message, tag="keyring.datakey.decrypt.v1", frozen=True, kw_only=True):
    team_id: str
    purpose: Purpose
    wrapped: bytes
    context: dict[str, str] = {}


class PlainDataKey(Message, tag="keyring.datakey.plain.v1", frozen=True, kw_only=True):
    plaintext: bytes
    kek_version: int


class RenewDataKey(Message, tag="keyring.datakey.renew.v1", frozen=True, kw_only=True):
    """Open a record's data key and issue the next record's, in one round trip.

    What a config change needs (the current version is read, the next one sealed):
    one call where decrypt and generate would be two. `wrapped` and `context` are
    the current record's, as in `DecryptDataKey`; `next_context` is bound into the
    new key as in `GenerateDataKey`.
    """

    team_id: str
    purpose: Purpose
    wrapped: bytes
    context: dict[str, str] = {}
    next_context: dict[str, str] = {}


class RenewedDataKey(Message, tag="keyring.datakey.renewed.v1", frozen=True, kw_only=True):
    """The current record's data key in plaintext, and a fresh one with its wrapped copy."""

    current: bytes
    current_kek_version: int
    plaintext: bytes
    wrapped: bytes
    kek_version: int


class RewrapDataKey(Message, tag="keyring.datakey.rewrap.v1", frozen=True, kw_only=True):
    """Re-wrap a data key under the team's current KEK; the plaintext never leaves the keyring."""

    team_id: str
    purpose: Purpose
    wrapped: bytes
    context: dict[str, str] = {}


class WrappedDataKey(Message, tag="keyring.datakey.wrapped.v1", frozen=True, kw_only=True):
    wrapped: bytes
    kek_version: int


class RotateKek(Message, tag="keyring.kek.rotate.v1", frozen=True, kw_only=True):
    team_id: str


class KekRotated(Message, tag="keyring.kek.rotated.v1", frozen=True, kw_only=True):
    team_id: str
    version: int


class RetireKek(Message, tag="keyring.kek.retire.v1", frozen=True, kw_only=True):
    """Destroy the team's KEK versions below `below_version` (after their data was rewrapped)."""

    team_id: str
    below_version: int


class KekRetired(Message, tag="keyring.kek.retired.v1", frozen=True, kw_only=True):
    team_id: str
    retired: list[int] = []
    current: int = 0


class ShredTeam(Message, tag="keyring.team.shred.v1", frozen=True, kw_only=True):
    team_id: str
    reason: str = ""


class RegisterPublicKey(Message, tag="keyring.pubkey.register.v1", frozen=True, kw_only=True):
    """A customer-held X25519 public key: sealed data is then unreadable to the platform."""

    team_id: str
    public_key: bytes


class GetPublicKey(Message, tag="keyring.pubkey.get.v1", frozen=True, kw_only=True):
    team_id: str


class PublicKeyInfo(Message, tag="keyring.pubkey.info.v1", frozen=True, kw_only=True):
    team_id: str
    public_key: bytes | None = None
    fingerprint: str | None = None


class SignAudit(Message, tag="keyring.audit.sign.v1", frozen=True, kw_only=True):
    """Sign an audit checkpoint with the platform's Ed25519 audit key.

    Once the keyring has signed a head of the team, a higher one must come with the
    proof that it extends it: the last signed (`previous_seq`, `previous_head`) and
    the canonical JSON of every entry after it up to the new head, in order.
    """

    team_id: str
    message: bytes
    previous_seq: int = 0
    previous_head: str = ""  # hex; "" with previous_seq 0 means the genesis hash
    entries: list[bytes] = []


class AuditSignature(Message, tag="keyring.audit.signature.v1", frozen=True, kw_only=True):
    signature: bytes
    key_id: str
    public_key: bytes


class GetAuditKey(Message, tag="keyring.audit.key.get.v1", frozen=True, kw_only=True):
    pass


class AuditKey(Message, tag="keyring.audit.key.v1", frozen=True, kw_only=True):
    key_id: str
    public_key: bytes


# ---- backups: age recipients, file-key unwrapping, manifest signatures -------------------------

# What a signed backup manifest starts with, then the team id and a newline: never an audit
# checkpoint (`slipway-audit-checkpoint/...`), so neither signature passes for the other.
MANIFEST_PREFIX = b"slipway-backup-manifest/1\n"

# "operator": a recovery recipient of the platform's operator (SLIPWAY_RECOVERY_RECIPIENTS),
# listed only for a team that opted in.
BackupKeyKind = Literal["platform", "customer", "operator"]


class BackupRecipient(msgspec.Struct, frozen=True, kw_only=True):
    """One age recipient a team's backups are sealed to."""

    fingerprint: str  # hex SHA-256 of the X25519 public key
    recipient: str  # "age1..."
    kind: BackupKeyKind
    label: str = ""
    created_at: str = ""  # ISO 8601, UTC


class GetBackupRecipients(
    Message, tag="keyring.backup.recipients.get.v1", frozen=True, kw_only=True
):
    """Who to seal a team's next backup object to (makes the platform key on first use)."""

    team_id: str


class BackupRecipients(Message, tag="keyring.backup.recipients.v1", frozen=True, kw_only=True):
    """The platform key (only while enabled), every customer key of a team, and the
    operator's recovery keys (only while the team opted in)."""

    team_id: str
    recipients: list[BackupRecipient] = []
    platform_enabled: bool = True
    operator_enabled: bool = False


class AddBackupKey(Message, tag="keyring.backup.key.add.v1", frozen=True, kw_only=True):
    """Seal the team's backups to a customer-held age recipient too."""

    team_id: str
    recipient: str  # "age1..."
    label: str = ""


class RemoveBackupKey(Message, tag="keyring.backup.key.remove.v1", frozen=True, kw_only=True):
    team_id: str
    fingerprint: str


class SetPlatformBackupKey(
    Message, tag="keyring.backup.platform.set.v1", frozen=True, kw_only=True
):
    """Whether new backups are also sealed to the team's platform-held key (restorable by us)."""

    team_id: str
    enabled: bool


class SetOperatorBackupKey(
    Message, tag="keyring.backup.operator.set.v1", frozen=True, kw_only=True
):
    """Whether new backups are also sealed to the operator's offline recovery keys."""

    team_id: str
    enabled: bool


class UnwrapFileKeys(Message, tag="keyring.backup.filekeys.unwrap.v1", frozen=True, kw_only=True):
    """The file keys of age headers, unwrapped with the team's platform identity."""

    team_id: str
    headers: list[bytes] = []


class FileKeys(Message, tag="keyring.backup.filekeys.v1", frozen=True, kw_only=True):
    """One per header, in order; b"" where the platform identity is not a recipient."""

    file_keys: list[bytes] = []


class SignManifest(Message, tag="keyring.backup.manifest.sign.v1", frozen=True, kw_only=True):
    """Sign a backup manifest: `MANIFEST_PREFIX + team_id + b"\\n" + canonical manifest`."""

    team_id: str
    message: bytes


DATAKEY_GENERATE: Rpc[GenerateDataKey, DataKey] = Rpc(
    Service.KEYRING,
    "datakey.generate",
    subjects.rpc(Service.KEYRING, "datakey.generate"),
    GenerateDataKey,
    DataKey,
    callers=only(
        Service.GATEWAY, Service.BUILDER, Service.LOG_SHIPPER, Service.BACKUP, Service.MONITOR
    ),
)
DATAKEY_DECRYPT: Rpc[DecryptDataKey, PlainDataKey] = Rpc(
    Service.KEYRING,
    "datakey.decrypt",
    subjects.rpc(Service.KEYRING, "datakey.decrypt"),
    DecryptDataKey,
    PlainDataKey,
    callers=only(
        Service.GATEWAY,
        Service.SCHEDULER,
        Service.BUILDER,
        Service.LOG_SHIPPER,
        Service.BACKUP,
        Service.MONITOR,
    ),
)
DATAKEY_RENEW: Rpc[RenewDataKey, RenewedDataKey] = Rpc(
    Service.KEYRING,
    "datakey.renew",
    subjects.rpc(Service.KEYRING, "datakey.renew"),
    RenewDataKey,
    RenewedDataKey,
    # Only config changes use it; the policy table grants it for config alone.
    callers=only(Service.GATEWAY),
)
DATAKEY_REWRAP: Rpc[RewrapDataKey, WrappedDataKey] = Rpc(
    Service.KEYRING,
    "datakey.rewrap",
    subjects.rpc(Service.KEYRING, "datakey.rewrap"),
    RewrapDataKey,
    WrappedDataKey,
    callers=only(Service.GATEWAY, Service.BUILDER, Service.LOG_SHIPPER, Service.BACKUP),
)
KEK_ROTATE: Rpc[RotateKek, KekRotated] = Rpc(
    Service.KEYRING,
    "kek.rotate",
    subjects.rpc(Service.KEYRING, "kek.rotate"),
    RotateKek,
    KekRotated,
    callers=only(Service.GATEWAY, OPERATOR),
)
KEK_RETIRE: Rpc[RetireKek, KekRetired] = Rpc(
    Service.KEYRING,
    "kek.retire",
    subjects.rpc(Service.KEYRING, "kek.retire"),
    RetireKek,
    KekRetired,
    callers=only(Service.GATEWAY, OPERATOR),
)
TEAM_SHRED: Rpc[ShredTeam, Ok] = Rpc(
    Service.KEYRING,
    "team.shred",
    subjects.rpc(Service.KEYRING, "team.shred"),
    ShredTeam,
    Ok,
    callers=only(Service.GATEWAY, OPERATOR),
)
PUBKEY_REGISTER: Rpc[RegisterPublicKey, PublicKeyInfo] = Rpc(
    Service.KEYRING,
    "pubkey.register",
    subjects.rpc(Service.KEYRING, "pubkey.register"),
    RegisterPublicKey,
    PublicKeyInfo,
    callers=only(Service.GATEWAY),
)
PUBKEY_GET: Rpc[GetPublicKey, PublicKeyInfo] = Rpc(
    Service.KEYRING,
    "pubkey.get",
    subjects.rpc(Service.KEYRING, "pubkey.get"),
    GetPublicKey,
    PublicKeyInfo,
    callers=only(Service.GATEWAY, Service.LOG_SHIPPER, Service.BACKUP, OPERATOR),
)
AUDIT_SIGN: Rpc[SignAudit, AuditSignature] = Rpc(
    Service.KEYRING,
    "audit.sign",
    subjects.rpc(Service.KEYRING, "audit.sign"),
    SignAudit,
    AuditSignature,
    callers=only(Service.GATEWAY),
)
AUDIT_KEY: Rpc[GetAuditKey, AuditKey] = Rpc(
    Service.KEYRING,
    "audit.key",
    subjects.rpc(Service.KEYRING, "audit.key"),
    GetAuditKey,
    AuditKey,
    # The backup service checks manifest signatures against it (backup verification).
    callers=only(Service.GATEWAY, Service.BACKUP, OPERATOR),
)
BACKUP_RECIPIENTS_GET: Rpc[GetBackupRecipients, BackupRecipients] = Rpc(
    Service.KEYRING,
    "backup.recipients.get",
    subjects.rpc(Service.KEYRING, "backup.recipients.get"),
    GetBackupRecipients,
    BackupRecipients,
    callers=only(Service.GATEWAY, Service.BACKUP),
)
BACKUP_KEY_ADD: Rpc[AddBackupKey, BackupRecipients] = Rpc(
    Service.KEYRING,
    "backup.key.add",
    subjects.rpc(Service.KEYRING, "backup.key.add"),
    AddBackupKey,
    BackupRecipients,
    callers=only(Service.GATEWAY),
)
BACKUP_KEY_REMOVE: Rpc[RemoveBackupKey, BackupRecipients] = Rpc(
    Service.KEYRING,
    "backup.key.remove",
    subjects.rpc(Service.KEYRING, "backup.key.remove"),
    RemoveBackupKey,
    BackupRecipients,
    callers=only(Service.GATEWAY),
)
BACKUP_PLATFORM_KEY_SET: Rpc[SetPlatformBackupKey, BackupRecipients] = Rpc(
    Service.KEYRING,
    "backup.platform.set",
    subjects.rpc(Service.KEYRING, "backup.platform.set"),
    SetPlatformBackupKey,
    BackupRecipients,
    callers=only(Service.GATEWAY),
)
BACKUP_OPERATOR_KEY_SET: Rpc[SetOperatorBackupKey, BackupRecipients] = Rpc(
    Service.KEYRING,
    "backup.operator.set",
    subjects.rpc(Service.KEYRING, "backup.operator.set"),
    SetOperatorBackupKey,
    BackupRecipients,
    callers=only(Service.GATEWAY),
)
BACKUP_FILEKEYS_UNWRAP: Rpc[UnwrapFileKeys, FileKeys] = Rpc(
    Service.KEYRING,
    "backup.filekeys.unwrap",
    subjects.rpc(Service.KEYRING, "backup.filekeys.unwrap"),
    UnwrapFileKeys,
    FileKeys,
    callers=only(Service.BACKUP),
)
BACKUP_MANIFEST_SIGN: Rpc[SignManifest, AuditSignature] = Rpc(
    Service.KEYRING,
    "backup.manifest.sign",
    subjects.rpc(Service.KEYRING, "backup.manifest.sign"),
    SignManifest,
    AuditSignature,
    callers=only(Service.BACKUP),
)


# ---- the master key ----------------------------------------------------------------------------


class RotateMasterKey(Message, tag="keyring.masterkey.rotate.v1", frozen=True, kw_only=True):
    """Re-wrap every master-wrapped key under a new master key, then destroy the old key.

    Run again after a rotation stopped midway (a crash), it finishes that one.
    """

    # Who asked (a platform admin's email), for the keyring's audit.
    requested_by: str = ""


class MasterKeyRotated(Message, tag="keyring.masterkey.rotated.v1", frozen=True, kw_only=True):
    previous_version: int
    version: int
    fingerprint: str  # of the new master key: tells keys apart, reveals nothing
    rewrapped: int = 0  # KEK versions, audit signing keys and backup identities re-wrapped
    resumed: bool = False  # finished a rotation an earlier run had started
    recovery_sealed: bool = False  # sealed to SLIPWAY_RECOVERY_RECIPIENTS


MASTERKEY_ROTATE: Rpc[RotateMasterKey, MasterKeyRotated] = Rpc(
    Service.KEYRING,
    "masterkey.rotate",
    subjects.rpc(Service.KEYRING, "masterkey.rotate"),
    RotateMasterKey,
    MasterKeyRotated,
    callers=only(Service.GATEWAY),
)
