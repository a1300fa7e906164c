"""The keyring's database: teams, wrapped KEKs, customer keys, backup identities, the audit.

`<home>/keyring/keyring.db`, owned by the keyring alone. Nothing in it is key
material in the clear: KEKs, backup identities and the audit signing key are
stored wrapped by the master key, public keys are public, and the audit records
who asked for what, never a key.

Destroying keys must leave nothing behind: the connection runs with
`secure_delete` (deleted cells are overwritten with zeros) and after a shred or a
retirement the WAL is checkpointed and truncated, so no older page that held a
wrapped KEK or backup identity stays in the database file or its WAL. (Copies outside the keyring's
reach, such as file-system snapshots or backups of this file, are the operator's
to destroy.)

When the disk is full, an audit row that cannot be committed is kept in memory (at most
`MAX_DEFERRED_AUDIT` rows, oldest first) and written, in order, before any newer row
once space returns (by the next call, or the retry every `AUDIT_RETRY_SECONDS`): a
*read* (a data key decrypted, a public key fetched) is still answered, so reads keep
working at 100 %, while a change is refused with `InsufficientStorage` (507). Past the
bound, reads are refused too: a row is never dropped, a call is.

The audit table and the signed audit heads are append-only: triggers refuse
UPDATE and DELETE. They are
created after the migrations because libs.storage splits migration scripts on
semicolons, which a trigger body contains.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import structlog

from slipway.libs.errors import InsufficientStorage, Internal, disk_full
from slipway.libs.storage import Database
from slipway.libs.waits import wait_for_event

log = structlog.get_logger("slipway.keyring.store")

# Audit rows kept in memory while the disk is full: a row is ~200 bytes, so the bound is
# a few MB; past it, every call is refused (reads too) rather than a row dropped.
MAX_DEFERRED_AUDIT = 10_000
# How often deferred rows are tried again when no new call comes to write them.
AUDIT_RETRY_SECONDS = 2.0

MIGRATIONS = [
    """
    CREATE TABLE teams (
        team_id TEXT PRIMARY KEY,
        current_version INTEGER NOT NULL,
        retired_below INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL,
        shredded_at REAL,
        shred_reason TEXT NOT NULL DEFAULT ''
    );
    CREATE TABLE keks (
        team_id TEXT NOT NULL REFERENCES teams (team_id),
        version INTEGER NOT NULL,
        wrapped BLOB NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (team_id, version)
    );
    CREATE TABLE public_keys (
        team_id TEXT PRIMARY KEY,
        public_key BLOB NOT NULL,
        fingerprint TEXT NOT NULL,
        registered_at REAL NOT NULL
    );
    CREATE TABLE signing_keys (
        key_id TEXT PRIMARY KEY,
        public_key BLOB NOT NULL,
        wrapped_private BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        caller TEXT NOT NULL,
        operation TEXT NOT NULL,
        team_id TEXT,
        purpose TEXT,
        outcome TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT '',
        request_id TEXT
    );
    CREATE INDEX audit_team ON audit (team_id, id)
    """,
    # The audit is append-only: the database itself refuses to change or drop a row.
    """
    CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
    BEGIN SELECT RAISE(ABORT, 'the keyring audit is append-only'); END;
    CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
    BEGIN SELECT RAISE(ABORT, 'the keyring audit is append-only'); END
    """,
    # Every audit chain head the keyring signed, per team: it never signs one that does
    # not extend the highest (see vault.sign_checkpoint). Append-only like the audit.
    """
    CREATE TABLE signed_heads (
        team_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        head TEXT NOT NULL,
        signed_at REAL NOT NULL,
        PRIMARY KEY (team_id, seq)
    )
    """,
    """
    CREATE TRIGGER IF NOT EXISTS signed_heads_no_update BEFORE UPDATE ON signed_heads
    BEGIN SELECT RAISE(ABORT, 'the signed audit heads are append-only'); END;
    CREATE TRIGGER IF NOT EXISTS signed_heads_no_delete BEFORE DELETE ON signed_heads
    BEGIN SELECT RAISE(ABORT, 'the signed audit heads are append-only'); END
    """,
    # Backups: each team's platform-held age identity (wrapped by the master key), the
    # customer-held age recipients its backups are also sealed to, and whether the
    # platform's own key is still one of them.
    """
    CREATE TABLE backup_identities (
        team_id TEXT PRIMARY KEY,
        public_key BLOB NOT NULL,
        wrapped BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE backup_keys (
        team_id TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        public_key BLOB NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        PRIMARY KEY (team_id, fingerprint)
    );
    CREATE TABLE backup_settings (
        team_id TEXT PRIMARY KEY,
        platform_enabled INTEGER NOT NULL
    )
    """,
    # Master keys by version and fingerprint (never the key): which one is active, which
    # one a rotation is moving to, which were destroyed (rotation.py). `master_key_rotation`
    # is the lease of the one rotation running, across keyring instances.
    """
    CREATE TABLE master_keys (
        version INTEGER PRIMARY KEY,
        fingerprint TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        activated_at REAL,
        destroyed_at REAL
    );
    CREATE TABLE master_key_rotation (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        holder TEXT NOT NULL,
        started_at REAL NOT NULL,
        expires_at REAL NOT NULL
    )
    """,
    # Whether a team's backups are also sealed to the operator's recovery recipients: off
    # unless the team opts in (a row written before this column existed reads as off).
    """
    ALTER TABLE backup_settings ADD COLUMN operator_enabled INTEGER NOT NULL DEFAULT 0
    """,
]

# What a master key's row says about it: `pending` while a rotation moves every wrap to
# it, `active` when it is the one, `retiring` until its file is destroyed, then
# `destroyed`; `abandoned` is a pending key whose file was lost before it wrapped anything.
MASTER_STATES = ("pending", "active", "retiring", "destroyed", "abandoned")

# Every blob the master key wraps: how to read them all, how to replace one (the names
# of its row, then the blob it must still hold, so a concurrent change is never lost).
MASTER_WRAPPED: dict[str, tuple[str, str]] = {
    "keks": (
        "SELECT team_id, version, wrapped FROM keks",
        "UPDATE keks SET wrapped = ? WHERE team_id = ? AND version = ? AND wrapped = ?",
    ),
    "signing_keys": (
        "SELECT key_id, wrapped_private AS wrapped FROM signing_keys",
        "UPDATE signing_keys SET wrapped_private = ? WHERE key_id = ? AND wrapped_private = ?",
    ),
    "backup_identities": (
        "SELECT team_id, wrapped FROM backup_identities",
        "UPDATE backup_identities SET wrapped = ? WHERE team_id = ? AND wrapped = ?",
    ),
}


@dataclass(frozen=True, slots=True)
class Team:
    """A team's key state (no key material)."""

    team_id: str
    current_version: int
    retired_below: int
    shredded_at: float | None
    shred_reason: str


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One row of the keyring's audit."""

    at: float
    caller: str
    operation: str
    team_id: str | None
    purpose: str | None
    outcome: str
    detail: str = ""
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class BackupIdentity:
    """A team's platform-held age identity, as stored (the private half wrapped)."""

    team_id: str
    public_key: bytes
    wrapped: bytes
    created_at: float


@dataclass(frozen=True, slots=True)
class BackupKey:
    """A customer-held age recipient of a team's backups."""

    fingerprint: str
    public_key: bytes
    label: str
    created_at: float


@dataclass(frozen=True, slots=True)
class MasterKeyRecord:
    """One master key version as the database knows it (its fingerprint, never the key)."""

    version: int
    fingerprint: str
    state: str
    created_at: float
    activated_at: float | None = None
    destroyed_at: float | None = None


@dataclass(frozen=True, slots=True)
class MasterWrapped:
    """One stored blob the master key wraps: its table, the values naming its row, the blob."""

    table: str
    row: tuple[str | int, ...]
    wrapped: bytes


@dataclass(frozen=True, slots=True)
class SigningKey:
    key_id: str
    public_key: bytes
    wrapped_private: bytes


_TEAM = (
    "SELECT team_id, current_version, retired_below, shredded_at, shred_reason"
    " FROM teams WHERE team_id = ?"
)


class KeyringStore:
    """Reads and writes of the keyring's tables.

    Reads go through their own connection, which sees only committed rows: a key
    written by a transaction that may still roll back is never handed out.
    """

    def __init__(self, db: Database, reader: Database) -> None:
        self.db = db
        self.reader = reader
        # Held around every write transaction and the WAL checkpoint, which cannot run
        # while this connection is inside a transaction.
        self._lock = asyncio.Lock()
        # Audit rows waiting for the next group commit, and the task that writes them.
        self._audit_queue: list[tuple[AuditRecord, asyncio.Future[None], bool]] = []
        self._audit_writer: asyncio.Task[None] | None = None
        # Rows the disk had no room for, oldest first, written before any newer row.
        self.deferred_audit: list[AuditRecord] = []
        self._audit_retry: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    @classmethod
    async def open(cls, path: Path) -> KeyringStore:
        """Open (creating) the database, migrated, with secure deletion on."""
        db = await Database.open(path, MIGRATIONS)
        await db.conn.execute("PRAGMA secure_delete=ON")
        return cls(db, await Database.open(path))

    async def close(self) -> None:
        self._closing.set()
        if self._audit_retry is not None:
            await asyncio.gather(self._audit_retry, return_exceptions=True)
        await self.flush_audit()
        if self.deferred_audit:
            # Nothing more can be done for them: say how many, where an operator will look.
            log.error("keyring.audit_lost_at_close", rows=len(self.deferred_audit))
        await self.reader.close()
        await self.db.close()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction: committed on success, rolled back on any error."""
        async with self._lock, self.db.transaction() as conn:
            yield conn

    # ---- teams and KEKs -------------------------------------------------------------------

    async def team(self, team_id: str) -> Team | None:
        row = await self.reader.fetchone(_TEAM, (team_id,))
        return _team(row) if row else None

    async def wrapped_kek(self, team_id: str, version: int) -> bytes | None:
        row = await self.reader.fetchone(
            "SELECT wrapped FROM keks WHERE team_id = ? AND version = ?", (team_id, version)
        )
        return bytes(row["wrapped"]) if row else None

    async def add_kek(
        self, conn: aiosqlite.Connection, team_id: str, version: int, wrapped: bytes
    ) -> None:
        """Store KEK `version` and make it current, creating the team on its first key."""
        now = time.time()
        await conn.execute(
            "INSERT INTO teams (team_id, current_version, created_at) VALUES (?, ?, ?)"
            " ON CONFLICT (team_id) DO UPDATE SET current_version = excluded.current_version",
            (team_id, version, now),
        )
        await conn.execute(
            "INSERT INTO keks (team_id, version, wrapped, created_at) VALUES (?, ?, ?, ?)",
            (team_id, version, wrapped, now),
        )

    async def team_in(self, conn: aiosqlite.Connection, team_id: str) -> Team | None:
        """The team as seen inside a write transaction (for read-then-write decisions)."""
        async with conn.execute(_TEAM, (team_id,)) as cursor:
            row = await cursor.fetchone()
        return _team(row) if row else None

    async def retire(self, conn: aiosqlite.Connection, team_id: str, below: int) -> list[int]:
        """Destroy KEK versions below `below`; returns the versions destroyed."""
        async with conn.execute(
            "SELECT version FROM keks WHERE team_id = ? AND version < ? ORDER BY version",
            (team_id, below),
        ) as cursor:
            versions = [int(row["version"]) for row in await cursor.fetchall()]
        await conn.execute("DELETE FROM keks WHERE team_id = ? AND version < ?", (team_id, below))
        await conn.execute(
            "UPDATE teams SET retired_below = max(retired_below, ?) WHERE team_id = ?",
            (below, team_id),
        )
        return versions

    async def shred(self, conn: aiosqlite.Connection, team_id: str, reason: str) -> None:
        """Destroy every KEK, public key and backup key of a team and leave a tombstone."""
        await conn.execute("DELETE FROM keks WHERE team_id = ?", (team_id,))
        await conn.execute("DELETE FROM public_keys WHERE team_id = ?", (team_id,))
        await conn.execute("DELETE FROM backup_identities WHERE team_id = ?", (team_id,))
        await conn.execute("DELETE FROM backup_keys WHERE team_id = ?", (team_id,))
        await conn.execute("DELETE FROM backup_settings WHERE team_id = ?", (team_id,))
        await conn.execute(
            "INSERT INTO teams (team_id, current_version, created_at, shredded_at, shred_reason)"
            " VALUES (?, 0, ?, ?, ?) ON CONFLICT (team_id) DO UPDATE"
            " SET shredded_at = excluded.shredded_at, shred_reason = excluded.shred_reason",
            (team_id, time.time(), time.time(), reason),
        )

    async def purge_freed_pages(self) -> None:
        """Checkpoint and truncate the WAL, so destroyed keys survive in no older page."""
        async with self._lock, self.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)") as cursor:
            row = await cursor.fetchone()
        if row is not None and int(row[0]) != 0:
            # Busy: a reader still holds an old snapshot. The next checkpoint will finish it.
            log.warning("keyring.wal_checkpoint_busy")

    # ---- customer public keys ---------------------------------------------------------------

    async def public_key(self, team_id: str) -> tuple[bytes, str] | None:
        row = await self.reader.fetchone(
            "SELECT public_key, fingerprint FROM public_keys WHERE team_id = ?", (team_id,)
        )
        return (bytes(row["public_key"]), str(row["fingerprint"])) if row else None

    async def set_public_key(self, team_id: str, public_key: bytes, fingerprint: str) -> None:
        async with self.transaction() as conn:
            await conn.execute(
                "INSERT INTO public_keys (team_id, public_key, fingerprint, registered_at)"
                " VALUES (?, ?, ?, ?) ON CONFLICT (team_id) DO UPDATE"
                " SET public_key = excluded.public_key, fingerprint = excluded.fingerprint,"
                " registered_at = excluded.registered_at",
                (team_id, public_key, fingerprint, time.time()),
            )

    # ---- backups ------------------------------------------------------------------------------

    async def backup_identity(self, team_id: str) -> BackupIdentity | None:
        return await self.backup_identity_in(self.reader.conn, team_id)

    async def backup_identity_in(
        self, conn: aiosqlite.Connection, team_id: str
    ) -> BackupIdentity | None:
        """The team's backup identity, read on `conn` (the writer's, inside a transaction)."""
        async with conn.execute(
            "SELECT team_id, public_key, wrapped, created_at FROM backup_identities"
            " WHERE team_id = ?",
            (team_id,),
        ) as cursor:
            row = await cursor.fetchone()
        return _backup_identity(row) if row else None

    async def add_backup_identity(
        self, conn: aiosqlite.Connection, identity: BackupIdentity
    ) -> None:
        await conn.execute(
            "INSERT INTO backup_identities (team_id, public_key, wrapped, created_at)"
            " VALUES (?, ?, ?, ?)",
            (identity.team_id, identity.public_key, identity.wrapped, identity.created_at),
        )

    async def backup_keys(self, team_id: str) -> list[BackupKey]:
        """The team's customer-held backup recipients, oldest first."""
        return await self.backup_keys_in(self.reader.conn, team_id)

    async def backup_keys_in(self, conn: aiosqlite.Connection, team_id: str) -> list[BackupKey]:
        async with conn.execute(
            "SELECT fingerprint, public_key, label, created_at FROM backup_keys"
            " WHERE team_id = ? ORDER BY created_at, fingerprint",
            (team_id,),
        ) as cursor:
            rows = await cursor.fetchall()
        return [_backup_key(row) for row in rows]

    async def add_backup_key(
        self, conn: aiosqlite.Connection, team_id: str, key: BackupKey
    ) -> None:
        # Adding a key again (a retried request) only updates its label.
        await conn.execute(
            "INSERT INTO backup_keys (team_id, fingerprint, public_key, label, created_at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (team_id, fingerprint)"
            " DO UPDATE SET label = excluded.label",
            (team_id, key.fingerprint, key.public_key, key.label, key.created_at),
        )

    async def remove_backup_key(
        self, conn: aiosqlite.Connection, team_id: str, fingerprint: str
    ) -> bool:
        cursor = await conn.execute(
            "DELETE FROM backup_keys WHERE team_id = ? AND fingerprint = ?", (team_id, fingerprint)
        )
        removed = cursor.rowcount > 0
        await cursor.close()
        return removed

    async def platform_backup_enabled(self, team_id: str) -> bool:
        return await self.platform_backup_enabled_in(self.reader.conn, team_id)

    async def platform_backup_enabled_in(self, conn: aiosqlite.Connection, team_id: str) -> bool:
        async with conn.execute(
            "SELECT platform_enabled FROM backup_settings WHERE team_id = ?", (team_id,)
        ) as cursor:
            row = await cursor.fetchone()
        return bool(row["platform_enabled"]) if row else True

    async def set_platform_backup_enabled(
        self, conn: aiosqlite.Connection, team_id: str, enabled: bool
    ) -> None:
        await conn.execute(
            "INSERT INTO backup_settings (team_id, platform_enabled) VALUES (?, ?)"
            " ON CONFLICT (team_id) DO UPDATE SET platform_enabled = excluded.platform_enabled",
            (team_id, int(enabled)),
        )

    async def operator_backup_enabled(self, team_id: str) -> bool:
        """Whether the team opted in to sealing its backups to the operator's keys too."""
        row = await self.reader.fetchone(
            "SELECT operator_enabled FROM backup_settings WHERE team_id = ?", (team_id,)
        )
        return bool(row["operator_enabled"]) if row else False

    async def set_operator_backup_enabled(
        self, conn: aiosqlite.Connection, team_id: str, enabled: bool
    ) -> None:
        # A new row keeps the platform key's default (on).
        await conn.execute(
            "INSERT INTO backup_settings (team_id, platform_enabled, operator_enabled)"
            " VALUES (?, 1, ?)"
            " ON CONFLICT (team_id) DO UPDATE SET operator_enabled = excluded.operator_enabled",
            (team_id, int(enabled)),
        )

    # ---- the audit signing key ---------------------------------------------------------------

    async def signing_key(self) -> SigningKey | None:
        row = await self.reader.fetchone(
            "SELECT key_id, public_key, wrapped_private FROM signing_keys"
            " ORDER BY created_at DESC LIMIT 1"
        )
        if row is None:
            return None
        return SigningKey(
            key_id=str(row["key_id"]),
            public_key=bytes(row["public_key"]),
            wrapped_private=bytes(row["wrapped_private"]),
        )

    async def add_signing_key(self, key: SigningKey) -> None:
        async with self.transaction() as conn:
            await conn.execute(
                "INSERT INTO signing_keys (key_id, public_key, wrapped_private, created_at)"
                " VALUES (?, ?, ?, ?)",
                (key.key_id, key.public_key, key.wrapped_private, time.time()),
            )

    # ---- master keys and their rotation --------------------------------------------------------

    async def master_keys(self) -> list[MasterKeyRecord]:
        """Every master key version recorded, oldest first (committed rows)."""
        return await self.master_keys_in(self.reader.conn)

    async def master_keys_in(self, conn: aiosqlite.Connection) -> list[MasterKeyRecord]:
        async with conn.execute(
            "SELECT version, fingerprint, state, created_at, activated_at, destroyed_at"
            " FROM master_keys ORDER BY version"
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            MasterKeyRecord(
                version=int(r["version"]),
                fingerprint=str(r["fingerprint"]),
                state=str(r["state"]),
                created_at=float(r["created_at"]),
                activated_at=r["activated_at"],
                destroyed_at=r["destroyed_at"],
            )
            for r in rows
        ]

    async def add_master_key(
        self, conn: aiosqlite.Connection, version: int, fingerprint: str, state: str
    ) -> None:
        """Record a master key version; a version already recorded is left as it is."""
        now = time.time()
        await conn.execute(
            "INSERT OR IGNORE INTO master_keys (version, fingerprint, state, created_at,"
            " activated_at) VALUES (?, ?, ?, ?, ?)",
            (version, fingerprint, state, now, now if state == "active" else None),
        )

    async def set_master_key_state(
        self, conn: aiosqlite.Connection, version: int, state: str
    ) -> None:
        assert state in MASTER_STATES
        now = time.time()
        await conn.execute(
            "UPDATE master_keys SET state = ?,"
            " activated_at = CASE WHEN ? = 'active' THEN ? ELSE activated_at END,"
            " destroyed_at = CASE WHEN ? = 'destroyed' THEN ? ELSE destroyed_at END"
            " WHERE version = ?",
            (state, state, now, state, now, version),
        )

    async def master_wrapped_in(self, conn: aiosqlite.Connection) -> list[MasterWrapped]:
        """Every blob the master key wraps (KEKs, the audit signing key, backup identities)."""
        found = []
        for table, (select, _) in MASTER_WRAPPED.items():
            async with conn.execute(select) as cursor:
                for row in await cursor.fetchall():
                    names = tuple(row)[:-1]
                    found.append(MasterWrapped(table, names, bytes(row["wrapped"])))
        return found

    async def replace_master_wrapped(
        self, conn: aiosqlite.Connection, old: MasterWrapped, wrapped: bytes
    ) -> bool:
        """Store `wrapped` in place of `old` if the row still holds `old` (False if not)."""
        update = MASTER_WRAPPED[old.table][1]
        cursor = await conn.execute(update, (wrapped, *old.row, old.wrapped))
        changed = cursor.rowcount > 0
        await cursor.close()
        return changed

    async def take_rotation_lease(
        self, conn: aiosqlite.Connection, holder: str, seconds: float
    ) -> str | None:
        """Hold (or renew) the rotation lease; the other holder's name if it is taken."""
        now = time.time()
        async with conn.execute(
            "SELECT holder, expires_at FROM master_key_rotation WHERE id = 1"
        ) as cursor:
            row = await cursor.fetchone()
        if row is not None and row["holder"] != holder and float(row["expires_at"]) > now:
            return str(row["holder"])
        await conn.execute(
            "INSERT INTO master_key_rotation (id, holder, started_at, expires_at)"
            " VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET holder = excluded.holder,"
            " started_at = CASE WHEN master_key_rotation.holder = excluded.holder"
            " THEN master_key_rotation.started_at ELSE excluded.started_at END,"
            " expires_at = excluded.expires_at",
            (holder, now, now + seconds),
        )
        return None

    async def release_rotation_lease(self, holder: str) -> None:
        async with self.transaction() as conn:
            await conn.execute("DELETE FROM master_key_rotation WHERE holder = ?", (holder,))

    # ---- signed audit chain heads --------------------------------------------------------------

    async def signed_head_in(
        self, conn: aiosqlite.Connection, team_id: str
    ) -> tuple[int, str] | None:
        """The highest (seq, head hex) signed for the team, read inside a write transaction."""
        async with conn.execute(
            "SELECT seq, head FROM signed_heads WHERE team_id = ? ORDER BY seq DESC LIMIT 1",
            (team_id,),
        ) as cursor:
            row = await cursor.fetchone()
        return (int(row["seq"]), str(row["head"])) if row else None

    async def add_signed_head(
        self, conn: aiosqlite.Connection, team_id: str, seq: int, head: str
    ) -> None:
        # OR IGNORE: signing the same head again (the gateway lost its reply) adds nothing.
        await conn.execute(
            "INSERT OR IGNORE INTO signed_heads (team_id, seq, head, signed_at)"
            " VALUES (?, ?, ?, ?)",
            (team_id, seq, head, time.time()),
        )

    # ---- the audit ---------------------------------------------------------------------------

    async def append_audit(self, record: AuditRecord, *, read: bool = False) -> None:
        """Store one audit row; return once it is committed (synchronous=FULL: on disk).

        A group commit: rows that arrive while a commit is under way are written
        together by the next one. Each caller still returns only after its own row
        is committed, so no reply leaves before its audit row, but concurrent calls
        share one transaction and one fsync instead of queueing for one each (under
        load that queue was most of a data-key call's time).

        On a full disk the row is kept in memory to be written when space returns; a
        `read` then returns as if written, anything else raises InsufficientStorage.
        """
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._audit_queue.append((record, done, read))
        self._start_audit_writer()
        await done

    def _start_audit_writer(self) -> None:
        if self._audit_writer is None or self._audit_writer.done():
            self._audit_writer = asyncio.create_task(self._write_audit())

    async def _write_audit(self) -> None:
        while self._audit_queue or self.deferred_audit:
            batch, self._audit_queue = self._audit_queue, []
            earlier = list(self.deferred_audit)
            try:
                async with self.transaction() as conn:
                    rows = [_audit_row(r) for r in earlier] + [_audit_row(r) for r, _, _ in batch]
                    await conn.executemany(_INSERT_AUDIT, rows)
            except BaseException as exc:
                if isinstance(exc, Exception) and disk_full(exc):
                    # Rows that queued meanwhile would meet the same full disk: keep them too.
                    batch, self._audit_queue = batch + self._audit_queue, []
                    self._defer(batch)
                    return
                for _, done, _ in batch:
                    if not done.done():
                        done.set_exception(Internal(f"The keyring's audit is unwritable: {exc!r}"))
                if not isinstance(exc, Exception):
                    raise
                if not batch:
                    return  # only deferred rows, failing for another reason: the retry's
                continue
            if earlier:
                del self.deferred_audit[: len(earlier)]
                log.warning("keyring.audit_deferred_written", rows=len(earlier))
            for _, done, _ in batch:
                if not done.done():  # its caller may have gone; the row is written anyway
                    done.set_result(None)

    def _defer(self, batch: list[tuple[AuditRecord, asyncio.Future[None], bool]]) -> None:
        """Keep rows the disk had no room for; answer reads, refuse the rest (and past the
        bound, everything: a row is never dropped, its call is refused instead)."""
        for record, done, read in batch:
            kept = len(self.deferred_audit) < MAX_DEFERRED_AUDIT
            if kept:
                self.deferred_audit.append(record)
            if done.done():
                continue
            if kept and read:
                done.set_result(None)
            else:
                done.set_exception(
                    InsufficientStorage(
                        "The keyring's disk is full: its audit cannot be written, so it refuses"
                        " this call. Free space on the keyring's state folder; nothing is"
                        " pruned to make room."
                    )
                )
        log.warning("keyring.audit_deferred", rows=len(self.deferred_audit))
        if self._audit_retry is None or self._audit_retry.done():
            self._audit_retry = asyncio.create_task(self._retry_deferred())

    async def _retry_deferred(self) -> None:
        """Write the deferred rows once the disk has room again (a loop that never dies)."""
        while self.deferred_audit:
            if await wait_for_event(self._closing, AUDIT_RETRY_SECONDS):
                return
            self._start_audit_writer()
            assert self._audit_writer is not None
            await asyncio.gather(self._audit_writer, return_exceptions=True)

    async def flush_audit(self) -> None:
        """Wait for the audit rows already queued (before closing the database)."""
        if self._audit_writer is not None:
            await asyncio.gather(self._audit_writer, return_exceptions=True)

    async def audit(self, team_id: str | None = None) -> list[AuditRecord]:
        """The audit in order, of one team or of everything."""
        sql = (
            "SELECT at, caller, operation, team_id, purpose, outcome, detail, request_id FROM audit"
        )
        rows = await (
            self.reader.fetchall(sql + " WHERE team_id = ? ORDER BY id", (team_id,))
            if team_id is not None
            else self.reader.fetchall(sql + " ORDER BY id")
        )
        return [
            AuditRecord(
                at=float(r["at"]),
                caller=str(r["caller"]),
                operation=str(r["operation"]),
                team_id=r["team_id"],
                purpose=r["purpose"],
                outcome=str(r["outcome"]),
                detail=str(r["detail"]),
                request_id=r["request_id"],
            )
            for r in rows
        ]


def _team(row: aiosqlite.Row) -> Team:
    return Team(
        team_id=str(row["team_id"]),
        current_version=int(row["current_version"]),
        retired_below=int(row["retired_below"]),
        shredded_at=row["shredded_at"],
        shred_reason=str(row["shred_reason"]),
    )


def _backup_identity(row: aiosqlite.Row) -> BackupIdentity:
    return BackupIdentity(
        team_id=str(row["team_id"]),
        public_key=bytes(row["public_key"]),
        wrapped=bytes(row["wrapped"]),
        created_at=float(row["created_at"]),
    )


def _backup_key(row: aiosqlite.Row) -> BackupKey:
    return BackupKey(
        fingerprint=str(row["fingerprint"]),
        public_key=bytes(row["public_key"]),
        label=str(row["label"]),
        created_at=float(row["created_at"]),
    )


_INSERT_AUDIT = (
    "INSERT INTO audit (at, caller, operation, team_id, purpose, outcome, detail, request_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


def _audit_row(record: AuditRecord) -> tuple[object, ...]:
    return (
        record.at,
        record.caller,
        record.operation,
        record.team_id,
        record.purpose,
        record.outcome,
        record.detail,
        record.request_id,
    )
