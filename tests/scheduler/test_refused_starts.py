"""A dyno a host cannot start moves to another host, and the user sees why (#18 item 4).

Fresh dynos (a scale-up) are tried a few times on the refusing host, then moved; a new
release's dyno moves at once (the old one keeps serving meanwhile), so the release
succeeds on the hosts that can run it.

A real second engine in its own network namespace (tests/dockerhosts.py) that has never
seen the app's image, whose registry address (`127.0.0.1:9`, nobody listening) is its
own loopback: every pull there is refused, as h2's was in the issue. The main engine
has the image under that name already, so it never pulls.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from slipway.contracts import scheduler as sc
from slipway.contracts.registry import CREDENTIALS_ISSUE, Credentials, IssueCredentials
from tests.conftest import assert_eventually
from tests.dockerhosts import DockerHost, extra_docker_hosts
from tests.scheduler.conftest import Cluster
from tests.scheduler.test_deploys import deploy_events
from tests.scheduler.test_dynos import new_app, settled
from tests.scheduler.test_release_failures import Lines, dyno_changes

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

NOWHERE = "127.0.0.1:9"  # a registry address nobody listens on, in any namespace
MOVED = "Could not start on host h2: its image could not be pulled there (3 attempts);"


@pytest.fixture(scope="module")
def bare_host() -> Iterator[DockerHost]:
    """An extra engine with no image at all, torn down (namespace and all) after the module."""
    with extra_docker_hosts(1) as hosts:
        yield hosts[0]


@pytest.fixture
def registry_image(sched_image: str) -> Iterator[str]:
    """The test image, named as if it came from a registry, on the main engine only."""
    name = f"{NOWHERE}/apps/{uuid.uuid4().hex[:12]}:v1"
    subprocess.run(["docker", "tag", sched_image, name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["docker", "rmi", name], check=False, capture_output=True)


@pytest.fixture
async def refusing(cluster: Cluster, bare_host: DockerHost) -> AsyncIterator[Cluster]:
    """The cluster's scheduler with pull credentials for NOWHERE, and h2 cleaned afterwards."""

    async def credentials(request: IssueCredentials) -> Credentials:
        return Credentials(
            registry=NOWHERE,
            repository=f"{NOWHERE}/apps/{request.app_id}",
            username="u",
            password="p",
            expires_at=0.0,
        )

    await cluster.bus.serve(CREDENTIALS_ISSUE, credentials)
    await cluster.start()
    try:
        yield cluster
    finally:
        await cluster.stop()
        await asyncio.to_thread(remove_dynos, bare_host)


