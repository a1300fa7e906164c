"""Accounts, users and API tokens (Heroku's oauth-authorizations)."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from tests.conftest import assert_eventually
from tests.gateway.conftest import Stack

pytestmark = pytest.mark.integration


async def test_account_shows_the_caller(stack: Stack) -> None:
    """GET /account answers the bootstrap admin, a platform admin with a default team."""
    account = await stack.admin.ok("GET", "/account")
    assert account["email"] == "admin@slipway.local"
    assert account["platform_admin"] is True
    assert account["default_team"]["name"] == "admin"


async def test_bootstrap_file_is_private(stack: Stack) -> None:
    """bootstrap.json is readable by its owner only."""
    mode = (stack.home / "gateway" / "bootstrap.json").stat().st_mode & 0o777
    assert mode == 0o600


async def test_no_request_without_a_token(stack: Stack) -> None:
    """Without a bearer token the API answers 401 unauthorized."""
    answer = await stack.anonymous().get("/apps")
    assert answer.status == 401
    assert answer.error_id == "unauthorized"


async def test_unknown_token_is_refused(stack: Stack) -> None:
    """A token the gateway never issued answers 401."""
    answer = await stack.admin.as_token("slp_not-a-real-token").get("/account")
    assert answer.status == 401


async def test_admin_creates_user_with_personal_team(stack: Stack) -> None:
    """POST /users makes a user who owns a personal team, their default."""
    alice = await stack.user("alice@example.com")
    account = await alice.ok("GET", "/account")
    assert account["platform_admin"] is False
    teams = await alice.ok("GET", "/teams")
    assert [(t["name"], t["role"], t["default"]) for t in teams] == [("alice", "owner", True)]


async def test_only_platform_admins_create_users(stack: Stack) -> None:
    """A user who is not a platform admin gets 403 on POST /users."""
    alice = await stack.user("alice@example.com")
    answer = await alice.post("/users", {"email": "mallory@example.com"})
    assert answer.status == 403
    assert answer.error_id == "forbidden"


async def test_duplicate_user_is_refused(stack: Stack) -> None:
    """Registering an email twice answers 422."""
    await stack.user("alice@example.com")
    answer = await stack.admin.post("/users", {"email": "alice@example.com"})
    assert answer.status == 422


async def test_token_is_shown_once(stack: Stack) -> None:
    """The secret comes back on creation only; listings and info show null."""
    created = await stack.admin.ok("POST", "/oauth/authorizations", {"description": "ci"}, 201)
    assert created["access_token"]["token"].startswith("slp_")
    assert 0 < created["access_token"]["expires_in"] <= 30 * 86400
    listed = await stack.admin.ok("GET", "/oauth/authorizations")
    mine = [a for a in listed if a["id"] == created["id"]]
    assert mine and mine[0]["access_token"]["token"] is None
    info = await stack.admin.ok("GET", f"/oauth/authorizations/{created['id']}")
    assert info["description"] == "ci"
    assert info["access_token"]["token"] is None


async def test_new_token_works(stack: Stack) -> None:
    """A created token authenticates as its user."""
    created = await stack.admin.ok("POST", "/oauth/authorizations", {}, 201)
    api = stack.admin.as_token(created["access_token"]["token"])
    assert (await api.ok("GET", "/account"))["email"] == stack.admin.email


async def test_token_is_stored_only_as_a_hash(stack: Stack) -> None:
    """The database holds the token's SHA-256, never the token."""
    created = await stack.admin.ok("POST", "/oauth/authorizations", {}, 201)
    secret = created["access_token"]["token"]
    db = sqlite3.connect(stack.home / "gateway" / "gateway.db")
    hashes = [row[0] for row in db.execute("SELECT token_hash FROM tokens")]
    db.close()
    assert hashlib.sha256(secret.encode()).hexdigest() in hashes
    assert secret not in hashes


async def test_revoked_token_is_refused(stack: Stack) -> None:
    """DELETE /oauth/authorizations/{id} makes the token answer 401 at once."""
    created = await stack.admin.ok("POST", "/oauth/authorizations", {}, 201)
    api = stack.admin.as_token(created["access_token"]["token"])
    await stack.admin.ok("DELETE", f"/oauth/authorizations/{created['id']}")
    answer = await api.get("/account")
    assert answer.status == 401
    assert "revoked" in answer.body["message"]


async def test_expired_token_is_refused(stack: Stack) -> None:
    """A token past its expires_in answers 401."""
    created = await stack.admin.ok("POST", "/oauth/authorizations", {"expires_in": 1}, 201)
    api = stack.admin.as_token(created["access_token"]["token"])

    async def expired() -> None:
        answer = await api.get("/account")
        assert answer.status == 401
        assert "expired" in answer.body["message"]

    await assert_eventually(expired, timeout=5)


async def test_token_lifetime_is_capped(stack: Stack) -> None:
    """expires_in over the maximum answers 422."""
    answer = await stack.admin.post("/oauth/authorizations", {"expires_in": 10 * 365 * 86400})
    assert answer.status == 422


async def test_users_cannot_see_each_others_tokens(stack: Stack) -> None:
    """Another user's authorization id answers 404."""
    alice = await stack.user("alice@example.com")
    created = await stack.admin.ok("POST", "/oauth/authorizations", {}, 201)
    assert (await alice.get(f"/oauth/authorizations/{created['id']}")).status == 404
    assert (await alice.delete(f"/oauth/authorizations/{created['id']}")).status == 404


async def test_invitation_and_its_redemption_are_audited_in_the_users_team(stack: Stack) -> None:
    """The admin's invitation and the user's redemption of it show in the user's team audit."""
    alice = await stack.user("alice@example.com")
    log = await alice.ok("GET", "/teams/alice/audit")
    steps = [(e["action"], e["actor"]) for e in log["entries"] if e["action"].startswith("invit")]
    assert steps == [
        ("invitation.create", stack.admin.email),
        ("invitation.redeem", alice.email),
    ]
