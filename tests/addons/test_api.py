"""The add-on API's rules, answered by the gateway alone (no database is started here)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from slipway.contracts import addons as ac
from slipway.services.gateway.addons.addons import (
    AttachmentBody,
    CreateAddon,
    _attachment_name,
    scram_verifier,
)
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.scheduler.addons import setup_sql
from tests.gateway.conftest import Stack

WANT = ac.AddonDesired(
    addon_id="a1",
    addon_name="postgresql-amber-12345",
    app_id="app",
    app_name="hello",
    team_id="team",
    plan="postgresql:mini",
    database="dabc123",
    user="uabc123",
)


async def test_bad_plan_is_422_and_missing_app_404(stack: Stack) -> None:
    """An unknown plan answers Heroku's 422 invalid_params; an unknown app 404 not_found."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    bad = await alice.post("/apps/hello/addons", {"plan": "postgresql:gigantic"})
    assert (bad.status, bad.error_id) == (422, "invalid_params")
    assert "postgresql:standard" in bad.body["message"]
    missing = await alice.post("/apps/nope/addons", {"plan": "postgresql:mini"})
    assert (missing.status, missing.error_id) == (404, "not_found")
    typo = await alice.post("/apps/hello/addons", {"plan": "postgresql:mini", "plann": "x"})
    assert typo.status == 422
    assert (await alice.get("/apps/hello/addons/nothing")).status == 404


async def test_viewer_cannot_create_or_destroy(stack: Stack) -> None:
    """A viewer of the team reads add-ons but gets 403 creating or destroying one."""
    alice = await stack.user("alice@example.com")
    bob = await stack.user("bob@example.com")
    await stack.app(alice, "hello")
    await stack.join(alice, "alice", bob, "viewer")
    created = await alice.ok("POST", "/apps/hello/addons", {"plan": "postgresql"}, status=202)
    assert created["plan"]["name"] == "postgresql:mini"

    refused = await bob.post("/apps/hello/addons", {"plan": "postgresql:mini"})
    assert (refused.status, refused.error_id) == (403, "forbidden")
    kept = await bob.delete(f"/apps/hello/addons/{created['name']}")
    assert (kept.status, kept.error_id) == (403, "forbidden")
    assert [a["name"] for a in await bob.ok("GET", "/apps/hello/addons")] == [created["name"]]


async def test_another_team_sees_no_addon(stack: Stack) -> None:
    """An add-on of another team's app is not found, by id or by name."""
    alice = await stack.user("alice@example.com")
    mallory = await stack.user("mallory@example.com")
    await stack.app(alice, "hello")
    created = await alice.ok("POST", "/apps/hello/addons", {"plan": "postgresql"}, status=202)
    assert (await mallory.get(f"/addons/{created['id']}")).status == 404
    assert (await mallory.get(f"/addons/{created['name']}")).status == 404


async def test_second_database_gets_its_own_var_and_changes_are_audited(stack: Stack) -> None:
    """The first attachment is DATABASE; the next SLIPWAY_POSTGRESQL_<WORD>; both audited."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    first = await alice.ok("POST", "/apps/hello/addons", {"plan": "postgresql"}, status=202)
    second = await alice.ok(
        "POST", "/apps/hello/addons", {"plan": "postgresql:standard"}, status=202
    )
    assert first["config_vars"] == ["DATABASE_URL"]
    word = second["name"].split("-")[1].upper()
    assert second["config_vars"] == [f"SLIPWAY_POSTGRESQL_{word}_URL"]
    names = [a["name"] for a in await alice.ok("GET", "/apps/hello/addon-attachments")]
    assert names == ["DATABASE", f"SLIPWAY_POSTGRESQL_{word}"]

    await alice.ok("DELETE", f"/apps/hello/addons/{second['name']}")
    log = await alice.ok("GET", "/apps/hello/audit")
    actions = [(e["action"], e["details"].get("addon")) for e in log["entries"]]
    assert ("addon.create", first["name"]) in actions
    assert ("addon.create", second["name"]) in actions
    assert ("addon.destroy", second["name"]) in actions
    # Nothing secret reaches the audit chain or the events: no password, no URL.
    assert "postgres://" not in str(log)
    assert "postgres://" not in str(await stack.events("addon"))


def test_attachment_names() -> None:
    """An asked name is checked; a taken one refused; the default follows the add-on's word."""
    body = CreateAddon(plan="postgresql")
    assert _attachment_name(body, "postgresql-teal-10000", set()) == "DATABASE"
    taken = {"DATABASE"}
    assert _attachment_name(body, "postgresql-teal-10000", taken) == "SLIPWAY_POSTGRESQL_TEAL"
    # A second database that drew the same word is named by its number, never refused.
    taken |= {"SLIPWAY_POSTGRESQL_TEAL"}
    second = _attachment_name(body, "postgresql-teal-20417", taken)
    assert second == "SLIPWAY_POSTGRESQL_TEAL_20417"
    asked = CreateAddon(plan="postgresql", attachment=AttachmentBody(name="REPORTS"))
    assert _attachment_name(asked, "postgresql-teal-10000", taken) == "REPORTS"
    with pytest.raises(InvalidParams, match="already has an attachment"):
        _attachment_name(asked, "postgresql-teal-10000", {"REPORTS"})
    bad = CreateAddon(plan="postgresql", attachment=AttachmentBody(name="bad name"))
    with pytest.raises(InvalidParams, match="Invalid attachment name"):
        _attachment_name(bad, "postgresql-teal-10000", set())


def test_scram_verifier_matches_rfc_7677() -> None:
    """StoredKey and ServerKey derive from the password as RFC 5802 says."""
    salt = b"0123456789abcdef"
    verifier = scram_verifier("pencil", salt)
    method, keys = verifier.split("$", 1)
    params, pair = keys.split("$")
    iterations, salt_b64 = params.split(":")
    stored, server = pair.split(":")
    assert method == "SCRAM-SHA-256" and iterations == "4096"
    assert base64.b64decode(salt_b64) == salt
    salted = hashlib.pbkdf2_hmac("sha256", b"pencil", salt, 4096)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    assert base64.b64decode(stored) == hashlib.sha256(client_key).digest()
    assert base64.b64decode(server) == hmac.digest(salted, b"Server Key", "sha256")
    assert "pencil" not in verifier


@pytest.mark.parametrize(
    ("user", "verifier"),
    [
        ("uabc123", "SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5'; DROP ROLE x; --"),
        ('uabc123"; DROP', "SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5"),
        ("uother", "SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5"),
    ],
)
def test_setup_sql_refuses_unexpected_shapes(user: str, verifier: str) -> None:
    """Values written into the setup SQL must have the exact shapes the gateway makes."""
    with pytest.raises(ValueError, match=r"unexpected shape|another role"):
        setup_sql(WANT, ac.AddonCredentials(user=user, verifier=verifier))
