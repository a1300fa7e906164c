"""The keyring's policy table, and its enforcement on real calls."""

from __future__ import annotations

import pytest

from slipway.contracts.keyring import (
    AUDIT_SIGN,
    DATAKEY_DECRYPT,
    DATAKEY_GENERATE,
    TEAM_SHRED,
    DecryptDataKey,
    GenerateDataKey,
    Purpose,
    ShredTeam,
    SignAudit,
)
from slipway.libs.errors import Forbidden
from slipway.services.keyring import policy
from slipway.services.keyring.policy import Operation
from tests.keyring.conftest import BusFactory, RunningKeyring

DATA_KEY_OPERATIONS = (Operation.GENERATE, Operation.DECRYPT, Operation.REWRAP)


def test_only_gateway_scheduler_and_builder_read_config() -> None:
    """Config data keys unwrap for the gateway, the scheduler (dyno env) and the builder
    (the buildpack contract's ENV_DIR), and no one else."""
    readers = {
        grant.caller
        for grant in policy.TABLE
        if (grant.operation, grant.purpose) == (Operation.DECRYPT, Purpose.CONFIG)
    }
    assert readers == {"gateway", "scheduler", "builder"}


def test_operator_never_holds_a_data_key() -> None:
    """The operator user is granted no data-key operation for any purpose."""
    assert not any(
        policy.allowed("operator", operation, purpose)
        for operation in DATA_KEY_OPERATIONS
        for purpose in Purpose
    )


def test_unidentified_caller_is_refused() -> None:
    """A request without a Slipway inbox (no caller) is refused everything."""
    with pytest.raises(Forbidden, match="without a Slipway inbox"):
        policy.check(None, Operation.AUDIT_KEY)


def test_purpose_free_grant_does_not_cover_purposes() -> None:
    """A grant without a purpose does not match a data-key call for some purpose."""
    assert policy.allowed("gateway", Operation.ROTATE)
    assert not policy.allowed("gateway", Operation.ROTATE, Purpose.CONFIG)
    assert not policy.allowed("gateway", Operation.GENERATE)


@pytest.mark.integration
async def test_log_shipper_asking_for_config_is_forbidden(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The log-shipper may neither generate nor decrypt config data keys."""
    gateway, shipper = await bus_factory("gateway"), await bus_factory("log-shipper")
    with pytest.raises(
        Forbidden, match=r"log-shipper may not datakey\.generate for purpose config"
    ):
        await shipper.call(DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG))
    key = await gateway.call(
        DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG)
    )
    with pytest.raises(Forbidden):
        await shipper.call(
            DATAKEY_DECRYPT,
            DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=key.wrapped),
        )


@pytest.mark.integration
async def test_scheduler_decrypts_config_but_cannot_generate(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """The scheduler unwraps the gateway's config keys but may not make its own."""
    gateway, scheduler = await bus_factory("gateway"), await bus_factory("scheduler")
    key = await gateway.call(
        DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG)
    )
    plain = await scheduler.call(
        DATAKEY_DECRYPT, DecryptDataKey(team_id=team, purpose=Purpose.CONFIG, wrapped=key.wrapped)
    )
    assert plain.plaintext == key.plaintext
    with pytest.raises(Forbidden):
        await scheduler.call(
            DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG)
        )


@pytest.mark.integration
async def test_only_gateway_and_operator_shred(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A service outside the table (the log shipper) cannot shred a team."""
    shipper = await bus_factory("log-shipper")
    with pytest.raises(Forbidden):
        await shipper.call(TEAM_SHRED, ShredTeam(team_id=team))


@pytest.mark.integration
async def test_unknown_service_is_forbidden(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A connection named for no Slipway service gets nothing, not even a signature."""
    stranger = await bus_factory("stranger")
    with pytest.raises(Forbidden):
        await stranger.call(AUDIT_SIGN, SignAudit(team_id=team, message=b"x"))


@pytest.mark.integration
async def test_forbidden_calls_are_audited(
    keyring: RunningKeyring, bus_factory: BusFactory, team: str
) -> None:
    """A refused call leaves an audit row with the caller, operation, purpose and 'forbidden'."""
    builder = await bus_factory("builder")
    with pytest.raises(Forbidden):
        await builder.call(DATAKEY_GENERATE, GenerateDataKey(team_id=team, purpose=Purpose.CONFIG))
    [record] = await keyring.audit(team)
    assert (record.caller, record.operation, record.purpose, record.outcome) == (
        "builder",
        "datakey.generate",
        "config",
        "forbidden",
    )
