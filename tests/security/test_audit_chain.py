"""An audit chain cannot be cut or rewritten quietly, and its keys cannot vanish unnoticed.

Each test attacks the real gateway's SQLite file (or swaps the real keyring) the
way someone holding the platform would, then runs the real `slipway` CLI as the
customer does and checks what it says.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from slipway.libs import auditchain
from slipway.libs.service import ServiceApp
from slipway.services.gateway.outbox.changes import Actor, change
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.handlers import VAULT
from slipway.services.keyring.settings import KeyringSettings
from tests.conftest import assert_eventually
from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import Api, Stack, run_in_background, stop, tamper
from tests.security.test_impersonation import slipway

pytestmark = pytest.mark.integration

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
gateway_service = gateway_fixtures.gateway_service
stack = gateway_fixtures.stack

TEAM = "alice"


class Customer:
    """Alice at her terminal: the real CLI, logged in, with her own config dir (and pins)."""

    def __init__(self, config: Path) -> None:
        self.config = config

    async def run(self, *args: str, stdin: str = "") -> tuple[int, str, str]:
        # An unsigned head waits this long for its checkpoint before the CLI calls it a cut.
        return await slipway(self.config, *args, stdin=stdin, env={"SLIPWAY_AUDIT_SIGN_WAIT": "1"})

    async def ok(self, *args: str) -> str:
        code, out, err = await self.run(*args)
        assert code == 0, (args, out, err)
        return out + err


@pytest.fixture
async def alice(stack: Stack) -> Api:
    """A user with an app, so her team chain has entries."""
    api = await stack.user("alice@example.com")
    await stack.app(api, "hello")
    return api


@pytest.fixture
async def customer(stack: Stack, alice: Api, tmp_path: Path) -> Customer:
    config = tmp_path / "alice-cli"
    config.mkdir()
    shell = Customer(config)
    code, _, err = await shell.run("login", "--api-url", stack.url, stdin=alice.token or "")
    assert code == 0, err
    return shell


def db(stack: Stack) -> Path:
    return stack.home / "gateway" / "gateway.db"


async def signed_head(api: Api) -> dict[str, Any]:
    """The team's audit log once a checkpoint covers its newest entry."""

    async def covered() -> dict[str, Any]:
        log: dict[str, Any] = await api.ok("GET", f"/teams/{TEAM}/audit")
        newest = log["entries"][-1]["seq"]
        assert log["checkpoints"] and log["checkpoints"][-1]["seq"] == newest
        return log

    return await assert_eventually(covered)


def _rewrite_history(path: Path, team_id: str, seq: int, *, drop_checkpoints: bool = True) -> None:
    """Change entry `seq`, recompute every later hash and drop the checkpoints: a clean forgery."""
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(
            "SELECT seq, entry FROM audit_entries WHERE team_id = ? ORDER BY seq", (team_id,)
        ).fetchall()
        head = auditchain.GENESIS
        for number, raw in rows:
            entry = msgspec.json.decode(raw, type=auditchain.AuditEntry)
            if number == seq:
                entry = msgspec.structs.replace(entry, actor="mallory@example.com")
            head = auditchain.link(head, entry)
            conn.execute(
                "UPDATE audit_entries SET entry = ?, hash = ? WHERE team_id = ? AND seq = ?",
                (auditchain.canonical(entry).decode(), head.hex(), team_id, number),
            )
        if drop_checkpoints:
            conn.execute("DELETE FROM audit_checkpoints WHERE team_id = ?", (team_id,))
        conn.execute("COMMIT")
    finally:
        conn.close()


# ---- a cut chain ------------------------------------------------------------------------------


