"""The scheduler's database: hosts, what each app should run, and its dynos' counters.

What actually runs is read from the engines (container labels), never trusted from
here: the `dynos` table keeps only what a container cannot say about itself —
restart counts and states across a scheduler restart. `apps` keeps the desired
release and formation from the gateway's events, and the last release that reached
all its dynos (`serving`), which keeps running when a newer one fails.
Config values never reach this database: only the config version.
"""

from __future__ import annotations

import time
from pathlib import Path

import aiosqlite
import msgspec

from slipway.contracts.gateway import AppDesired
from slipway.contracts.scheduler import HostInfo
from slipway.libs.storage import Database, claim

MIGRATIONS = (
    """
    CREATE TABLE hosts (
        id TEXT PRIMARY KEY,
        endpoint TEXT NOT NULL,
        address TEXT NOT NULL,
        memory_mb INTEGER NOT NULL,
        max_dynos INTEGER,
        state TEXT NOT NULL,
        tls_ca TEXT, tls_cert TEXT, tls_key TEXT,
        created_at REAL NOT NULL,
        last_seen REAL NOT NULL DEFAULT 0
    );
    CREATE TABLE apps (
        app_id TEXT PRIMARY KEY,
        desired BLOB NOT NULL,
        serving BLOB,
        failed_release INTEGER,
        release_phase_done INTEGER,
        destroyed INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL
    );
    CREATE TABLE dynos (
        container_id TEXT PRIMARY KEY,
        host_id TEXT NOT NULL,
        app_id TEXT NOT NULL,
        name TEXT NOT NULL,
        release INTEGER NOT NULL,
        state TEXT NOT NULL,
        restart_count INTEGER NOT NULL DEFAULT 0,
        updated_at REAL NOT NULL
    );
    CREATE INDEX dynos_app ON dynos (app_id);
    """,
)


class HostRow(msgspec.Struct, frozen=True, kw_only=True):
    """A host as stored, TLS file paths included."""

    info: HostInfo
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


class AppRow(msgspec.Struct, frozen=True, kw_only=True):
    """What one app should run and what last ran well."""

    desired: AppDesired
    serving: AppDesired | None = None
    failed_release: int | None = None
    release_phase_done: int | None = None
    destroyed: bool = False


_desired_enc = msgspec.json.Encoder()
_desired_dec = msgspec.json.Decoder(AppDesired)


