"""network-wirer's `Networks`: makes no app network, firewalls the ones that exist and the
bridges of every known app, and drops the rules of what is gone (real Docker, real iptables)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import aiodocker
import pytest

from slipway.contracts.scheduler import Dyno
from slipway.contracts.scope import Scope
from slipway.libs import appnet
from slipway.services.network_wirer.networks import Isolation, Networks
from tests.conftest import assert_eventually, remove_scope_objects
from tests.e2e.test_scopes import chain_rules
from tests.network_wirer.conftest import RunningWirer, World
from tests.network_wirer.test_isolation import remove_chain

pytestmark = [pytest.mark.docker, pytest.mark.integration]

LOCAL = "unix:///var/run/docker.sock"


@pytest.fixture
async def networks(scope: Scope) -> AsyncIterator[Networks]:
    """network-wirer's networks and firewall for this test's scope, as its app.py builds them."""
    made = Networks([LOCAL], Isolation((18080, 18443), scope), scope)
    try:
        yield made
    finally:
        await made.close()
        await asyncio.to_thread(remove_scope_objects, scope)
        await remove_chain(scope.chain)


async def names(docker: aiodocker.Docker, scope: Scope) -> list[str]:
    listed = await docker.networks.list(filters={"label": [scope.managed_label]})
    return sorted(str(n["Name"]) for n in listed)


async def firewalled(scope: Scope) -> set[str]:
    """The bridges the scope's chain has rules for (each has its three)."""
    rules = await chain_rules(scope.chain)
    bridges = [rule.split(" -i ", 1)[1].split()[0] for rule in rules]
    assert all(bridges.count(b) == 3 for b in bridges), rules
    return set(bridges)


async def test_networks_are_firewalled_from_before_they_exist_until_their_app_is_gone(
    networks: Networks, scope: Scope
) -> None:
    """Known apps' bridges are in the chain with no network; a new one joins, a removed one
    leaves unless its app is known; no pass of network-wirer makes a network."""
    known, newcomer = uuid.uuid4().hex, uuid.uuid4().hex
    async with aiodocker.Docker(url=LOCAL) as docker:
        await networks.sync([known])
        assert await names(docker, scope) == []  # lazy: the scheduler makes them
        assert await firewalled(scope) == {scope.bridge(known)}

        # An app the gateway did not list yet gets its first dyno: the scheduler's network
        # is firewalled by the sync a DYNO_CHANGED triggers, before the periodic pass.
        await appnet.ensure_app_network(docker, newcomer, scope=scope)
        await appnet.ensure_app_network(docker, known, scope=scope)
        await networks.sync_isolation()
        assert await firewalled(scope) == {scope.bridge(known), scope.bridge(newcomer)}

        # Both scaled to zero (their networks removed): the newcomer's rules go with its
        # network, the known app's stay for its next network.
        for app_id in (known, newcomer):
            assert await appnet.remove_app_network(docker, app_id, scope)
        await networks.sync([known])
        assert await firewalled(scope) == {scope.bridge(known)}
        assert await names(docker, scope) == []

        # Destroyed: nothing of it is left in the chain.
        await networks.remove(known)
        assert await firewalled(scope) == set()


async def test_a_destroyed_app_s_network_stays_while_a_container_of_it_is_left(
    networks: Networks, scope: Scope
) -> None:
    """network-wirer removes a destroyed app's network only once no container of it is left."""
    app_id = uuid.uuid4().hex
    async with aiodocker.Docker(url=LOCAL) as docker:
        name = await appnet.ensure_app_network(docker, app_id, scope=scope)
        container = await docker.containers.create(
            {
                "Image": "slipway/stack-run:bookworm",
                "Cmd": ["true"],
                "Labels": scope.network_labels(app_id),  # this scope's, this app's
                "HostConfig": {"NetworkMode": name},
            },
            name=scope.container(f"left-{uuid.uuid4().hex[:8]}"),
        )
        await networks.remove(app_id)
        assert await names(docker, scope) == [name]  # a created container would lose it
        await container.delete(force=True)
        await networks.remove(app_id)
        assert await names(docker, scope) == []


async def test_a_new_app_s_first_network_is_firewalled_on_its_dyno_s_starting_event(
    world: World, wirer: RunningWirer, scope: Scope
) -> None:
    """An app the last pass did not know: its worker's `starting` brings its bridge into the
    chain at once (the periodic pass is a minute away here)."""
    known = world.app("known")
    newcomer = uuid.uuid4().hex
    try:
        await wirer.start(manage_networks=True, isolation=True)
        assert await firewalled(scope) == {scope.bridge(known.app_id)}
        async with aiodocker.Docker(url=LOCAL) as docker:
            await appnet.ensure_app_network(docker, newcomer, scope=scope)
        worker = Dyno(
            app_id=newcomer,
            app_name="newcomer",
            team_id="team",
            name="worker.1",
            process_type="worker",
            release_version=1,
            state="starting",
            host_id="local",
        )
        await world.set_dyno(worker)

        async def in_chain() -> None:
            assert await firewalled(scope) == {scope.bridge(known.app_id), scope.bridge(newcomer)}

        await assert_eventually(in_chain, timeout=20)
    finally:
        await wirer.stop()
        await asyncio.to_thread(remove_scope_objects, scope)
        await remove_chain(scope.chain)
