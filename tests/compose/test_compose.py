"""The platform as containers (compose/): image, cluster, every service, scaling, a push
served through the router, a node lost.

One deployment for the whole module, under its own Compose project, scope, ports and state
folder, so it runs beside `scripts/up` and other tests; it is removed at the end whatever
happened (containers, volumes, networks, the scope's Docker objects and iptables chains).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from slipway.contracts.scheduler import LABEL_APP
from slipway.contracts.scope import Scope
from slipway.contracts.subjects import Service
from slipway.services.builder.firewall import chain_names
from tests.conftest import assert_eventually, new_scope, remove_scope_objects
from tests.e2e.supervised import free_port
from tests.gateway.gitclient import git, push_url

pytestmark = [
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
NODES = ("nats-1", "nats-2", "nats-3")
ACCEPT = "application/vnd.heroku+json; version=3"
UP_TIMEOUT = 240.0  # seconds a compose-up may take, image build included


@dataclass
class Deployment:
    """A running compose deployment and how to reach it."""

    project: str
    state: Path
    api_port: int
    scope: Scope
    env: dict[str, str] = field(default_factory=dict)
    router_port: int = 0
    registry_port: int = 0

    def script(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(ROOT / "scripts" / name), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=UP_TIMEOUT,
            check=False,
        )

    def compose(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                "docker-compose",
                "--project-name",
                self.project,
                "--file",
                str(ROOT / "compose" / "docker-compose.yml"),
                "--env-file",
                str(self.state / "compose.env"),
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def container(self, service: str) -> str:
        found = self.compose("ps", "-q", service).stdout.split()
        assert len(found) == 1, (service, found)
        return found[0]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def token(self) -> str:
        creds = json.loads((self.state / "cli" / "credentials.json").read_text())
        token: str = creds["token"]
        return token


def _remove_project(project: str) -> None:
    """Whatever Compose made for `project`, found by its label: a failed `down` leaves none."""
    label = f"label=com.docker.compose.project={project}"
    for listing, remove in (
        (["ps", "-aq"], ["rm", "-f", "-v"]),
        (["volume", "ls", "-q"], ["volume", "rm", "-f"]),
        (["network", "ls", "-q"], ["network", "rm"]),
    ):
        ids = subprocess.run(
            ["docker", *listing, "--filter", label], capture_output=True, text=True, check=False
        ).stdout.split()
        if ids:
            subprocess.run(["docker", *remove, *ids], capture_output=True, check=False)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """scripts/compose-up under a project, scope and ports of its own; removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("compose-up hands secrets to the services' uids: needs root")
    # scripts/install.sh installs it: missing is a broken set-up, not a reason to skip.
    assert shutil.which("docker-compose"), "docker-compose is missing: run scripts/install.sh"
    scope = new_scope()
    project = f"slipway-test-{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in ("API", "ROUTER", "ROUTER_HTTPS", "REGISTRY")}
    state = tmp_path_factory.mktemp("compose") / "state"
    env = {
        **os.environ,
        "SLIPWAY_COMPOSE_PROJECT": project,
        "SLIPWAY_COMPOSE_HOME": str(state),
        "SLIPWAY_SCOPE": scope.name,
        "SLIPWAY_UP_TIMEOUT": "180",
        **{f"SLIPWAY_COMPOSE_{name}_PORT": str(port) for name, port in ports.items()},
        "SLIPWAY_COMPOSE_NATS_NET": _free_loopback_net(),
    }
    deployed = Deployment(
        project,
        state,
        ports["API"],
        scope,
        env,
        router_port=ports["ROUTER"],
        registry_port=ports["REGISTRY"],
    )
    try:
        up = deployed.script("compose-up")
        assert up.returncode == 0, up.stdout + up.stderr
        yield deployed
    finally:
        down = deployed.script("compose-down", "--purge")
        _remove_project(project)
        remove_scope_objects(scope)
        _remove_host_network_objects(scope)
        shutil.rmtree(state, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr


def _free_loopback_net() -> str:
    """A loopback /24 whose .1 to .3 are free on the nodes' port (compose/: x-host-bus)."""
    for _ in range(20):
        net = f"127.{secrets.randbelow(254) + 1}.{secrets.randbelow(256)}"
        try:
            for node in (1, 2, 3):
                with socket.socket() as sock:
                    sock.bind((f"{net}.{node}", 4222))
        except OSError:
            continue
        return net
    raise AssertionError("no loopback /24 with port 4222 free on .1 to .3")


def _remove_host_network_objects(scope: Scope) -> None:
    """The build network and the iptables chains (with their jumps) the builder and
    network-wirer made on the host for this scope: they outlive the containers on purpose."""
    subprocess.run(
        ["docker", "network", "rm", scope.build_network], capture_output=True, check=False
    )
    inbound, forward = chain_names(scope.build_network)
    for parent, chain in (("INPUT", scope.chain), ("INPUT", inbound), ("DOCKER-USER", forward)):
        listing = subprocess.run(
            ["iptables", "-S", parent], capture_output=True, text=True, check=False
        ).stdout
        for line in listing.splitlines():
            words = line.split()
            if words[:2] == ["-A", parent] and words[-2:] == ["-j", chain]:
                subprocess.run(["iptables", "-D", *words[1:]], capture_output=True, check=False)
        for flag in ("-F", "-X"):
            subprocess.run(["iptables", flag, chain], capture_output=True, check=False)


def _remove_app_objects(deployed: Deployment, app_id: str) -> None:
    """What the platform made on the engine for one app, should destroying it leave any."""
    dynos = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={LABEL_APP}={app_id}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if dynos:
        subprocess.run(["docker", "rm", "-f", *dynos], capture_output=True, check=False)
    network = deployed.scope.network(app_id)
    subprocess.run(["docker", "network", "rm", network], capture_output=True, check=False)
    # Built here (labelled by the builder) or pulled from the registry by the scheduler.
    images: set[str] = set()
    for wanted in (
        f"label=slipway.app={app_id}",
        f"reference=127.0.0.1:{deployed.registry_port}/apps/{app_id}",
    ):
        listing = subprocess.run(
            ["docker", "images", "-q", "--filter", wanted],
            capture_output=True,
            text=True,
            check=False,
        )
        images.update(listing.stdout.split())
    if images:
        subprocess.run(["docker", "rmi", "-f", *images], capture_output=True, check=False)
    subprocess.run(
        ["docker", "volume", "rm", "-f", f"slipway-build-cache-{app_id}"],
        capture_output=True,
        check=False,
    )


async def _status(session: aiohttp.ClientSession, deployed: Deployment) -> dict[str, Any]:
    async with session.get(f"{deployed.api}/admin/status") as response:
        assert response.status == 200, await response.text()
        status: dict[str, Any] = await response.json()
        return status


def _instances(status: dict[str, Any], service: str) -> int:
    return sum(1 for seen in status["instances"] if seen["service"] == service)


def _session(deployed: Deployment) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        headers={"Authorization": f"Bearer {deployed.token}", "Accept": ACCEPT}
    )