class SchedulerStore:
    """Typed reads and writes over the scheduler's SQLite file."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @classmethod
    async def open(cls, path: Path) -> SchedulerStore:
        """Open (creating and migrating) the database at `path`."""
        return cls(await Database.open(path, MIGRATIONS))

    async def close(self) -> None:
        await self.db.close()

    # ---- hosts ---------------------------------------------------------------------------

    async def hosts(self) -> list[HostRow]:
        """Every registered host, by id."""
        rows = await self.db.fetchall("SELECT * FROM hosts ORDER BY id")
        return [
            HostRow(
                info=HostInfo(
                    id=r["id"],
                    endpoint=r["endpoint"],
                    address=r["address"],
                    memory_mb=r["memory_mb"],
                    max_dynos=r["max_dynos"],
                    state=r["state"],
                    last_seen=r["last_seen"],
                ),
                tls_ca=r["tls_ca"],
                tls_cert=r["tls_cert"],
                tls_key=r["tls_key"],
            )
            for r in rows
        ]

    async def put_host(self, row: HostRow) -> None:
        """Insert or replace one host."""
        info = row.info
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT OR REPLACE INTO hosts (id, endpoint, address, memory_mb, max_dynos, state,"
                " tls_ca, tls_cert, tls_key, created_at, last_seen)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    info.id,
                    info.endpoint,
                    info.address,
                    info.memory_mb,
                    info.max_dynos,
                    info.state,
                    row.tls_ca,
                    row.tls_cert,
                    row.tls_key,
                    time.time(),
                    info.last_seen,
                ),
            )

    async def set_host_state(self, host_id: str, state: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("UPDATE hosts SET state = ? WHERE id = ?", (state, host_id))

    async def delete_host(self, host_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM hosts WHERE id = ?", (host_id,))

    # ---- apps ----------------------------------------------------------------------------

    async def apps(self) -> dict[str, AppRow]:
        """Every app the scheduler knows, destroyed ones included (their containers go)."""
        rows = await self.db.fetchall("SELECT * FROM apps")
        return {r["app_id"]: self._app(r) for r in rows}

    async def app(self, app_id: str) -> AppRow | None:
        row = await self.db.fetchone("SELECT * FROM apps WHERE app_id = ?", (app_id,))
        return None if row is None else self._app(row)

    @staticmethod
    def _app(r: aiosqlite.Row) -> AppRow:
        return AppRow(
            desired=_desired_dec.decode(r["desired"]),
            serving=None if r["serving"] is None else _desired_dec.decode(r["serving"]),
            failed_release=r["failed_release"],
            release_phase_done=r["release_phase_done"],
            destroyed=bool(r["destroyed"]),
        )

    async def put_desired(
        self, desired: AppDesired, *, event_id: str | None = None, destroyed: bool = False
    ) -> bool:
        """Store an app's desired state (once per event id); False if the event was seen."""
        async with self.db.transaction() as conn:
            if event_id is not None and not await claim(conn, event_id):
                return False
            await conn.execute(
                "INSERT INTO apps (app_id, desired, destroyed, updated_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (app_id) DO UPDATE SET desired = excluded.desired,"
                " destroyed = excluded.destroyed, updated_at = excluded.updated_at",
                (desired.app_id, _desired_enc.encode(desired), int(destroyed), time.time()),
            )
        return True

    async def set_serving(self, app_id: str, serving: AppDesired) -> None:
        """The release that reached every dyno: it keeps serving if a later one fails."""
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE apps SET serving = ? WHERE app_id = ?",
                (_desired_enc.encode(serving), app_id),
            )

    async def set_failed(self, app_id: str, release: int | None) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE apps SET failed_release = ? WHERE app_id = ?", (release, app_id)
            )

    async def set_release_phase_done(self, app_id: str, release: int) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "UPDATE apps SET release_phase_done = ? WHERE app_id = ?", (release, app_id)
            )

    async def forget_app(self, app_id: str) -> None:
        """A destroyed app whose containers are all gone."""
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM apps WHERE app_id = ?", (app_id,))
            await conn.execute("DELETE FROM dynos WHERE app_id = ?", (app_id,))

    # ---- dynos ---------------------------------------------------------------------------

    async def restart_counts(self) -> dict[str, tuple[str, int]]:
        """container id → (state, restart count), for adoption after a restart."""
        rows = await self.db.fetchall("SELECT container_id, state, restart_count FROM dynos")
        return {r["container_id"]: (r["state"], r["restart_count"]) for r in rows}

    async def put_dyno(
        self,
        container_id: str,
        *,
        host_id: str,
        app_id: str,
        name: str,
        release: int,
        state: str,
        restart_count: int,
    ) -> None:
        async with self.db.transaction() as conn:
            await conn.execute(
                "INSERT OR REPLACE INTO dynos (container_id, host_id, app_id, name, release,"
                " state, restart_count, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (container_id, host_id, app_id, name, release, state, restart_count, time.time()),
            )

    async def forget_vanished_dynos(self, host_ids: set[str], keep: set[str]) -> int:
        """Delete the rows of `host_ids`' dynos not in `keep` (containers no engine lists,
        as after a restore on a fresh machine); how many went."""
        rows = await self.db.fetchall("SELECT container_id, host_id FROM dynos")
        gone = [
            r["container_id"]
            for r in rows
            if r["host_id"] in host_ids and r["container_id"] not in keep
        ]
        if gone:
            async with self.db.transaction() as conn:
                await conn.executemany(
                    "DELETE FROM dynos WHERE container_id = ?", [(c,) for c in gone]
                )
        return len(gone)

    async def delete_dyno(self, container_id: str) -> None:
        async with self.db.transaction() as conn:
            await conn.execute("DELETE FROM dynos WHERE container_id = ?", (container_id,))
