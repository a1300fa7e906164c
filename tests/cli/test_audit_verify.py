"""Offline verification of an audit answer, as `audit --verify` does it (no server)."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from slipway.cli.commands.audit import (
    parse_keys,
    split_body,
    verdict_line,
    verify_chain,
    within_chain,
)
from slipway.libs import auditchain

TEAM = "team-1"


def _answer(count: int, signed_at: int, key: Ed25519PrivateKey) -> dict[str, Any]:
    """An audit answer as JSON: `count` chained entries and a checkpoint at `signed_at`."""
    entries: list[dict[str, Any]] = []
    head = auditchain.GENESIS
    heads: dict[int, str] = {}
    for seq in range(1, count + 1):
        entry = auditchain.AuditEntry(
            seq=seq,
            team_id=TEAM,
            at=f"2024-05-01T10:00:0{seq}Z",
            actor="a@example.com",
            action=f"action.{seq}",
            app="hello",
            details={"n": str(seq)},
        )
        head = auditchain.link(head, entry)
        heads[seq] = head.hex()
        entries.append({**msgspec.to_builtins(entry), "hash": head.hex()})
    message = auditchain.checkpoint_message(TEAM, signed_at, heads[signed_at])
    checkpoint = {
        "team_id": TEAM,
        "seq": signed_at,
        "head": heads[signed_at],
        "at": "2024-05-01T10:01:00Z",
        "key_id": "k1",
        "signature": key.sign(message).hex(),
    }
    return {"entries": entries, "checkpoints": [checkpoint]}


@pytest.fixture
def key() -> Ed25519PrivateKey:
    """A fresh Ed25519 signing key standing in for the keyring's audit key."""
    return Ed25519PrivateKey.generate()


def _public(key: Ed25519PrivateKey) -> dict[str, bytes]:
    return {"k1": key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)}


def test_intact_chain_verifies_with_counts(key: Ed25519PrivateKey) -> None:
    """An untouched log verifies, and the line gives entry and checkpoint counts."""
    entries, checkpoints = split_body(_answer(4, 4, key))
    verdict = verify_chain(entries, checkpoints, _public(key))
    assert verdict.ok
    line = verdict_line(verdict, entries, checkpoints, "team acme")
    assert line == "OK: audit chain of team acme verified: 4 entries, 1 signed checkpoint."


def test_unsigned_newest_entry_breaks_the_chain(key: Ed25519PrivateKey) -> None:
    """A newest entry no checkpoint covers fails there: that is what a cut chain looks like."""
    entries, checkpoints = split_body(_answer(5, 3, key))
    verdict = verify_chain(entries, checkpoints, _public(key))
    assert (verdict.ok, verdict.broken_at) == (False, 5)
    line = verdict_line(verdict, entries, checkpoints, "team acme")
    assert "the newest entry is not covered by a signed checkpoint" in line


def test_edited_entry_is_named_by_seq_action_and_time(key: Ed25519PrivateKey) -> None:
    """Changing one entry's content breaks the chain exactly there."""
    answer = _answer(4, 4, key)
    answer["entries"][2]["actor"] = "mallory@example.com"
    entries, checkpoints = split_body(answer)
    verdict = verify_chain(entries, checkpoints, _public(key))
    assert (verdict.ok, verdict.broken_at) == (False, 3)
    assert verdict_line(verdict, entries, checkpoints, "team acme") == (
        "Audit chain of team acme is BROKEN at entry 3 (action.3 at 2024-05-01T10:00:03Z): "
        "hash does not match its content."
    )


def test_recomputed_hashes_still_fail_the_signature(key: Ed25519PrivateKey) -> None:
    """Rewriting an entry and every later hash is caught by the signed checkpoint."""
    answer = _answer(3, 3, key)
    answer["entries"][1]["action"] = "nothing.happened"
    head = auditchain.GENESIS
    for raw in answer["entries"]:
        entry = msgspec.convert(
            {k: v for k, v in raw.items() if k != "hash"}, auditchain.AuditEntry
        )
        head = auditchain.link(head, entry)
        raw["hash"] = head.hex()
    entries, checkpoints = split_body(answer)
    verdict = verify_chain(entries, checkpoints, _public(key))
    assert (verdict.ok, verdict.broken_at) == (False, 3)
    assert "differs from the signed checkpoint" in verdict.reason


def test_deleted_entry_is_named(key: Ed25519PrivateKey) -> None:
    """A removed entry is reported as missing at its seq."""
    answer = _answer(4, 4, key)
    del answer["entries"][1]
    entries, checkpoints = split_body(answer)
    verdict = verify_chain(entries, checkpoints, _public(key))
    assert (verdict.ok, verdict.broken_at) == (False, 2)
    assert "entry 2 is missing" in verdict_line(verdict, entries, checkpoints, "team acme")


def test_unreadable_entry_breaks_there(key: Ed25519PrivateKey) -> None:
    """An entry whose fields no longer have the right types breaks the chain at its seq."""
    answer = _answer(3, 3, key)
    answer["entries"][1]["details"] = "not an object"
    entries, checkpoints = split_body(answer)
    verdict = verify_chain(entries, checkpoints, _public(key))
    assert (verdict.ok, verdict.broken_at) == (False, 2)


def test_an_entry_whose_seq_is_not_a_number_breaks_the_chain_without_a_crash(
    key: Ed25519PrivateKey,
) -> None:
    """A server answering `"seq": "x"` gets a broken verdict, not a traceback."""
    answer = _answer(3, 3, key)
    answer["entries"][2]["seq"] = "x"
    entries, checkpoints = split_body(answer)
    verdict = verify_chain(entries, checkpoints, _public(key))
    assert not verdict.ok and verdict.broken_at is not None


def test_keys_by_id_from_hex() -> None:
    """GET /audit/keys answers [{key_id, algorithm, public_key (hex)}]."""
    raw = bytes(range(32))
    answer = [{"key_id": "k2", "algorithm": "ed25519", "public_key": raw.hex()}]
    assert parse_keys(answer) == {"k2": raw}


def test_app_entries_must_be_in_the_team_chain(key: Ed25519PrivateKey) -> None:
    """An app's log showing an entry unlike the verified team chain fails at that entry."""
    team_entries, checkpoints = split_body(_answer(3, 3, key))
    verdict = verify_chain(team_entries, checkpoints, _public(key))
    shown = [dict(team_entries[0]), {**team_entries[1], "action": "something.else"}]
    broken = within_chain(verdict, shown, team_entries)
    assert (broken.ok, broken.broken_at) == (False, 2)
    assert within_chain(verdict, team_entries[:2], team_entries).ok
