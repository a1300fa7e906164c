"""A destroyed app leaves nothing on the hosts: its dynos stop, then its images go."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import uuid
from collections.abc import AsyncIterator
from functools import partial

import aiodocker
import pytest

from slipway.contracts import gateway as gw
from tests.conftest import assert_eventually
from tests.scheduler.conftest import Cluster

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]

REGISTRY = "127.0.0.1:5999"  # never contacted: the images are on the hosts already


def _run(*argv: str, stdin: str | None = None) -> None:
    subprocess.run(argv, input=stdin, text=True, check=True, capture_output=True)


async def app_image(socket: str, base: str, app_id: str) -> str:
    """An image of `app_id` on one engine, named and labelled as the builder makes them."""
    ref = f"{REGISTRY}/apps/{app_id}:v1"
    dockerfile = f"FROM {base}\nLABEL slipway.app={app_id}\n"
    await asyncio.to_thread(
        _run, "docker", "-H", socket, "build", "-q", "-t", ref, "-", stdin=dockerfile
    )
    return ref


@contextlib.asynccontextmanager
async def engines(cluster: Cluster) -> AsyncIterator[dict[str, aiodocker.Docker]]:
    """host id → a client of that extra engine."""
    clients = {f"x{i}": aiodocker.Docker(url=host.socket) for i, host in enumerate(cluster.hosts)}
    try:
        yield clients
    finally:
        for docker in clients.values():
            await docker.close()


async def has_image(docker: aiodocker.Docker, ref: str) -> bool:
    try:
        await docker.images.inspect(ref)
    except aiodocker.DockerError as exc:
        if exc.status != 404:
            raise
        return False
    return True


async def up_dynos(cluster: Cluster, app_id: str, count: int) -> None:
    dynos = await cluster.dynos(app_id)
    assert [d.state for d in dynos] == ["up"] * count, dynos


async def test_destroying_an_app_removes_its_dynos_then_its_images(
    cluster: Cluster, sched_image: str
) -> None:
    """Destroy: containers gone, then the app's images on every host; another app's stay."""
    # The other app's id starts with the doomed one's: names must match exactly. (Short
    # ids: an app's bridge is named from its id's first 12 characters.)
    doomed = uuid.uuid4().hex[:10]
    other = doomed + "0"
    await cluster.start()
    await cluster.add_hosts(main=False)
    old = f"{REGISTRY}/apps/{doomed}:old"
    refs: dict[str, str] = {}
    async with engines(cluster) as docker:
        try:
            for app_id in (doomed, other):
                for host in cluster.hosts:
                    refs[app_id] = await app_image(host.socket, sched_image, app_id)
            # An older release's image pulled by name only (no label): its repository says whose.
            await docker["x0"].images.tag(sched_image, f"{REGISTRY}/apps/{doomed}", tag="old")
            for app_id in (doomed, other):
                await cluster.gateway.release(app_id, 1, {"web": 2}, image=refs[app_id])
            for app_id in (doomed, other):
                await assert_eventually(partial(up_dynos, cluster, app_id, 2), timeout=60)
            assert all([await has_image(d, refs[doomed]) for d in docker.values()])

            desired = cluster.gateway.apps.pop(doomed)  # DESIRED_GET no longer lists it
            await cluster.bus.publish(
                gw.APP_DESTROYED,
                gw.AppDestroyed(
                    app_id=doomed, name=desired.app_name, team_id=desired.team_id, actor="test"
                ),
            )

            async def cleaned() -> None:
                assert all(not found for found in (await cluster.containers(doomed)).values())
                for client in docker.values():
                    assert not await has_image(client, refs[doomed])
                    listed = await client.images.list(filters={"label": [f"slipway.app={doomed}"]})
                    assert listed == []
                assert not await has_image(docker["x0"], old)

            await assert_eventually(cleaned, timeout=60, interval=0.2)
            for client in docker.values():
                assert await has_image(client, refs[other])
                assert await has_image(client, sched_image)  # the image the old tag shared
            await up_dynos(cluster, other, 2)
        finally:
            for client in docker.values():
                for ref in (refs.get(doomed), refs.get(other), old):
                    if ref is not None:
                        with contextlib.suppress(aiodocker.DockerError):
                            await client.images.delete(ref, force=True)
