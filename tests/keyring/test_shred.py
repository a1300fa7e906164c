"""Crypto-shredding a team through the real keyring: irreversible, explained, and thorough."""

from __future__ import annotations

import sqlite3

import pytest

from slipway.contracts.keyring import (
    DATAKEY_DECRYPT,
    DATAKEY_GENERATE,
    KEK_ROTATE,
    PUBKEY_GET,
    PUBKEY_REGISTER,
    TEAM_SHRED,
    DecryptDataKey,
    GenerateDataKey,
    GetPublicKey,
    Purpose,
    RegisterPublicKey,
    RotateKek,
    ShredTeam,
)
from slipway.libs.crypto.sealedbox import generate_keypair
from slipway.libs.errors import Gone
from tests.keyring.conftest import BusFactory, RunningKeyring

pytestmark = pytest.mark.integration


async def test_decrypt_after_shred_is_gone(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A key wrapped before the shred is Gone after it; the message says its keys were destroyed."""
    gateway = await bus_factory("gateway")
    key = await gateway.call(
        DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG)
    )
    await gateway.call(TEAM_SHRED, ShredTeam(team_id=team, reason="customer left"))
    with pytest.raises(Gone) as caught:
        await gateway.call(
            DATAKEY_DECRYPT,
            DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=key.wrapped),
        )
    assert "destroyed" in caught.value.message and team in caught.value.message
    assert "customer left" in caught.value.message


async def test_generate_and_rotate_after_shred_are_gone(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A shredded team gets no new key, by generate or by rotation."""
    gateway = await bus_factory("gateway")
    await gateway.call(DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG))
    await gateway.call(TEAM_SHRED, ShredTeam(team_id=team))
    with pytest.raises(Gone):
        await gateway.call(DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG))
    with pytest.raises(Gone):
        await gateway.call(KEK_ROTATE, RotateKek(team_id=team))


async def test_shred_of_a_team_without_keys_still_blocks_it(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Shredding a team the keyring never saw leaves a tombstone: it never gets a key."""
    gateway = await bus_factory("gateway")
    await gateway.call(TEAM_SHRED, ShredTeam(team_id=team))
    with pytest.raises(Gone):
        await gateway.call(DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG))


async def test_shred_is_idempotent(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Shredding twice answers Ok both times (a retried request must not fail)."""
    gateway = await bus_factory("gateway")
    await gateway.call(TEAM_SHRED, ShredTeam(team_id=team))
    await gateway.call(TEAM_SHRED, ShredTeam(team_id=team))
    records = await keyring.audit(team)
    assert [r.detail for r in records] == ["", "already shredded"]


async def test_shred_forgets_the_public_key(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """After a shred the team's public key is no longer served."""
    gateway = await bus_factory("gateway")
    _, public = generate_keypair()
    await gateway.call(PUBKEY_REGISTER, RegisterPublicKey(team_id=team, public_key=public))
    await gateway.call(TEAM_SHRED, ShredTeam(team_id=team))
    with pytest.raises(Gone):
        await gateway.call(PUBKEY_GET, GetPublicKey(team_id=team))


async def test_shredded_keks_leave_no_trace_on_disk(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The wrapped KEK bytes are in neither the database file nor its WAL after a shred."""
    gateway = await bus_factory("gateway")
    await gateway.call(DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG))
    await gateway.call(KEK_ROTATE, RotateKek(team_id=team))
    path = keyring.settings.db_path()
    wal = path.with_name(path.name + "-wal")
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT wrapped FROM keks WHERE team_id = ?", (team,)).fetchall()
    finally:
        db.close()  # an open reader would hold back the keyring's WAL checkpoint
    wrapped = [bytes(row[0]) for row in rows]
    assert len(wrapped) == 2
    assert all(blob in path.read_bytes() + wal.read_bytes() for blob in wrapped)
    await gateway.call(TEAM_SHRED, ShredTeam(team_id=team))
    on_disk = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    for blob in wrapped:
        assert blob not in on_disk
