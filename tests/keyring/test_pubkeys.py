"""Customer-held X25519 public keys through the real keyring."""

from __future__ import annotations

import hashlib

import pytest

from slipway.contracts.keyring import (
    PUBKEY_GET,
    PUBKEY_REGISTER,
    GetPublicKey,
    RegisterPublicKey,
)
from slipway.libs.crypto.binding import Binding
from slipway.libs.crypto.sealedbox import generate_keypair, open_sealed, seal_to
from slipway.libs.errors import Forbidden, InvalidRequest
from tests.keyring.conftest import BusFactory, RunningKeyring

pytestmark = pytest.mark.integration


async def test_register_then_get(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A registered key comes back with its SHA-256 fingerprint."""
    gateway = await bus_factory("gateway")
    _, public = generate_keypair()
    info = await gateway.call(PUBKEY_REGISTER, RegisterPublicKey(team_id=team, public_key=public))
    assert info.fingerprint == hashlib.sha256(public).hexdigest()
    assert await gateway.call(PUBKEY_GET, GetPublicKey(team_id=team)) == info


async def test_no_key_registered(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A team without a key gets an info with no key and no fingerprint."""
    gateway = await bus_factory("gateway")
    info = await gateway.call(PUBKEY_GET, GetPublicKey(team_id=team))
    assert (info.public_key, info.fingerprint) == (None, None)


async def test_registering_again_replaces_the_key(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A second registration replaces the first key."""
    gateway = await bus_factory("gateway")
    _, first = generate_keypair()
    _, second = generate_keypair()
    await gateway.call(PUBKEY_REGISTER, RegisterPublicKey(team_id=team, public_key=first))
    await gateway.call(PUBKEY_REGISTER, RegisterPublicKey(team_id=team, public_key=second))
    assert (await gateway.call(PUBKEY_GET, GetPublicKey(team_id=team))).public_key == second


@pytest.mark.parametrize("bad", [b"\x01" * 31, bytes(32)], ids=["short", "low-order"])
async def test_invalid_key_is_refused(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str, bad: bytes
) -> None:
    """A key of the wrong size or a low-order point is refused as an invalid request."""
    gateway = await bus_factory("gateway")
    with pytest.raises(InvalidRequest):
        await gateway.call(PUBKEY_REGISTER, RegisterPublicKey(team_id=team, public_key=bad))


async def test_only_gateway_registers(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The backup service may read a team's key but not register one."""
    backup = await bus_factory("backup")
    _, public = generate_keypair()
    with pytest.raises(Forbidden):
        await backup.call(PUBKEY_REGISTER, RegisterPublicKey(team_id=team, public_key=public))
    assert (await backup.call(PUBKEY_GET, GetPublicKey(team_id=team))).public_key is None


async def test_sealed_to_registered_key_opens_with_customer_key(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """What a service seals to the served key only the customer's private key opens."""
    gateway, backup = await bus_factory("gateway"), await bus_factory("backup")
    private, public = generate_keypair()
    await gateway.call(PUBKEY_REGISTER, RegisterPublicKey(team_id=team, public_key=public))
    served = await backup.call(PUBKEY_GET, GetPublicKey(team_id=team))
    assert served.public_key is not None
    place = Binding(team=team, app="db", kind="backup", record="b1")
    assert open_sealed(private, seal_to(served.public_key, b"dump", place), place) == b"dump"
