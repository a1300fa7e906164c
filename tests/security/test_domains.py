"""Custom domains: no IP literals, no platform names, one app per hostname across all teams.

Each test adds hostile hostnames through the real gateway (real NATS and keyring)
and checks the 422 the customer reads and what the app ends up holding.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import Api, Stack

pytestmark = pytest.mark.integration

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
gateway_service = gateway_fixtures.gateway_service
stack = gateway_fixtures.stack

TAKEN = "already in use by another app"


async def custom_hostnames(api: Api, app: str) -> list[str]:
    domains = await api.ok("GET", f"/apps/{app}/domains")
    return [d["hostname"] for d in domains if d["kind"] == "custom"]


@pytest.mark.parametrize(
    "hostname",
    [
        *("1.2.3.4", "127.0.0.1", "169.254.169.254", "10.0.0.1.", "127.1", "0x7f.0x0.0x0.0x1"),
        *("[::1]", "::1", "0x7f000001", "2130706433"),
    ],
)
async def test_an_ip_literal_is_refused(stack: Stack, hostname: str) -> None:
    """An IP address in any form a resolver reads answers 422 and is not added."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")

    answer = await alice.post("/apps/hello/domains", {"hostname": hostname})

    assert answer.status == 422, answer.body
    assert answer.error_id == "invalid_params"
    assert await custom_hostnames(alice, "hello") == []


async def test_an_ip_literal_is_named_as_such(stack: Stack) -> None:
    """The refusal of a dotted IP says it is an IP address, not a hostname."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")

    answer = await alice.post("/apps/hello/domains", {"hostname": "127.0.0.1"})

    assert "is an IP address, not a hostname" in answer.body["message"]


@pytest.mark.parametrize("hostname", ["localhost", "api.localhost", "a.b.localhost"])
async def test_a_platform_base_domain_name_is_refused(stack: Stack, hostname: str) -> None:
    """The apps domain and names under it are the platform's: 422."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")

    answer = await alice.post("/apps/hello/domains", {"hostname": hostname})

    assert answer.status == 422, answer.body
    assert "platform's own" in answer.body["message"]
    assert await custom_hostnames(alice, "hello") == []


async def test_another_app_s_default_hostname_is_refused(stack: Stack) -> None:
    """Alice cannot take bob's app's default hostname (`<app>.<apps domain>`)."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await stack.app(alice, "hello")
    await stack.app(bob, "bobshop")

    answer = await alice.post("/apps/hello/domains", {"hostname": "bobshop.localhost"})

    assert answer.status == 422, answer.body
    assert await custom_hostnames(alice, "hello") == []


async def test_a_hostname_of_another_team_s_app_is_refused(stack: Stack) -> None:
    """A hostname bob's team holds answers 422 to alice, naming neither bob's app nor team."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await stack.app(alice, "hello")
    await stack.app(bob, "bobshop")
    await bob.ok("POST", "/apps/bobshop/domains", {"hostname": "shop.example.com"}, 201)

    answer = await alice.post("/apps/hello/domains", {"hostname": "Shop.Example.com."})

    assert answer.status == 422, answer.body
    assert TAKEN in answer.body["message"]
    assert "bob" not in answer.body["message"]
    assert await custom_hostnames(alice, "hello") == []
    assert await custom_hostnames(bob, "bobshop") == ["shop.example.com"]


async def test_two_teams_adding_one_hostname_at_once_get_one_owner(stack: Stack) -> None:
    """Racing adds of one hostname by two teams: one 201, one 422, one owner."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await stack.app(alice, "hello")
    await stack.app(bob, "bobshop")
    body = {"hostname": "race.example.com"}

    answers = await asyncio.gather(
        *(
            api.post(f"/apps/{app}/domains", body)
            for _ in range(5)
            for api, app in ((alice, "hello"), (bob, "bobshop"))
        )
    )

    assert sorted(a.status for a in answers) == [201] + [422] * 9, [a.body for a in answers]
    owners = [await custom_hostnames(alice, "hello"), await custom_hostnames(bob, "bobshop")]
    assert sorted(owners) == [[], ["race.example.com"]]


@pytest.mark.parametrize(
    "hostname", ["db.internal", "printer.local", "1.0.0.127.in-addr.arpa", "x.y.localhost"]
)
async def test_a_special_use_name_is_refused(stack: Stack, hostname: str) -> None:
    """Names under .internal, .local, .arpa or .localhost answer 422: they are no public site."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")

    answer = await alice.post("/apps/hello/domains", {"hostname": hostname})

    assert answer.status == 422, answer.body
    assert await custom_hostnames(alice, "hello") == []
