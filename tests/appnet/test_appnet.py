"""App networks: a /24 from Slipway's pool each, one network per app however many ask at once."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import uuid
from collections.abc import AsyncIterator

import aiodocker
import pytest

from slipway.contracts.scope import Scope
from slipway.libs.appnet import (
    NetworkPoolExhausted,
    ensure_app_network,
    free_subnet,
    used_subnets,
)

net = ipaddress.IPv4Network


def test_the_first_free_subnet_of_the_pool_is_chosen() -> None:
    """Taken /24s and overlapping larger ranges are skipped."""
    taken = {net("10.210.0.0/23"), net("10.210.2.0/24")}
    assert free_subnet("10.210.0.0/16", taken) == net("10.210.3.0/24")


def test_a_full_pool_says_which_setting_to_change() -> None:
    with pytest.raises(NetworkPoolExhausted, match="SLIPWAY_APP_NETWORK_POOL"):
        free_subnet("10.210.0.0/23", {net("10.210.0.0/24"), net("10.210.1.0/24")})


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
