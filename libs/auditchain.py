"""The tamper-evident audit chain: canonical entries, hashes, signed checkpoints, verification.

Per team, entries form a hash chain: h_i = SHA-256(h_{i-1} || canonical(entry_i)),
with h_0 = 32 zero bytes. From time to time the gateway asks the keyring to sign a
checkpoint (team, seq, head hash) with the platform's Ed25519 audit key. Anyone
holding the entries, the checkpoints and the public key can recompute the chain
offline (`slipway audit --verify`) and learn the exact entry where it breaks.

A chain is valid only when a signed checkpoint covers its newest entry: the
gateway signs every head soon after it is written, so entries past the last
checkpoint are what someone who cut the chain (deleted its newest entries and
their checkpoints) leaves behind; the keyring refuses to sign a head that does
not extend the last one it signed for the team (services/keyring/heads.py), so a
cut or rewritten chain stays unsigned. And because whoever runs the keyring can
start it on a fresh database, which trusts the first head it is shown, a
customer can save checkpoints (`slipway audit:checkpoint`) and later prove the
chain still extends them (`extends`): a signature cannot vouch against a history
the customer holds.

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
    return _head_covered(entries, checkpoints)


def _head_covered(entries: list[Any], checkpoints: list[Checkpoint]) -> Verdict:
    """Broken at the newest entry when no checkpoint covers it: the chain may have been cut."""
    newest = len(entries)
    signed = max((cp.seq for cp in checkpoints), default=0)
    if newest > signed:
        return _broken(
            entries,
            checkpoints,
            newest,
            f"the newest entry is not covered by a signed checkpoint (the last one covers"
            f" entry {signed}): entries after it may have been cut, or the chain rewritten,"
            " which the keyring refuses to sign (or the keyring is unreachable: retry later)",
        )
    return Verdict(ok=True, entries=newest, checkpoints=len(checkpoints))


def extends(
    entries: list[tuple[AuditEntry, str]],
    saved: list[Checkpoint],
    public_keys: dict[str, bytes],
) -> Verdict:
    """Whether the (already verified) chain still holds every checkpoint the customer saved.

    Each saved checkpoint must carry a valid signature and name the very hash the
    chain has at its seq; a shorter chain means entries were removed.
    """
    hashes = {entry.seq: stored for entry, stored in entries}
    for cp in sorted(saved, key=lambda c: c.seq):
        if not _signed(cp, public_keys):
            return _broken(entries, saved, cp.seq, "the saved checkpoint's signature is invalid")
        if cp.seq not in hashes:
            return _broken(
                entries,
                saved,
                len(entries) + 1,
                f"entries after {len(entries)} were removed (your saved checkpoint covers"
                f" entry {cp.seq})",
            )
        if hashes[cp.seq] != cp.head:
            return _broken(
                entries,
                saved,
                cp.seq,
                "history was rewritten: the chain differs from the checkpoint you saved",
            )
    return Verdict(ok=True, entries=len(entries), checkpoints=len(saved))


def _signed(cp: Checkpoint, public_keys: dict[str, bytes]) -> bool:
    key = public_keys.get(cp.key_id)
    if key is None:
        return False
    try:
        Ed25519PublicKey.from_public_bytes(key).verify(
            bytes.fromhex(cp.signature), checkpoint_message(cp.team_id, cp.seq, cp.head)
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def _broken(entries: list[Any], checkpoints: list[Checkpoint], seq: int, reason: str) -> Verdict:
    return Verdict(
        ok=False, entries=len(entries), checkpoints=len(checkpoints), broken_at=seq, reason=reason
    )
