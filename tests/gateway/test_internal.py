"""The gateway's answers to the platform's own services: sealed config and desired state."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import msgspec
import pytest

from slipway.contracts.gateway import (
    CONFIG_SEALED_GET,
    DESIRED_GET,
    GetDesired,
    GetSealedConfig,
)
from slipway.contracts.keyring import Purpose
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.crypto import Binding, envelope
from slipway.libs.errors import Forbidden, NotFound
from tests.gateway.conftest import Stack

BusFactory = Callable[[str], Awaitable[Bus]]


async def test_scheduler_reads_sealed_config_and_decrypts_it_through_the_keyring(
    stack: Stack, bus_factory: BusFactory
) -> None:
    """The reply is ciphertext plus its binding; the keyring opens it for the scheduler."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"SECRET": "s3cr3t", "PLAIN": "1"})
    scheduler = await bus_factory(Service.SCHEDULER)

    sealed = await scheduler.call(CONFIG_SEALED_GET, GetSealedConfig(app_id=app["id"]))

    assert b"s3cr3t" not in sealed.ciphertext
    binding = Binding(
        team=sealed.team_id,
        app=sealed.app_id,
        kind=sealed.binding_kind,
        record=sealed.binding_record,
    )
    plaintext = await envelope.decrypt(
        scheduler, sealed.team_id, Purpose.CONFIG, binding, sealed.ciphertext
    )
    assert msgspec.json.decode(plaintext) == {"PLAIN": "1", "SECRET": "s3cr3t"}


async def test_an_app_without_config_answers_empty_ciphertext(
    stack: Stack, bus_factory: BusFactory
) -> None:
    """No config version yet: nothing to decrypt, and no error."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "bare")
    builder = await bus_factory(Service.BUILDER)
    sealed = await builder.call(CONFIG_SEALED_GET, GetSealedConfig(app_id=app["id"]))
    assert sealed.ciphertext == b""


async def test_sealed_config_is_refused_to_other_services(
    stack: Stack, bus_factory: BusFactory
) -> None:
    """The log-shipper has no use for config: the gateway refuses it."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    shipper = await bus_factory(Service.LOG_SHIPPER)
    with pytest.raises(Forbidden):
        await shipper.call(CONFIG_SEALED_GET, GetSealedConfig(app_id=app["id"]))


async def test_sealed_config_of_an_unknown_app_is_not_found(
    stack: Stack, bus_factory: BusFactory
) -> None:
    scheduler = await bus_factory(Service.SCHEDULER)
    with pytest.raises(NotFound):
        await scheduler.call(CONFIG_SEALED_GET, GetSealedConfig(app_id="no-such-app"))


async def test_desired_state_lists_release_and_formation(
    stack: Stack, bus_factory: BusFactory
) -> None:
    """After a config change the app has a release; DESIRED_GET shows it with its formation."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    await stack.app(alice, "other")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"A": "1"})
    await alice.ok("PATCH", "/apps/hello", {"maintenance": True})
    wirer = await bus_factory(Service.NETWORK_WIRER)

    everything = await wirer.call(DESIRED_GET, GetDesired())
    one = await wirer.call(DESIRED_GET, GetDesired(app_id=app["id"]))

    assert sorted(a.app_name for a in everything.apps) == ["hello", "other"]
    [hello] = one.apps
    assert hello.app_name == "hello" and hello.maintenance
    assert hello.release_version is not None and hello.config_version is not None
    assert "A" not in msgspec.json.encode(hello).decode()


async def test_desired_state_is_refused_to_callers_outside_the_platform(
    stack: Stack, bus_factory: BusFactory
) -> None:
    operator = await bus_factory("operator")
    with pytest.raises(Forbidden):
        await operator.call(DESIRED_GET, GetDesired())
