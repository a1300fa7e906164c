"""No operator impersonation: admins cannot act as users, break-glass is time-boxed and visible.

Each test performs the attack against the real gateway + keyring + nats-server
(tests/gateway/conftest.py) and checks what the customer or the operator is told.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import assert_eventually
from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import Api, Stack

pytestmark = pytest.mark.integration

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
gateway_service = gateway_fixtures.gateway_service
stack = gateway_fixtures.stack

SLIPWAY = str(Path(sys.executable).parent / "slipway")
ALICE = "alice@example.com"


async def slipway(
    config_dir: Path, *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run the real `slipway` executable with its own config dir; (exit code, stdout, stderr)."""
    environment = {**os.environ, "SLIPWAY_CONFIG_DIR": str(config_dir), "HOME": str(config_dir)}
    for name in ("SLIPWAY_API_URL", "SLIPWAY_API_KEY", "SLIPWAY_APP", "SLIPWAY_TEAM"):
        environment.pop(name, None)
    environment.update(env or {})
    process = await asyncio.create_subprocess_exec(
        SLIPWAY,
        *args,
        cwd=config_dir,
        env=environment,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin.encode()), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def alice_with_app(stack: Stack) -> Api:
    alice = await stack.user(ALICE)
    await stack.app(alice, "hello")
    return alice


async def grant(stack: Stack, team: str = "alice", **body: Any) -> dict[str, Any]:
    """The platform admin's break-glass grant on `team`."""
    answer = await stack.admin.post(
        f"/teams/{team}/access-grants", {"reason": "INC-42: customer asked", **body}
    )
    assert answer.status == 201, answer.body
    created: dict[str, Any] = answer.body
    return created


# ---- minting tokens for others --------------------------------------------------------------


async def test_admin_cannot_mint_a_token_for_another_user(stack: Stack) -> None:
    """POST /users/{user}/authorizations for someone else is refused (403), no token made."""
    alice = await stack.user(ALICE)
    account = await alice.ok("GET", "/account")
    answer = await stack.admin.post(f"/users/{account['id']}/authorizations", {})
    assert (answer.status, answer.error_id) == (403, "forbidden"), answer.body
    assert "Nobody can create a token for another user" in answer.body["message"]
    assert len(await alice.ok("GET", "/oauth/authorizations")) == 1


async def test_admin_cannot_reinvite_an_existing_user(stack: Stack) -> None:
    """An invitation with the admin's own secret for a user who signed in before is refused."""
    alice = await stack.user(ALICE)
    account = await alice.ok("GET", "/account")
    secret = secrets.token_urlsafe(32)
    verifier = hashlib.sha256(secret.encode()).hexdigest()
    answer = await stack.admin.post(f"/users/{account['id']}/invitations", {"verifier": verifier})
    assert (answer.status, answer.error_id) == (409, "conflict"), answer.body
    assert "only for a new user" in answer.body["message"]
    redeemed = await stack.anonymous().post(
        "/invitations/actions/redeem", {"email": ALICE, "secret": secret}
    )
    assert redeemed.status == 401


async def test_invitation_needs_the_users_secret(stack: Stack) -> None:
    """Knowing the invitation (its verifier) is not enough: only the secret redeems it."""
    user = await stack.admin.ok("POST", "/users", {"email": ALICE}, status=201)
    secret = secrets.token_urlsafe(32)
    verifier = hashlib.sha256(secret.encode()).hexdigest()
    await stack.admin.ok(
        "POST", f"/users/{user['id']}/invitations", {"verifier": verifier}, status=201
    )
    guessed = await stack.anonymous().post(
        "/invitations/actions/redeem", {"email": ALICE, "secret": verifier}
    )
    assert (guessed.status, guessed.error_id) == (401, "unauthorized")
    assert "invitation is not valid" in guessed.body["message"]


async def test_invitation_redeems_once(stack: Stack) -> None:
    """A second redemption of the same invitation is refused."""
    user = await stack.admin.ok("POST", "/users", {"email": ALICE}, status=201)
    secret = secrets.token_urlsafe(32)
    verifier = hashlib.sha256(secret.encode()).hexdigest()
    await stack.admin.ok(
        "POST", f"/users/{user['id']}/invitations", {"verifier": verifier}, status=201
    )
    body = {"email": ALICE, "secret": secret}
    await stack.anonymous().ok("POST", "/invitations/actions/redeem", body, status=201)
    again = await stack.anonymous().post("/invitations/actions/redeem", body)
    assert again.status == 401


# ---- break-glass grants ---------------------------------------------------------------------


async def test_admin_without_a_grant_sees_nothing_of_the_team(stack: Stack) -> None:
    """Without a grant, the team, its app and its audit answer 404 to a platform admin."""
    await alice_with_app(stack)
    for path in ("/teams/alice", "/apps/hello", "/teams/alice/audit", "/apps/hello/config-vars"):
        assert (await stack.admin.get(path)).status == 404, path


