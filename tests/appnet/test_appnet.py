"""App networks: a /27 (by default) from Slipway's pool each, one per app however many ask."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import re
import uuid
from collections.abc import AsyncIterator

import aiodocker
import pytest

from slipway.contracts.scope import Scope
from slipway.libs.appnet import (
    DEFAULT_SUBNET_PREFIX,
    NetworkPoolExhausted,
    ensure_app_network,
    free_subnet,
    parse_pool,
    used_subnets,
)

net = ipaddress.IPv4Network


def test_the_first_free_subnet_of_the_pool_is_chosen() -> None:
    """Taken subnets, overlapping larger ranges and ranges off the pool are skipped."""
    taken = {net("10.210.0.0/23"), net("10.210.2.0/24"), net("10.210.3.0/28"), net("10.9.0.0/27")}
    assert free_subnet("10.210.0.0/16", taken) == net("10.210.3.32/27")
    assert free_subnet("10.210.0.0/16", taken, 24) == net("10.210.4.0/24")
    # A gap between two taken ranges, and one only partly covered by a smaller network.
    gap = {net("10.210.0.0/27"), net("10.210.0.64/26"), net("10.210.0.40/29")}
    assert free_subnet("10.210.0.0/16", gap) == net("10.210.0.128/27")
    assert free_subnet("10.210.0.0/16", gap - {net("10.210.0.40/29")}) == net("10.210.0.32/27")


def test_a_full_pool_says_which_setting_to_change() -> None:
    with pytest.raises(NetworkPoolExhausted, match="SLIPWAY_APP_NETWORK_POOL"):
        free_subnet("10.210.0.0/23", {net("10.210.0.0/24"), net("10.210.1.0/24")})
    with pytest.raises(NetworkPoolExhausted):  # a taken range holding the whole pool
        free_subnet("10.210.0.0/16", {net("10.0.0.0/8")})


def test_two_thousand_apps_with_one_dyno_each_fit_in_one_host_s_default_pool() -> None:
    """The default /16 holds 2,048 distinct /27s; the 2,049th app is refused, saying why."""
    pool = Scope().pool
    taken: set[ipaddress.IPv4Network] = set()
    for _ in range(2048):
        subnet = free_subnet(pool, taken)
        assert subnet.prefixlen == DEFAULT_SUBNET_PREFIX
        assert subnet.subnet_of(net(pool))
        assert subnet not in taken
        taken.add(subnet)
    ordered = sorted(taken)
    assert len(ordered) == 2048
    # Sorted and each ending before the next begins: no two overlap.
    for one, after in itertools.pairwise(ordered):
        assert one.broadcast_address < after.network_address
    with pytest.raises(NetworkPoolExhausted) as refused:
        free_subnet(pool, taken)
    assert str(refused.value) == (
        "no free /27 left in 10.210.0.0/16 for another app network on this host: its 2048"
        " app subnets are taken by apps with containers here. Scale an app to zero to free"
        " one, or set SLIPWAY_APP_NETWORK_POOL to a larger range (or"
        " SLIPWAY_APP_SUBNET_PREFIX to a longer prefix)"
    )
    # One app scaled to zero frees its subnet: the next app gets exactly that one.
    freed = ordered[1234]
    assert free_subnet(pool, taken - {freed}) == freed


@pytest.mark.parametrize(
    ("pool", "prefix", "says"),
    [
        ("10.210.0.0/16", 23, "SLIPWAY_APP_SUBNET_PREFIX 23 is out of range"),
        ("10.210.0.0/16", 30, "SLIPWAY_APP_SUBNET_PREFIX 30 is out of range"),
        ("10.210.0.0/28", 27, "smaller than one app subnet (/27"),
        ("10.210.1.0/16", 27, "is not an IPv4 range"),
        ("fd00::/64", 27, "is not an IPv4 range"),
        ("not a pool", 27, "is not an IPv4 range"),
    ],
)
def test_a_pool_or_subnet_size_that_cannot_work_is_refused(
    pool: str, prefix: int, says: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        parse_pool(pool, prefix)


def test_a_pool_of_exactly_one_subnet_is_accepted() -> None:
    assert parse_pool("10.210.0.0/29", 29) == net("10.210.0.0/29")
    assert free_subnet("10.210.0.0/29", set(), 29) == net("10.210.0.0/29")


def test_subnets_are_read_from_docker_network_listings() -> None:
    listing: list[dict[str, object]] = [
        {"IPAM": {"Config": [{"Subnet": "172.17.0.0/16", "Gateway": "172.17.0.1"}]}},
        {"IPAM": {"Config": None}},
        {"IPAM": {"Config": [{"Subnet": "fd00::/64"}]}},
    ]
    assert used_subnets(listing) == {net("172.17.0.0/16")}


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    async with aiodocker.Docker() as client:
        yield client


@pytest.mark.docker
async def test_concurrent_creators_make_one_network_in_the_pool(
    docker: aiodocker.Docker, scope: Scope
) -> None:
    """The scheduler and network-wirer asking together get the same single network."""
    app_id = uuid.uuid4().hex
    name = scope.network(app_id)
    try:
        names = await asyncio.gather(
            *(ensure_app_network(docker, app_id, scope=scope) for _ in range(4))
        )
        assert set(names) == {name}
        found = [n for n in await docker.networks.list() if n["Name"] == name]
        assert len(found) == 1
        subnet = ipaddress.ip_network(found[0]["IPAM"]["Config"][0]["Subnet"])
        assert subnet.subnet_of(net(scope.pool))  # type: ignore[arg-type]
    finally:
        with contextlib.suppress(aiodocker.DockerError):
            await (await docker.networks.get(name)).delete()
