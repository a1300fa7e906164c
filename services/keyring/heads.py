"""Why the keyring signs an audit chain head only if it extends the last one it signed.

The gateway's database holds the chains; whoever controls it could cut a chain
(delete its newest entries) or rewrite an entry, recompute the hashes and have
the gateway ask for a fresh signature. The keyring remembers the highest
(seq, head) it signed per team (`signed_heads`) and, for a new head:

- a lower seq is refused (entries were removed);
- the same seq is signed again only with the same head (anything else is a rewrite);
- a higher seq must bring the proof: a previous (seq, head) no later than the
  last signed one and every entry after it, whose hashes the keyring recomputes:
  they must pass through the last signed head and reach the new one. (Starting
  before it lets a gateway that crashed before storing a signature catch up.)
  Without a SHA-256 collision, a signed head then extends every head signed before.

A team the keyring never signed for (new, or signed before this check existed,
or a keyring started on a fresh database) starts from whatever the gateway
names: the first signature is trusted on first use, and checked from then on.
"""

from __future__ import annotations

import msgspec

from slipway.contracts.keyring import SignAudit
from slipway.libs import auditchain
from slipway.libs.errors import InvalidRequest
from slipway.services.keyring.errors import AuditRollback

MAX_PROOF_ENTRIES = 256
_HEX_DIGEST = 64


def parse_checkpoint(team_id: str, message: bytes) -> tuple[int, str]:
    """(seq, head hex) of a checkpoint message of `team_id` (`auditchain.checkpoint_message`)."""
    lines = message.split(b"\n")
    try:
        seq, head = int(lines[2]), lines[3].decode("ascii")
        bytes.fromhex(head)
    except (IndexError, ValueError):
        seq, head = 0, ""
    if message != auditchain.checkpoint_message(team_id, seq, head) or seq < 1:
        raise InvalidRequest(
            "audit.sign signs audit checkpoints only: the message must be"
            f" 'slipway-audit-checkpoint/v1\\n{team_id}\\n<seq>\\n<head hex>'."
        )
    if len(head) != _HEX_DIGEST:
        raise InvalidRequest("An audit checkpoint's head is a SHA-256 hash in hex (64 digits).")
    return seq, head


def check_extends(req: SignAudit, seq: int, head: str, last: tuple[int, str] | None) -> None:
    """Raise AuditRollback unless signing (seq, head) keeps the team's chain append-only."""
    if last is None:
        if req.entries or req.previous_seq or req.previous_head:
            _check_proof(req, seq, head, through=req.previous_seq)
        return  # the first head of a team this keyring never signed for: trusted on first use
    last_seq, last_head = last
    if seq < last_seq:
        raise AuditRollback(
            f"The keyring refuses to sign entry {seq} of team {req.team_id}'s audit chain:"
            f" it signed entry {last_seq} already, so entries were removed. Restore the"
            " audit log from a backup; the keyring will not re-sign a shorter chain."
        )
    if seq == last_seq:
        if head != last_head:
            raise AuditRollback(_rewritten(req.team_id, last_seq))
        return  # the same head again: the gateway lost the first reply
    if req.previous_seq > last_seq:
        raise AuditRollback(
            f"The keyring refuses to sign entry {seq} of team {req.team_id}'s audit chain:"
            f" it signed up to entry {last_seq} only, not the checkpoint at entry"
            f" {req.previous_seq} the proof starts from (is keyring.db older than the"
            " gateway's database?)."
        )
    if _check_proof(req, seq, head, through=last_seq) != last_head:
        raise AuditRollback(_rewritten(req.team_id, last_seq))


def _rewritten(team_id: str, last_seq: int) -> str:
    return (
        f"The keyring refuses to re-sign team {team_id}'s audit chain: it differs from the"
        f" head the keyring signed at entry {last_seq}, so the history was rewritten or cut."
        " Restore the audit log from a backup."
    )


def _check_proof(req: SignAudit, seq: int, head: str, *, through: int) -> str:
    """The head the proof reaches at entry `through`, once it reaches `head` at `seq`."""
    final, passed = _chain(req, seq, through)
    if final != head:
        raise AuditRollback(
            f"The keyring refuses to sign entry {seq} of team {req.team_id}'s audit chain:"
            f" its entries do not lead from the head at entry {req.previous_seq} to this one,"
            " so the history was rewritten."
        )
    return passed


def _previous_head(req: SignAudit) -> str:
    return req.previous_head or (auditchain.GENESIS.hex() if req.previous_seq == 0 else "")


def _chain(req: SignAudit, seq: int, through: int) -> tuple[str, str]:
    """(head at `seq`, head at `through`) from the previous head through `req.entries`."""
    if len(req.entries) > MAX_PROOF_ENTRIES:
        raise InvalidRequest(
            f"An audit checkpoint proves at most {MAX_PROOF_ENTRIES} entries at once:"
            " sign the chain in steps."
        )
    if req.previous_seq < 0 or req.previous_seq + len(req.entries) != seq:
        raise InvalidRequest(
            f"An audit checkpoint at entry {seq} after entry {req.previous_seq} needs the"
            f" {seq - req.previous_seq} entries between, in order."
        )
    passed = _previous_head(req)
    try:
        head = bytes.fromhex(passed)
        for number, raw in enumerate(req.entries, start=req.previous_seq + 1):
            entry = msgspec.json.decode(raw, type=auditchain.AuditEntry)
            if entry.seq != number or entry.team_id != req.team_id:
                raise InvalidRequest(f"Entry {number} of the proof is not that entry of this team.")
            head = auditchain.link(head, entry)
            if number == through:
                passed = head.hex()
    except (ValueError, msgspec.DecodeError) as exc:
        raise InvalidRequest(f"An audit checkpoint's proof cannot be read: {exc}.") from None
    return head.hex(), passed
