"""The keyring's RPC handlers: policy check, audit record, then the vault.

Every handler reads like its contract and runs inside `audited(...)`, which
checks the caller against the policy table and appends one audit row whatever
the outcome (ok, forbidden, gone, ...). The row is written before the reply is
sent: if it cannot be written, the call fails and no key leaves the keyring — except
on a full disk, where a read (`READS`) is answered and its row kept in memory until
space returns (store.py says how that is bounded), so reads keep working at 100 %.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from slipway.contracts import keyring, snapshot
from slipway.contracts.base import Ok
from slipway.contracts.keyring import (
    AddBackupKey,
    AuditKey,
    AuditSignature,
    BackupRecipients,
    DataKey,
    DecryptDataKey,
    FileKeys,
    GenerateDataKey,
    GetAuditKey,
    GetBackupRecipients,
    GetPublicKey,
    KekRetired,
    KekRotated,
    MasterKeyRotated,
    PlainDataKey,
    PublicKeyInfo,
    Purpose,
    RegisterPublicKey,
    RemoveBackupKey,
    RenewDataKey,
    RenewedDataKey,
    RetireKek,
    RewrapDataKey,
    RotateKek,
    RotateMasterKey,
    SetOperatorBackupKey,
    SetPlatformBackupKey,
    ShredTeam,
    SignAudit,
    SignManifest,
    UnwrapFileKeys,
    WrappedDataKey,
)
from slipway.libs.bus import context
from slipway.libs.crypto import age
from slipway.libs.errors import InvalidRequest, SlipwayError
from slipway.libs.service import Key, ServiceApp
from slipway.services.keyring import policy
from slipway.services.keyring.policy import Operation
from slipway.services.keyring.rotation import MasterKeyRotator
from slipway.services.keyring.store import AuditRecord
from slipway.services.keyring.vault import Vault

VAULT = Key("vault", Vault)
ROTATOR = Key("master_key_rotator", MasterKeyRotator)

MAX_TEAM_ID = 128
MAX_CONTEXT_ENTRIES = 16
MAX_CONTEXT_TEXT = 512
MAX_WRAPPED = 1024
# A restore sends the headers of its objects in batches; a header with a few recipients
# is a few hundred bytes.
MAX_HEADERS = 1024
MAX_HEADER = 16 * 1024
MAX_FINGERPRINT = 64
MAX_REQUESTER = 320

# Operations that change nothing: on a full disk their audit row may wait in memory.
READS = frozenset(
    {Operation.DECRYPT, Operation.PUBKEY_GET, Operation.AUDIT_KEY, Operation.BACKUP_RECIPIENTS_GET}
)


@dataclass
class Call:
    """One audited call; a handler may add a detail (never key material)."""

    operation: Operation
    team_id: str | None
    purpose: Purpose | None
    detail: str = ""


@asynccontextmanager
async def audited(
    vault: Vault,
    operation: Operation,
    *,
    team_id: str | None = None,
    purpose: Purpose | None = None,
) -> AsyncIterator[Call]:
    """Check the policy for the current caller, run the body, and audit the outcome."""
    ctx = context.current()
    caller = ctx.caller if ctx else None
    call = Call(operation, team_id, purpose)
    outcome = "ok"
    try:
        policy.check(caller, operation, purpose)
        if team_id is not None:
            _check_team_id(team_id)
        yield call
    except SlipwayError as exc:
        outcome = exc.code
        raise
    except BaseException:
        outcome = "internal"
        raise
    finally:
        await vault.store.append_audit(
            AuditRecord(
                at=time.time(),
                caller=caller or "unknown",
                operation=operation,
                team_id=team_id,
                purpose=purpose,
                outcome=outcome,
                detail=call.detail,
                request_id=ctx.request_id if ctx else None,
            ),
            read=operation in READS,
        )


class Handlers:
    """One method per keyring RPC, each reading like its contract."""

    def __init__(self, app: ServiceApp) -> None:
        self.app = app

    @property
    def vault(self) -> Vault:
        # Looked up per call: the vault exists only once the app's resources are set up.
        return self.app[VAULT]

    async def generate(self, req: GenerateDataKey) -> DataKey:
        audit = audited(self.vault, Operation.GENERATE, team_id=req.team_id, purpose=req.purpose)
        async with audit as call:
            _check_context(req.context)
            key = await self.vault.generate_data_key(req.team_id, req.purpose, req.context)
            call.detail = f"kek_version={key.kek_version}"
            return key

    async def decrypt(self, req: DecryptDataKey) -> PlainDataKey:
        audit = audited(self.vault, Operation.DECRYPT, team_id=req.team_id, purpose=req.purpose)
        async with audit as call:
            _check_context(req.context, req.wrapped)
            key = await self.vault.decrypt_data_key(
                req.team_id, req.purpose, req.wrapped, req.context
            )
            call.detail = f"kek_version={key.kek_version}"
            return key

    async def renew(self, req: RenewDataKey) -> RenewedDataKey:
        audit = audited(self.vault, Operation.RENEW, team_id=req.team_id, purpose=req.purpose)
        async with audit as call:
            _check_context(req.context, req.wrapped)
            _check_context(req.next_context)
            # Opened first: a moved or altered record gets no new key either.
            current = await self.vault.decrypt_data_key(
                req.team_id, req.purpose, req.wrapped, req.context
            )
            key = await self.vault.generate_data_key(req.team_id, req.purpose, req.next_context)
            call.detail = f"kek_version={current.kek_version} next_kek_version={key.kek_version}"
            return RenewedDataKey(
                current=current.plaintext,
                current_kek_version=current.kek_version,
                plaintext=key.plaintext,
                wrapped=key.wrapped,
                kek_version=key.kek_version,
            )

    async def rewrap(self, req: RewrapDataKey) -> WrappedDataKey:
        audit = audited(self.vault, Operation.REWRAP, team_id=req.team_id, purpose=req.purpose)
        async with audit as call:
            _check_context(req.context, req.wrapped)
            key = await self.vault.rewrap_data_key(
                req.team_id, req.purpose, req.wrapped, req.context
            )
            call.detail = f"kek_version={key.kek_version}"
            return key

    async def rotate(self, req: RotateKek) -> KekRotated:
        async with audited(self.vault, Operation.ROTATE, team_id=req.team_id) as call:
            rotated = await self.vault.rotate(req.team_id)
            call.detail = f"version={rotated.version}"
            return rotated

    async def retire(self, req: RetireKek) -> KekRetired:
        async with audited(self.vault, Operation.RETIRE, team_id=req.team_id) as call:
            retired = await self.vault.retire(req.team_id, req.below_version)
            call.detail = "retired=" + ",".join(str(v) for v in retired.retired)
            return retired

    async def shred(self, req: ShredTeam) -> Ok:
        async with audited(self.vault, Operation.SHRED, team_id=req.team_id) as call:
            if len(req.reason) > MAX_CONTEXT_TEXT:
                raise InvalidRequest(f"A shred reason is at most {MAX_CONTEXT_TEXT} characters.")
            shredded = await self.vault.shred(req.team_id, req.reason)
            call.detail = req.reason if shredded else "already shredded"
            return Ok()

    async def register_public_key(self, req: RegisterPublicKey) -> PublicKeyInfo:
        async with audited(self.vault, Operation.PUBKEY_REGISTER, team_id=req.team_id) as call:
            info = await self.vault.register_public_key(req.team_id, req.public_key)
            call.detail = f"fingerprint={info.fingerprint}"
            return info

    async def get_public_key(self, req: GetPublicKey) -> PublicKeyInfo:
        async with audited(self.vault, Operation.PUBKEY_GET, team_id=req.team_id):
            return await self.vault.public_key(req.team_id)

    async def sign_audit(self, req: SignAudit) -> AuditSignature:
        async with audited(self.vault, Operation.AUDIT_SIGN, team_id=req.team_id) as call:
            signed = await self.vault.sign_checkpoint(req)
            call.detail = f"key_id={signed.key_id}"
            return signed

    async def audit_key(self, req: GetAuditKey) -> AuditKey:
        async with audited(self.vault, Operation.AUDIT_KEY):
            return self.vault.audit_key()

    async def backup_recipients(self, req: GetBackupRecipients) -> BackupRecipients:
        audit = audited(self.vault, Operation.BACKUP_RECIPIENTS_GET, team_id=req.team_id)
        async with audit as call:
            found = await self.vault.backup.recipients(req.team_id)
            call.detail = _recipients_detail(found)
            return found

    async def add_backup_key(self, req: AddBackupKey) -> BackupRecipients:
        async with audited(self.vault, Operation.BACKUP_KEY_ADD, team_id=req.team_id) as call:
            found = await self.vault.backup.add(req.team_id, req.recipient, req.label)
            call.detail = f"fingerprint={age.fingerprint(age.parse_recipient(req.recipient))}"
            return found

    async def remove_backup_key(self, req: RemoveBackupKey) -> BackupRecipients:
        audit = audited(self.vault, Operation.BACKUP_KEY_REMOVE, team_id=req.team_id)
        async with audit as call:
            call.detail = f"fingerprint={req.fingerprint[:MAX_FINGERPRINT]}"
            return await self.vault.backup.remove(req.team_id, req.fingerprint)

    async def set_platform_backup_key(self, req: SetPlatformBackupKey) -> BackupRecipients:
        audit = audited(self.vault, Operation.BACKUP_PLATFORM_KEY_SET, team_id=req.team_id)
        async with audit as call:
            call.detail = f"enabled={str(req.enabled).lower()}"
            return await self.vault.backup.set_platform(req.team_id, req.enabled)

    async def set_operator_backup_key(self, req: SetOperatorBackupKey) -> BackupRecipients:
        audit = audited(self.vault, Operation.BACKUP_OPERATOR_KEY_SET, team_id=req.team_id)
        async with audit as call:
            call.detail = f"enabled={str(req.enabled).lower()}"
            return await self.vault.backup.set_operator(req.team_id, req.enabled)

    async def unwrap_file_keys(self, req: UnwrapFileKeys) -> FileKeys:
        audit = audited(self.vault, Operation.BACKUP_FILEKEYS_UNWRAP, team_id=req.team_id)
        async with audit as call:
            call.detail = f"headers={len(req.headers)}"
            if len(req.headers) > MAX_HEADERS or any(len(h) > MAX_HEADER for h in req.headers):
                raise InvalidRequest(
                    f"Send at most {MAX_HEADERS} age headers of at most {MAX_HEADER} bytes each."
                )
            keys = await self.vault.backup.unwrap(req.team_id, req.headers)
            call.detail += f" unwrapped={sum(1 for k in keys.file_keys if k)}"
            return keys

    async def sign_manifest(self, req: SignManifest) -> AuditSignature:
        audit = audited(self.vault, Operation.BACKUP_MANIFEST_SIGN, team_id=req.team_id)
        async with audit as call:
            signed = await self.vault.sign_manifest(req.team_id, req.message)
            digest = hashlib.sha256(req.message).hexdigest()
            call.detail = f"key_id={signed.key_id} sha256={digest}"
            return signed

    async def sign_snapshot(self, req: snapshot.SignSnapshotManifest) -> snapshot.SnapshotSignature:
        async with audited(self.vault, Operation.SNAPSHOT_MANIFEST_SIGN) as call:
            call.detail = f"sha256={hashlib.sha256(req.message).hexdigest()}"
            signed = await self.vault.sign_snapshot(req.message)
            call.detail += f" key_id={self.vault.audit_key().key_id}"
            return signed

    async def rotate_master_key(self, req: RotateMasterKey) -> MasterKeyRotated:
        async with audited(self.vault, Operation.MASTERKEY_ROTATE) as call:
            who = req.requested_by[:MAX_REQUESTER]
            call.detail = f"requested_by={who}"
            done = await self.app[ROTATOR].rotate()
            call.detail += (
                f" from={done.previous_version} to={done.version}"
                f" fingerprint={done.fingerprint} rewrapped={done.rewrapped}"
                f" resumed={str(done.resumed).lower()}"
                f" recovery_sealed={str(done.recovery_sealed).lower()}"
            )
            return done


def register(app: ServiceApp) -> None:
    """Serve every keyring RPC on `app` (the vault is `app[VAULT]` once started)."""
    handlers = Handlers(app)
    app.rpc(keyring.DATAKEY_GENERATE)(handlers.generate)
    app.rpc(keyring.DATAKEY_DECRYPT)(handlers.decrypt)
    app.rpc(keyring.DATAKEY_REWRAP)(handlers.rewrap)
    app.rpc(keyring.DATAKEY_RENEW)(handlers.renew)
    app.rpc(keyring.KEK_ROTATE)(handlers.rotate)
    app.rpc(keyring.KEK_RETIRE)(handlers.retire)
    app.rpc(keyring.TEAM_SHRED)(handlers.shred)
    app.rpc(keyring.PUBKEY_REGISTER)(handlers.register_public_key)
    app.rpc(keyring.PUBKEY_GET)(handlers.get_public_key)
    app.rpc(keyring.AUDIT_SIGN)(handlers.sign_audit)
    app.rpc(keyring.AUDIT_KEY)(handlers.audit_key)
    app.rpc(keyring.BACKUP_RECIPIENTS_GET)(handlers.backup_recipients)
    app.rpc(keyring.BACKUP_KEY_ADD)(handlers.add_backup_key)
    app.rpc(keyring.BACKUP_KEY_REMOVE)(handlers.remove_backup_key)
    app.rpc(keyring.BACKUP_PLATFORM_KEY_SET)(handlers.set_platform_backup_key)
    app.rpc(keyring.BACKUP_OPERATOR_KEY_SET)(handlers.set_operator_backup_key)
    app.rpc(keyring.BACKUP_FILEKEYS_UNWRAP)(handlers.unwrap_file_keys)
    app.rpc(keyring.BACKUP_MANIFEST_SIGN)(handlers.sign_manifest)
    app.rpc(keyring.MASTERKEY_ROTATE)(handlers.rotate_master_key)
    app.rpc(snapshot.SNAPSHOT_MANIFEST_SIGN)(handlers.sign_snapshot)


def _check_team_id(team_id: str) -> None:
    if not team_id or len(team_id) > MAX_TEAM_ID:
        raise InvalidRequest(f"A team id is 1 to {MAX_TEAM_ID} characters.")


def _check_context(context: dict[str, str], wrapped: bytes | None = None) -> None:
    # Bounded because every entry is bound into the wrapping: a huge context is abuse.
    if len(context) > MAX_CONTEXT_ENTRIES:
        raise InvalidRequest(f"A data key context has at most {MAX_CONTEXT_ENTRIES} entries.")
    if any(len(k) > MAX_CONTEXT_TEXT or len(v) > MAX_CONTEXT_TEXT for k, v in context.items()):
        raise InvalidRequest(f"Context names and values are at most {MAX_CONTEXT_TEXT} characters.")
    if wrapped is not None and len(wrapped) > MAX_WRAPPED:
        raise InvalidRequest("That is not a wrapped data key: it is far too long.")


def _recipients_detail(found: BackupRecipients) -> str:
    platform = "on" if found.platform_enabled else "off"
    operator = "on" if found.operator_enabled else "off"
    return f"platform={platform} operator={operator} recipients={len(found.recipients)}"
