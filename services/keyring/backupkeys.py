"""The keys a team's backups are sealed to, and the unwrapping of their file keys.

Every backup object is an age file sealed to the team's recipients:

- the team's platform-held X25519 identity, made on the first use, stored wrapped by
  the master key like a KEK and bound to the team (`slipway.backup-identity.v1`:
  team, kind). It never leaves the keyring: restores send the objects' headers and
  get their file keys back. A team may turn it off (`platform_enabled`), after which
  new objects are sealed to its own keys only and the platform can no longer restore
  them; objects sealed before stay restorable.
- any number of customer-held age recipients (`age1...`), which only their holders
  can use.
- the operator's offline recovery recipients (SLIPWAY_RECOVERY_RECIPIENTS), only while
  the team opted in (`operator_enabled`, off by default). The keyring holds their public
  halves only, so it can seal to them but never unwrap with them.

Invariant: a team always has at least one recipient of its own, so the platform key
cannot be turned off, nor the last customer key removed while it is off. The operator's
keys do not count: the operator is not the team, and may change or drop them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from slipway.contracts.keyring import BackupRecipient, BackupRecipients, FileKeys
from slipway.libs.crypto import aead, age
from slipway.libs.crypto.binding import Context
from slipway.libs.crypto.errors import DecryptionFailed
from slipway.libs.errors import Internal, InvalidRequest, NotFound
from slipway.services.keyring.masterkey import MasterKey
from slipway.services.keyring.store import BackupIdentity, BackupKey, KeyringStore
from slipway.services.keyring.teams import check_alive

BACKUP_IDENTITY_LABEL = "slipway.backup-identity.v1"
IDENTITY_KIND = "age-x25519"
MAX_CUSTOMER_KEYS = 16  # each one adds a stanza to every object
MAX_LABEL = 200
OPERATOR_LABEL = "operator recovery key"


def backup_identity_ad(team_id: str) -> Context:
    """What a wrapped backup identity is bound to."""
    return Context(BACKUP_IDENTITY_LABEL, (("team", team_id), ("kind", IDENTITY_KIND)))


class BackupKeys:
    """A team's backup recipients: the platform identity, the customer and operator keys."""

    def __init__(
        self, master: MasterKey, store: KeyringStore, operator: Sequence[bytes] = ()
    ) -> None:
        self.master = master
        self.store = store
        # The operator's recovery public keys (X25519), from the keyring's settings.
        self.operator = tuple(operator)

    async def recipients(self, team_id: str) -> BackupRecipients:
        """Who to seal to now; makes the platform identity on first use while it is enabled."""
        await self._check_alive(team_id)
        enabled = await self.store.platform_backup_enabled(team_id)
        listed = []
        if enabled:
            identity = await self.store.backup_identity(team_id) or await self._first(team_id)
            listed.append(_platform(identity))
        listed += [_customer(key) for key in await self.store.backup_keys(team_id)]
        operator = await self.store.operator_backup_enabled(team_id)
        if operator:
            seen = {r.fingerprint for r in listed}
            # A customer may have added the same key as their own: one stanza is enough.
            listed += [r for r in map(_operator, self.operator) if r.fingerprint not in seen]
        return BackupRecipients(
            team_id=team_id,
            recipients=listed,
            platform_enabled=enabled,
            operator_enabled=operator,
        )

    async def add(self, team_id: str, recipient: str, label: str) -> BackupRecipients:
        """Seal the team's future backups to a customer-held recipient too."""
        public = age.parse_recipient(recipient)
        if len(label) > MAX_LABEL or not label.isprintable():
            raise InvalidRequest(f"A key label is at most {MAX_LABEL} printable characters.")
        key = BackupKey(age.fingerprint(public), public, label, time.time())
        async with self.store.transaction() as conn:
            check_alive(await self.store.team_in(conn, team_id))
            own = await self.store.backup_identity_in(conn, team_id)
            if own is not None and own.public_key == public:
                raise InvalidRequest(
                    "That is the platform's own backup key for this team, not a key you hold."
                )
            keys = await self.store.backup_keys_in(conn, team_id)
            fresh = all(k.fingerprint != key.fingerprint for k in keys)
            if fresh and len(keys) >= MAX_CUSTOMER_KEYS:
                raise InvalidRequest(
                    f"A team has at most {MAX_CUSTOMER_KEYS} backup keys; remove one first."
                )
            await self.store.add_backup_key(conn, team_id, key)
        return await self.recipients(team_id)

    async def remove(self, team_id: str, fingerprint: str) -> BackupRecipients:
        """Stop sealing new backups to a customer key (objects sealed before keep it)."""
        async with self.store.transaction() as conn:
            check_alive(await self.store.team_in(conn, team_id))
            keys = await self.store.backup_keys_in(conn, team_id)
            if all(k.fingerprint != fingerprint for k in keys):
                raise NotFound(f"Team {team_id} has no backup key {fingerprint}.")
            if len(keys) == 1 and not await self.store.platform_backup_enabled_in(conn, team_id):
                raise InvalidRequest(
                    "That is the team's only backup key and the platform key is off: backups"
                    " would be sealed to no one. Add another key, or turn the platform key on."
                )
            await self.store.remove_backup_key(conn, team_id, fingerprint)
        return await self.recipients(team_id)

    async def set_platform(self, team_id: str, enabled: bool) -> BackupRecipients:
        """Turn the platform-held recipient on or off for new backups."""
        async with self.store.transaction() as conn:
            check_alive(await self.store.team_in(conn, team_id))
            if not enabled and not await self.store.backup_keys_in(conn, team_id):
                raise InvalidRequest(
                    "Add a backup key of your own before turning the platform key off:"
                    " backups would otherwise be sealed to no one."
                )
            await self.store.set_platform_backup_enabled(conn, team_id, enabled)
        return await self.recipients(team_id)

    async def set_operator(self, team_id: str, enabled: bool) -> BackupRecipients:
        """Opt the team in to (or out of) sealing new backups to the operator's recovery keys."""
        async with self.store.transaction() as conn:
            check_alive(await self.store.team_in(conn, team_id))
            if enabled and not self.operator:
                raise InvalidRequest(
                    "This platform's operator has no recovery key configured"
                    " (SLIPWAY_RECOVERY_RECIPIENTS), so there is nothing to seal your backups"
                    " to: ask the operator to set one first."
                )
            await self.store.set_operator_backup_enabled(conn, team_id, enabled)
        return await self.recipients(team_id)

    async def unwrap(self, team_id: str, headers: list[bytes]) -> FileKeys:
        """The file key of each header the team's platform identity is a recipient of, else b""."""
        await self._check_alive(team_id)
        stored = await self.store.backup_identity(team_id)
        if stored is None:
            return FileKeys(file_keys=[b""] * len(headers))
        try:
            identity = await self.open_current(stored)
        except Internal:
            # Re-wrapped by a master key rotation since we read it: read it again.
            stored = await self.store.backup_identity(team_id) or stored
            identity = await self.open_current(stored)
        keys = []
        for number, header in enumerate(headers):
            try:
                keys.append(age.unwrap_file_key(header, identity) or b"")
            except DecryptionFailed as exc:
                raise DecryptionFailed(f"header {number}: {exc.message}") from None
        return FileKeys(file_keys=keys)

    async def _check_alive(self, team_id: str) -> None:
        check_alive(await self.store.team(team_id))

    async def _first(self, team_id: str) -> BackupIdentity:
        async with self.store.transaction() as conn:
            # Inside the write lock: a racing call may have made it, or a shred landed.
            check_alive(await self.store.team_in(conn, team_id))
            found = await self.store.backup_identity_in(conn, team_id)
            if found is None:
                await self.master.sync_current(conn)
                identity = age.generate_identity()
                found = BackupIdentity(
                    team_id=team_id,
                    public_key=age.public_of(identity),
                    wrapped=self.master.wrap(identity, backup_identity_ad(team_id)),
                    created_at=time.time(),
                )
                await self.store.add_backup_identity(conn, found)
        return found

    async def open_current(self, stored: BackupIdentity) -> bytes:
        """`open_identity`, after loading a master key version rotated in elsewhere."""
        await self.master.ensure(aead.key_version_of(stored.wrapped))
        return self.open_identity(stored)

    def open_identity(self, stored: BackupIdentity) -> bytes:
        """The plaintext identity (for one call only), checked against its public key."""
        try:
            identity = self.master.unwrap(stored.wrapped, backup_identity_ad(stored.team_id))
        except DecryptionFailed:
            raise Internal(
                f"The stored backup identity of team {stored.team_id} does not open with the"
                " master key: the keyring database was altered."
            ) from None
        if age.public_of(identity) != stored.public_key:
            raise Internal(f"The backup identity of team {stored.team_id} does not match its key.")
        return identity


def _platform(identity: BackupIdentity) -> BackupRecipient:
    return BackupRecipient(
        fingerprint=age.fingerprint(identity.public_key),
        recipient=age.format_recipient(identity.public_key),
        kind="platform",
        label="platform",
        created_at=_iso(identity.created_at),
    )


def _customer(key: BackupKey) -> BackupRecipient:
    return BackupRecipient(
        fingerprint=key.fingerprint,
        recipient=age.format_recipient(key.public_key),
        kind="customer",
        label=key.label,
        created_at=_iso(key.created_at),
    )


def _operator(public: bytes) -> BackupRecipient:
    return BackupRecipient(
        fingerprint=age.fingerprint(public),
        recipient=age.format_recipient(public),
        kind="operator",
        label=OPERATOR_LABEL,
    )


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