async def test_grant_opens_the_team_until_it_expires(stack: Stack) -> None:
    """With a grant the admin reads the app; once it expires, 404 again."""
    await alice_with_app(stack)
    created = await grant(stack, expires_in=2)
    assert (created["role"], created["active"]) == ("viewer", True)
    assert (await stack.admin.get("/apps/hello")).status == 200

    async def expired() -> None:
        assert (await stack.admin.get("/apps/hello")).status == 404

    await assert_eventually(expired)
    assert (await stack.admin.get("/teams/alice/audit")).status == 404


async def test_grant_is_read_only_by_default(stack: Stack) -> None:
    """A default grant is a viewer's: changing config is refused (403)."""
    await alice_with_app(stack)
    await grant(stack)
    answer = await stack.admin.patch("/apps/hello/config-vars", {"X": "1"})
    assert (answer.status, answer.error_id) == (403, "forbidden")


async def test_grant_needs_a_reason(stack: Stack) -> None:
    """A grant without a reason is refused (422) and opens nothing."""
    await alice_with_app(stack)
    answer = await stack.admin.post("/teams/alice/access-grants", {"reason": "  "})
    assert (answer.status, answer.error_id) == (422, "invalid_params")
    assert "reason is required" in answer.body["message"]
    assert (await stack.admin.get("/apps/hello")).status == 404


async def test_grant_never_makes_an_admin(stack: Stack) -> None:
    """Asking for the admin or owner role is refused: a grant cannot add lasting members."""
    await alice_with_app(stack)
    for role in ("admin", "owner"):
        answer = await stack.admin.post("/teams/alice/access-grants", {"reason": "x", "role": role})
        assert (answer.status, answer.error_id) == (422, "invalid_params"), role


async def test_only_platform_admins_ask_for_grants(stack: Stack) -> None:
    """A user who is not a platform admin cannot grant themselves access to another team."""
    await alice_with_app(stack)
    bob = await stack.user("bob@example.com")
    answer = await bob.post("/teams/alice/access-grants", {"reason": "curious"})
    assert (answer.status, answer.error_id) == (403, "forbidden")
    assert (await bob.get("/apps/hello")).status == 404


async def test_grant_is_in_the_teams_audit_at_once(stack: Stack) -> None:
    """The grant's creation is an entry of the team's chain, by the admin, with the reason."""
    alice = await alice_with_app(stack)
    created = await grant(stack)
    log = await alice.ok("GET", "/teams/alice/audit")
    entry = log["entries"][-1]
    assert (entry["action"], entry["actor"]) == ("access_grant.create", stack.admin.email)
    assert entry["details"]["grant_id"] == created["id"]
    assert entry["details"]["reason"] == "INC-42: customer asked"


async def test_grant_shows_in_slipway_audit(stack: Stack, tmp_path: Path) -> None:
    """`slipway audit --team` run by the owner lists the admin's grant and its reason."""
    alice = await alice_with_app(stack)
    await grant(stack)
    config = tmp_path / "cli"
    config.mkdir()
    code, _, err = await slipway(config, "login", "--api-url", stack.url, stdin=alice.token or "")
    assert code == 0, err
    code, out, err = await slipway(config, "audit", "--team", "alice")
    assert code == 0, err
    (line,) = [row for row in out.splitlines() if "access_grant.create" in row]
    assert stack.admin.email in line and "INC-42: customer asked" in line


async def test_grant_shows_in_the_apps_audit_too(stack: Stack, tmp_path: Path) -> None:
    """`slipway audit -a hello` shows the grant: it opens every app of the team."""
    alice = await alice_with_app(stack)
    await grant(stack)
    config = tmp_path / "cli"
    config.mkdir()
    code, _, err = await slipway(config, "login", "--api-url", stack.url, stdin=alice.token or "")
    assert code == 0, err
    code, out, err = await slipway(config, "audit", "-a", "hello")
    assert code == 0, err
    assert [row for row in out.splitlines() if "access_grant.create" in row], out


async def test_owner_lists_and_revokes_a_grant(stack: Stack) -> None:
    """The owner sees the active grant, revokes it, and the admin is shut out at once."""
    alice = await alice_with_app(stack)
    created = await grant(stack)
    listed = await alice.ok("GET", "/teams/alice/access-grants")
    assert [(g["id"], g["user"]["email"], g["active"]) for g in listed] == [
        (created["id"], stack.admin.email, True)
    ]
    revoked = await alice.ok("DELETE", f"/teams/alice/access-grants/{created['id']}")
    assert (revoked["active"], revoked["revoked_by"]) == (False, ALICE)
    assert (await stack.admin.get("/apps/hello")).status == 404
    log = await alice.ok("GET", "/teams/alice/audit")
    assert (log["entries"][-1]["action"], log["entries"][-1]["actor"]) == (
        "access_grant.revoke",
        ALICE,
    )


