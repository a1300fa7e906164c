"""Data protection: no plaintext at rest, ciphertexts bound to their place, rotation, shredding."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from slipway.contracts import keyring
from tests.gateway.conftest import Stack, tamper

pytestmark = pytest.mark.integration


def files_containing(root: Path, needle: bytes) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


async def test_canary_config_value_is_nowhere_on_disk(stack: Stack) -> None:
    """A config value set through the API is in no file: DB, WAL, JetStream store, logs."""
    canary = f"canary-{uuid.uuid4().hex}"
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"CANARY": canary})
    await alice.ok("PATCH", "/apps/hello/config-vars", {"OTHER": "1"})  # a second version
    assert (await alice.ok("GET", "/apps/hello/config-vars"))["CANARY"] == canary
    await stack.gw.relay.relay_pending()  # the events are in JetStream's files too
    scanned = [stack.home, stack.nats.data_dir]
    assert sum(1 for root in scanned for p in root.rglob("*") if p.is_file()) > 5
    for root in scanned:
        assert files_containing(root, canary.encode()) == []
    assert list((stack.home / "gateway").glob("gateway.db*"))  # the DB and its WAL were scanned


async def move_ciphertext(db_path: Path, from_app: str, to_app: str) -> None:
    """Copy one app's current config ciphertext over another's (an attacker with the DB)."""
    await tamper(
        db_path,
        "UPDATE config_versions SET ciphertext = (SELECT c.ciphertext FROM config_versions c"
        " JOIN apps a ON a.config_version_id = c.id WHERE a.name = ?)"
        " WHERE id = (SELECT config_version_id FROM apps WHERE name = ?)",
        (from_app, to_app),
    )


async def test_ciphertext_moved_to_another_app_does_not_decrypt(stack: Stack) -> None:
    """A config ciphertext copied into another app's row fails, with a clear error."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "victim")
    await stack.app(alice, "thief")
    await alice.ok("PATCH", "/apps/victim/config-vars", {"SECRET": "victims-secret"})
    await alice.ok("PATCH", "/apps/thief/config-vars", {"MINE": "1"})
    await move_ciphertext(stack.home / "gateway" / "gateway.db", "victim", "thief")
    answer = await alice.get("/apps/thief/config-vars")
    assert answer.status == 500
    assert answer.error_id == "data_integrity"
    assert "thief" in answer.body["message"]
    assert "victims-secret" not in str(answer.body)
    assert await alice.ok("GET", "/apps/victim/config-vars") == {"SECRET": "victims-secret"}


async def test_old_config_reads_after_key_rotation(stack: Stack) -> None:
    """After rotating the team's key, config written before still reads, and new writes work."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"BEFORE": "1"})
    rotated = await alice.ok("POST", "/teams/alice/actions/rotate-key")
    assert rotated["kek_version"] >= 2
    assert await alice.ok("GET", "/apps/hello/config-vars") == {"BEFORE": "1"}
    after = await alice.ok("PATCH", "/apps/hello/config-vars", {"AFTER": "2"})
    assert after == {"BEFORE": "1", "AFTER": "2"}


async def test_shredded_team_config_is_gone(stack: Stack) -> None:
    """After the team's key is destroyed the API answers 410 gone, saying why."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": "bar"})
    team = await alice.ok("POST", "/teams/alice/actions/shred", {"confirm": "alice"})
    assert team["shredded_at"]
    answer = await alice.get("/apps/hello/config-vars")
    assert answer.status == 410
    assert answer.error_id == "gone"
    assert "destroyed" in answer.body["message"]
    assert (await alice.patch("/apps/hello/config-vars", {"FOO": "x"})).status == 410
    log = await alice.ok("GET", "/teams/alice/audit")
    assert log["entries"][-1]["action"] == "team.shred"


async def test_shred_through_the_keyring_alone_is_reported_as_gone(stack: Stack) -> None:
    """If the keyring shredded the team behind the gateway's back, reads still answer 410."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": "bar"})
    team = await alice.ok("GET", "/teams/alice")
    await stack.bus.call(keyring.TEAM_SHRED, keyring.ShredTeam(team_id=team["id"]))
    answer = await alice.get("/apps/hello/config-vars")
    assert answer.status == 410
    assert answer.error_id == "gone"


async def test_shred_needs_the_team_name(stack: Stack) -> None:
    """Shredding without the right confirmation answers 422 and destroys nothing."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": "bar"})
    assert (await alice.post("/teams/alice/actions/shred", {"confirm": "nope"})).status == 422
    assert await alice.ok("GET", "/apps/hello/config-vars") == {"FOO": "bar"}


async def test_only_owners_shred(stack: Stack) -> None:
    """An admin gets 403 destroying the team's key."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await stack.join(alice, "alice", bob, "admin")
    answer = await bob.post("/teams/alice/actions/shred", {"confirm": "alice"})
    assert answer.status == 403
