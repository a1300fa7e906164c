"""`slipway webhooks*` and `admin:webhooks*` against the real gateway and monitor webhooks."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack, gateway_service, stack
from tests.log_shipper.conftest import slipway
from tests.webhooks.conftest import Monitors, Receiver, hooks_of, signed_by

pytestmark = pytest.mark.integration

__all__ = ["gateway_service", "stack"]  # fixtures


async def test_webhooks_add_list_deliveries_remove(
    stack: Stack, monitors: Monitors, receiver: Receiver, tmp_path: Path
) -> None:
    """The secret the CLI makes is printed once and signs; deliveries show; remove works."""
    monitor = await monitors.start()
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "clihooks")
    added = await slipway(
        alice, tmp_path, "webhooks:add", "-a", "clihooks", "-u", receiver.url(), "-i", "alert"
    )
    assert added.code == 0, added.err
    secret = re.search(r"^([0-9a-f]{64})$", added.out, re.M)
    assert secret is not None, added.out
    listed = await slipway(alice, tmp_path, "webhooks", "-a", "clihooks")
    assert receiver.url() in listed.out and secret.group(1) not in listed.out
    hook_id = re.search(r"Added webhook (\S+) ", added.out)
    assert hook_id is not None
    await hooks_of(monitor).notify(app["id"], "alert", "fire", {"metric": "crashed_dynos"})

    async def delivered() -> None:
        shown = await slipway(alice, tmp_path, "webhooks:deliveries", "-a", "clihooks")
        assert "succeeded" in shown.out and "204" in shown.out, shown.out

    await assert_eventually(delivered, timeout=20, interval=0.3)
    assert signed_by(secret.group(1), receiver.posts[0])
    removed = await slipway(alice, tmp_path, "webhooks:remove", hook_id.group(1), "-a", "clihooks")
    assert removed.code == 0, removed.err
    assert "has no webhooks" in (await slipway(alice, tmp_path, "webhooks", "-a", "clihooks")).out


async def test_a_refused_url_exits_non_zero_with_one_line(
    stack: Stack, monitors: Monitors, tmp_path: Path
) -> None:
    """The guard's reason, on one line, and a non-zero exit."""
    await monitors.start(egress_allow="")
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "clirefused")
    url = "https://169.254.169.254/latest/meta-data/"
    refused = await slipway(
        alice, tmp_path, "webhooks:add", "-a", "clirefused", "-u", url, "-i", "alert"
    )
    assert refused.code != 0
    assert "link-local" in refused.err and len(refused.err.strip().splitlines()) == 1, refused.err


async def test_admin_webhooks_are_for_platform_admins(
    stack: Stack, monitors: Monitors, receiver: Receiver, tmp_path: Path
) -> None:
    """admin:webhooks:add works for the platform admin and is refused to a customer."""
    await monitors.start()
    alice = await stack.user("alice@example.com")
    args = ("admin:webhooks:add", "-u", receiver.url(), "-i", "alert", "-s", "ops-secret-1")
    assert (await slipway(alice, tmp_path, *args)).code != 0
    made = await slipway(stack.admin, tmp_path, *args)
    assert made.code == 0, made.err
    listed = await slipway(stack.admin, tmp_path, "admin:webhooks")
    assert receiver.url() in listed.out and "ops-secret-1" not in listed.out


async def test_config_set_is_delivered_as_an_api_release_event(
    stack: Stack, monitors: Monitors, receiver: Receiver, tmp_path: Path
) -> None:
    """`config:set` through the real gateway: its release reaches the webhook, never the value."""
    await monitors.start()
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "released")
    added = await slipway(
        alice, tmp_path, "webhooks:add", "-a", "released", "-u", receiver.url(), "-i",
        "api:release", "-s", "release-secret",
    )  # fmt: skip
    assert added.code == 0, added.err
    canary = "value-that-must-not-leave-" + tmp_path.name
    done = await slipway(alice, tmp_path, "config:set", "-a", "released", f"GREETING={canary}")
    assert done.code == 0, done.err

    def delivered() -> None:
        assert [p.json()["resource"] for p in receiver.posts] == ["release"], receiver.posts

    await assert_eventually(delivered, timeout=20)
    post = receiver.posts[0]
    assert signed_by("release-secret", post)
    body = post.json()
    assert body["action"] == "create" and body["data"]["app"]["name"] == "released"
    assert "GREETING" in body["data"]["description"] and canary.encode() not in post.body
    assert body["actor"]["email"] == "alice@example.com"