async def test_viewer_cannot_revoke_a_grant(stack: Stack) -> None:
    """Revoking is for the team's owners and admins: a viewer is refused (403)."""
    alice = await alice_with_app(stack)
    bob = await stack.user("bob@example.com")
    await stack.join(alice, "alice", bob, "viewer")
    created = await grant(stack)
    answer = await bob.delete(f"/teams/alice/access-grants/{created['id']}")
    assert (answer.status, answer.error_id) == (403, "forbidden")


# ---- disabled users and token lifetimes -----------------------------------------------------


async def test_disabled_users_tokens_answer_401_at_once(stack: Stack) -> None:
    """Every token of a disabled user is refused on the next request, API and git alike."""
    alice = await alice_with_app(stack)
    spare = await alice.ok("POST", "/oauth/authorizations", {}, status=201)
    account = await alice.ok("GET", "/account")
    await stack.admin.ok("POST", f"/users/{account['id']}/actions/disable")
    for token in (alice.token, spare["access_token"]["token"]):
        answer = await alice.as_token(token).get("/apps/hello")
        assert (answer.status, answer.error_id) == (401, "unauthorized")
        assert "account is disabled" in answer.body["message"]
    basic = base64.b64encode(f":{alice.token}".encode()).decode()
    git = await stack.anonymous().get(
        "/hello.git/info/refs?service=git-upload-pack", headers={"Authorization": f"Basic {basic}"}
    )
    assert git.status == 401


async def test_enabled_user_works_again(stack: Stack) -> None:
    """Enabling a disabled user lets their tokens work again."""
    alice = await alice_with_app(stack)
    account = await alice.ok("GET", "/account")
    await stack.admin.ok("POST", f"/users/{account['id']}/actions/disable")
    await stack.admin.ok("POST", f"/users/{account['id']}/actions/enable")
    assert (await alice.get("/apps/hello")).status == 200


async def test_token_cannot_create_a_token_that_outlives_it(stack: Stack) -> None:
    """A token expiring in an hour asking for a two-hour token gets 422."""
    alice = await stack.user(ALICE)
    short = await alice.ok("POST", "/oauth/authorizations", {"expires_in": 3600}, status=201)
    child = alice.as_token(short["access_token"]["token"])
    answer = await child.post("/oauth/authorizations", {"expires_in": 7200})
    assert (answer.status, answer.error_id) == (422, "invalid_params")
    assert "cannot create a token that outlives it" in answer.body["message"]


async def test_default_lifetime_is_capped_by_the_asking_token(stack: Stack) -> None:
    """Asking for no lifetime gives at most what remains of the asking token."""
    alice = await stack.user(ALICE)
    short = await alice.ok("POST", "/oauth/authorizations", {"expires_in": 3600}, status=201)
    child = alice.as_token(short["access_token"]["token"])
    made = await child.ok("POST", "/oauth/authorizations", {}, status=201)
    assert made["access_token"]["expires_in"] <= 3600


async def test_cli_invitation_logs_the_user_in(stack: Stack, tmp_path: Path) -> None:
    """auth:invite-code gives the admin a code for users:invite; auth:join then logs the user in."""
    admin_cli, alice_cli = tmp_path / "admin-cli", tmp_path / "alice-cli"
    admin_cli.mkdir()
    alice_cli.mkdir()
    login = ("login", "--api-url", stack.url)
    assert (await slipway(admin_cli, *login, stdin=stack.admin.token or ""))[0] == 0
    code, verifier, err = await slipway(alice_cli, "auth:invite-code", "--email", ALICE)
    assert code == 0, err
    assert len(verifier.strip()) == 64
    code, _, err = await slipway(admin_cli, "users:invite", ALICE, "--code", verifier.strip())
    assert code == 0, err
    code, _, err = await slipway(alice_cli, "auth:join", "--api-url", stack.url)
    assert code == 0, err
    code, out, err = await slipway(alice_cli, "auth:whoami")
    assert (code, out) == (0, f"{ALICE}\n"), err
    assert not (alice_cli / "invitation.json").exists()


async def test_cli_owner_sees_and_revokes_the_admins_grant(stack: Stack, tmp_path: Path) -> None:
    """access:grant by the admin, then access:grants and access:revoke by the owner, in the CLI."""
    alice = await alice_with_app(stack)
    admin_cli, alice_cli = tmp_path / "admin-cli", tmp_path / "alice-cli"
    for config, api in ((admin_cli, stack.admin), (alice_cli, alice)):
        config.mkdir()
        code, _, err = await slipway(config, "login", "--api-url", stack.url, stdin=api.token or "")
        assert code == 0, err
    code, _, err = await slipway(
        admin_cli, "access:grant", "-t", "alice", "--reason", "INC-7", "--minutes", "30"
    )
    assert code == 0 and "recorded in its audit" in err, err
    code, out, err = await slipway(alice_cli, "access:grants", "-t", "alice", "--json")
    assert code == 0, err
    (listed,) = json.loads(out)
    assert (listed["user"]["email"], listed["active"]) == (stack.admin.email, True)
    code, _, err = await slipway(alice_cli, "access:revoke", listed["id"], "-t", "alice")
    assert code == 0, err
    assert (await stack.admin.get("/apps/hello")).status == 404
