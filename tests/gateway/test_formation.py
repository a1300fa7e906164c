"""Formation: process types from the current release, scaled and resized."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, Stack
from tests.gateway.test_releases import deploy

pytestmark = pytest.mark.integration


async def deployed(stack: Stack, who: str = "alice@example.com") -> tuple[Api, dict[str, Any]]:
    api = await stack.user(who)
    app = await stack.app(api, "hello")
    await deploy(stack, api, app, 2)
    return api, app


async def test_release_sets_the_process_types(stack: Stack) -> None:
    """After a build the formation has its types: web at 1, others at 0."""
    alice, _ = await deployed(stack)
    formation = await alice.ok("GET", "/apps/hello/formation")
    assert [(f["type"], f["quantity"], f["size"]) for f in formation] == [
        ("web", 1, "standard-1x"),
        ("worker", 0, "standard-1x"),
    ]
    assert formation[0]["command"].startswith("python -m http.server")


async def test_scale_one_type(stack: Stack) -> None:
    """PATCH /formation/{type} sets quantity and size."""
    alice, _ = await deployed(stack)
    web = await alice.ok(
        "PATCH", "/apps/hello/formation/web", {"quantity": 3, "size": "Standard-2X"}
    )
    assert (web["quantity"], web["size"], web["dyno_size"]["name"]) == (
        3,
        "standard-2x",
        "standard-2x",
    )
    assert (await alice.ok("GET", "/apps/hello/formation/web"))["quantity"] == 3


async def test_quantities_sent_as_strings_are_taken_as_heroku_takes_them(stack: Stack) -> None:
    """Heroku's clients send `"quantity": "2"`: accepted; a word instead of a number is 422."""
    alice, _ = await deployed(stack)
    web = await alice.ok("PATCH", "/apps/hello/formation/web", {"quantity": "2"})
    assert web["quantity"] == 2
    batch = await alice.ok(
        "PATCH", "/apps/hello/formation", {"updates": [{"type": "web", "quantity": "3"}]}
    )
    assert [(f["type"], f["quantity"]) for f in batch] == [("web", 3)]
    refused = await alice.request("PATCH", "/apps/hello/formation/web", {"quantity": "two"})
    assert (refused.status, refused.error_id) == (422, "invalid_params"), refused.body
    assert "Expected `int | null`, got `str`" in refused.body["message"], refused.body
    assert (await alice.ok("GET", "/apps/hello/formation/web"))["quantity"] == 3


async def test_batch_update(stack: Stack) -> None:
    """PATCH /formation {updates} changes several types at once and emits the whole formation."""
    alice, app = await deployed(stack)
    changed = await alice.ok(
        "PATCH",
        "/apps/hello/formation",
        {
            "updates": [
                {"type": "web", "quantity": 2},
                {"type": "worker", "quantity": 1, "size": "performance-m"},
            ]
        },
    )
    assert [(f["type"], f["quantity"], f["size"]) for f in changed] == [
        ("web", 2, "standard-1x"),
        ("worker", 1, "performance-m"),
    ]

    async def published() -> None:
        (event,) = await stack.events("formation")
        assert event["app_id"] == app["id"]
        quantities = {(f["type"], f["quantity"]) for f in event["formation"]}
        assert quantities == {("web", 2), ("worker", 1)}

    await assert_eventually(published)


async def test_heroku_dyno_size_object_is_accepted(stack: Stack) -> None:
    """Heroku's `dyno_size: {name}` works as `size` does."""
    alice, _ = await deployed(stack)
    web = await alice.ok("PATCH", "/apps/hello/formation/web", {"dyno_size": {"name": "basic"}})
    assert web["size"] == "basic"


async def test_unknown_process_type_is_not_found(stack: Stack) -> None:
    """Scaling a type the release lacks answers 404 "Couldn't find that process type"."""
    alice, _ = await deployed(stack)
    answer = await alice.patch(
        "/apps/hello/formation",
        {
            "updates": [
                {"type": "web", "quantity": 5},
                {"type": "clock", "quantity": 1},
            ]
        },
    )
    assert answer.status == 404
    assert answer.body["message"].startswith("Couldn't find that process type")
    assert (await alice.ok("GET", "/apps/hello/formation/web"))["quantity"] == 1


async def test_app_without_a_build_has_no_process_types(stack: Stack) -> None:
    """Before any build the formation is empty and scaling web answers 404."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    assert await alice.ok("GET", "/apps/hello/formation") == []
    assert (await alice.patch("/apps/hello/formation/web", {"quantity": 1})).status == 404


@pytest.mark.parametrize("quantity", [-1, 101])
async def test_quantity_out_of_range(stack: Stack, quantity: int) -> None:
    """Quantities outside 0..100 answer 422."""
    alice, _ = await deployed(stack)
    answer = await alice.patch("/apps/hello/formation/web", {"quantity": quantity})
    assert answer.status == 422
    assert "between 0 and 100" in answer.body["message"]


async def test_unknown_size(stack: Stack) -> None:
    """A size not in the table answers 422 listing the sizes."""
    alice, _ = await deployed(stack)
    answer = await alice.patch("/apps/hello/formation/web", {"size": "gigantic"})
    assert answer.status == 422
    assert "standard-1x" in answer.body["message"]


async def test_viewer_cannot_scale(stack: Stack) -> None:
    """A viewer gets 403 scaling."""
    alice, _ = await deployed(stack)
    bob = await stack.user("bob@example.com")
    await stack.join(alice, "alice", bob, "viewer")
    assert (await bob.patch("/apps/hello/formation/web", {"quantity": 2})).status == 403
    assert (await bob.ok("GET", "/apps/hello/formation/web"))["quantity"] == 1


async def test_release_dropping_a_type_drops_it_from_the_formation(stack: Stack) -> None:
    """A later build without `worker` removes worker; web keeps its scale."""
    alice, app = await deployed(stack)
    await alice.ok("PATCH", "/apps/hello/formation/web", {"quantity": 4})
    await deploy(stack, alice, app, 3, process_types={"web": "serve"})
    formation = await alice.ok("GET", "/apps/hello/formation")
    assert [(f["type"], f["quantity"], f["command"]) for f in formation] == [("web", 4, "serve")]
