"""Config var names: only what an environment variable and an ENV_DIR file name can hold.

Each test sends the hostile name to the real gateway (real NATS and keyring)
with PATCH /apps/{app}/config-vars and checks the 422 the customer reads, and
that no config version was written.
"""

from __future__ import annotations

import pytest

from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import Api, Stack

pytestmark = pytest.mark.integration

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
gateway_service = gateway_fixtures.gateway_service
stack = gateway_fixtures.stack


async def refused(api: Api, name: str) -> str:
    """Set `name`; assert 422 and an unchanged config; the customer's message."""
    answer = await api.patch("/apps/hello/config-vars", {name: "x"})
    assert answer.status == 422, answer.body
    assert answer.error_id == "invalid_params"
    assert await api.ok("GET", "/apps/hello/config-vars") == {}
    message: str = answer.body["message"]
    return message


async def test_a_256_character_name_is_refused(stack: Stack) -> None:
    """A 256-character name (longer than a file name may be) answers 422 naming the limit."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")

    message = await refused(alice, "A" * 256)

    assert "at most 255 characters" in message


async def test_a_255_character_name_is_accepted(stack: Stack) -> None:
    """The longest name a file can hold (255 characters) is still a valid config var."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")

    answer = await alice.patch("/apps/hello/config-vars", {"B" * 255: "x"})

    assert answer.status == 200


async def test_a_path_as_a_name_is_refused(stack: Stack) -> None:
    """A name that would be a path in ENV_DIR (`../x`) answers 422."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")

    message = await refused(alice, "../../etc/cron.d/x")

    assert "letters, digits and underscores" in message


async def test_a_name_the_platform_sets_is_refused(stack: Stack) -> None:
    """PORT, set by the platform on every dyno, cannot be set as a config var."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")

    message = await refused(alice, "PORT")

    assert "set by the platform" in message