async def test_cut_chain_fails_verify_naming_the_cut(
    stack: Stack, alice: Api, customer: Customer
) -> None:
    """Deleting the newest entries and their checkpoint leaves an unsigned head: verify fails."""
    log = await signed_head(alice)
    team_id = log["team"]["id"]
    # Two entries in one commit: the gateway signs only the head, so the entry before
    # it has no checkpoint of its own, as after any burst of changes.
    async with change(stack.gw, Actor(email=alice.email)) as tx:
        tx.audit(team_id, "member.add", details={"email": "eve@example.com"})
        tx.audit(team_id, "member.remove", details={"email": "eve@example.com"})
    log = await signed_head(alice)
    newest = log["entries"][-1]["seq"]
    kept = log["entries"][-2]
    await tamper(
        db(stack), "DELETE FROM audit_entries WHERE team_id = ? AND seq = ?", (team_id, newest)
    )
    await tamper(
        db(stack), "DELETE FROM audit_checkpoints WHERE team_id = ? AND seq = ?", (team_id, newest)
    )
    code, _, err = await customer.run("audit", "--team", TEAM, "--verify")
    assert code == 1
    assert err.count("\n") == 1
    assert (
        f"is BROKEN at entry {kept['seq']} ({kept['action']} at {kept['at']}): the newest entry"
        f" is not covered by a signed checkpoint (the last one covers entry {kept['seq'] - 1})"
    ) in err


# ---- the keyring refuses to sign a cut or rewritten chain -----------------------------------

UNSIGNED = "which the keyring refuses to sign"


async def refused(keyring: ServiceApp, team_id: str) -> None:
    """Wait until the keyring has refused an audit.sign for the team as a rollback."""

    async def seen() -> None:
        records = await keyring[VAULT].store.audit(team_id)
        assert any(
            r.operation == "audit.sign" and r.outcome == "audit_rollback" for r in records
        ), records

    await assert_eventually(seen)


async def test_keyring_refuses_to_sign_a_cut_chain(
    stack: Stack, alice: Api, customer: Customer, keyring_service: ServiceApp
) -> None:
    """After the newest entry and its checkpoint are deleted, the shorter head stays unsigned."""
    log = await signed_head(alice)
    team_id = log["team"]["id"]
    async with change(stack.gw, Actor(email=alice.email)) as tx:
        tx.audit(team_id, "member.add", details={"email": "eve@example.com"})
        tx.audit(team_id, "member.remove", details={"email": "eve@example.com"})
    log = await signed_head(alice)
    newest, kept = log["entries"][-1]["seq"], log["entries"][-2]
    await tamper(
        db(stack), "DELETE FROM audit_entries WHERE team_id = ? AND seq = ?", (team_id, newest)
    )
    await tamper(
        db(stack), "DELETE FROM audit_checkpoints WHERE team_id = ? AND seq = ?", (team_id, newest)
    )
    stack.gw.checkpointer.touched({team_id})  # what the next change or a restart does
    await refused(keyring_service, team_id)
    code, _, err = await customer.run("audit", "--team", TEAM, "--verify")
    assert code == 1
    assert f"is BROKEN at entry {kept['seq']}" in err and UNSIGNED in err


async def test_keyring_refuses_to_re_sign_a_rewritten_entry(
    stack: Stack, alice: Api, customer: Customer, keyring_service: ServiceApp
) -> None:
    """A rewritten entry, hashes recomputed and checkpoints dropped, is not re-signed at its seq."""
    log = await signed_head(alice)
    team_id, newest = log["team"]["id"], log["entries"][-1]["seq"]
    await asyncio.to_thread(_rewrite_history, db(stack), team_id, log["entries"][0]["seq"])
    stack.gw.checkpointer.touched({team_id})
    await refused(keyring_service, team_id)
    code, _, err = await customer.run("audit", "--team", TEAM, "--verify")
    assert code == 1
    assert f"is BROKEN at entry {newest}" in err and UNSIGNED in err


async def test_keyring_refuses_to_extend_a_rewritten_chain(
    stack: Stack, alice: Api, customer: Customer, keyring_service: ServiceApp
) -> None:
    """A new entry on a rewritten history is refused: it does not extend the signed head."""
    log = await signed_head(alice)
    team_id = log["team"]["id"]
    await asyncio.to_thread(
        _rewrite_history, db(stack), team_id, log["entries"][0]["seq"], drop_checkpoints=False
    )
    await alice.ok("PATCH", "/apps/hello", {"maintenance": True})
    await refused(keyring_service, team_id)
    # Dropping the old checkpoints, which no longer match, leaves the new head unsigned.
    await tamper(db(stack), "DELETE FROM audit_checkpoints WHERE team_id = ?", (team_id,))
    code, _, err = await customer.run("audit", "--team", TEAM, "--verify")
    assert code == 1
    assert "the newest entry is not covered by a signed checkpoint" in err and UNSIGNED in err


