"""datakey.renew: a record's data key opened and the next record's issued in one call."""

from __future__ import annotations

import pytest

from slipway.contracts.keyring import (
    DATAKEY_DECRYPT,
    DATAKEY_GENERATE,
    DATAKEY_RENEW,
    DecryptDataKey,
    GenerateDataKey,
    Purpose,
    RenewDataKey,
)
from slipway.libs.errors import Forbidden, RemoteError
from tests.keyring.conftest import BusFactory, RunningKeyring

pytestmark = pytest.mark.integration

CURRENT = {"team": "t", "app": "a1", "kind": "config", "record": "v1"}
NEXT = {**CURRENT, "record": "v2"}


async def test_renew_opens_the_current_key_and_issues_a_bound_new_one(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The reply holds the current key's plaintext and a fresh key wrapped for the next record."""
    gateway = await bus_factory("gateway")
    old = await gateway.call(
        DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG, context=CURRENT)
    )
    renewed = await gateway.call(
        DATAKEY_RENEW,
        RenewDataKey(
            team_id=team,
            purpose=Purpose.CONFIG,
            wrapped=old.wrapped,
            context=CURRENT,
            next_context=NEXT,
        ),
    )
    assert renewed.current == old.plaintext and renewed.current_kek_version == 1
    assert renewed.plaintext != old.plaintext and renewed.kek_version == 1
    opened = await gateway.call(
        DATAKEY_DECRYPT,
        DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=renewed.wrapped, context=NEXT),
    )
    assert opened.plaintext == renewed.plaintext
    with pytest.raises(RemoteError) as caught:
        await gateway.call(
            DATAKEY_DECRYPT,
            DecryptDataKey(
                team_id=team, purpose=Purpose.CONFIG, wrapped=renewed.wrapped, context=CURRENT
            ),
        )
    assert caught.value.code == "decryption_failed"


async def test_a_moved_record_gets_no_new_key_and_is_audited(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A wrapped key presented with another record's context fails, one audit row per call."""
    gateway = await bus_factory("gateway")
    old = await gateway.call(
        DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG, context=CURRENT)
    )
    with pytest.raises(RemoteError) as caught:
        await gateway.call(
            DATAKEY_RENEW,
            RenewDataKey(
                team_id=team,
                purpose=Purpose.CONFIG,
                wrapped=old.wrapped,
                context={**CURRENT, "app": "a2"},
                next_context=NEXT,
            ),
        )
    assert caught.value.code == "decryption_failed"
    records = await keyring.audit(team)
    assert [(r.operation, r.purpose, r.outcome) for r in records] == [
        ("datakey.generate", "config", "ok"),
        ("datakey.renew", "config", "decryption_failed"),
    ]


async def test_renew_is_granted_for_config_only(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The gateway may renew config keys, not build-source keys it may otherwise generate."""
    gateway = await bus_factory("gateway")
    old = await gateway.call(
        DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.BUILD_SOURCE)
    )
    with pytest.raises(Forbidden):
        await gateway.call(
            DATAKEY_RENEW,
            RenewDataKey(team_id=team, purpose=Purpose.BUILD_SOURCE, wrapped=old.wrapped),
        )
