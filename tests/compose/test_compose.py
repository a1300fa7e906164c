"""The platform as containers (compose/): image, cluster, every service, scaling, a push
served through the router, a node lost.

One deployment for the whole module, under its own Compose project, scope, ports and state
folder, so it runs beside `scripts/up` and other tests; it is removed at the end whatever
happened (containers, volumes, networks, the scope's Docker objects and iptables chains).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from slipway.contracts.subjects import Service
from tests.compose.deployed import (
    NODES,
    Deployment,
    deployed,
    destroy_apps,
    gateway_roles,
    instances,
    status,
)
from tests.conftest import assert_eventually
from tests.gateway.gitclient import git, push_url

pytestmark = [
    pytest.mark.alone,
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.docker,
    # Image (cached after the first build), three nodes and ten services on two cores.
    pytest.mark.timeout(420),
]

ROOT = Path(__file__).resolve().parents[2]
# The smallest example a buildpack builds with nothing fetched (no dependencies): the
# build folders, build container, registry, scheduler and router all take part.
EXAMPLE = ROOT / "examples" / "node-hello"
EVERY_SERVICE = {str(service) for service in Service}
# The services that lead through a lease, and how many of each compose runs.
LEASED = {"gateway": 2, "keyring": 2, "scheduler": 2}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """scripts/compose-up under a project, scope and ports of its own; removed at the end."""
    with deployed(tmp_path_factory) as made:
        yield made


async def test_every_service_answers_through_the_monitor(deployment: Deployment) -> None:
    """Once up, the monitor's status lists an instance of every service and none missing."""
    async with deployment.session() as session:

        async def all_seen() -> None:
            now = await status(session, deployment)
            seen = {instance["service"] for instance in now["instances"]}
            assert seen == EVERY_SERVICE, (sorted(EVERY_SERVICE - seen), now["problems"])
            assert now["missing"] == []

        await assert_eventually(all_seen, timeout=120, interval=1.0)


