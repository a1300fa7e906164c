"""KEK rotation, rewrapping and retirement through the real keyring."""

from __future__ import annotations

import pytest

from slipway.contracts.keyring import (
    DATAKEY_DECRYPT,
    DATAKEY_GENERATE,
    DATAKEY_REWRAP,
    KEK_RETIRE,
    KEK_ROTATE,
    DataKey,
    DecryptDataKey,
    GenerateDataKey,
    Purpose,
    RetireKek,
    RewrapDataKey,
    RotateKek,
)
from slipway.libs.bus import Bus
from slipway.libs.errors import Gone, InvalidRequest
from tests.keyring.conftest import BusFactory, RunningKeyring

pytestmark = pytest.mark.integration


async def generate(bus: Bus, team: str) -> DataKey:
    return await bus.call(DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG))


async def unwrap(bus: Bus, team: str, wrapped: bytes) -> bytes:
    request = DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=wrapped)
    return (await bus.call(DATAKEY_DECRYPT, request)).plaintext


async def test_rotation_keeps_old_keys_readable(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """After a rotation, new keys use version 2 and keys wrapped by version 1 still unwrap."""
    gateway = await bus_factory("gateway")
    old = await generate(gateway, team)
    rotated = await gateway.call(KEK_ROTATE, RotateKek(team_id=team))
    assert rotated.version == 2
    new = await generate(gateway, team)
    assert (old.kek_version, new.kek_version) == (1, 2)
    assert await unwrap(gateway, team, old.wrapped) == old.plaintext
    assert await unwrap(gateway, team, new.wrapped) == new.plaintext


async def test_first_rotation_of_a_new_team_makes_version_1(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Rotating a team that has no key yet gives it its first key, version 1."""
    gateway = await bus_factory("gateway")
    assert (await gateway.call(KEK_ROTATE, RotateKek(team_id=team))).version == 1


async def test_rewrap_moves_a_key_to_the_current_version(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Rewrapping an old key gives the same plaintext wrapped by the current KEK."""
    gateway = await bus_factory("gateway")
    old = await generate(gateway, team)
    await gateway.call(KEK_ROTATE, RotateKek(team_id=team))
    rewrapped = await gateway.call(
        DATAKEY_REWRAP, RewrapDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=old.wrapped)
    )
    assert rewrapped.kek_version == 2 and rewrapped.wrapped != old.wrapped
    assert await unwrap(gateway, team, rewrapped.wrapped) == old.plaintext


async def test_retired_version_is_gone(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """After retiring version 1, its keys are Gone; rewrapped and newer keys still unwrap."""
    gateway = await bus_factory("gateway")
    old = await generate(gateway, team)
    await gateway.call(KEK_ROTATE, RotateKek(team_id=team))
    rewrapped = await gateway.call(
        DATAKEY_REWRAP, RewrapDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=old.wrapped)
    )
    retired = await gateway.call(KEK_RETIRE, RetireKek(team_id=team, below_version=2))
    assert (retired.retired, retired.current) == ([1], 2)
    with pytest.raises(Gone, match="retired"):
        await unwrap(gateway, team, old.wrapped)
    assert await unwrap(gateway, team, rewrapped.wrapped) == old.plaintext


async def test_current_version_cannot_be_retired(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Retiring up to and including the current version is refused; nothing is destroyed."""
    gateway = await bus_factory("gateway")
    key = await generate(gateway, team)
    with pytest.raises(InvalidRequest, match="current"):
        await gateway.call(KEK_RETIRE, RetireKek(team_id=team, below_version=2))
    assert await unwrap(gateway, team, key.wrapped) == key.plaintext
