"""Master-key rotation: everything re-wrapped, online, crash-safe, and the old key destroyed."""

from __future__ import annotations

import asyncio
import base64
import os
import sqlite3
import stat
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from slipway.contracts.keyring import (
    AUDIT_KEY,
    BACKUP_FILEKEYS_UNWRAP,
    BACKUP_RECIPIENTS_GET,
    DATAKEY_DECRYPT,
    DATAKEY_GENERATE,
    KEK_ROTATE,
    MASTERKEY_ROTATE,
    AuditSignature,
    DataKey,
    DecryptDataKey,
    GenerateDataKey,
    GetAuditKey,
    GetBackupRecipients,
    MasterKeyRotated,
    Purpose,
    RotateKek,
    RotateMasterKey,
    UnwrapFileKeys,
)
from slipway.libs import auditchain
from slipway.libs.bus import Bus
from slipway.libs.crypto import aead, age
from slipway.libs.errors import Conflict, Forbidden, InvalidRequest, RemoteError, SlipwayError
from slipway.libs.natsserver import NatsServer
from slipway.services.keyring.handlers import ROTATOR, VAULT
from slipway.services.keyring.masterkey import fingerprint
from slipway.services.keyring.rotation import STEPS
from slipway.services.keyring.settings import KeyringSettings
from slipway.services.keyring.vault import kek_ad
from tests.conftest import assert_eventually
from tests.keyring.conftest import BusFactory, RunningKeyring, start_keyring
from tests.keyring.test_signed_heads import chain, sign

pytestmark = pytest.mark.integration


class Crash(Exception):
    """A fault injected between two steps of a rotation."""


@dataclass
class Estate:
    """What a keyring holds before a rotation, and how to prove it all still opens."""

    team: str
    other: str
    keys: list[tuple[str, DataKey]]
    links: list[tuple[bytes, str]]
    signature: AuditSignature
    backup_object: bytes

    async def check(self, gateway: Bus, backup: Bus) -> None:
        """Every data key decrypts, the audit key is unchanged and signs on, the backup opens."""
        for team, key in self.keys:
            request = DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=key.wrapped)
            assert (await gateway.call(DATAKEY_DECRYPT, request)).plaintext == key.plaintext
        audit_key = await gateway.call(AUDIT_KEY, GetAuditKey())
        assert (audit_key.key_id, audit_key.public_key) == (
            self.signature.key_id,
            self.signature.public_key,
        )
        public = Ed25519PublicKey.from_public_bytes(audit_key.public_key)
        message = auditchain.checkpoint_message(self.team, 1, self.links[0][1])
        public.verify(self.signature.signature, message)
        signed = await sign(gateway, self.team, self.links, 2, after=1)
        public.verify(
            signed.signature, auditchain.checkpoint_message(self.team, 2, self.links[1][1])
        )
        unwrap = UnwrapFileKeys(team_id=self.other, headers=[age.header_bytes(self.backup_object)])
        [file_key] = (await backup.call(BACKUP_FILEKEYS_UNWRAP, unwrap)).file_keys
        assert age.open_with_file_key(self.backup_object, file_key) == b"made before"


async def generate(bus: Bus, team: str) -> DataKey:
    return await bus.call(DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG))


async def make_estate(gateway: Bus, backup: Bus) -> Estate:
    """Two teams: KEK versions 1 and 2, a signed audit head, a backup identity and object."""
    team, other = (f"team-{uuid.uuid4().hex[:12]}" for _ in range(2))
    keys = [(team, await generate(gateway, team))]
    await gateway.call(KEK_ROTATE, RotateKek(team_id=team))
    keys += [(team, await generate(gateway, team)), (other, await generate(gateway, other))]
    links = chain(team, 3)
    signature = await sign(gateway, team, links, 1)
    found = await backup.call(BACKUP_RECIPIENTS_GET, GetBackupRecipients(team_id=other))
    recipients = [age.parse_recipient(r.recipient) for r in found.recipients]
    return Estate(team, other, keys, links, signature, age.seal(b"made before", recipients))


async def rotate(gateway: Bus) -> MasterKeyRotated:
    request = RotateMasterKey(requested_by="admin@example.com")
    return await gateway.call(MASTERKEY_ROTATE, request, timeout=30.0)


