"""Data keys through the real keyring: generate, decrypt, and what binds a wrapped key."""

from __future__ import annotations

import pytest

from slipway.contracts.keyring import (
    DATAKEY_DECRYPT,
    DATAKEY_GENERATE,
    DecryptDataKey,
    GenerateDataKey,
    Purpose,
)
from slipway.libs.errors import RemoteError
from tests.keyring.conftest import BusFactory, RunningKeyring

pytestmark = pytest.mark.integration

CONTEXT = {"team": "t", "app": "a1", "kind": "config", "record": "v1"}


async def test_generate_then_decrypt_round_trip(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A generated data key unwraps to the same plaintext, under KEK version 1."""
    gateway = await bus_factory("gateway")
    key = await gateway.call(
        DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG, context=CONTEXT)
    )
    assert len(key.plaintext) == 32 and key.kek_version == 1
    assert key.plaintext not in key.wrapped
    plain = await gateway.call(
        DATAKEY_DECRYPT,
        DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=key.wrapped, context=CONTEXT),
    )
    assert plain.plaintext == key.plaintext and plain.kek_version == 1


async def test_every_data_key_is_fresh(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """Two generate calls give two different keys."""
    gateway = await bus_factory("gateway")
    request = GenerateDataKey(team_id=team, purpose=Purpose.CONFIG, context=CONTEXT)
    first, second = (
        await gateway.call(DATAKEY_GENERATE, request),
        await gateway.call(DATAKEY_GENERATE, request),
    )
    assert first.plaintext != second.plaintext


async def test_other_context_does_not_unwrap(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A wrapped key presented with another record's context fails with decryption_failed."""
    gateway = await bus_factory("gateway")
    key = await gateway.call(
        DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG, context=CONTEXT)
    )
    moved = {**CONTEXT, "record": "v2"}
    with pytest.raises(RemoteError) as caught:
        await gateway.call(
            DATAKEY_DECRYPT,
            DecryptDataKey(
                team_id=team, purpose=Purpose.CONFIG, wrapped=key.wrapped, context=moved
            ),
        )
    assert caught.value.code == "decryption_failed"
    assert "moved" in caught.value.message


async def test_other_team_does_not_unwrap(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A wrapped key presented as another team's fails, whether or not that team has keys."""
    gateway = await bus_factory("gateway")
    key = await gateway.call(
        DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG, context=CONTEXT)
    )
    other = team + "-other"
    for _ in range(2):  # first with no keys at all, then with keys of its own
        with pytest.raises(RemoteError) as caught:
            await gateway.call(
                DATAKEY_DECRYPT,
                DecryptDataKey(
                    team_id=other, purpose=Purpose.CONFIG, wrapped=key.wrapped, context=CONTEXT
                ),
            )
        assert caught.value.code == "decryption_failed"
        await gateway.call(DATAKEY_GENERATE, GenerateDataKey(team_id=other, purpose=Purpose.CONFIG))


async def test_other_purpose_does_not_unwrap(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A build-source key presented as a build-cache key fails (purpose is bound)."""
    builder = await bus_factory("builder")
    key = await builder.call(
        DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.BUILD_SOURCE)
    )
    with pytest.raises(RemoteError) as caught:
        await builder.call(
            DATAKEY_DECRYPT,
            DecryptDataKey(team_id=team, purpose=Purpose.BUILD_CACHE, wrapped=key.wrapped),
        )
    assert caught.value.code == "decryption_failed"


async def test_altered_wrapped_key_does_not_unwrap(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A wrapped key with a flipped bit fails."""
    gateway = await bus_factory("gateway")
    key = await gateway.call(
        DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG, context=CONTEXT)
    )
    altered = key.wrapped[:-1] + bytes([key.wrapped[-1] ^ 1])
    with pytest.raises(RemoteError) as caught:
        await gateway.call(
            DATAKEY_DECRYPT,
            DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=altered, context=CONTEXT),
        )
    assert caught.value.code == "decryption_failed"
