"""Teams, members and roles."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import Stack

pytestmark = pytest.mark.integration


async def test_create_team_makes_the_caller_owner(stack: Stack) -> None:
    """POST /teams answers 201 and the creator is its owner."""
    alice = await stack.user("alice@example.com")
    team = await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    assert (team["name"], team["role"], team["default"]) == ("acme", "owner", False)
    assert (await alice.ok("GET", "/teams/acme"))["id"] == team["id"]
    assert (await alice.ok("GET", f"/teams/{team['id']}"))["name"] == "acme"
    members = await alice.ok("GET", "/teams/acme/members")
    assert [(m["email"], m["role"]) for m in members] == [("alice@example.com", "owner")]


async def test_team_name_taken(stack: Stack) -> None:
    """A team name already in use answers 422 "Name is already taken"."""
    alice = await stack.user("alice@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    answer = await alice.post("/teams", {"name": "acme"})
    assert answer.status == 422
    assert answer.body["message"] == "Name is already taken."


async def test_invalid_team_name(stack: Stack) -> None:
    """A team name that breaks the rule answers 422 invalid_params."""
    alice = await stack.user("alice@example.com")
    answer = await alice.post("/teams", {"name": "Acme Inc"})
    assert answer.status == 422
    assert answer.error_id == "invalid_params"


async def test_other_teams_are_not_found(stack: Stack) -> None:
    """A user outside a team gets 404 for it, its members and its audit."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    for path in ("/teams/acme", "/teams/acme/members", "/teams/acme/audit"):
        answer = await bob.get(path)
        assert answer.status == 404, path
        assert answer.error_id == "not_found"


async def test_add_member_then_change_role_then_remove(stack: Stack) -> None:
    """PUT adds a member, PATCH changes the role, DELETE removes them."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    added = await alice.ok("PUT", "/teams/acme/members", {"email": bob.email, "role": "viewer"})
    assert added["role"] == "viewer"
    assert [t["role"] for t in await bob.ok("GET", "/teams") if t["name"] == "acme"] == ["viewer"]
    changed = await alice.ok("PATCH", "/teams/acme/members", {"email": bob.email, "role": "member"})
    assert changed["role"] == "member"
    await alice.ok("DELETE", f"/teams/acme/members/{bob.email}")
    assert (await bob.get("/teams/acme")).status == 404


async def test_post_member_twice_is_a_conflict(stack: Stack) -> None:
    """POST /teams/{team}/members for someone already in answers 409."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    await alice.ok("POST", "/teams/acme/members", {"email": bob.email, "role": "member"}, 201)
    answer = await alice.post("/teams/acme/members", {"email": bob.email, "role": "admin"})
    assert answer.status == 409


async def test_unknown_role_is_refused(stack: Stack) -> None:
    """A role other than owner/admin/member/viewer answers 422."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    answer = await alice.put("/teams/acme/members", {"email": bob.email, "role": "god"})
    assert answer.status == 422


async def test_unknown_user_cannot_be_added(stack: Stack) -> None:
    """Adding an email no user has answers 404."""
    alice = await stack.user("alice@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    body = {"email": "nobody@example.com", "role": "member"}
    answer = await alice.put("/teams/acme/members", body)
    assert answer.status == 404


async def test_members_cannot_manage_members(stack: Stack) -> None:
    """A member (not admin or owner) gets 403 when adding someone."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    carol = await stack.user("carol@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    await stack.join(alice, "acme", bob, "member")
    answer = await bob.put("/teams/acme/members", {"email": carol.email, "role": "viewer"})
    assert answer.status == 403
    assert answer.error_id == "forbidden"


async def test_admins_cannot_make_owners(stack: Stack) -> None:
    """An admin gets 403 when granting the owner role."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    carol = await stack.user("carol@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    await stack.join(alice, "acme", bob, "admin")
    answer = await bob.put("/teams/acme/members", {"email": carol.email, "role": "owner"})
    assert answer.status == 403


async def test_last_owner_stays(stack: Stack) -> None:
    """Removing or demoting the only owner answers 409."""
    alice = await stack.user("alice@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    assert (await alice.delete(f"/teams/acme/members/{alice.email}")).status == 409
    answer = await alice.patch("/teams/acme/members", {"email": alice.email, "role": "admin"})
    assert answer.status == 409


async def test_member_changes_are_audited(stack: Stack) -> None:
    """Adding and removing members appends to the team's audit chain."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    await stack.join(alice, "acme", bob, "viewer")
    await alice.ok("DELETE", f"/teams/acme/members/{bob.email}")
    log = await alice.ok("GET", "/teams/acme/audit")
    assert [e["action"] for e in log["entries"]] == ["team.create", "member.add", "member.remove"]
