"""Rollback reaches only what exists: the real gateway asks the real registry-proxy.

The registry keeps the images of the last `rollback_window` releases (2 here). A
rollback to a release whose image was collected, or to one made before the app's
first build, is refused with 422 before anything changes: same releases, same
formation, same desired state (what the scheduler turns into dynos). A rollback to
an image that still exists works, inside the window or not, and keeps the formation.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest

from slipway.contracts.gateway import DESIRED_GET, RELEASE_CREATE, CreateRelease, GetDesired
from slipway.contracts.registry import IMAGES_LIST, ListImages
from slipway.libs.bus import Bus
from slipway.services.registry_proxy.client import DockerAuth, docker_auth
from slipway.services.registry_proxy.settings import RegistryProxySettings
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, Stack
from tests.registry_proxy.conftest import (
    BusFactory,
    PushedImage,
    RegistryHttp,
    RunningRegistry,
    start_registry,
)

pytestmark = pytest.mark.integration

WINDOW = 2
PROCFILE = {"web": "python -m http.server $PORT", "worker": "python worker.py"}


@dataclass
class Registry:
    """registry-proxy on the stack's bus, and a builder's push credential for one app."""

    running: RunningRegistry
    http: RegistryHttp
    builder: Bus

    async def push(self, app_id: str, tag: str) -> tuple[DockerAuth, PushedImage]:
        """Push a small image of its own to the app's repository, as the builder would."""
        auth = await docker_auth(self.builder, app_id, "push")
        return auth, await self.http.push_image(auth, tag, b"layer-" + uuid.uuid4().bytes * 64)

    async def tags(self, app_id: str) -> set[str]:
        listed = await self.builder.call(IMAGES_LIST, ListImages(app_id=app_id))
        return {image.tag for image in listed.images}


@pytest.fixture
async def registry(stack: Stack, bus_factory: BusFactory) -> AsyncIterator[Registry]:
    """The real registry-proxy (and Distribution) with a rollback window of two releases."""
    settings = RegistryProxySettings(
        nats_url=stack.nats.url,
        home=str(stack.home),
        registry_port=0,
        registry_gc_delay_s=0.0,
        shutdown_grace=10.0,
        rollback_window=WINDOW,
    )
    running = await start_registry(settings)
    http = RegistryHttp(running.address)
    try:
        yield Registry(running, http, await bus_factory("builder"))
    finally:
        await http.close()
        await running.stop()


@dataclass
class Deployed:
    """An app "hello" with releases v1 (no image) and v2..v4 running images a, b, c."""

    api: Api
    app: dict[str, Any]
    images: dict[str, PushedImage]


async def deploy(stack: Stack, api: Api, app: dict[str, Any], ref: str, version: int) -> None:
    """Do what the builder does after a build, and wait for release `version`."""
    digest = ref.rsplit("@", 1)[1]
    command = CreateRelease(
        app_id=app["id"], image_ref=ref, image_digest=digest, process_types=PROCFILE
    )
    await stack.bus.send(RELEASE_CREATE, command)

    async def released() -> None:
        releases = await api.ok("GET", f"/apps/{app['name']}/releases")
        assert releases[-1]["version"] == version

    await assert_eventually(released)


async def deploy_three(stack: Stack, registry: Registry, *, scale: int = 2) -> Deployed:
    """v2 runs a, then web is scaled to `scale`, v3 runs b, v4 runs c."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    images: dict[str, PushedImage] = {}
    for version, tag in enumerate("abc", start=2):
        auth, images[tag] = await registry.push(app["id"], tag)
        await deploy(stack, alice, app, f"{auth.repository}@{images[tag].digest}", version)
        if version == 2:
            await alice.ok("PATCH", "/apps/hello/formation/web", {"quantity": scale})

    async def v4_pruned() -> None:
        # Only v4's prune gets here: before it c is unreleased (kept) and a still in the window.
        assert await registry.tags(app["id"]) == {"b", "c"}

    await assert_eventually(v4_pruned, timeout=30)
    return Deployed(alice, app, images)


@dataclass(frozen=True)
class Snapshot:
    """Everything a refused rollback must leave as it was."""

    releases: list[Any]
    formation: list[Any]
    desired: bytes


async def snapshot(stack: Stack, scheduler: Bus, deployed: Deployed) -> Snapshot:
    api = deployed.api
    desired = await scheduler.call(DESIRED_GET, GetDesired(app_id=deployed.app["id"]))
    return Snapshot(
        releases=await api.ok("GET", "/apps/hello/releases"),
        formation=await api.ok("GET", "/apps/hello/formation"),
        desired=msgspec.json.encode(desired),
    )


def quantities(formation: list[dict[str, Any]]) -> dict[str, int]:
    return {row["type"]: row["quantity"] for row in formation}


async def test_rollback_to_a_collected_image_is_refused_and_changes_nothing(
    stack: Stack, registry: Registry, bus_factory: BusFactory
) -> None:
    """v2's image left the window and was deleted: 422, and the app runs v4, web=2, as before."""
    deployed = await deploy_three(stack, registry)  # a is deleted by now
    scheduler = await bus_factory("scheduler")
    before = await snapshot(stack, scheduler, deployed)

    answer = await deployed.api.post("/apps/hello/releases", {"release": "v2"})
    assert answer.status == 422, answer.body
    assert answer.error_id == "invalid_params"
    assert answer.body["message"].startswith("Cannot roll back to v2: its image (sha256:")
    assert "no longer in the registry" in answer.body["message"]

    assert await snapshot(stack, scheduler, deployed) == before
    assert quantities(before.formation) == {"web": 2, "worker": 0}
    assert before.releases[-1]["version"] == 4


