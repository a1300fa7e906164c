"""Releases: listing, info, rollback refusals, and the builder's release.create command.

Rollbacks that reach registry-proxy are in test_rollback.py (with a real registry).
"""

from __future__ import annotations

from typing import Any

import pytest

from slipway.contracts.base import encode
from slipway.contracts.gateway import RELEASE_CREATE, CreateRelease
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, Stack

pytestmark = pytest.mark.integration

DIGEST = "sha256:" + "ab" * 32
PROCFILE = {"web": "python -m http.server $PORT", "worker": "python worker.py"}


async def deploy(
    stack: Stack,
    api: Api,
    app: dict[str, Any],
    version: int,
    *,
    digest: str = DIGEST,
    process_types: dict[str, str] | None = None,
) -> CreateRelease:
    """Do what the builder does after a build, and wait for release `version`."""
    command = CreateRelease(
        app_id=app["id"],
        image_ref=f"registry.local/{app['name']}@{digest}",
        image_digest=digest,
        process_types=PROCFILE if process_types is None else process_types,
        actor=api.email,
    )
    await stack.bus.send(RELEASE_CREATE, command)

    async def released() -> None:
        releases = await api.ok("GET", f"/apps/{app['name']}/releases")
        assert releases[-1]["version"] == version

    await assert_eventually(released)
    return command


async def test_build_command_makes_a_release(stack: Stack) -> None:
    """gateway.release.create records the image and process types as the next release."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    await deploy(stack, alice, app, 2)
    release = await alice.ok("GET", "/apps/hello/releases/2")
    assert release["description"] == "Deploy " + "ab" * 6
    assert release["image"]["digest"] == DIGEST
    assert release["process_types"] == PROCFILE
    assert release["user"]["email"] == alice.email
    assert release["current"] is True and release["status"] == "succeeded"


async def test_build_command_is_idempotent(stack: Stack) -> None:
    """The same command delivered twice makes one release."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    command = await deploy(stack, alice, app, 2)
    # Past JetStream's duplicate window a redelivery gets a new message id: same command id.
    await stack.bus.publish_persistent(RELEASE_CREATE.subject, encode(command), msg_id="again")
    await deploy(stack, alice, app, 3, digest="sha256:" + "cd" * 32)
    versions = [r["version"] for r in await alice.ok("GET", "/apps/hello/releases")]
    assert versions == [1, 2, 3]


async def test_release_created_event_carries_the_formation(stack: Stack) -> None:
    """release.created names the image, process types and the desired formation."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    await deploy(stack, alice, app, 2)

    async def published() -> None:
        events = [e for e in await stack.events("release") if e["version"] == 2]
        assert events, "no release.created for v2"
        assert events[0]["image_digest"] == DIGEST
        assert {(f["type"], f["quantity"]) for f in events[0]["formation"]} == {
            ("web", 1),
            ("worker", 0),
        }

    await assert_eventually(published)


async def test_info_by_version_id_and_v_prefix(stack: Stack) -> None:
    """A release is found by its number, "v<number>" or its id."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    first = await alice.ok("GET", "/apps/hello/releases/1")
    assert (await alice.ok("GET", "/apps/hello/releases/v1"))["id"] == first["id"]
    assert (await alice.ok("GET", f"/apps/hello/releases/{first['id']}"))["version"] == 1


async def test_unknown_release_is_not_found(stack: Stack) -> None:
    """A version the app does not have answers 404."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    answer = await alice.get("/apps/hello/releases/99")
    assert answer.status == 404
    assert answer.error_id == "not_found"


async def test_rollback_to_unknown_release_is_not_found(stack: Stack) -> None:
    """Rolling back to a release that does not exist answers 404 and makes no release."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    assert (await alice.post("/apps/hello/releases", {"release": "7"})).status == 404
    assert len(await alice.ok("GET", "/apps/hello/releases")) == 1


async def test_viewer_cannot_roll_back(stack: Stack) -> None:
    """A viewer gets 403 rolling back."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    await stack.join(alice, "acme", bob, "viewer")
    await stack.app(alice, "hello", team="acme")
    assert (await bob.post("/apps/hello/releases", {"release": "1"})).status == 403
