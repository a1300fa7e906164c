"""The builders' network: made once, whatever number of builders start together."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiodocker
import pytest

from slipway.services.builder.container import ensure_network

pytestmark = [pytest.mark.docker, pytest.mark.integration]


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    client = aiodocker.Docker()
    yield client
    await client.close()


async def named(docker: aiodocker.Docker, name: str) -> list[str]:
    return sorted(n["Id"] for n in await docker.networks.list() if n["Name"] == name)


async def remove_all(docker: aiodocker.Docker, name: str) -> None:
    for ident in await named(docker, name):
        await (await docker.networks.get(ident)).delete()


async def test_builders_that_made_duplicates_keep_one_network(docker: aiodocker.Docker) -> None:
    """Two networks of one name (two builders raced): every builder keeps the lowest id."""
    name = f"slipway-test-builds-{uuid.uuid4().hex[:8]}"
    try:
        for _ in range(2):  # the engine takes a second network of the same name
            await docker.networks.create({"Name": name, "Driver": "bridge"})
        both = await named(docker, name)
        assert len(both) == 2
        await ensure_network(docker, name)
        assert await named(docker, name) == both[:1]
    finally:
        await remove_all(docker, name)


async def test_builders_starting_together_end_with_one_network(docker: aiodocker.Docker) -> None:
    """Four builders ensuring the network at once: one network is left, usable by name."""
    name = f"slipway-test-builds-{uuid.uuid4().hex[:8]}"
    try:
        await asyncio.gather(*(ensure_network(docker, name) for _ in range(4)))
        (kept,) = await named(docker, name)
        assert (await (await docker.networks.get(name)).show())["Id"] == kept
    finally:
        await remove_all(docker, name)