# ---- audit keys: listed with validity, pinned on first use ---------------------------------------


async def test_audit_keys_are_listed_with_their_validity(stack: Stack, alice: Api) -> None:
    """GET /audit/keys names the signing key with the time it first signed, still valid."""
    log = await signed_head(alice)
    (key,) = await alice.ok("GET", "/audit/keys")
    assert key["key_id"] == log["checkpoints"][-1]["key_id"]
    assert key["valid_from"] is not None and key["valid_until"] is None


async def test_first_verify_pins_the_keys(stack: Stack, alice: Api, customer: Customer) -> None:
    """The first --verify pins every listed key in audit-pins.json and says so."""
    await signed_head(alice)
    said = await customer.ok("audit", "--team", TEAM, "--verify")
    (key,) = await alice.ok("GET", "/audit/keys")
    assert f"Pinned audit key {key['key_id']} (first use)" in said
    pins = json.loads((customer.config / "audit-pins.json").read_text())
    assert pins[stack.url]["keys"] == {key["key_id"]: key["public_key"]}


async def test_changed_key_fails_loudly(stack: Stack, alice: Api, customer: Customer) -> None:
    """A pinned key whose bytes the platform now shows differently fails verification."""
    await signed_head(alice)
    await customer.ok("audit", "--team", TEAM, "--verify")
    # Another key's bytes under the same id: what swapping in a key of one's own looks like.
    await tamper(db(stack), "UPDATE audit_keys SET public_key = ?", ("11" * 32,))
    code, _, err = await customer.run("audit", "--team", TEAM, "--verify")
    assert code == 1
    assert "has CHANGED since this CLI pinned it" in err


@asynccontextmanager
async def replaced_keyring(
    stack: Stack, keyring: ServiceApp, home: Path
) -> AsyncIterator[ServiceApp]:
    """Stop the stack's keyring and run another, with a fresh master and audit key."""
    keyring.stop()
    home.mkdir()
    other = create_keyring(
        KeyringSettings(nats_url=stack.nats.url, home=str(home), shutdown_grace=5.0)
    )
    task = await run_in_background(other)
    try:
        yield other
    finally:
        await stop(other, task)


async def _second_key(stack: Stack, alice: Api, first: str) -> list[dict[str, Any]]:
    """Wait until the new keyring signed the team's head; the key list then."""
    await alice.ok("POST", "/teams", {"name": "after-swap"}, status=201)
    await alice.ok("PATCH", "/apps/hello", {"maintenance": True})

    async def both() -> list[dict[str, Any]]:
        keys: list[dict[str, Any]] = await alice.ok("GET", "/audit/keys")
        assert len(keys) == 2 and keys[0]["key_id"] == first and keys[1]["valid_from"]
        return keys

    return await assert_eventually(both)


async def test_replaced_key_stays_listed_with_its_validity(
    stack: Stack, alice: Api, keyring_service: ServiceApp, tmp_path: Path
) -> None:
    """After the audit key changes, both keys are listed: the old one with its end."""
    (first,) = await alice.ok("GET", "/audit/keys")
    await signed_head(alice)
    async with replaced_keyring(stack, keyring_service, tmp_path / "keyring2"):
        old, new = await _second_key(stack, alice, first["key_id"])
    assert old["valid_until"] is not None and old["valid_until"] == new["valid_from"]
    assert new["valid_until"] is None


