"""The keyring's own audit, and the Ed25519 audit signing key."""

from __future__ import annotations

import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from slipway.contracts.keyring import (
    AUDIT_KEY,
    AUDIT_SIGN,
    DATAKEY_DECRYPT,
    DATAKEY_GENERATE,
    KEK_ROTATE,
    TEAM_SHRED,
    DecryptDataKey,
    GenerateDataKey,
    GetAuditKey,
    Purpose,
    RotateKek,
    ShredTeam,
    SignAudit,
)
from slipway.libs.auditchain import checkpoint_message
from slipway.libs.errors import Forbidden, Gone, InvalidRequest
from tests.keyring.conftest import BusFactory, RunningKeyring

pytestmark = pytest.mark.integration


async def test_signature_verifies_with_returned_key(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """audit.sign's signature verifies with the public key it returns, which audit.key serves."""
    gateway = await bus_factory("gateway")
    message = checkpoint_message(team, 7, "ab" * 32)
    signed = await gateway.call(AUDIT_SIGN, SignAudit(team_id=team, message=message))
    Ed25519PublicKey.from_public_bytes(signed.public_key).verify(signed.signature, message)
    key = await gateway.call(AUDIT_KEY, GetAuditKey())
    assert (key.key_id, key.public_key) == (signed.key_id, signed.public_key)


async def test_signing_key_survives_restart(
    keyring: RunningKeyring, bus_factory: BusFactory
) -> None:
    """The audit key is made once and kept: same key id after a restart."""
    gateway = await bus_factory("gateway")
    before = await gateway.call(AUDIT_KEY, GetAuditKey())
    await keyring.restart()
    assert await gateway.call(AUDIT_KEY, GetAuditKey()) == before


async def test_only_checkpoints_are_signed(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The audit key refuses to sign anything but a checkpoint of the named team."""
    gateway = await bus_factory("gateway")
    with pytest.raises(InvalidRequest, match="checkpoints only"):
        await gateway.call(AUDIT_SIGN, SignAudit(team_id=team, message=b"pay mallory $1000"))
    other = checkpoint_message(team + "x", 1, "00" * 32)
    with pytest.raises(InvalidRequest, match="checkpoints only"):
        await gateway.call(AUDIT_SIGN, SignAudit(team_id=team, message=other))


async def test_signing_still_works_after_shred(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A shredded team's audit chain can still be checkpointed (the audit key is the platform's)."""
    gateway = await bus_factory("gateway")
    await gateway.call(TEAM_SHRED, ShredTeam(team_id=team))
    message = checkpoint_message(team, 1, "00" * 32)
    await gateway.call(AUDIT_SIGN, SignAudit(team_id=team, message=message))


async def test_every_call_lands_in_the_audit(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Each call, allowed or not, appends one row: caller, operation, team, purpose, outcome."""
    gateway, shipper = await bus_factory("gateway"), await bus_factory("log-shipper")
    key = await gateway.call(
        DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG)
    )
    with pytest.raises(Forbidden):
        await shipper.call(
            DATAKEY_DECRYPT,
            DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=key.wrapped),
        )
    await gateway.call(KEK_ROTATE, RotateKek(team_id=team))
    await gateway.call(TEAM_SHRED, ShredTeam(team_id=team, reason="test"))
    with pytest.raises(Gone):
        await gateway.call(
            DATAKEY_DECRYPT,
            DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=key.wrapped),
        )
    records = await keyring.audit(team)
    assert [(r.caller, r.operation, r.team_id, r.purpose, r.outcome) for r in records] == [
        ("gateway", "datakey.generate", team, "config", "ok"),
        ("log-shipper", "datakey.decrypt", team, "config", "forbidden"),
        ("gateway", "kek.rotate", team, None, "ok"),
        ("gateway", "team.shred", team, None, "ok"),
        ("gateway", "datakey.decrypt", team, "config", "gone"),
    ]


async def test_calls_without_a_team_are_audited(
    keyring: RunningKeyring, bus_factory: BusFactory
) -> None:
    """audit.key, which names no team, is audited too."""
    gateway = await bus_factory("gateway")
    await gateway.call(AUDIT_KEY, GetAuditKey())
    [row] = await keyring.audit()
    assert (row.caller, row.operation, row.team_id, row.outcome) == (
        "gateway",
        "audit.key",
        None,
        "ok",
    )


async def test_no_key_material_on_disk(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Neither a data key's plaintext nor the master key appears in the keyring's database."""
    gateway = await bus_factory("gateway")
    key = await gateway.call(
        DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG)
    )
    await gateway.call(
        DATAKEY_DECRYPT, DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=key.wrapped)
    )
    path = keyring.settings.db_path()
    wal = path.with_name(path.name + "-wal")
    on_disk = path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")
    master = keyring.settings.master_key_file().read_bytes()
    for secret in (key.plaintext, master):
        assert secret not in on_disk and secret.hex().encode() not in on_disk


async def test_audit_is_append_only(keyring: RunningKeyring, bus_factory: BusFactory) -> None:
    """Rows of the audit table cannot be updated or deleted, even with direct SQL."""
    gateway = await bus_factory("gateway")
    await gateway.call(AUDIT_KEY, GetAuditKey())
    db = sqlite3.connect(keyring.settings.db_path())
    try:
        for sql in ("UPDATE audit SET caller = 'nobody'", "DELETE FROM audit"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                db.execute(sql)
    finally:
        db.close()
