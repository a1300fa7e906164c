"""The tamper-evident audit chain: canonical entries, hashes, signed checkpoints, verification.

Per team, entries form a hash chain: h_i = SHA-256(h_{i-1} || canonical(entry_i)),
with h_0 = 32 zero bytes. From time to time the gateway asks the keyring to sign a
checkpoint (team, seq, head hash) with the platform's Ed25519 audit key. Anyone
holding the entries, the checkpoints and the public key can recompute the chain
offline (`slipway audit --verify`) and learn the exact entry where it breaks.

This module is pure: no I/O, shared by the gateway (append) and the CLI (verify).
"""

from __future__ import annotations

import hashlib
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

GENESIS = bytes(32)


class AuditEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One action on the platform: who did what, when, from where."""

    seq: int
    team_id: str
    at: str  # RFC 3339, UTC
    actor: str  # user email, or "service:<name>" for platform actions
    action: str  # e.g. "app.create", "config.update"
    app: str | None = None
    source_ip: str | None = None
    request_id: str | None = None
    details: dict[str, str] = {}


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True):
    """A signature over the chain head at `seq`."""

    team_id: str
    seq: int
    head: str  # hex of h_seq
    at: str
    key_id: str
    signature: str  # hex


class Verdict(msgspec.Struct, frozen=True, kw_only=True):
    """The outcome of verification; `broken_at` names the first bad entry's seq."""

    ok: bool
    entries: int
    checkpoints: int
    broken_at: int | None = None
    reason: str = ""


_encoder = msgspec.json.Encoder(order="sorted")


def canonical(entry: AuditEntry) -> bytes:
    """The entry's bytes as hashed: JSON, keys sorted, no whitespace."""
    return _encoder.encode(entry)


def link(previous: bytes, entry: AuditEntry) -> bytes:
    """h_i from h_{i-1} and entry i."""
    return hashlib.sha256(previous + canonical(entry)).digest()


def checkpoint_message(team_id: str, seq: int, head: str) -> bytes:
    """The exact bytes a checkpoint signature covers."""
    return f"slipway-audit-checkpoint/v1\n{team_id}\n{seq}\n{head}".encode()


def verify(
    entries: list[tuple[AuditEntry, str]],
    checkpoints: list[Checkpoint],
    public_keys: dict[str, bytes],
) -> Verdict:
    """Recompute the chain; check each stored hash and each checkpoint signature.

    `entries` are (entry, stored hex hash) in sequence order starting at seq 1.
    """
    heads: dict[int, str] = {}
    previous = GENESIS
    expected_seq = 1
    for entry, stored in entries:
        if entry.seq != expected_seq:
            return _broken(entries, checkpoints, expected_seq, f"entry {expected_seq} is missing")
        current = link(previous, entry)
        if current.hex() != stored:
            return _broken(entries, checkpoints, entry.seq, "hash does not match its content")
        heads[entry.seq] = stored
        previous = current
        expected_seq += 1
    for cp in checkpoints:
        key = public_keys.get(cp.key_id)
        if key is None:
            return _broken(
                entries, checkpoints, cp.seq, f"checkpoint signed by unknown key {cp.key_id}"
            )
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(
                bytes.fromhex(cp.signature), checkpoint_message(cp.team_id, cp.seq, cp.head)
            )
        except (InvalidSignature, ValueError):
            return _broken(entries, checkpoints, cp.seq, "checkpoint signature is invalid")
        if cp.seq > len(entries):
            return _broken(
                entries,
                checkpoints,
                len(entries) + 1,
                f"entries after {len(entries)} were removed (a checkpoint covers {cp.seq})",
            )
        if heads.get(cp.seq) != cp.head:
            return _broken(entries, checkpoints, cp.seq, "chain differs from the signed checkpoint")
    return Verdict(ok=True, entries=len(entries), checkpoints=len(checkpoints))


def _broken(entries: list[Any], checkpoints: list[Checkpoint], seq: int, reason: str) -> Verdict:
    return Verdict(
        ok=False, entries=len(entries), checkpoints=len(checkpoints), broken_at=seq, reason=reason
    )
