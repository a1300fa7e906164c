"""`current` is right in every listing, and formation quantities survive every release.

The real gateway (and keyring) only: releases are made as the builder makes them
(`gateway.release.create`), config changes and rollbacks through the API, and a failed
deploy is the scheduler's DEPLOY_FINISHED, sent as the scheduler sends it. The current
release is the newest that did not fail, on every page of a ranged listing in either
order and in `GET /apps/{app}/releases/{id or version}`.
"""

from __future__ import annotations

from typing import Any

import pytest

from slipway.contracts import scheduler as sc
from slipway.contracts.gateway import RELEASE_CREATE, CreateRelease
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, Stack
from tests.registry_proxy.conftest import BusFactory

pytestmark = pytest.mark.integration

PROCFILE = {"web": "python -m http.server $PORT", "worker": "python worker.py"}


async def deploy(stack: Stack, api: Api, app: dict[str, Any], tag: str, version: int) -> None:
    """What the builder does after a build (an image of the local engine), then wait for it."""
    command = CreateRelease(
        app_id=app["id"],
        image_ref=f"slipway/app-{tag}",
        image_digest=f"sha256:{tag * 64}",
        process_types=PROCFILE,
    )
    await stack.bus.send(RELEASE_CREATE, command)

    async def released() -> None:
        releases = await api.ok("GET", f"/apps/{app['name']}/releases")
        assert releases[-1]["version"] == version

    await assert_eventually(released)


async def pages(api: Api, path: str, order: str) -> list[list[dict[str, Any]]]:
    """Every page of a listing one release at a time, following Next-Range."""
    found: list[list[dict[str, Any]]] = []
    header: str | None = f"version ..; max=1, order={order}"
    while header is not None:
        answer = await api.request("GET", path, headers={"Range": header})
        assert answer.status in (200, 206), answer
        found.append(answer.body)
        header = answer.headers.get("Next-Range")
    return found


async def assert_current(api: Api, version: int, count: int) -> None:
    """Exactly one release is current, `version`, in the listing, its pages and its info."""
    listed = await api.ok("GET", "/apps/hello/releases")
    assert len(listed) == count
    assert [r["version"] for r in listed if r["current"]] == [version]
    for order in ("asc", "desc"):
        paged = await pages(api, "/apps/hello/releases", order)
        assert len(paged) == count
        flat = [r for page in paged for r in page]
        versions = [r["version"] for r in flat]
        assert versions == sorted(versions, reverse=order == "desc")
        assert [r["version"] for r in flat if r["current"]] == [version], order
    for release in listed:
        for ident in (release["id"], str(release["version"]), f"v{release['version']}"):
            info = await api.ok("GET", f"/apps/hello/releases/{ident}")
            assert info["current"] is (release["version"] == version), (ident, info)


def quantities(formation: list[dict[str, Any]]) -> dict[str, int]:
    return {row["type"]: row["quantity"] for row in formation}


async def test_a_failed_deploy_is_not_current_and_every_release_keeps_web_2(
    stack: Stack, bus_factory: BusFactory
) -> None:
    """v4 fails: v3 stays current everywhere; config:set, deploy and rollback keep web=2."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"A": "1"})  # v2
    await deploy(stack, alice, app, "a", 3)
    await alice.ok("PATCH", "/apps/hello/formation/web", {"quantity": 2})
    await deploy(stack, alice, app, "b", 4)
    await assert_current(alice, 4, 4)

    scheduler = await bus_factory("scheduler")
    failed = sc.DeployFinished(
        app_id=app["id"],
        app_name="hello",
        team_id="",
        release_version=4,
        status="failed",
        phase="boot",
        reason="web.1: Process exited with status 3",
    )
    await scheduler.publish(sc.DEPLOY_FINISHED, failed)

    async def v4_failed() -> None:
        info = await alice.ok("GET", "/apps/hello/releases/v4")
        assert info["status"] == "failed"

    await assert_eventually(v4_failed)
    await assert_current(alice, 3, 4)
    # The same event again (at-least-once delivery) changes nothing.
    await scheduler.publish(sc.DEPLOY_FINISHED, failed)
    await assert_current(alice, 3, 4)
    assert quantities(await alice.ok("GET", "/apps/hello/formation")) == {"web": 2, "worker": 0}

    # A config change builds on the newest release (so it can fix what failed) and is current.
    await alice.ok("PATCH", "/apps/hello/config-vars", {"B": "2"})  # v5
    v5 = await alice.ok("GET", "/apps/hello/releases/v5")
    assert v5["image"]["ref"] == "slipway/app-b"  # v4's image, with the new config
    await assert_current(alice, 5, 5)
    assert quantities(await alice.ok("GET", "/apps/hello/formation")) == {"web": 2, "worker": 0}

    # A rollback's new release is current, and the formation is the one asked for.
    rolled = await alice.ok("POST", "/apps/hello/releases", {"release": "v3"}, status=201)
    assert (rolled["version"], rolled["current"], rolled["description"]) == (
        6,
        True,
        "Rollback to v3",
    )
    await assert_current(alice, 6, 6)
    assert quantities(await alice.ok("GET", "/apps/hello/formation")) == {"web": 2, "worker": 0}

    await deploy(stack, alice, app, "c", 7)
    await assert_current(alice, 7, 7)
    assert quantities(await alice.ok("GET", "/apps/hello/formation")) == {"web": 2, "worker": 0}
