"""Master-key rotation: every key the master key wraps, re-wrapped under a new one, online.

`slipway admin:rotate-master-key` (gateway -> `masterkey.rotate`) runs these steps, each
durable before the next; the names are the checkpoints tests inject faults at:

1. `key-written`: the new key is written to `<key>.next` (temporary file, fsync, rename;
   0600, the old file's owner);
2. `key-recorded`: its fingerprint is recorded as version n+1, `pending`. From then on
   new wraps use it, on this instance at once, on others in their next write transaction;
3. `rewrapped` (after each batch): the team KEKs, the audit signing key and the backup
   identities are re-wrapped, a batch per transaction, each under its own associated
   data. Every blob names the master key version that sealed it, so a half-done
   rotation opens with both keys;
4. `activated`: the transaction that re-wraps the last batch finds nothing left under
   an older version (another instance may have wrapped under it meanwhile: then it
   goes on) and makes n+1 `active`, n `retiring`;
5. `recovery-sealed`: the new key is sealed to SLIPWAY_RECOVERY_RECIPIENTS, if set
   (`<home>/keyring/master-key.recovery.age`);
6. `swapped`: the old key file is kept as `<key>.old` (a hard link) and `<key>.next`
   is renamed over `<key>`;
7. `destroyed`: `<key>.old` is overwritten and unlinked, n recorded `destroyed`.

A crash between any two steps leaves a keyring that starts (it loads each key file whose
fingerprint the database knows: masterkey.py) and opens everything; running the rotation
again finishes it. One rotation at a time: a lock in the process and, for several
instances, a lease in the database that lapses `LEASE_SECONDS` after its holder stops
renewing it. The audit signing key is re-wrapped, not replaced: signatures made before
keep verifying, with the same key id.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable

import structlog

from slipway.contracts.keyring import MasterKeyRotated
from slipway.libs.crypto import aead, age
from slipway.libs.crypto.binding import Context
from slipway.libs.crypto.errors import DecryptionFailed
from slipway.libs.errors import Conflict, Internal, InvalidRequest
from slipway.services.keyring.backupkeys import backup_identity_ad
from slipway.services.keyring.errors import MasterKeyError
from slipway.services.keyring.masterkey import (
    KeyFiles,
    MasterKey,
    destroy_key_file,
    fingerprint,
    read_key_file,
    sync_folder,
    write_key_file,
    write_private_file,
)
from slipway.services.keyring.settings import KeyringSettings
from slipway.services.keyring.store import KeyringStore, MasterKeyRecord, MasterWrapped
from slipway.services.keyring.vault import Vault, audit_key_ad, kek_ad

log = structlog.get_logger("slipway.keyring.rotation")

BATCH = 64
LEASE_SECONDS = 60.0
STEPS = (
    "key-written",
    "key-recorded",
    "rewrapped",
    "activated",
    "recovery-sealed",
    "swapped",
    "destroyed",
)

Checkpoint = Callable[[str], Awaitable[None]]


async def _carry_on(step: str) -> None:
    return None


class MasterKeyRotator:
    """Runs (or resumes) a master key rotation for one keyring instance."""

    def __init__(self, vault: Vault, settings: KeyringSettings, holder: str) -> None:
        self.vault = vault
        self.settings = settings
        self.holder = holder  # this instance's name, on the lease
        self.batch = BATCH
        self.lease_seconds = LEASE_SECONDS
        # Called after each step; tests make it raise (a crash) or wait (a slow rotation).
        self.checkpoint: Checkpoint = _carry_on
        self._lock = asyncio.Lock()

    @property
    def master(self) -> MasterKey:
        return self.vault.master

    @property
    def store(self) -> KeyringStore:
        return self.vault.store

    async def rotate(self) -> MasterKeyRotated:
        """Rotate the master key, or finish a rotation that stopped midway."""
        files = self.master.files
        if files is None:
            raise InvalidRequest(
                f"The master key comes from the environment ({self.master.source}): the"
                " keyring cannot write a new one there. Move it to a key file"
                " (SLIPWAY_MASTER_KEY_PATH) to rotate it, or rotate it with your secret store."
            )
        if self._lock.locked():
            raise Conflict("A master key rotation is already running on this keyring.")
        async with self._lock:
            async with self.store.transaction() as conn:
                other = await self.store.take_rotation_lease(conn, self.holder, self.lease_seconds)
            if other is not None:
                raise Conflict(
                    f"A master key rotation is already running (keyring instance {other})."
                    f" Wait for it; if that keyring died, its lease lapses within"
                    f" {self.lease_seconds:.0f} s and running this again finishes its work."
                )
            try:
                return await self._run(files)
            finally:
                await self.store.release_rotation_lease(self.holder)

    async def _run(self, files: KeyFiles) -> MasterKeyRotated:
        await self.master.reload()  # what an earlier run, or another instance, left
        records = await self.store.master_keys()
        active = _the(records, "active")
        pending = next((r for r in records if r.state == "pending"), None)
        retiring = [r for r in records if r.state == "retiring"]
        if pending is not None and self.master.key_of(pending.version) is None:
            await self._abandon(pending)
            pending = None
        rewrapped = 0
        if pending is not None or not retiring:
            resumed = pending is not None
            new = pending or await self._new_key(files, records)
            rewrapped = await self._rewrap_and_activate(new.version)
            old_version = active.version
        else:
            # Stopped after the activation: the files are left to swap and destroy.
            resumed = True
            new = active
            old_version = max(r.version for r in retiring)
        sealed = await seal_for_recovery(self.settings, self.master, new.version)
        await self.checkpoint("recovery-sealed")
        swap_files(files, new.fingerprint)
        await self.checkpoint("swapped")
        await self._destroy(files, new)
        await self.checkpoint("destroyed")
        log.info(
            "keyring.master_key_rotated",
            previous=old_version,
            version=new.version,
            fingerprint=new.fingerprint,
            rewrapped=rewrapped,
            resumed=resumed,
        )
        return MasterKeyRotated(
            previous_version=old_version,
            version=new.version,
            fingerprint=new.fingerprint,
            rewrapped=rewrapped,
            resumed=resumed,
            recovery_sealed=sealed,
        )

    async def _abandon(self, pending: MasterKeyRecord) -> None:
        """A pending key whose file is gone: harmless if it wrapped nothing yet."""
        async with self.store.transaction() as conn:
            used = [
                blob
                for blob in await self.store.master_wrapped_in(conn)
                if aead.key_version_of(blob.wrapped) == pending.version
            ]
            if used:
                raise MasterKeyError(
                    f"Master key version {pending.version} (fingerprint {pending.fingerprint})"
                    f" wraps {len(used)} keys, but no key file holds it: restore"
                    f" {self.master.files.next if self.master.files else 'it'} from a backup."
                )
            await self.store.set_master_key_state(conn, pending.version, "abandoned")

    async def _new_key(self, files: KeyFiles, records: list[MasterKeyRecord]) -> MasterKeyRecord:
        version = max(r.version for r in records) + 1
        # A `.next` no row names is left by a run that stopped before recording it: it
        # wrapped nothing.
        key = aead.generate_key()
        try:
            destroy_key_file(files.next)
            write_key_file(files.next, key, os.stat(files.path))
        except OSError as exc:
            raise MasterKeyError(
                f"Cannot write the new master key to {files.next}: {exc.strerror}. The"
                f" keyring's user must be able to create files in {files.path.parent}."
                " Nothing was changed."
            ) from None
        await self.checkpoint("key-written")
        async with self.store.transaction() as conn:
            await self.store.add_master_key(conn, version, fingerprint(key), "pending")
        self.master.adopt(version, key, current=True)
        await self.checkpoint("key-recorded")
        return _the(await self.store.master_keys(), "pending")

    async def _rewrap_and_activate(self, version: int) -> int:
        done = 0
        while True:
            async with self.store.transaction() as conn:
                other = await self.store.take_rotation_lease(conn, self.holder, self.lease_seconds)
                if other is not None:
                    raise Conflict(f"Keyring instance {other} took over the rotation's lease.")
                stale = [
                    blob
                    for blob in await self.store.master_wrapped_in(conn)
                    if aead.key_version_of(blob.wrapped) != version
                ]
                batch = stale[: self.batch]
                for blob in batch:
                    rewrapped = await self._rewrap(blob, version)
                    await self.store.replace_master_wrapped(conn, blob, rewrapped)
                done += len(batch)
                last = len(batch) == len(stale)
                if last:
                    # Checked in the transaction that activates: no instance can wrap
                    # under an older key between the check and the switch.
                    for record in await self.store.master_keys_in(conn):
                        if record.state == "active":
                            await self.store.set_master_key_state(conn, record.version, "retiring")
                    await self.store.set_master_key_state(conn, version, "active")
            if last:
                await self.master.reload()
                await self.checkpoint("activated")
                return done
            await self.checkpoint("rewrapped")

    async def _rewrap(self, blob: MasterWrapped, version: int) -> bytes:
        ad = _associated_data(blob)
        await self.master.ensure(aead.key_version_of(blob.wrapped))
        try:
            plaintext = self.master.unwrap(blob.wrapped, ad)
        except DecryptionFailed:
            raise Internal(
                f"A key in {blob.table} ({', '.join(map(str, blob.row))}) does not open with"
                " the master key: the keyring database was altered. Nothing was destroyed."
            ) from None
        return self.master.wrap_with(version, plaintext, ad)

    async def _destroy(self, files: KeyFiles, new: MasterKeyRecord) -> None:
        destroy_old_files(files, new.fingerprint)
        async with self.store.transaction() as conn:
            for record in await self.store.master_keys_in(conn):
                if record.state == "retiring":
                    await self.store.set_master_key_state(conn, record.version, "destroyed")
        for version in self.master.versions():
            if version != new.version:
                self.master.forget(version)
        # The old wraps' cells were zeroed (secure_delete); their WAL copies go too.
        await self.store.purge_freed_pages()


def swap_files(files: KeyFiles, new: str) -> None:
    """Make `<key>` the new key (fingerprint `new`), the old one kept as `<key>.old`."""
    primary = fingerprint(read_key_file(files.path))
    if primary == new:
        return
    if not os.path.lexists(files.next) or fingerprint(read_key_file(files.next)) != new:
        raise MasterKeyError(
            f"The new master key (fingerprint {new}) is neither in {files.path} nor in"
            f" {files.next}: restore it from a backup."
        )
    if (
        os.path.lexists(files.old)
        and not os.path.samefile(files.old, files.path)
        and fingerprint(read_key_file(files.old)) != primary
    ):
        destroy_key_file(files.old)  # a key older still, left by an earlier crash
    if not os.path.lexists(files.old):
        # The old key stays reachable until it is destroyed, whatever happens next.
        os.link(files.path, files.old)
    os.replace(files.next, files.path)
    sync_folder(files.path.parent)


def destroy_old_files(files: KeyFiles, new: str) -> None:
    """Overwrite and unlink every key file but `<key>`, once `<key>` holds the new key."""
    if fingerprint(read_key_file(files.path)) != new:
        raise MasterKeyError(f"{files.path} does not hold the new master key; not destroying.")
    for path in (files.old, files.next):
        if os.path.lexists(path) and not os.path.samefile(path, files.path):
            destroy_key_file(path)


async def seal_for_recovery(settings: KeyringSettings, master: MasterKey, version: int) -> bool:
    """Seal master key `version` to the recovery recipients; False when there are none."""
    recipients = settings.recovery_public_keys()
    key = master.key_of(version)
    if not recipients or key is None:
        return False
    path = settings.recovery_file()
    write_private_file(path, age.seal(key, recipients), os.stat(path.parent))
    return True


async def seal_at_start(settings: KeyringSettings, vault: Vault) -> None:
    """Seal the active master key to the recovery recipients if they are set and it is not yet."""
    if settings.recovery_recipients.strip() and not settings.recovery_file().exists():
        active = _the(await vault.store.master_keys(), "active")
        await seal_for_recovery(settings, vault.master, active.version)


def _the(records: list[MasterKeyRecord], state: str) -> MasterKeyRecord:
    found = [r for r in records if r.state == state]
    if len(found) != 1:
        raise Internal(f"The keyring database records {len(found)} {state} master keys.")
    return found[0]


def _associated_data(blob: MasterWrapped) -> Context:
    if blob.table == "keks":
        return kek_ad(str(blob.row[0]), int(blob.row[1]))
    if blob.table == "signing_keys":
        return audit_key_ad(str(blob.row[0]))
    if blob.table == "backup_identities":
        return backup_identity_ad(str(blob.row[0]))
    raise ValueError(f"{blob.table} holds nothing the master key wraps")