def master_versions(db: Path) -> set[int]:
    """The master key version of every sealed blob in any table and column of the database.

    Read from the whole database, not from a list of tables: a key some later change
    wraps with the master key, somewhere else, cannot be missed by the rotation unseen.
    """
    found = set()
    with sqlite3.connect(db) as conn:
        tables = [
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        ]
        for table in tables:
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            for column in columns:
                # Names read from sqlite_master, not from any input.
                select = f"SELECT {column} FROM {table}"  # noqa: S608
                for (value,) in conn.execute(select):
                    # A sealed key: format byte 1, then at least a key's worth of ciphertext
                    # (public keys, 32 raw bytes, are shorter).
                    if isinstance(value, bytes) and len(value) >= aead.OVERHEAD + 16:
                        assert value[0] == aead.FORMAT_V1, (table, column)
                        found.add(aead.key_version_of(value))
    conn.close()
    return found


def files_holding(folder: Path, secret: bytes) -> list[Path]:
    """Every file under `folder` whose bytes contain `secret`."""
    return [p for p in folder.rglob("*") if p.is_file() and secret in p.read_bytes()]


def leftovers(settings: KeyringSettings) -> list[str]:
    path = settings.master_key_file()
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(path.name + "."))


# ---- the rotation ------------------------------------------------------------------------------


async def test_rotation_rewraps_everything_and_the_old_key_is_not_needed(
    keyring: RunningKeyring, bus_factory: BusFactory
) -> None:
    """After a rotation the old key file is gone, and a restart from disk opens everything."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    estate = await make_estate(gateway, backup)
    key_file = keyring.settings.master_key_file()
    old_key, old_owner = key_file.read_bytes(), key_file.stat()
    done = await rotate(gateway)
    assert (done.previous_version, done.version, done.resumed) == (1, 2, False)
    assert done.rewrapped == 5  # three KEK versions, the audit key, one backup identity
    new_key = key_file.read_bytes()
    assert new_key != old_key and done.fingerprint == fingerprint(new_key)
    info = key_file.stat()
    assert stat.S_IMODE(info.st_mode) == 0o600
    assert (info.st_uid, info.st_gid) == (old_owner.st_uid, old_owner.st_gid)
    await keyring.stop()
    # The old key is destroyed: no .old or .next file, and its bytes are in no file at all.
    assert leftovers(keyring.settings) == []
    assert files_holding(keyring.settings.home_path, old_key) == []
    assert master_versions(keyring.settings.db_path()) == {2}
    started = await start_keyring(keyring.settings)
    keyring.app, keyring.task = started.app, started.task
    await estate.check(gateway, backup)


async def test_the_old_key_is_overwritten_not_only_unlinked(
    keyring: RunningKeyring, bus_factory: BusFactory
) -> None:
    """The old key file's own bytes are overwritten: a descriptor opened on it reads no key."""
    gateway = await bus_factory("gateway")
    key_file = keyring.settings.master_key_file()
    fd = os.open(key_file, os.O_RDONLY)
    try:
        old_key = os.pread(fd, 64, 0)
        await rotate(gateway)
        left = os.pread(fd, 64, 0)
    finally:
        os.close(fd)
    assert len(old_key) == 32 and old_key not in left


async def test_backup_identities_are_rewrapped_too(
    keyring: RunningKeyring, bus_factory: BusFactory
) -> None:
    """The backup identity made before the rotation is counted and re-wrapped like a KEK."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    await make_estate(gateway, backup)
    await rotate(gateway)
    with sqlite3.connect(keyring.settings.db_path()) as conn:
        [(blob,)] = conn.execute("SELECT wrapped FROM backup_identities").fetchall()
    conn.close()
    assert aead.key_version_of(bytes(blob)) == 2


async def test_keys_made_after_the_rotation_use_the_new_key(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A team's first KEK, made after a rotation, is wrapped by the new master key version."""
    gateway = await bus_factory("gateway")
    await rotate(gateway)
    key = await generate(gateway, team)
    wrapped = await keyring.store.wrapped_kek(team, 1)
    assert wrapped is not None and aead.key_version_of(wrapped) == 2
    await keyring.restart()
    request = DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=key.wrapped)
    assert (await gateway.call(DATAKEY_DECRYPT, request)).plaintext == key.plaintext