def test_streams_are_replicated_on_three_nodes(deployment: Deployment) -> None:
    """The provisioner made the CMD, EVT and DLQ streams and the leases' bucket with three
    replicas."""
    jsz = subprocess.run(
        [
            "docker",
            "exec",
            deployment.container(NODES[1]),
            "curl",
            "-fsS",
            "http://127.0.0.1:8222/jsz?streams=true&config=true",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    replicas = {
        stream["name"]: stream["config"]["num_replicas"]
        for account in json.loads(jsz.stdout)["account_details"]
        for stream in account["stream_detail"]
    }
    assert replicas == {"CMD": 3, "EVT": 3, "DLQ": 3, "KV_slipway_leases": 3}


async def test_two_instances_of_each_leased_service_and_the_api_reaches_the_leader(
    deployment: Deployment,
) -> None:
    """Gateway, keyring and scheduler run two containers each; of the gateways one leads and
    one stands by, and the API's load balancer answers with the leader."""
    for service, count in LEASED.items():
        running = await asyncio.to_thread(deployment.containers, service)
        assert len(running) == count, (service, running)

    async def one_leads() -> dict[str, tuple[str, str]]:
        roles = await gateway_roles(deployment)
        assert sorted(role for role, _ in roles.values()) == ["leader", "standby"], roles
        return roles

    roles = await assert_eventually(one_leads, timeout=60, interval=0.5)
    leader = next(instance for role, instance in roles.values() if role == "leader")
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(f"{deployment.api}/healthz") as answer,
    ):
        assert answer.status == 200
        assert await answer.json() == {"role": "leader", "instance": leader}


async def test_an_app_and_its_config_through_the_api(deployment: Deployment) -> None:
    """An app is created and a config var set and read back (gateway, keyring, the bus)."""
    name = f"c{uuid.uuid4().hex[:10]}"
    async with deployment.session() as session:
        async with session.post(f"{deployment.api}/apps", json={"name": name}) as response:
            assert response.status == 201, await response.text()
        url = f"{deployment.api}/apps/{name}/config-vars"
        async with session.patch(url, json={"GREETING": "hello"}) as response:
            assert response.status == 200, await response.text()
        async with session.get(url) as response:
            assert await response.json() == {"GREETING": "hello"}


async def test_three_builders_after_scaling(deployment: Deployment) -> None:
    """compose-up --scale builder=3 runs three builders, each seen by the monitor."""
    scaled = await asyncio.to_thread(deployment.script, "compose-up", "--scale", "builder=3")
    assert scaled.returncode == 0, scaled.stdout + scaled.stderr
    listed = await asyncio.to_thread(deployment.compose, "ps", "-q", "builder")
    assert len(listed.stdout.split()) == 3
    async with deployment.session() as session:

        async def three() -> None:
            assert instances(await status(session, deployment), "builder") == 3

        await assert_eventually(three, timeout=90, interval=1.0)


async def test_a_git_push_is_built_released_and_served_through_the_router(
    deployment: Deployment, tmp_path: Path
) -> None:
    """An example app pushed with git over smart HTTP to the compose gateway is built by a
    builder container, run by the scheduler and answers 200 through the compose router."""
    name = f"p{uuid.uuid4().hex[:10]}"
    tree = tmp_path / "app"
    shutil.copytree(EXAMPLE, tree)
    await git(tree, "init", "-q", "-b", "main")
    await git(tree, "add", "-A")
    assert (await git(tree, "commit", "-q", "-m", "hello")).code == 0
    async with deployment.session() as session:
        async with session.post(f"{deployment.api}/apps", json={"name": name}) as response:
            assert response.status == 201, await response.text()
            app_id = (await response.json())["id"]
        try:
            pushed = await git(
                tree, "push", push_url(deployment.api, name, deployment.token), "main"
            )
            assert pushed.code == 0, pushed.out
            assert "remote: -----> Node.js app detected" in pushed.out, pushed.out
            assert "remote: -----> Released v2" in pushed.out, pushed.out

            async def served() -> None:
                async with aiohttp.ClientSession() as anonymous:
                    url = f"http://127.0.0.1:{deployment.router_port}/"
                    headers = {"Host": f"{name}.localhost"}
                    async with anonymous.get(url, headers=headers) as answer:
                        assert answer.status == 200, (answer.status, await answer.text())
                        assert "Hello from node-hello on web.1" in await answer.text()

            await assert_eventually(served, timeout=120, interval=1.0)
        finally:
            # Destroying the app removes its dynos, images, cache and network; what it
            # might leave is removed by hand.
            await destroy_apps(deployment, {name: app_id})


def _node_serving(deployment: Deployment, client: str) -> str:
    """The container of the nats-server node the connection named `client` is on."""
    for node in NODES:
        container = deployment.container(node)
        connz = subprocess.run(
            ["docker", "exec", container, "curl", "-fsS", "http://127.0.0.1:8222/connz?limit=1024"],
            capture_output=True,
            text=True,
            check=True,
        )
        names = [c.get("name", "") for c in json.loads(connz.stdout)["connections"] or []]
        if client in names:
            return container
    raise AssertionError(f"no node serves {client}")


async def test_the_api_answers_with_one_node_killed(deployment: Deployment) -> None:
    """With the leading gateway's own nats-server node killed, config changes still go
    through the bus (it reconnects to another node) and the replicated streams."""
    name = f"k{uuid.uuid4().hex[:10]}"
    roles = await gateway_roles(deployment)
    leader = next(instance for role, instance in roles.values() if role == "leader")
    node = await asyncio.to_thread(_node_serving, deployment, f"{Service.GATEWAY}-{leader}")
    killed = await asyncio.to_thread(
        subprocess.run, ["docker", "kill", node], capture_output=True, text=True, check=False
    )
    assert killed.returncode == 0, killed.stderr
    async with deployment.session() as session:
        async with session.post(f"{deployment.api}/apps", json={"name": name}) as response:
            assert response.status == 201, await response.text()
        url = f"{deployment.api}/apps/{name}/config-vars"

        async def config_set() -> None:
            async with session.patch(url, json={"AFTER": "kill"}) as response:
                assert response.status == 200, await response.text()
            async with session.get(url) as response:
                assert await response.json() == {"AFTER": "kill"}

        await assert_eventually(config_set, timeout=60, interval=1.0)

        async def releases() -> None:
            # Each config change is a release: the events reach JetStream's replicated EVT.
            async with session.get(f"{deployment.api}/apps/{name}/releases") as response:
                assert response.status == 200
                assert len(await response.json()) >= 2

        await assert_eventually(releases, timeout=60, interval=1.0)
