"""Two installations on one machine (scopes A and B, beside any `scripts/up`) never meet.

Each side runs the real code that lists, creates, firewalls and removes: network-wirer's
`Networks` with its iptables `Isolation`, the scheduler's network creator, and a whole
scheduler service polling the local engine. The default scope's chain (a running
`scripts/up`'s) is compared before and after: nothing here may change it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiodocker
import pytest

from slipway.contracts import scheduler as sc
from slipway.contracts.scope import Scope
from slipway.libs.natsserver import NatsServer
from slipway.services.network_wirer.networks import Isolation, Networks, bridge_of
from slipway.services.scheduler import containers
from slipway.services.scheduler.app import create_service
from slipway.services.scheduler.settings import SchedulerSettings
from tests.conftest import assert_eventually, new_scope, remove_scope_objects

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow, pytest.mark.alone]

LOCAL = "unix:///var/run/docker.sock"
RUN_STACK = "slipway/stack-run:bookworm"
ROUTER_PORTS = (18080, 18443)


async def iptables(*argv: str) -> tuple[int, str]:
    """Run iptables; its exit status and output."""
    process = await asyncio.create_subprocess_exec(
        "iptables",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    out, _ = await process.communicate()
    return process.returncode or 0, out.decode()


async def chain_rules(chain: str) -> list[str]:
    """The `-A` lines of a chain (none when it does not exist)."""
    _, out = await iptables("-S", chain)
    return [line for line in out.splitlines() if line.startswith("-A ")]


async def remove_chain(chain: str) -> None:
    """A test scope's chain and its jump from INPUT (network-wirer leaves both in place)."""
    await iptables("-D", "INPUT", "-j", chain)
    await iptables("-F", chain)
    await iptables("-X", chain)


@pytest.fixture
async def two_scopes() -> AsyncIterator[tuple[Scope, Scope]]:
    """Scopes A and B; whatever either made on the local engine and in iptables goes after."""
    scopes = (new_scope(), new_scope())
    yield scopes
    for scope in scopes:
        await asyncio.to_thread(remove_scope_objects, scope)
        await remove_chain(scope.chain)


def wirer_networks(scope: Scope) -> Networks:
    """network-wirer's app networks and firewall for `scope`, as its app.py builds them."""
    return Networks([LOCAL], Isolation(ROUTER_PORTS, scope), scope)


async def network_of(docker: aiodocker.Docker, scope: Scope, app_id: str) -> dict[str, Any]:
    """The app's network in `scope`, inspected."""
    found: dict[str, Any] = await (await docker.networks.get(scope.network(app_id))).show()
    return found


async def test_same_app_in_two_scopes_gets_two_networks_chains_and_pools(
    two_scopes: tuple[Scope, Scope],
) -> None:
    """Scopes never list, firewall or remove each other's networks, nor the default chain."""
    a, b = two_scopes
    default_before = await chain_rules(Scope().chain)
    app_id = uuid.uuid4().hex  # the same app id in both: only the scope tells them apart
    wirer_a, wirer_b = wirer_networks(a), wirer_networks(b)
    async with aiodocker.Docker(url=LOCAL) as docker:
        try:
            # Each network is made by its scope's scheduler (with the app's first dyno).
            await containers.ensure_network(docker, app_id, a)
            await wirer_a.sync([app_id])
            await containers.ensure_network(docker, app_id, b)
            await wirer_b.sync([app_id])
            net_a, net_b = await network_of(docker, a, app_id), await network_of(docker, b, app_id)
            assert net_a["Id"] != net_b["Id"] and bridge_of(net_a) != bridge_of(net_b)
            for scope, net in ((a, net_a), (b, net_b)):
                assert net["Labels"][sc.LABEL_MANAGED] == scope.managed
                subnet = net["IPAM"]["Config"][0]["Subnet"]
                assert subnet.startswith("10.211."), subnet  # the test scopes' pool
            rules_a, rules_b = await chain_rules(a.chain), await chain_rules(b.chain)
            assert rules_a and all(f"-i {bridge_of(net_a)} " in r for r in rules_a), rules_a
            assert rules_b and all(f"-i {bridge_of(net_b)} " in r for r in rules_b), rules_b

            await wirer_a.remove(app_id)  # app destroyed in A
            with pytest.raises(aiodocker.DockerError):
                await network_of(docker, a, app_id)
            assert (await network_of(docker, b, app_id))["Id"] == net_b["Id"]
            assert await chain_rules(a.chain) == []
            assert await chain_rules(b.chain) == rules_b
            assert await chain_rules(Scope().chain) == default_before
        finally:
            await wirer_a.close()
            await wirer_b.close()


async def bait(docker: aiodocker.Docker, scope: Scope) -> str:
    """A container labelled as `scope`'s but not a runnable dyno: its scheduler removes it."""
    container = await docker.containers.create(
        {
            "Image": RUN_STACK,
            "Cmd": ["true"],
            "Labels": {sc.LABEL_MANAGED: scope.managed, sc.LABEL_APP: uuid.uuid4().hex},
        },
        name=scope.container(f"bait-{uuid.uuid4().hex[:8]}"),
    )
    return container.id


def exists(docker: aiodocker.Docker, ident: str) -> Callable[[], Any]:
    """A check that `ident` is (still) a container."""

    async def check() -> None:
        listed = await docker.containers.list(all=True, filters={"id": [ident]})
        assert [c.id for c in listed] == [ident]

    return check


def gone(docker: aiodocker.Docker, ident: str) -> Callable[[], Any]:
    """A check that `ident` is no longer a container."""

    async def check() -> None:
        assert not await docker.containers.list(all=True, filters={"id": [ident]})

    return check


async def test_a_scheduler_adopts_and_removes_only_its_own_scope(
    two_scopes: tuple[Scope, Scope], nats_server: NatsServer, tmp_path: Path
) -> None:
    """Scope A's scheduler clears A's stale containers and leaves B's alone."""
    a, b = two_scopes
    async with aiodocker.Docker(url=LOCAL) as docker:
        if not await docker.images.list(filter=RUN_STACK):
            pytest.skip(f"{RUN_STACK} is not built (scripts/build-stack)")
        bait_a, bait_b = await bait(docker, a), await bait(docker, b)
        settings = SchedulerSettings(
            nats_url=nats_server.url,
            home=str(tmp_path / "sched-a"),
            scope=a.name,
            poll_interval=0.25,
            shutdown_grace=5.0,
        )
        service = create_service(settings)
        task = asyncio.create_task(service.run(install_signals=False))
        try:
            await asyncio.wait_for(service.started.wait(), 30)
            await assert_eventually(gone(docker, bait_a), timeout=20)
            # One more whole pass of A's monitor after the one that removed bait A.
            later = await bait(docker, a)
            await assert_eventually(gone(docker, later), timeout=20)
            await exists(docker, bait_b)()
        finally:
            service.stop()
            await asyncio.wait_for(task, 30)
        # B's bait was spared for its scope alone: B's own scheduler removes it.
        settings_b = SchedulerSettings(
            nats_url=nats_server.url,
            home=str(tmp_path / "sched-b"),
            scope=b.name,
            poll_interval=0.25,
            shutdown_grace=5.0,
        )
        service = create_service(settings_b)
        task = asyncio.create_task(service.run(install_signals=False))
        try:
            await asyncio.wait_for(service.started.wait(), 30)
            await assert_eventually(gone(docker, bait_b), timeout=20)
        finally:
            service.stop()
            await asyncio.wait_for(task, 30)
