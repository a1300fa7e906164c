"""A compose deployment for a test module: made with scripts/compose-up under a project,
scope, ports and state folder of its own, so it runs beside `scripts/up` and other tests,
and removed whatever happened (containers, volumes, networks, the scope's Docker objects
and iptables chains). Also what the modules share to reach it: the API, git, the bus.
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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NATS

from slipway.contracts.scheduler import LABEL_APP
from slipway.contracts.scope import Scope
from slipway.contracts.subjects import OPERATOR
from slipway.libs.bus.tls import Identity
from slipway.services.builder.firewall import chain_names
from tests.conftest import new_scope, remove_scope_objects
from tests.e2e.supervised import free_port

ROOT = Path(__file__).resolve().parents[2]
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
    nats_net: str = ""
    # Apps the tests destroyed: their leftovers are removed again once nothing runs.
    apps: set[str] = field(default_factory=set)

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

    def containers(self, service: str) -> list[str]:
        """The ids of `service`'s containers, running or not."""
        return self.compose("ps", "-q", service).stdout.split()

    def container(self, service: str) -> str:
        found = self.containers(service)
        assert len(found) == 1, (service, found)
        return found[0]

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def router(self) -> str:
        return f"http://127.0.0.1:{self.router_port}"

    @property
    def token(self) -> str:
        creds = json.loads((self.state / "cli" / "credentials.json").read_text())
        token: str = creds["token"]
        return token

    def session(self) -> aiohttp.ClientSession:
        """A client of the API (through its load balancer) as the admin."""
        return aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {self.token}", "Accept": ACCEPT}
        )

    async def operator_bus(self) -> NATS:
        """A connection to the cluster as the operator, at the nodes' published ports."""
        env = dict(
            line.split("=", 1)
            for line in (self.state / "env" / f"{OPERATOR}.env").read_text().splitlines()
        )
        tls = self.state / "tls" / OPERATOR
        identity = Identity(tls / "ca.pem", tls / f"{OPERATOR}.pem", tls / f"{OPERATOR}.key")
        return await nats.connect(
            servers=[f"tls://{self.nats_net}.{n}:4222" for n in (1, 2, 3)],
            tls=identity.client_context(),
            # The nodes' certificate names them, not the loopback addresses they publish on.
            tls_hostname=NODES[0],
            user=env["SLIPWAY_NATS_USER"],
            password=env["SLIPWAY_NATS_PASSWORD"],
            connect_timeout=5,
            max_reconnect_attempts=3,
        )


@contextmanager
def deployed(
    tmp_path_factory: pytest.TempPathFactory, *up_args: str, **settings: str
) -> Iterator[Deployment]:
    """scripts/compose-up `up_args` with SLIPWAY_COMPOSE_<settings>; removed at the end."""
    if os.geteuid() != 0:
        pytest.skip("compose-up hands secrets to the services' uids: needs root")
    # scripts/install.sh installs it: missing is a broken set-up, not a reason to skip.
    assert shutil.which("docker-compose"), "docker-compose is missing: run scripts/install.sh"
    scope = new_scope()
    project = f"slipway-test-{uuid.uuid4().hex[:8]}"
    ports = {name: free_port() for name in ("API", "ROUTER", "ROUTER_HTTPS", "REGISTRY")}
    state = tmp_path_factory.mktemp("compose") / "state"
    nats_net = _free_loopback_net()
    env = {
        **os.environ,
        "SLIPWAY_COMPOSE_PROJECT": project,
        "SLIPWAY_COMPOSE_HOME": str(state),
        "SLIPWAY_SCOPE": scope.name,
        "SLIPWAY_UP_TIMEOUT": "180",
        **{f"SLIPWAY_COMPOSE_{name}_PORT": str(port) for name, port in ports.items()},
        "SLIPWAY_COMPOSE_NATS_NET": nats_net,
        **{f"SLIPWAY_COMPOSE_{name}": value for name, value in settings.items()},
    }
    deployment = Deployment(
        project,
        state,
        ports["API"],
        scope,
        env,
        router_port=ports["ROUTER"],
        registry_port=ports["REGISTRY"],
        nats_net=nats_net,
    )
    try:
        up = deployment.script("compose-up", *up_args)
        assert up.returncode == 0, up.stdout + up.stderr
        yield deployment
    finally:
        _keep_logs(project)
        down = deployment.script("compose-down", "--purge")
        _remove_project(project)
        remove_scope_objects(scope)
        # Once no scheduler restarts dynos nor builder uses a cache, nothing is in use.
        for app_id in deployment.apps:
            remove_app_objects(deployment, app_id)
        _remove_host_network_objects(scope)
        shutil.rmtree(state, ignore_errors=True)
        assert down.returncode == 0, down.stdout + down.stderr


