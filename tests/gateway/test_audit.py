"""The audit chain: what is recorded, signed checkpoints, offline verification, tampering."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from slipway.libs.auditchain import AuditEntry, Checkpoint, Verdict, verify
from tests.conftest import assert_eventually
from tests.gateway.conftest import Api, Stack, tamper

pytestmark = pytest.mark.integration


async def verify_team(api: Api, team: str) -> Verdict:
    """What `slipway audit --verify` does: recompute the chain with the published keys."""
    log = await api.ok("GET", f"/teams/{team}/audit")
    keys = {k["key_id"]: bytes.fromhex(k["public_key"]) for k in await api.ok("GET", "/audit/keys")}
    entries = [
        (msgspec.convert({k: v for k, v in e.items() if k != "hash"}, AuditEntry), e["hash"])
        for e in log["entries"]
    ]
    checkpoints = [msgspec.convert(c, Checkpoint) for c in log["checkpoints"]]
    return verify(entries, checkpoints, keys)


async def signed_up_to(api: Api, team: str, seq: int) -> dict[str, Any]:
    async def covered() -> dict[str, Any]:
        log: dict[str, Any] = await api.ok("GET", f"/teams/{team}/audit")
        assert log["checkpoints"] and log["checkpoints"][-1]["seq"] >= seq
        return log

    return await assert_eventually(covered)


async def test_actions_are_recorded_with_who_and_where(stack: Stack) -> None:
    """Creating an app and setting config append entries naming the actor, IP and request."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": "bar"})
    log = await alice.ok("GET", "/apps/hello/audit")
    assert log["complete"] is False and log["team"]["name"] == "alice"
    actions = [(e["action"], e["actor"], e["app"]) for e in log["entries"]]
    assert actions == [
        ("app.create", alice.email, "hello"),
        ("config.update", alice.email, "hello"),
    ]
    assert all(e["source_ip"] == "127.0.0.1" and e["request_id"] for e in log["entries"])


async def test_team_chain_verifies_offline(stack: Stack) -> None:
    """The team's entries, checkpoints and the published key verify with libs.auditchain."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"FOO": "bar"})
    await alice.ok("PATCH", "/apps/hello", {"name": "goodbye"})
    log = await alice.ok("GET", "/teams/alice/audit")
    await signed_up_to(alice, "alice", log["entries"][-1]["seq"])
    verdict = await verify_team(alice, "alice")
    assert verdict.ok, verdict
    assert verdict.entries == len(log["entries"])


async def test_every_append_is_checkpointed(stack: Stack) -> None:
    """The head of the chain is signed soon after each change."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    log = await alice.ok("GET", "/teams/alice/audit")
    head = log["entries"][-1]
    signed = await signed_up_to(alice, "alice", head["seq"])
    assert signed["checkpoints"][-1]["head"] == head["hash"]


async def test_tampering_is_found_at_the_exact_entry(stack: Stack) -> None:
    """Editing one stored entry makes verification fail at that entry's seq."""
    alice = await stack.user("alice@example.com")
    for name in ("one", "two", "three"):
        await stack.app(alice, name)
    log = await alice.ok("GET", "/teams/alice/audit")
    await signed_up_to(alice, "alice", log["entries"][-1]["seq"])
    victim = next(e for e in log["entries"] if e["app"] == "two")
    forged = {k: v for k, v in victim.items() if k != "hash"} | {"actor": "someone@else.com"}
    await tamper(
        stack.home / "gateway" / "gateway.db",
        "UPDATE audit_entries SET entry = ? WHERE team_id = ? AND seq = ?",
        (
            json.dumps(forged, sort_keys=True, separators=(",", ":")),
            victim["team_id"],
            victim["seq"],
        ),
    )
    verdict = await verify_team(alice, "alice")
    assert not verdict.ok
    assert verdict.broken_at == victim["seq"]


async def test_config_values_never_reach_the_audit(stack: Stack) -> None:
    """No audit entry holds a config value."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    await alice.ok("PATCH", "/apps/hello/config-vars", {"DATABASE_URL": "postgres://s3cr3t"})
    assert "s3cr3t" not in json.dumps(await alice.ok("GET", "/teams/alice/audit"))


async def test_viewer_reads_the_audit(stack: Stack) -> None:
    """A viewer may read the team's audit."""
    alice, bob = await stack.user("alice@example.com"), await stack.user("bob@example.com")
    await stack.join(alice, "alice", bob, "viewer")
    log = await bob.ok("GET", "/teams/alice/audit")
    assert log["complete"] is True
    assert [e["seq"] for e in log["entries"]] == list(range(1, len(log["entries"]) + 1))


async def test_audit_keys_are_published(stack: Stack) -> None:
    """GET /audit/keys answers the Ed25519 key that signs checkpoints, hex-encoded."""
    (key,) = await stack.admin.ok("GET", "/audit/keys")
    assert key["algorithm"] == "ed25519"
    assert len(bytes.fromhex(key["public_key"])) == 32
