"""What the keyring does, without NATS: team KEKs, data keys, rotation, shredding, signing.

Key hierarchy:

    master key (file or env)  wraps  team KEK v1, v2, ...  wrap  data keys  encrypt  data
                              wraps  the Ed25519 audit signing key
                              wraps  each team's age identity for backups

The master key itself can be rotated (rotation.py re-wraps all three kinds); each
master-wrapped blob names the master key version that sealed it, so while a
rotation runs both versions open, and new wraps use the newest.

Each wrap is an `aead` blob whose associated data says what it is and where it
belongs, so no wrapped key can be moved to another team, purpose, context or
version and still open:

    KEK               slipway.kek.v1        team, version
    data key          slipway.datakey.v1    team, purpose, kek_version, then the caller's
                                            context sorted by name
    audit signing key slipway.audit-key.v1  key_id
    backup identity   slipway.backup-identity.v1  team, kind (see backupkeys.py)

KEKs are generated on a team's first data key; rotation adds a version that
becomes current, older versions keep decrypting until retired (destroyed), and a
shred destroys them all. Plaintext KEKs exist only for the duration of one call.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from slipway.contracts.keyring import (
    MANIFEST_PREFIX,
    AuditKey,
    AuditSignature,
    DataKey,
    KekRetired,
    KekRotated,
    PlainDataKey,
    PublicKeyInfo,
    SignAudit,
    WrappedDataKey,
)
from slipway.contracts.snapshot import SNAPSHOT_SIGN_PREFIX, SnapshotSignature
from slipway.libs.crypto import aead, sealedbox
from slipway.libs.crypto.binding import Context
from slipway.libs.crypto.errors import DecryptionFailed
from slipway.libs.errors import Conflict, Gone, Internal, InvalidRequest, NotFound
from slipway.libs.snapshot import manifest as snapshot_manifest
from slipway.services.keyring import heads
from slipway.services.keyring.backupkeys import BackupKeys
from slipway.services.keyring.errors import MasterKeyError
from slipway.services.keyring.masterkey import MasterKey
from slipway.services.keyring.store import KeyringStore, SigningKey, Team
from slipway.services.keyring.teams import check_alive

KEK_LABEL = "slipway.kek.v1"
DATAKEY_LABEL = "slipway.datakey.v1"
AUDIT_KEY_LABEL = "slipway.audit-key.v1"
# audit.sign signs audit checkpoints (libs/auditchain.checkpoint_message) and nothing else.
CHECKPOINT_PREFIX = b"slipway-audit-checkpoint/"
MAX_SIGNED_MESSAGE = 4096
# backup.manifest.sign signs backup manifests only; a manifest lists a base backup's objects.
MAX_MANIFEST_MESSAGE = 512 * 1024
# snapshot.sign signs platform snapshot manifests (libs/snapshot/manifest.py) only.
MAX_SNAPSHOT_MANIFEST = 1024 * 1024
# A master key in one of these states means a rotation has not finished.
ROTATING = ("pending", "retiring")


def kek_ad(team_id: str, version: int) -> Context:
    """What a wrapped KEK is bound to."""
    return Context(KEK_LABEL, (("team", team_id), ("version", str(version))))


def datakey_ad(team_id: str, purpose: str, context: Mapping[str, str], version: int) -> Context:
    """What a wrapped data key is bound to."""
    fixed = (("team", team_id), ("purpose", purpose), ("kek_version", str(version)))
    return Context(DATAKEY_LABEL, fixed + tuple(sorted(context.items())))


def audit_key_ad(key_id: str) -> Context:
    return Context(AUDIT_KEY_LABEL, (("key_id", key_id),))


class Vault:
    """The keyring's keys and the operations on them."""

    def __init__(
        self,
        master: MasterKey,
        store: KeyringStore,
        signer: SigningKey,
        operator_recipients: Sequence[bytes] = (),
    ) -> None:
        self.master = master
        self.store = store
        self._signing_key_id = signer.key_id
        self._signing_public = signer.public_key
        self._signer = _unwrap_signer(master, signer)
        self.backup = BackupKeys(master, store, operator_recipients)

    @classmethod
    async def open(
        cls, master: MasterKey, store: KeyringStore, operator_recipients: Sequence[bytes] = ()
    ) -> Vault:
        """The vault over `store`, creating the audit signing key on the first start.

        `operator_recipients`: the operator's recovery public keys, which teams may opt in
        to sealing their backups to.
        """
        signer = await store.signing_key()
        if signer is None:
            signer = _new_signing_key(master)
            await store.add_signing_key(signer)
        vault = cls(master, store, signer, operator_recipients)
        # Only now: the signing key opened, so this is the database's key.
        await master.record_first()
        return vault

    # ---- data keys ---------------------------------------------------------------------------

    async def generate_data_key(
        self, team_id: str, purpose: str, context: Mapping[str, str]
    ) -> DataKey:
        """A fresh data key, and the same key wrapped by the team's current KEK."""
        team = await self.store.team(team_id) or await self._first_kek(team_id)
        check_alive(team)
        version = team.current_version
        kek = await self._kek(team, version)
        plaintext = aead.generate_key()
        ad = datakey_ad(team_id, purpose, context, version)
        wrapped = aead.seal(kek, plaintext, ad, key_version=version)
        return DataKey(plaintext=plaintext, wrapped=wrapped, kek_version=version)

    async def decrypt_data_key(
        self, team_id: str, purpose: str, wrapped: bytes, context: Mapping[str, str]
    ) -> PlainDataKey:
        """The plaintext of a wrapped data key, if team, purpose and context match its wrapping."""
        version = aead.key_version_of(wrapped)
        team = await self.store.team(team_id)
        if team is None:
            raise DecryptionFailed(
                f"Team {team_id} has no keys, so this data key was not wrapped for it."
            )
        check_alive(team)
        kek = await self._kek(team, version)
        try:
            plaintext = aead.open_(
                kek, wrapped, datakey_ad(team_id, purpose, context, version), key_version=version
            )
        except DecryptionFailed:
            raise DecryptionFailed(
                f"The data key does not unwrap for team {team_id}, purpose {purpose} and the"
                " given context: the record was altered or moved from another place."
            ) from None
        return PlainDataKey(plaintext=plaintext, kek_version=version)

    async def rewrap_data_key(
        self, team_id: str, purpose: str, wrapped: bytes, context: Mapping[str, str]
    ) -> WrappedDataKey:
        """The same data key wrapped by the team's current KEK (unchanged if it already is)."""
        plain = await self.decrypt_data_key(team_id, purpose, wrapped, context)
        team = await self.store.team(team_id)
        assert team is not None  # decrypt_data_key found it
        check_alive(team)
        current = team.current_version
        if plain.kek_version == current:
            return WrappedDataKey(wrapped=wrapped, kek_version=current)
        kek = await self._kek(team, current)
        ad = datakey_ad(team_id, purpose, context, current)
        rewrapped = aead.seal(kek, plain.plaintext, ad, key_version=current)
        return WrappedDataKey(wrapped=rewrapped, kek_version=current)

    # ---- KEK lifecycle -------------------------------------------------------------------------

    async def rotate(self, team_id: str) -> KekRotated:
        """Add a new KEK version and make it current (a team's first key is version 1)."""
        async with self.store.transaction() as conn:
            team = await self.store.team_in(conn, team_id)
            if team is not None:
                check_alive(team)
            version = team.current_version + 1 if team else 1
            await self.master.sync_current(conn)
            wrapped = self.master.wrap(aead.generate_key(), kek_ad(team_id, version))
            await self.store.add_kek(conn, team_id, version, wrapped)
        return KekRotated(team_id=team_id, version=version)

    async def retire(self, team_id: str, below_version: int) -> KekRetired:
        """Destroy KEK versions below `below_version`; data they still wrap becomes unreadable."""
        async with self.store.transaction() as conn:
            team = await self.store.team_in(conn, team_id)
            if team is None:
                raise NotFound(f"Team {team_id} has no keys to retire.")
            check_alive(team)
            if below_version > team.current_version:
                raise InvalidRequest(
                    f"Cannot retire version {team.current_version} of team {team_id}'s key: it is"
                    f" current. Rotate first; below_version may be at most"
                    f" {team.current_version}."
                )
            retired = await self.store.retire(conn, team_id, below_version)
        if retired:
            await self.store.purge_freed_pages()
        return KekRetired(team_id=team_id, retired=retired, current=team.current_version)

    async def shred(self, team_id: str, reason: str) -> bool:
        """Destroy every key of the team, for good; False if it was already shredded."""
        async with self.store.transaction() as conn:
            team = await self.store.team_in(conn, team_id)
            if team is not None and team.shredded_at is not None:
                return False
            await self.store.shred(conn, team_id, reason)
        await self.store.purge_freed_pages()
        return True

    # ---- customer public keys ---------------------------------------------------------------

    async def register_public_key(self, team_id: str, public_key: bytes) -> PublicKeyInfo:
        """Record the team's X25519 public key (replacing an earlier one)."""
        sealedbox.validate_public_key(public_key)
        team = await self.store.team(team_id)
        if team is not None:
            check_alive(team)
        fingerprint = sealedbox.fingerprint(public_key)
        await self.store.set_public_key(team_id, public_key, fingerprint)
        return PublicKeyInfo(team_id=team_id, public_key=public_key, fingerprint=fingerprint)

    async def public_key(self, team_id: str) -> PublicKeyInfo:
        """The team's registered public key, or an info with none."""
        team = await self.store.team(team_id)
        if team is not None:
            check_alive(team)
        found = await self.store.public_key(team_id)
        if found is None:
            return PublicKeyInfo(team_id=team_id)
        return PublicKeyInfo(team_id=team_id, public_key=found[0], fingerprint=found[1])

    # ---- audit signing ----------------------------------------------------------------------

    def sign_audit(self, team_id: str, message: bytes) -> AuditSignature:
        """Sign one audit checkpoint of `team_id` with the platform's Ed25519 audit key."""
        lines = message.split(b"\n")
        if (
            len(message) > MAX_SIGNED_MESSAGE
            or len(lines) < 2
            or not lines[0].startswith(CHECKPOINT_PREFIX)
            or lines[1] != team_id.encode()
        ):
            raise InvalidRequest(
                "audit.sign signs audit checkpoints only: the message must start with"
                f" 'slipway-audit-checkpoint/<version>\\n{team_id}\\n' and be at most"
                f" {MAX_SIGNED_MESSAGE} bytes."
            )
        return AuditSignature(
            signature=self._signer.sign(message),
            key_id=self._signing_key_id,
            public_key=self._signing_public,
        )

    async def sign_checkpoint(self, req: SignAudit) -> AuditSignature:
        """Sign a checkpoint of `req.team_id` if it extends the last one signed (`heads`)."""
        seq, head = heads.parse_checkpoint(req.team_id, req.message)
        async with self.store.transaction() as conn:
            # Checked and recorded in one transaction: two racing requests cannot both pass.
            heads.check_extends(req, seq, head, await self.store.signed_head_in(conn, req.team_id))
            signed = self.sign_audit(req.team_id, req.message)
            await self.store.add_signed_head(conn, req.team_id, seq, head)
        return signed

    async def sign_manifest(self, team_id: str, message: bytes) -> AuditSignature:
        """Sign a backup manifest of `team_id` with the audit key, under its own prefix.

        The prefix differs from the checkpoints' in its first line, so no manifest
        signature verifies as a checkpoint and no checkpoint signature as a manifest.
        """
        check_alive(await self.store.team(team_id))
        prefix = MANIFEST_PREFIX + team_id.encode() + b"\n"
        if len(message) > MAX_MANIFEST_MESSAGE or not message.startswith(prefix):
            raise InvalidRequest(
                "backup.manifest.sign signs backup manifests only: the message must start with"
                f" 'slipway-backup-manifest/1\\n{team_id}\\n' and be at most"
                f" {MAX_MANIFEST_MESSAGE} bytes."
            )
        return AuditSignature(
            signature=self._signer.sign(message),
            key_id=self._signing_key_id,
            public_key=self._signing_public,
        )

    async def sign_snapshot(self, message: bytes) -> SnapshotSignature:
        """Sign a platform snapshot's manifest (SNAPSHOT_SIGN_PREFIX + it) with the audit key.

        Refused while a master-key rotation runs, or if one began after the snapshot did:
        the keyring's part of it could then hold keys wrapped by a master key other than
        the one sealed beside them (master-key.recovery.age), which a restore could not open.
        """
        if len(message) > MAX_SNAPSHOT_MANIFEST:
            raise InvalidRequest(
                f"A snapshot manifest to sign is at most {MAX_SNAPSHOT_MANIFEST} bytes."
            )
        try:
            manifest = snapshot_manifest.decode(message)
            started = datetime.fromisoformat(manifest.started_at).timestamp()
        except (snapshot_manifest.SnapshotError, ValueError) as exc:
            raise InvalidRequest(
                f"snapshot.sign signs platform snapshot manifests only: {exc}"
            ) from None
        for record in await self.store.master_keys():
            # A rotation under way at any moment since the snapshot started left a trace:
            # a key still rotating, or one made, activated or destroyed since.
            changed = (record.created_at, record.activated_at or 0.0, record.destroyed_at or 0.0)
            if record.state in ROTATING or max(changed) >= started:
                raise Conflict(
                    f"A master-key rotation ran while snapshot {manifest.id} was taken (master"
                    f" key version {record.version} is {record.state}): its keyring part may"
                    " not open with the sealed master key. Take a snapshot again once the"
                    " rotation has finished."
                )
        return SnapshotSignature(
            signature=self._signer.sign(SNAPSHOT_SIGN_PREFIX + message),
            public_key=self._signing_public,
        )

    def audit_key(self) -> AuditKey:
        """The audit key's id and public half."""
        return AuditKey(key_id=self._signing_key_id, public_key=self._signing_public)

    # ---- internals ---------------------------------------------------------------------------

    async def _first_kek(self, team_id: str) -> Team:
        async with self.store.transaction() as conn:
            # Another call may have created it since we looked: inside the lock, look again.
            team = await self.store.team_in(conn, team_id)
            if team is None:
                await self.master.sync_current(conn)
                wrapped = self.master.wrap(aead.generate_key(), kek_ad(team_id, 1))
                await self.store.add_kek(conn, team_id, 1, wrapped)
                team = Team(team_id, 1, 1, None, "")
        return team

    async def _kek(self, team: Team, version: int) -> bytes:
        try:
            return await self._kek_once(team, version)
        except Internal:
            # A master key rotation may have re-wrapped the KEK and destroyed the key it
            # was read under between our read and our unwrap: read it once more.
            return await self._kek_once(team, version)

    async def _kek_once(self, team: Team, version: int) -> bytes:
        wrapped = await self.store.wrapped_kek(team.team_id, version)
        if wrapped is None:
            # Shredded or retired since `team` was read, or a version that never existed.
            latest = await self.store.team(team.team_id) or team
            check_alive(latest)
            if version < latest.retired_below:
                raise Gone(
                    f"Key version {version} of team {team.team_id} was retired and destroyed:"
                    " data still wrapped by it can never be decrypted again."
                )
            raise DecryptionFailed(
                f"Team {team.team_id} has no key version {version}: the data key was altered"
                " or wrapped for another team."
            )
        await self.master.ensure(aead.key_version_of(wrapped))
        try:
            return self.master.unwrap(wrapped, kek_ad(team.team_id, version))
        except DecryptionFailed:
            raise Internal(
                f"The stored KEK version {version} of team {team.team_id} does not open with the"
                " master key: the keyring database was altered."
            ) from None


def _new_signing_key(master: MasterKey) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes_raw()
    key_id = "ed25519:" + hashlib.sha256(public).hexdigest()[:16]
    wrapped = master.wrap(private.private_bytes_raw(), audit_key_ad(key_id))
    return SigningKey(key_id=key_id, public_key=public, wrapped_private=wrapped)


def _unwrap_signer(master: MasterKey, key: SigningKey) -> Ed25519PrivateKey:
    try:
        raw = master.unwrap(key.wrapped_private, audit_key_ad(key.key_id))
    except DecryptionFailed:
        raise MasterKeyError(
            f"The master key from {master.source} does not open this keyring's database: it is"
            " not the key the database was created with. Restore that master key; a new one"
            " can never read the keys already stored."
        ) from None
    private = Ed25519PrivateKey.from_private_bytes(raw)
    if private.public_key().public_bytes_raw() != key.public_key:
        raise MasterKeyError("The stored audit signing key does not match its public key.")
    return private