async def test_rollback_to_a_release_without_an_image_is_refused_and_changes_nothing(
    stack: Stack, registry: Registry, bus_factory: BusFactory
) -> None:
    """v1 was made before the first build: rolling back to it would stop every dyno; 422."""
    deployed = await deploy_three(stack, registry)
    scheduler = await bus_factory("scheduler")
    before = await snapshot(stack, scheduler, deployed)
    assert before.releases[0]["eligible_for_rollback"] is False  # so the CLI skips it

    answer = await deployed.api.post("/apps/hello/releases", {"release": "1"})
    assert answer.status == 422, answer.body
    assert answer.error_id == "invalid_params"
    assert "made before the app's first build" in answer.body["message"]

    assert await snapshot(stack, scheduler, deployed) == before
    assert quantities(before.formation) == {"web": 2, "worker": 0}


async def test_rollback_within_the_window_keeps_the_formation(
    stack: Stack, registry: Registry
) -> None:
    """Back to v3 (image b, still kept): v5 runs b with v3's config, and web stays at 2."""
    deployed = await deploy_three(stack, registry)
    rolled = await deployed.api.ok("POST", "/apps/hello/releases", {"release": "v3"}, status=201)
    assert (rolled["version"], rolled["description"]) == (5, "Rollback to v3")
    assert rolled["image"]["digest"] == deployed.images["b"].digest
    formation = await deployed.api.ok("GET", "/apps/hello/formation")
    assert quantities(formation) == {"web": 2, "worker": 0}

    async def announced_with_web_2() -> None:
        events = [e for e in await stack.events("release") if e["version"] == 5]
        assert events and {(f["type"], f["quantity"]) for f in events[0]["formation"]} == {
            ("web", 2),
            ("worker", 0),
        }

    await assert_eventually(announced_with_web_2)


async def test_rollback_outside_the_window_works_while_its_image_exists(
    stack: Stack, registry: Registry
) -> None:
    """v4 went back to v2's image a and v5 runs c: v2 is outside the window (v4, v5) but a
    is kept, so rolling back to v2 works; v3's b was collected, so v3 is refused."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    digests: dict[str, str] = {}
    for version, tag in ((2, "a"), (3, "b")):
        auth, image = await registry.push(app["id"], tag)
        digests[tag] = image.digest
        await deploy(stack, alice, app, f"{auth.repository}@{image.digest}", version)
    await alice.ok("POST", "/apps/hello/releases", {"release": "v2"}, status=201)  # v4: a
    auth, c = await registry.push(app["id"], "c")
    await deploy(stack, alice, app, f"{auth.repository}@{c.digest}", 5)

    async def b_deleted() -> None:
        assert await registry.tags(app["id"]) == {"a", "c"}

    await assert_eventually(b_deleted, timeout=30)
    rolled = await alice.ok("POST", "/apps/hello/releases", {"release": "v2"}, status=201)
    assert (rolled["version"], rolled["image"]["digest"]) == (6, digests["a"])
    refused = await alice.post("/apps/hello/releases", {"release": "v3"})
    assert refused.status == 422, refused.body


async def test_rollback_to_the_previous_image_restores_image_and_config(
    stack: Stack, registry: Registry
) -> None:
    """POST /releases {release: 3} makes "Rollback to v3" with v3's image and config."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    auth, old = await registry.push(app["id"], "old")
    await deploy(stack, alice, app, f"{auth.repository}@{old.digest}", 2)
    await alice.ok("PATCH", "/apps/hello/config-vars", {"MODE": "old"})  # v3
    auth, new = await registry.push(app["id"], "new")
    await deploy(stack, alice, app, f"{auth.repository}@{new.digest}", 4)
    await alice.ok("PATCH", "/apps/hello/config-vars", {"MODE": "new"})  # v5
    rolled = await alice.ok("POST", "/apps/hello/releases", {"release": "3"}, status=201)
    assert (rolled["version"], rolled["description"]) == (6, "Rollback to v3")
    assert rolled["image"]["digest"] == old.digest
    assert await alice.ok("GET", "/apps/hello/config-vars") == {"MODE": "old"}


async def test_an_app_never_built_rolls_back_its_config(stack: Stack) -> None:
    """Before any build nothing runs, so going back to v1 only brings its config back."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"MODE": "x"})  # v2
    rolled = await alice.ok("POST", "/apps/hello/releases", {"release": "v1"}, status=201)
    assert rolled["version"] == 3
    assert await alice.ok("GET", "/apps/hello/config-vars") == {}


async def test_rollback_while_the_registry_is_away_is_refused_and_changes_nothing(
    stack: Stack,
) -> None:
    """Without registry-proxy nobody can say the image exists: 503, and no release is made."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    for version, byte in ((2, "ab"), (3, "cd")):
        ref = f"127.0.0.1:5000/apps/{app['id']}@sha256:{byte * 32}"
        await deploy(stack, alice, app, ref, version)
    answer = await alice.post("/apps/hello/releases", {"release": "v2"})
    assert answer.status == 503, answer.body
    assert "nothing was changed" in answer.body["message"]
    assert [r["version"] for r in await alice.ok("GET", "/apps/hello/releases")] == [1, 2, 3]