async def test_every_service_answers_through_the_monitor(deployment: Deployment) -> None:
    """Once up, the monitor's status lists an instance of every service and none missing."""
    async with _session(deployment) as session:

        async def all_seen() -> None:
            status = await _status(session, deployment)
            seen = {instance["service"] for instance in status["instances"]}
            assert seen == EVERY_SERVICE, (sorted(EVERY_SERVICE - seen), status["problems"])
            assert status["missing"] == []

        await assert_eventually(all_seen, timeout=120, interval=1.0)


def test_streams_are_replicated_on_three_nodes(deployment: Deployment) -> None:
    """The provisioner made the CMD, EVT and DLQ streams with three replicas."""
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
    assert replicas == {"CMD": 3, "EVT": 3, "DLQ": 3}


async def test_an_app_and_its_config_through_the_api(deployment: Deployment) -> None:
    """An app is created and a config var set and read back (gateway, keyring, the bus)."""
    name = f"c{uuid.uuid4().hex[:10]}"
    async with _session(deployment) as session:
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
    async with _session(deployment) as session:

        async def three() -> None:
            assert _instances(await _status(session, deployment), "builder") == 3

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
    async with _session(deployment) as session:
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
            async with session.delete(f"{deployment.api}/apps/{name}"):
                pass
            await asyncio.to_thread(_remove_app_objects, deployment, app_id)


def _node_serving(deployment: Deployment, client: str) -> str:
    """The container of the nats-server node `client` (a service) is connected to."""
    for node in NODES:
        container = deployment.container(node)
        connz = subprocess.run(
            ["docker", "exec", container, "curl", "-fsS", "http://127.0.0.1:8222/connz?limit=1024"],
            capture_output=True,
            text=True,
            check=True,
        )
        names = [c.get("name", "") for c in json.loads(connz.stdout)["connections"] or []]
        if any(name.startswith(f"{client}-") for name in names):
            return container
    raise AssertionError(f"no node serves {client}")


async def test_the_api_answers_with_one_node_killed(deployment: Deployment) -> None:
    """With the gateway's own nats-server node killed, config changes still go through the
    bus (it reconnects to another node) and the replicated streams."""
    name = f"k{uuid.uuid4().hex[:10]}"
    node = await asyncio.to_thread(_node_serving, deployment, str(Service.GATEWAY))
    killed = await asyncio.to_thread(
        subprocess.run, ["docker", "kill", node], capture_output=True, text=True, check=False
    )
    assert killed.returncode == 0, killed.stderr
    async with _session(deployment) as session:
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