async def test_rotating_twice_destroys_each_old_key(
    keyring: RunningKeyring, bus_factory: BusFactory
) -> None:
    """A second rotation moves everything to version 3; neither older key is left anywhere."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    estate = await make_estate(gateway, backup)
    key_file = keyring.settings.master_key_file()
    first = key_file.read_bytes()
    await rotate(gateway)
    second = key_file.read_bytes()
    assert (await rotate(gateway)).version == 3
    await keyring.restart()
    await estate.check(gateway, backup)
    assert files_holding(keyring.settings.home_path, first) == []
    assert files_holding(keyring.settings.home_path, second) == []
    records = await keyring.store.master_keys()
    assert [(r.version, r.state) for r in records] == [
        (1, "destroyed"),
        (2, "destroyed"),
        (3, "active"),
    ]
    assert records[2].fingerprint == fingerprint(key_file.read_bytes())


# ---- crashes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("step", STEPS)
async def test_a_crash_at_any_step_leaves_a_keyring_that_opens_everything(
    keyring: RunningKeyring, bus_factory: BusFactory, step: str
) -> None:
    """Stopped after `step` and restarted from disk, it opens everything; rerun, it finishes."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    estate = await make_estate(gateway, backup)
    old_key = keyring.settings.master_key_file().read_bytes()

    async def crash(at: str) -> None:
        if at == step:
            raise Crash(at)

    keyring.app[ROTATOR].batch = 1  # a checkpoint between every re-wrapped key
    keyring.app[ROTATOR].checkpoint = crash
    with pytest.raises(RemoteError) as failed:
        await rotate(gateway)
    assert failed.value.code == "internal"
    await keyring.restart()
    await estate.check(gateway, backup)
    # Keys made in the half-rotated state are part of what must survive.
    newer = f"team-{uuid.uuid4().hex[:12]}"
    estate.keys.append((newer, await generate(gateway, newer)))
    done = await rotate(gateway)
    assert done.resumed == (step not in ("key-written", "destroyed"))
    await keyring.stop()
    assert leftovers(keyring.settings) == []
    assert files_holding(keyring.settings.home_path, old_key) == []
    assert master_versions(keyring.settings.db_path()) == {done.version}
    started = await start_keyring(keyring.settings)
    keyring.app, keyring.task = started.app, started.task
    await estate.check(gateway, backup)


def _pending_recorded(db: Path) -> bool:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT 1 FROM master_keys WHERE state = 'pending'").fetchall()
    conn.close()
    return bool(rows)


def _next_written(settings: KeyringSettings) -> bool:
    return settings.master_key_file().with_name("master.key.next").exists()


def _old_kept(settings: KeyringSettings) -> bool:
    return settings.master_key_file().with_name("master.key.old").exists()


def _pending_seen(settings: KeyringSettings) -> bool:
    return _pending_recorded(settings.db_path())


# When the test kills the keyring: as soon as it sees, from outside, that the rotation
# got this far (it may have gone a little further: any point must be safe).
KILL_POINTS: dict[str, Callable[[KeyringSettings], bool]] = {
    "new-key-file-seen": _next_written,
    "new-key-recorded": _pending_seen,
    "old-key-file-kept": _old_kept,
}


