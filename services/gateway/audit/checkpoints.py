"""Signed checkpoints of the audit chains, through the keyring's Ed25519 audit key.

Policy: after every commit that appended audit entries, the head of each touched
team's chain is signed (`keyring.AUDIT_SIGN` over `checkpoint_message(team, seq,
head)`) and stored. Signing runs after the commit, off the request's path, so a
burst of changes coalesces into one checkpoint of the latest head; and a keyring
outage delays checkpoints without refusing changes. At start every team whose
head is ahead of its last checkpoint is signed, so nothing stays unsigned.

The keyring signs a head only if it extends the last one it signed for the team:
each request carries the last checkpoint and the entries since (stored canonical
JSON). A cut or rewritten chain is refused (`audit_rollback`): logged as an
error, and the head stays unsigned, so `slipway audit --verify` fails.

Every signing key is recorded (`audit_keys`) the first time it signs: from
then on it is listed by `GET /audit/keys` with its validity period, which ends
when the next key first signs. A verifier can then check old checkpoints after
the keyring's key has changed, and notice a key that vanished from the list.
"""

from __future__ import annotations

import aiosqlite
import structlog

from slipway.contracts import keyring
from slipway.libs.auditchain import GENESIS, checkpoint_message
from slipway.libs.bus import Bus
from slipway.libs.errors import RemoteError
from slipway.libs.storage import Database
from slipway.services.gateway.core.store import timestamp
from slipway.services.gateway.outbox.sweeper import Sweeper

log = structlog.get_logger("slipway.gateway.checkpoints")

MAX_PROOF_ENTRIES = 256  # the keyring's limit per request (services/keyring/heads.py)
ROLLBACK = "audit_rollback"  # the keyring's refusal: the chain no longer extends what it signed


class Checkpointer(Sweeper):
    """Signs chain heads that no checkpoint covers yet."""

    name = "checkpoints"

    def __init__(
        self, db: Database, reader: aiosqlite.Connection, bus: Bus, *, interval: float = 5.0
    ) -> None:
        super().__init__(interval=interval)
        self.db = db
        self.reader = reader
        self.bus = bus
        self._dirty: set[str] | None = None  # None: look at every team (at start)

    def touched(self, team_ids: set[str]) -> None:
        """Teams whose chains grew: sign their heads soon."""
        if self._dirty is not None:
            self._dirty |= team_ids
        self.wake()

    async def sweep(self) -> None:
        teams = self._dirty if self._dirty is not None else await self._unsigned_teams()
        self._dirty = set()
        try:
            for team_id in sorted(teams):
                await self.sign_head(team_id)
        except BaseException:
            # The keyring is away: keep the teams for the next sweep.
            self._dirty |= teams
            raise

    async def _unsigned_teams(self) -> set[str]:
        async with self.reader.execute(
            "SELECT e.team_id FROM audit_entries e GROUP BY e.team_id HAVING max(e.seq) >"
            " coalesce((SELECT max(c.seq) FROM audit_checkpoints c WHERE c.team_id = e.team_id), 0)"
        ) as cursor:
            return {row["team_id"] for row in await cursor.fetchall()}

    async def sign_head(self, team_id: str) -> int | None:
        """Sign the current head of `team_id`'s chain unless a checkpoint covers it already.

        Each request proves the new head extends the last checkpoint (the entries
        between), in steps of at most `MAX_PROOF_ENTRIES`. A keyring refusal (the
        chain no longer extends what it signed: cut or rewritten) is logged and
        leaves the head unsigned, which `slipway audit --verify` reports.
        """
        async with self.reader.execute(
            "SELECT max(seq) AS seq FROM audit_entries WHERE team_id = ?", (team_id,)
        ) as cursor:
            row = await cursor.fetchone()
        newest = int(row["seq"]) if row is not None and row["seq"] is not None else 0
        signed: int | None = None
        while True:
            previous_seq, previous_head = await self._last_checkpoint(team_id)
            if previous_seq >= newest:
                return signed
            seq = min(newest, previous_seq + MAX_PROOF_ENTRIES)
            entries, digest = await self._entries(team_id, previous_seq, seq)
            request = keyring.SignAudit(
                team_id=team_id,
                message=checkpoint_message(team_id, seq, digest),
                previous_seq=previous_seq,
                previous_head=previous_head,
                entries=entries,
            )
            try:
                answer = await self.bus.call(keyring.AUDIT_SIGN, request)
            except RemoteError as exc:
                if exc.code != ROLLBACK:
                    raise
                log.error("audit.checkpoint_refused", team_id=team_id, seq=seq, reason=exc.message)
                return signed
            await self._store(team_id, seq, digest, answer)
            signed = seq

    async def _last_checkpoint(self, team_id: str) -> tuple[int, str]:
        """(seq, head hex) of the team's newest checkpoint; (0, genesis) before the first."""
        async with self.reader.execute(
            "SELECT seq, head FROM audit_checkpoints WHERE team_id = ? ORDER BY seq DESC LIMIT 1",
            (team_id,),
        ) as cursor:
            row = await cursor.fetchone()
        return (int(row["seq"]), str(row["head"])) if row else (0, GENESIS.hex())

    async def _entries(self, team_id: str, after: int, upto: int) -> tuple[list[bytes], str]:
        """The canonical entries after `after` up to `upto`, and the stored hash at `upto`."""
        async with self.reader.execute(
            "SELECT entry, hash FROM audit_entries WHERE team_id = ? AND seq > ? AND seq <= ?"
            " ORDER BY seq",
            (team_id, after, upto),
        ) as cursor:
            rows = list(await cursor.fetchall())
        entries = [_bytes(r["entry"]) for r in rows]
        return entries, str(rows[-1]["hash"]) if rows else ""

    async def _store(
        self, team_id: str, seq: int, digest: str, signed: keyring.AuditSignature
    ) -> None:
        at = timestamp()
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO audit_checkpoints"
                " (team_id, seq, head, at, key_id, signature) VALUES (?, ?, ?, ?, ?, ?)",
                (team_id, seq, digest, at, signed.key_id, signed.signature.hex()),
            )
            await record_key(conn, signed.key_id, signed.public_key, at)


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


async def record_key(conn: aiosqlite.Connection, key_id: str, public_key: bytes, at: str) -> None:
    """Remember a signing key from its first use; it retires the keys that signed before it."""
    # Checkpoints older than this table (made before it existed) date the key's first use.
    cursor = await conn.execute(
        "INSERT OR IGNORE INTO audit_keys (key_id, public_key, valid_from) VALUES (?, ?,"
        " coalesce((SELECT min(at) FROM audit_checkpoints WHERE key_id = ?), ?))",
        (key_id, public_key.hex(), key_id, at),
    )
    if cursor.rowcount:
        await conn.execute(
            "UPDATE audit_keys SET valid_until = ? WHERE key_id != ? AND valid_until IS NULL",
            (at, key_id),
        )
