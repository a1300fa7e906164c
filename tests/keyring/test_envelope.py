"""libs/crypto/envelope against the real keyring: how services encrypt their records."""

from __future__ import annotations

import pytest

from slipway.contracts.keyring import (
    KEK_RETIRE,
    KEK_ROTATE,
    TEAM_SHRED,
    Purpose,
    RetireKek,
    RotateKek,
    ShredTeam,
)
from slipway.libs.crypto import envelope
from slipway.libs.crypto.binding import Binding
from slipway.libs.crypto.envelope import EncryptedRecord
from slipway.libs.crypto.errors import DecryptionFailed
from slipway.libs.crypto.stream import decrypt_chunks, encrypt_chunks
from slipway.libs.errors import Gone
from tests.keyring.conftest import BusFactory, RunningKeyring

pytestmark = pytest.mark.integration


def place(team: str, app: str = "app-1", record: str = "cfg-1", kind: str = "config") -> Binding:
    return Binding(team=team, app=app, kind=kind, record=record)


async def test_round_trip(keyring: RunningKeyring, bus_factory: BusFactory, team: str) -> None:
    """encrypt then decrypt gives the plaintext back, and the stored bytes do not contain it."""
    gateway = await bus_factory("gateway")
    sealed = await envelope.encrypt(gateway, team, Purpose.CONFIG, place(team), b"SECRET=hunter2")
    assert b"hunter2" not in sealed
    assert await envelope.decrypt(gateway, team, Purpose.CONFIG, place(team), sealed) == (
        b"SECRET=hunter2"
    )


async def test_mapping_binding_is_accepted(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A {team, app, kind, record} dict binds exactly like the Binding it names."""
    gateway = await bus_factory("gateway")
    mapping = {"team": team, "app": "app-1", "kind": "config", "record": "cfg-1"}
    sealed = await envelope.encrypt(gateway, team, Purpose.CONFIG, mapping, b"v")
    assert await envelope.decrypt(gateway, team, Purpose.CONFIG, place(team), sealed) == b"v"


@pytest.mark.parametrize(
    ("app", "record"), [("app-1", "cfg-2"), ("app-2", "cfg-1")], ids=["record", "app"]
)
async def test_record_moved_within_team_fails(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str, app: str, record: str
) -> None:
    """A record copied to another record or app of the same team fails to decrypt."""
    gateway = await bus_factory("gateway")
    sealed = await envelope.encrypt(gateway, team, Purpose.CONFIG, place(team), b"secret")
    with pytest.raises(DecryptionFailed):
        await envelope.decrypt(gateway, team, Purpose.CONFIG, place(team, app, record), sealed)


async def test_record_moved_to_another_team_fails(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A record copied into another team's row fails to decrypt there."""
    gateway = await bus_factory("gateway")
    other = team + "-victim"
    await envelope.encrypt(gateway, other, Purpose.CONFIG, place(other), b"give the team keys")
    sealed = await envelope.encrypt(gateway, team, Purpose.CONFIG, place(team), b"secret")
    with pytest.raises(DecryptionFailed):
        await envelope.decrypt(gateway, other, Purpose.CONFIG, place(other), sealed)


async def test_swapped_data_blob_fails(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A record whose data blob is swapped for another record's (same place) fails."""
    gateway = await bus_factory("gateway")
    first = EncryptedRecord.from_bytes(
        await envelope.encrypt(gateway, team, Purpose.CONFIG, place(team), b"one")
    )
    second = EncryptedRecord.from_bytes(
        await envelope.encrypt(gateway, team, Purpose.CONFIG, place(team), b"two")
    )
    forged = EncryptedRecord(first.wrapped_key, first.kek_version, second.blob)
    with pytest.raises(DecryptionFailed):
        await envelope.decrypt(gateway, team, Purpose.CONFIG, place(team), forged.to_bytes())


async def test_flipped_bit_fails(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A stored record with one bit flipped in its data fails to decrypt."""
    gateway = await bus_factory("gateway")
    sealed = bytearray(await envelope.encrypt(gateway, team, Purpose.CONFIG, place(team), b"x"))
    sealed[-1] ^= 0x01
    with pytest.raises(DecryptionFailed):
        await envelope.decrypt(gateway, team, Purpose.CONFIG, place(team), bytes(sealed))


async def test_altered_kek_version_fails(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A record whose KEK version field is changed is refused before any call."""
    gateway = await bus_factory("gateway")
    sealed = await envelope.encrypt(gateway, team, Purpose.CONFIG, place(team), b"x")
    forged = sealed[:1] + (2).to_bytes(4, "big") + sealed[5:]
    with pytest.raises(DecryptionFailed, match="KEK version"):
        await envelope.decrypt(gateway, team, Purpose.CONFIG, place(team), forged)


async def test_binding_must_name_the_key_owner(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Encrypting with one team's key for another team's place is a programming error."""
    gateway = await bus_factory("gateway")
    with pytest.raises(ValueError, match="binding names team"):
        await envelope.encrypt(gateway, team, Purpose.CONFIG, place("someone-else"), b"x")


async def test_rewrap_then_retire_keeps_record_readable(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A record rewrapped after rotation survives retiring the old KEK; a stale one is Gone."""
    gateway = await bus_factory("gateway")
    kept = await envelope.encrypt(gateway, team, Purpose.CONFIG, place(team), b"kept")
    stale = await envelope.encrypt(gateway, team, Purpose.CONFIG, place(team, record="c2"), b"old")
    await gateway.call(KEK_ROTATE, RotateKek(team_id=team))
    kept = await envelope.rewrap(gateway, team, Purpose.CONFIG, place(team), kept)
    assert envelope.kek_version_of(kept) == 2 and envelope.kek_version_of(stale) == 1
    await gateway.call(KEK_RETIRE, RetireKek(team_id=team, below_version=2))
    assert await envelope.decrypt(gateway, team, Purpose.CONFIG, place(team), kept) == b"kept"
    with pytest.raises(Gone):
        await envelope.decrypt(gateway, team, Purpose.CONFIG, place(team, record="c2"), stale)


async def test_shredded_team_is_gone(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """After the team is shredded its records raise Gone, not a decryption error."""
    gateway = await bus_factory("gateway")
    sealed = await envelope.encrypt(gateway, team, Purpose.CONFIG, place(team), b"x")
    await gateway.call(TEAM_SHRED, ShredTeam(team_id=team))
    with pytest.raises(Gone, match="destroyed"):
        await envelope.decrypt(gateway, team, Purpose.CONFIG, place(team), sealed)


async def test_stream_under_a_data_key(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A large payload streams under a generated data key, reopened later from the wrapped key."""
    backup = await bus_factory("backup")
    where = place(team, app="db", record="backup-1", kind="backup")
    payload = bytes(range(256)) * 8192  # 2 MiB
    key = await envelope.generate_data_key(backup, team, Purpose.BACKUP, where)
    sealed = b"".join(encrypt_chunks(key.plaintext, [payload], where, key_version=key.kek_version))
    plaintext = await envelope.unwrap_data_key(backup, team, Purpose.BACKUP, where, key.wrapped)
    assert b"".join(decrypt_chunks(plaintext, [sealed], where)) == payload