@pytest.mark.parametrize("point", sorted(KILL_POINTS))
async def test_a_keyring_killed_during_a_rotation_restarts_and_finishes(
    keyring: RunningKeyring, bus_factory: BusFactory, point: str
) -> None:
    """SIGKILLed midway, a keyring process starts from disk, opens everything and finishes."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    estate = await make_estate(gateway, backup)
    # Many KEKs, so that re-wrapping them takes many transactions.
    vault = keyring.app[VAULT]
    async with vault.store.transaction() as conn:
        for n in range(3000):
            wrapped = vault.master.wrap(aead.generate_key(), kek_ad(f"bulk-{n}", 1))
            await vault.store.add_kek(conn, f"bulk-{n}", 1, wrapped)
    old_key = keyring.settings.master_key_file().read_bytes()
    await keyring.stop()
    settings = msgspec.structs.replace(keyring.settings, instance="keyring-killed")
    env = {
        **os.environ,
        "SLIPWAY_NATS_URL": settings.nats_url,
        "SLIPWAY_HOME": settings.home,
        "SLIPWAY_INSTANCE": "keyring-killed",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "slipway.services.keyring",
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:

        async def serving() -> None:
            try:
                await gateway.call(AUDIT_KEY, GetAuditKey(), timeout=1.0)
            except SlipwayError as exc:
                raise AssertionError("not serving yet") from exc

        await assert_eventually(serving, timeout=30)
        rotation = asyncio.create_task(rotate(gateway))

        def reached() -> None:
            assert KILL_POINTS[point](settings) or rotation.done()

        await assert_eventually(reached, timeout=30, interval=0.001)
        process.kill()
        await process.wait()
        rotation.cancel()
        await asyncio.gather(rotation, return_exceptions=True)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    started = await start_keyring(settings)
    keyring.app, keyring.task, keyring.settings = started.app, started.task, settings
    await estate.check(gateway, backup)
    done = await rotate(gateway)  # the same instance name: its own lease does not block it
    await keyring.stop()
    assert leftovers(settings) == []
    assert files_holding(settings.home_path, old_key) == []
    assert master_versions(settings.db_path()) == {done.version}
    started = await start_keyring(settings)
    keyring.app, keyring.task = started.app, started.task
    await estate.check(gateway, backup)


# ---- one at a time, several instances ----------------------------------------------------------


async def test_a_second_rotation_while_one_runs_is_refused(keyring: RunningKeyring) -> None:
    """While a rotation runs, another on the same or another instance is refused (one
    beside the leader, as a paused ex-leader: the store's lease still guards it)."""
    other = await start_keyring(keyring.settings, leased=False)
    reached, go_on = asyncio.Event(), asyncio.Event()

    async def pause(at: str) -> None:
        if at == "key-recorded" and not reached.is_set():
            reached.set()
            await go_on.wait()

    keyring.app[ROTATOR].checkpoint = pause
    first = asyncio.create_task(keyring.app[ROTATOR].rotate())
    try:
        await reached.wait()
        with pytest.raises(Conflict, match="already running on this keyring"):
            await keyring.app[ROTATOR].rotate()
        with pytest.raises(Conflict, match="already running \\(keyring instance"):
            await other.app[ROTATOR].rotate()
        go_on.set()
        assert (await first).version == 2
        # Over: the lease is free again.
        assert (await other.app[ROTATOR].rotate()).version == 3
    finally:
        go_on.set()
        await asyncio.gather(first, return_exceptions=True)
        await other.stop()


async def test_a_dead_holders_lease_lapses(keyring: RunningKeyring) -> None:
    """A lease left by a keyring that died blocks a rotation until it expires, then not."""
    store = keyring.store
    async with store.transaction() as conn:
        await conn.execute(
            "INSERT INTO master_key_rotation (id, holder, started_at, expires_at)"
            " VALUES (1, 'dead', ?, ?)",
            (time.time(), time.time() + 3600),
        )
    with pytest.raises(Conflict, match="keyring instance dead"):
        await keyring.app[ROTATOR].rotate()
    async with store.transaction() as conn:
        await conn.execute("UPDATE master_key_rotation SET expires_at = ?", (time.time() - 1,))
    assert (await keyring.app[ROTATOR].rotate()).version == 2


async def test_another_instance_decrypts_with_the_new_key(
    keyring: RunningKeyring, bus_factory: BusFactory
) -> None:
    """An instance started before the rotation opens every key after it (it reloads the files)."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    estate = await make_estate(gateway, backup)
    other = await start_keyring(keyring.settings, leased=False)  # beside the leader
    try:
        await keyring.app[ROTATOR].rotate()
        assert leftovers(keyring.settings) == []
        vault = other.app[VAULT]
        header = age.header_bytes(estate.backup_object)
        [file_key] = (await vault.backup.unwrap(estate.other, [header])).file_keys
        assert age.open_with_file_key(estate.backup_object, file_key) == b"made before"
        for owner, key in estate.keys:
            plain = await vault.decrypt_data_key(owner, Purpose.CONFIG, key.wrapped, {})
            assert plain.plaintext == key.plaintext
    finally:
        await other.stop()


async def test_another_instance_wraps_with_the_new_key(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Its first act after the rotation a wrap, an older instance uses the new key, not its own."""
    gateway = await bus_factory("gateway")
    other = await start_keyring(keyring.settings, leased=False)  # beside the leader
    try:
        await keyring.app[ROTATOR].rotate()
        vault = other.app[VAULT]
        made = await vault.generate_data_key(team, Purpose.CONFIG, {})
        wrapped = await vault.store.wrapped_kek(team, 1)
        assert wrapped is not None and aead.key_version_of(wrapped) == 2
    finally:
        await other.stop()
    await keyring.restart()
    request = DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=made.wrapped)
    assert (await gateway.call(DATAKEY_DECRYPT, request)).plaintext == made.plaintext


