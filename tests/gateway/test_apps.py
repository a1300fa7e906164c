"""Apps: create, list, info, rename, maintenance, delete, and who may see them."""

from __future__ import annotations

import sqlite3

import pytest

from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack

pytestmark = pytest.mark.integration

BAD_NAMES = [
    "../etc",
    "a/b",
    "hello;rm -rf /",
    "$(reboot)",
    "`id`",
    "héllo",
    "һello",
    "Hello",
    "ab",
    "1abc",
    "-abc",
    "a" * 31,
    "app name",
    "app\x00",
    "app\n",
    "",
]


def app_rows(stack: Stack) -> list[str]:
    db = sqlite3.connect(stack.home / "gateway" / "gateway.db")
    try:
        return [row[0] for row in db.execute("SELECT name FROM apps")]
    finally:
        db.close()


async def test_create_app_answers_heroku_shape(stack: Stack) -> None:
    """POST /apps answers 201 with the app in the caller's personal team."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    assert app["name"] == "hello"
    assert app["team"]["name"] == "alice"
    assert app["owner"]["email"] == alice.email
    assert app["maintenance"] is False
    assert app["web_url"] == "http://hello.localhost:8080/"
    assert app["git_url"].endswith("/hello.git")


async def test_create_app_makes_release_v1(stack: Stack) -> None:
    """A new app has one release: v1 "Initial release"."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    releases = await alice.ok("GET", "/apps/hello/releases")
    assert [(r["version"], r["description"]) for r in releases] == [(1, "Initial release")]


async def test_create_app_without_a_name_gets_one(stack: Stack) -> None:
    """POST /apps with no name picks a valid one."""
    alice = await stack.user("alice@example.com")
    app = await alice.ok("POST", "/apps", {}, status=201)
    assert app["name"].startswith("app-")


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_bad_app_names_are_refused_and_nothing_is_stored(stack: Stack, name: str) -> None:
    """Names with paths, shell characters, unicode or the wrong length answer 422."""
    answer = await stack.admin.post("/apps", {"name": name})
    assert answer.status == 422
    assert answer.error_id == "invalid_params"
    assert "lowercase letter" in answer.body["message"]
    assert app_rows(stack) == []


async def test_duplicate_name_is_taken(stack: Stack) -> None:
    """An app name used by any team answers 422 "Name is already taken"."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await stack.app(alice, "hello")
    answer = await bob.post("/apps", {"name": "hello"})
    assert answer.status == 422
    assert answer.body == {"id": "invalid_params", "message": "Name is already taken."}


async def test_list_shows_only_your_teams_apps(stack: Stack) -> None:
    """GET /apps lists the apps of the caller's teams, not others'."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await stack.app(alice, "alice-app")
    await stack.app(bob, "bob-app")
    assert [a["name"] for a in await alice.ok("GET", "/apps")] == ["alice-app"]
    assert [a["name"] for a in await bob.ok("GET", "/apps")] == ["bob-app"]


async def test_info_by_name_or_id(stack: Stack) -> None:
    """GET /apps/{app} takes the name or the id."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    assert (await alice.ok("GET", f"/apps/{app['id']}"))["name"] == "hello"
    assert (await alice.ok("GET", "/apps/hello"))["id"] == app["id"]


async def test_other_teams_app_is_not_found(stack: Stack) -> None:
    """A user of team A gets 404 (not 403) for team B's app, everywhere."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await stack.app(alice, "hello")
    for method, path, body in [
        ("GET", "/apps/hello", None),
        ("PATCH", "/apps/hello", {"maintenance": True}),
        ("DELETE", "/apps/hello", None),
        ("GET", "/apps/hello/config-vars", None),
        ("PATCH", "/apps/hello/config-vars", {"A": "b"}),
        ("GET", "/apps/hello/releases", None),
        ("GET", "/apps/hello/releases/1", None),
        ("POST", "/apps/hello/releases", {"release": "1"}),
        ("GET", "/apps/hello/formation", None),
        ("GET", "/apps/hello/audit", None),
    ]:
        answer = await bob.request(method, path, body)
        assert answer.status == 404, (method, path, answer.body)
        assert answer.body == {"id": "not_found", "message": "Couldn't find that app."}


async def test_create_in_a_team_you_are_not_in_is_not_found(stack: Stack) -> None:
    """POST /apps naming someone else's team answers 404 for the team."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    answer = await bob.post("/apps", {"name": "sneaky", "team": "acme"})
    assert answer.status == 404
    assert app_rows(stack) == []


async def test_viewer_cannot_create_apps_in_the_team(stack: Stack) -> None:
    """A viewer gets 403 creating an app in the team."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    await stack.join(alice, "acme", bob, "viewer")
    answer = await bob.post("/apps", {"name": "viewed", "team": "acme"})
    assert answer.status == 403


async def test_rename(stack: Stack) -> None:
    """PATCH {name} renames; the old name is then unknown."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    renamed = await alice.ok("PATCH", "/apps/hello", {"name": "goodbye"})
    assert (renamed["id"], renamed["name"]) == (app["id"], "goodbye")
    assert (await alice.get("/apps/hello")).status == 404


async def test_rename_to_a_bad_name_is_refused(stack: Stack) -> None:
    """PATCH with an invalid name answers 422 and keeps the old name."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    assert (await alice.patch("/apps/hello", {"name": "../x"})).status == 422
    assert (await alice.get("/apps/hello")).status == 200


async def test_maintenance_mode(stack: Stack) -> None:
    """PATCH {maintenance: true} switches maintenance on and emits the event."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    assert (await alice.ok("PATCH", "/apps/hello", {"maintenance": True}))["maintenance"] is True

    async def published() -> None:
        events = await stack.events("app")
        flips = [e for e in events if e["type"] == "maintenance.changed.v1"]
        assert flips and flips[0]["app_id"] == app["id"] and flips[0]["maintenance"] is True

    await assert_eventually(published)


async def test_delete(stack: Stack) -> None:
    """DELETE answers the app, then it is gone and app.destroyed is published."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    assert (await alice.ok("DELETE", "/apps/hello"))["id"] == app["id"]
    assert (await alice.get("/apps/hello")).status == 404

    async def published() -> None:
        kinds = [e["type"] for e in await stack.events("app") if e["app_id"] == app["id"]]
        assert kinds == ["app.created.v1", "app.destroyed.v1"]

    await assert_eventually(published)


async def test_members_cannot_delete_apps(stack: Stack) -> None:
    """A member may deploy but not delete: 403."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    await stack.join(alice, "acme", bob, "member")
    await stack.app(alice, "hello", team="acme")
    assert (await bob.delete("/apps/hello")).status == 403
    assert (await bob.ok("GET", "/apps/hello"))["name"] == "hello"