async def test_missing_pinned_key_fails_loudly(
    stack: Stack, alice: Api, customer: Customer, keyring_service: ServiceApp, tmp_path: Path
) -> None:
    """A key the CLI pinned, then dropped from GET /audit/keys, fails verification."""
    await signed_head(alice)
    await customer.ok("audit", "--team", TEAM, "--verify")
    (first,) = await alice.ok("GET", "/audit/keys")
    async with replaced_keyring(stack, keyring_service, tmp_path / "keyring2"):
        await _second_key(stack, alice, first["key_id"])
        await signed_head(alice)
        await tamper(db(stack), "DELETE FROM audit_keys WHERE key_id = ?", (first["key_id"],))
        code, _, err = await customer.run("audit", "--team", TEAM, "--verify")
    assert code == 1
    assert f"Audit key {first['key_id']}, pinned when this CLI first verified" in err
    assert "is no longer listed by GET /audit/keys" in err


# ---- checkpoints the customer saved ------------------------------------------------------------


async def test_saved_checkpoint_detects_rewritten_history(
    stack: Stack, alice: Api, customer: Customer, keyring_service: ServiceApp, tmp_path: Path
) -> None:
    """A history rewritten and re-signed by a fresh keyring fails --verify --against the file."""
    log = await signed_head(alice)
    saved = tmp_path / "alice-audit.json"
    await customer.ok("audit:checkpoint", "--team", TEAM, "-o", str(saved))
    victim = log["entries"][0]
    await asyncio.to_thread(_rewrite_history, db(stack), log["team"]["id"], victim["seq"])
    # A keyring on a fresh database remembers no signed head: it signs the forged chain.
    async with replaced_keyring(stack, keyring_service, tmp_path / "keyring2"):
        await alice.ok("PATCH", "/apps/hello", {"maintenance": True})
        await signed_head(alice)
        fresh = Customer(tmp_path / "fresh-cli")
        fresh.config.mkdir()
        await fresh.run("login", "--api-url", stack.url, stdin=alice.token or "")
        assert "OK: audit chain" in await fresh.ok("audit", "--team", TEAM, "--verify")
        code, _, err = await fresh.run("audit", "--team", TEAM, "--verify", "--against", str(saved))
    assert code == 1
    # The hash chain names the saved checkpoint's entry: everything up to it is in question.
    assert f"is BROKEN at entry {log['entries'][-1]['seq']}" in err
    assert (
        f"history was rewritten: the chain differs from the checkpoint you saved (saved in {saved})"
        in err
    )


async def test_saved_checkpoint_is_extended_by_later_entries(
    stack: Stack, alice: Api, customer: Customer, tmp_path: Path
) -> None:
    """A chain that only grew since the checkpoint was saved passes --against."""
    await signed_head(alice)
    saved = tmp_path / "alice-audit.json"
    await customer.ok("audit:checkpoint", "--team", TEAM, "-o", str(saved))
    await alice.ok("PATCH", "/apps/hello", {"maintenance": True})
    await signed_head(alice)
    said = await customer.ok("audit", "--team", TEAM, "--verify", "--against", str(saved))
    assert f"it extends the checkpoint saved in {saved}" in said


async def test_pinned_head_detects_a_re_signed_cut(
    stack: Stack, alice: Api, customer: Customer, keyring_service: ServiceApp, tmp_path: Path
) -> None:
    """A chain cut and re-signed by a fresh keyring fails against the head the CLI verified."""
    log = await signed_head(alice)
    await customer.ok("audit", "--team", TEAM, "--verify")
    team_id, newest = log["team"]["id"], log["entries"][-1]["seq"]
    await tamper(
        db(stack), "DELETE FROM audit_entries WHERE team_id = ? AND seq = ?", (team_id, newest)
    )
    await tamper(db(stack), "DELETE FROM audit_checkpoints WHERE team_id = ?", (team_id,))
    # A keyring on a fresh database remembers no signed head: it signs the shorter chain.
    async with replaced_keyring(stack, keyring_service, tmp_path / "keyring2"):
        stack.gw.checkpointer.touched({team_id})  # what the next change or a restart does
        await signed_head(alice)
        code, _, err = await customer.run("audit", "--team", TEAM, "--verify")
    assert code == 1
    assert f"entries after {newest - 1} were removed" in err and "this CLI verified before" in err