def _keep_logs(project: str) -> None:
    """Every container's log into $SLIPWAY_TEST_COMPOSE_LOGS/<project>/, when that is set:
    what a failed run leaves to read once its deployment is gone."""
    folder = os.environ.get("SLIPWAY_TEST_COMPOSE_LOGS")
    if not folder:
        return
    target = Path(folder) / project
    target.mkdir(parents=True, exist_ok=True)
    label = f"label=com.docker.compose.project={project}"
    names = subprocess.run(
        ["docker", "ps", "-a", "--filter", label, "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    for name in names:
        with (target / f"{name}.log").open("w") as out:
            subprocess.run(["docker", "logs", name], stdout=out, stderr=out, check=False)


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


def remove_app_objects(deployment: Deployment, app_id: str) -> None:
    """What the platform made on the engine for one app, should destroying it leave any."""
    dynos = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label={LABEL_APP}={app_id}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if dynos:
        subprocess.run(["docker", "rm", "-f", *dynos], capture_output=True, check=False)
    network = deployment.scope.network(app_id)
    subprocess.run(["docker", "network", "rm", network], capture_output=True, check=False)
    # Built here (labelled by the builder) or pulled from the registry by the scheduler,
    # by digest: such an image has no tag, which a `reference` filter would not match.
    listing = subprocess.run(
        ["docker", "images", "-q", "--filter", f"label=slipway.app={app_id}"],
        capture_output=True,
        text=True,
        check=False,
    )
    images = set(listing.stdout.split())
    pulled = f"127.0.0.1:{deployment.registry_port}/apps/{app_id}"
    every = subprocess.run(
        ["docker", "images", "--format", "{{.Repository}} {{.ID}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in every.stdout.splitlines():
        repository, _, image = line.partition(" ")
        if repository == pulled:
            images.add(image)
    if images:
        subprocess.run(["docker", "rmi", "-f", *images], capture_output=True, check=False)
    subprocess.run(
        ["docker", "volume", "rm", "-f", f"slipway-build-cache-{app_id}"],
        capture_output=True,
        check=False,
    )


async def destroy_apps(deployment: Deployment, apps: dict[str, str]) -> None:
    """Destroy the apps (name -> id) through the API, then remove what they might leave.

    Each delete is retried while the API says to (a gateway failing over), for a while.
    """
    deployment.apps.update(apps.values())
    async with deployment.session() as session:
        for name in apps:
            for _ in range(60):
                try:
                    async with session.delete(f"{deployment.api}/apps/{name}") as answer:
                        if answer.status not in (502, 503, 504):
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(1.0)
    for app_id in apps.values():
        await asyncio.to_thread(remove_app_objects, deployment, app_id)


async def status(session: aiohttp.ClientSession, deployment: Deployment) -> dict[str, Any]:
    """The monitor's view of the platform, through the API."""
    async with session.get(f"{deployment.api}/admin/status") as response:
        assert response.status == 200, await response.text()
        seen: dict[str, Any] = await response.json()
        return seen


def instances(seen: dict[str, Any], service: str) -> int:
    """How many instances of `service` the monitor's status lists."""
    return sum(1 for instance in seen["instances"] if instance["service"] == service)


def container_ip(container: str) -> str:
    """`container`'s address on the Compose network (reachable from the host)."""
    inspected = subprocess.run(
        ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", container],
        capture_output=True,
        text=True,
        check=True,
    )
    networks: dict[str, dict[str, str]] = json.loads(inspected.stdout)
    addresses = [network["IPAddress"] for network in networks.values() if network["IPAddress"]]
    assert len(addresses) == 1, (container, networks)
    return addresses[0]


async def gateway_roles(deployment: Deployment) -> dict[str, tuple[str, str]]:
    """Each running gateway container's (role, instance), from its own /healthz."""
    roles: dict[str, tuple[str, str]] = {}
    timeout = aiohttp.ClientTimeout(total=3)
    async with aiohttp.ClientSession(timeout=timeout) as anonymous:
        for container in await asyncio.to_thread(deployment.containers, "gateway"):
            try:
                address = await asyncio.to_thread(container_ip, container)
            except AssertionError:
                continue  # stopped: no address
            try:
                async with anonymous.get(f"http://{address}:5100/healthz") as answer:
                    health = await answer.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError):
                continue  # starting, or not answering yet
            roles[container] = (health["role"], health["instance"])
    return roles