def remove_dynos(host: DockerHost) -> None:
    """Whatever dyno a test left on the module's engine (so the next test starts clean)."""
    ids = subprocess.run(
        ["docker", "-H", host.socket, "ps", "-aq", "--filter", "label=org.slipway.app"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.split()
    if ids:
        subprocess.run(["docker", "-H", host.socket, "rm", "-f", *ids], check=False)


@pytest.fixture
async def lines() -> AsyncIterator[Lines]:
    """The app's platform lines, as the log-shipper receives them."""
    following = Lines()
    try:
        yield following
    finally:
        await following.close()


async def add_h2(cluster: Cluster, host: DockerHost) -> None:
    await cluster.bus.call(
        sc.HOSTS_ADD,
        sc.AddHost(id="h2", endpoint=host.socket, address=host.address, memory_mb=8192),
        timeout=10,
    )


async def test_a_dyno_h2_cannot_pull_ends_on_main_and_the_log_says_why(
    refusing: Cluster, bare_host: DockerHost, registry_image: str, lines: Lines
) -> None:
    """web=2 over main and h2: the dyno placed on h2 fails three pulls, then runs on main."""
    cluster = refusing
    await cluster.bus.call(
        sc.HOSTS_ADD,
        sc.AddHost(id="main", endpoint="unix:///var/run/docker.sock", memory_mb=8192),
        timeout=10,
    )
    await add_h2(cluster, bare_host)
    app = new_app()
    await lines.follow(cluster.bus, app)
    await cluster.gateway.release(app, 1, {"web": 2}, image=registry_image)
    dynos = await settled(cluster, app, {"web": 2}, 1, timeout=90)
    assert {d.host_id for d in dynos} == {"main"}

    changes = await dyno_changes(cluster.bus, app)
    crashed = [(name, reason) for name, state, reason in changes if state == "crashed"]
    (moved,) = {name for name, _ in crashed}  # one dyno was placed on h2 and refused there
    assert [reason for _, reason in crashed] == [
        "Could not start on host h2: its image could not be pulled there"
        " (attempt 1 of 3 there); next attempt in 0.5 s",
        "Could not start on host h2: its image could not be pulled there"
        " (attempt 2 of 3 there); next attempt in 1 s",
        f"{MOVED} moving it to another host",
    ]
    said = (
        f"heroku[{moved}]: Starting on host main"
        " (could not start on host h2: its image could not be pulled there)"
    )
    assert said in lines.texts(), lines.texts()
    # The engine's own error names the registry's address: never in what the user reads.
    everything = " ".join([*lines.texts(), *(reason for _, _, reason in changes)])
    assert NOWHERE not in everything


async def test_with_no_other_host_the_dyno_is_listed_crashed_and_retried_with_backoff(
    refusing: Cluster, bare_host: DockerHost, registry_image: str
) -> None:
    """Only h2: web.1 stays listed `crashed` (no container), tried again and again, and
    scaling to zero takes it away."""
    cluster = refusing
    await add_h2(cluster, bare_host)
    app = new_app()
    await cluster.gateway.release(app, 1, {"web": 1}, image=registry_image)

    async def retried_past_the_move() -> list[str]:
        reasons = [r for _, state, r in await dyno_changes(cluster.bus, app) if state == "crashed"]
        assert len(reasons) >= 5, reasons
        return reasons

    reasons = await assert_eventually(retried_past_the_move, timeout=90, interval=0.5)
    assert reasons[2] == (
        "Could not start on host h2: its image could not be pulled there;"
        " no other host can take it, next attempt in 2 s"
    )
    assert reasons[3].endswith("no other host can take it, next attempt in 4 s")
    (listed,) = await cluster.dynos(app)
    assert (listed.name, listed.state, listed.host_id) == ("web.1", "crashed", "h2")
    assert listed.container_id is None

    await cluster.gateway.scale(app, {"web": 0})

    async def gone() -> None:
        assert await cluster.dynos(app) == []
        changes = await dyno_changes(cluster.bus, app)
        assert ("web.1", "down", "Scaled down") in changes

    await assert_eventually(gone, timeout=30, interval=0.3)


def tag(source: str, name: str) -> None:
    subprocess.run(["docker", "tag", source, name], check=True, capture_output=True)


def untag(name: str) -> None:
    subprocess.run(["docker", "rmi", name], check=False, capture_output=True)


async def test_a_new_release_s_dyno_h2_refuses_runs_on_main_and_the_release_succeeds(
    refusing: Cluster, bare_host: DockerHost, registry_image: str, lines: Lines
) -> None:
    """v1 on main, then h2 joins and v2 rolls: the v2 dyno placed on h2 cannot be pulled
    there, goes to main at once, and v2 is released (not failed)."""
    cluster = refusing
    await cluster.bus.call(
        sc.HOSTS_ADD,
        sc.AddHost(id="main", endpoint="unix:///var/run/docker.sock", memory_mb=8192),
        timeout=10,
    )
    app = new_app()
    await lines.follow(cluster.bus, app)
    await cluster.gateway.release(app, 1, {"web": 2}, image=registry_image)
    await settled(cluster, app, {"web": 2}, 1)
    await add_h2(cluster, bare_host)
    v2 = registry_image.rsplit(":", 1)[0] + ":v2"
    await asyncio.to_thread(tag, registry_image, v2)
    try:
        await cluster.gateway.release(app, 2, {"web": 2}, image=v2)
        dynos = await settled(cluster, app, {"web": 2}, 2, timeout=90)
        assert {d.host_id for d in dynos} == {"main"}

        async def released() -> None:
            events = await deploy_events(cluster.bus, app)
            assert [(e.release_version, e.status) for e in events] == [
                (1, "succeeded"),
                (2, "succeeded"),
            ], events

        await assert_eventually(released, timeout=30, interval=0.3)
        moved = [
            text
            for text in lines.texts()
            if text.endswith(
                ": Could not start v2 on host h2: its image could not be pulled there;"
                " starting it on another host"
            )
        ]
        assert len(moved) == 1, lines.texts()
        assert moved[0].startswith("heroku[web.")
    finally:
        await asyncio.to_thread(untag, v2)