async def test_keys_made_by_another_instance_during_the_rotation_are_rewrapped(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A KEK another instance wraps under the old key midway is re-wrapped before the switch."""
    gateway = await bus_factory("gateway")
    other = await start_keyring(keyring.settings, leased=False)  # beside the leader
    try:
        reached, go_on = asyncio.Event(), asyncio.Event()

        async def pause(at: str) -> None:
            if at == "key-written":
                reached.set()
                await go_on.wait()

        keyring.app[ROTATOR].checkpoint = pause
        running = asyncio.create_task(keyring.app[ROTATOR].rotate())
        await reached.wait()
        made = await other.app[VAULT].generate_data_key(team, Purpose.CONFIG, {})
        go_on.set()
        await running
    finally:
        await other.stop()
    assert master_versions(keyring.settings.db_path()) == {2}
    await keyring.restart()
    request = DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=made.wrapped)
    assert (await gateway.call(DATAKEY_DECRYPT, request)).plaintext == made.plaintext


# ---- who may, and the audit --------------------------------------------------------------------


async def test_only_the_gateway_may_rotate_and_every_attempt_is_audited(
    keyring: RunningKeyring, bus_factory: BusFactory
) -> None:
    """The backup service is refused; the gateway's rotation is audited with its fingerprint."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    with pytest.raises(Forbidden):
        await rotate(backup)
    done = await rotate(gateway)
    rows = [r for r in await keyring.audit() if r.operation == "masterkey.rotate"]
    assert [(r.caller, r.outcome) for r in rows] == [("backup", "forbidden"), ("gateway", "ok")]
    assert "requested_by=admin@example.com" in rows[1].detail
    assert f"from=1 to=2 fingerprint={done.fingerprint}" in rows[1].detail


async def test_a_master_key_from_the_environment_cannot_be_rotated(
    nats_server: NatsServer, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The keyring cannot write a key into its environment: it says so instead of rotating."""
    monkeypatch.setenv("TEST_MASTER_KEY", base64.b64encode(os.urandom(32)).decode())
    settings = KeyringSettings(
        nats_url=nats_server.url,
        home=str(home),
        shutdown_grace=5.0,
        master_key_env="TEST_MASTER_KEY",
    )
    running = await start_keyring(settings)
    try:
        with pytest.raises(InvalidRequest, match="environment"):
            await running.app[ROTATOR].rotate()
    finally:
        await running.stop()


# ---- the recovery copy -------------------------------------------------------------------------


async def test_master_key_is_sealed_to_the_recovery_key_at_creation_and_after_rotation(
    nats_server: NatsServer, home: Path
) -> None:
    """master-key.recovery.age opens with the recovery identity to the key in use."""
    identities = [age.generate_identity() for _ in range(2)]
    recipients = " ".join(age.format_recipient(age.public_of(i)) for i in identities)
    settings = KeyringSettings(
        nats_url=nats_server.url,
        home=str(home),
        shutdown_grace=5.0,
        recovery_recipients=recipients,
    )
    running = await start_keyring(settings)
    try:
        sealed = settings.recovery_file()
        assert stat.S_IMODE(sealed.stat().st_mode) == 0o600
        key_file = settings.master_key_file()
        for identity in identities:  # either holder alone can open it
            assert age.open_sealed(sealed.read_bytes(), [identity]) == key_file.read_bytes()
        done = await running.app[ROTATOR].rotate()
        assert done.recovery_sealed
        opened = age.open_sealed(sealed.read_bytes(), [identities[0]])
        assert opened == key_file.read_bytes() and fingerprint(opened) == done.fingerprint
    finally:
        await running.stop()


async def test_without_recovery_recipients_nothing_is_sealed(keyring: RunningKeyring) -> None:
    """No recipients, no recovery file: the rotation says it sealed nothing."""
    done = await keyring.app[ROTATOR].rotate()
    assert not done.recovery_sealed
    assert not keyring.settings.recovery_file().exists()
