"""The `addons` table: one row per add-on, its attachment and its sealed password."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slipway.services.gateway.core.store import Conn


@dataclass(frozen=True)
class Addon:
    """One add-on and its single attachment to its own app."""

    id: str
    app_id: str
    team_id: str
    name: str
    plan: str
    state: str
    attachment_id: str
    attachment_name: str  # "DATABASE": the config var is DATABASE_URL
    db_name: str
    db_user: str
    password: bytes  # envelope ciphertext, never the password
    host_id: str | None
    provision_message: str
    created_by: str
    created_at: str
    updated_at: str
    restore: str = ""  # a restored add-on's source: contracts.addons.RestoreFrom as JSON

    @property
    def config_var(self) -> str:
        return f"{self.attachment_name}_URL"


_SELECT = (
    "SELECT id, app_id, team_id, name, plan, state, attachment_id, attachment_name, db_name,"
    " db_user, password, host_id, provision_message, created_by, created_at, updated_at,"
    " restore FROM addons"
)


def _addon(row: Any) -> Addon:
    # sqlite3.Row iterates over values, not keys.
    return Addon(**{key: row[key] for key in row.keys()})  # noqa: SIM118


async def insert(conn: Conn, addon: Addon) -> None:
    """Store a new add-on."""
    await conn.execute(
        "INSERT INTO addons (id, app_id, team_id, name, plan, state, attachment_id,"
        " attachment_name, db_name, db_user, password, host_id, provision_message, created_by,"
        " created_at, updated_at, restore)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            addon.id,
            addon.app_id,
            addon.team_id,
            addon.name,
            addon.plan,
            addon.state,
            addon.attachment_id,
            addon.attachment_name,
            addon.db_name,
            addon.db_user,
            addon.password,
            addon.host_id,
            addon.provision_message,
            addon.created_by,
            addon.created_at,
            addon.updated_at,
            addon.restore,
        ),
    )


async def of_app(conn: Conn, app_id: str) -> list[Addon]:
    """The app's add-ons, oldest first, those being removed included."""
    async with conn.execute(
        _SELECT + " WHERE app_id = ? ORDER BY created_at, rowid", (app_id,)
    ) as cursor:
        return [_addon(row) for row in await cursor.fetchall()]


async def get(conn: Conn, ident: str) -> Addon | None:
    """An add-on by id or (globally unique) name."""
    async with conn.execute(_SELECT + " WHERE id = ? OR name = ?", (ident, ident)) as cursor:
        row = await cursor.fetchone()
    return _addon(row) if row else None


async def name_taken(conn: Conn, name: str) -> bool:
    async with conn.execute("SELECT 1 FROM addons WHERE name = ?", (name,)) as cursor:
        return await cursor.fetchone() is not None


async def set_state(
    conn: Conn,
    addon_id: str,
    state: str,
    at: str,
    *,
    host_id: str | None = None,
    message: str | None = None,
) -> None:
    """Move an add-on to `state` (keeping host and message unless given)."""
    await conn.execute(
        "UPDATE addons SET state = ?, updated_at = ?, host_id = COALESCE(?, host_id),"
        " provision_message = COALESCE(?, provision_message) WHERE id = ?",
        (state, at, host_id, message, addon_id),
    )


async def delete(conn: Conn, addon_id: str) -> None:
    await conn.execute("DELETE FROM addons WHERE id = ?", (addon_id,))


async def set_attachment(conn: Conn, addon_id: str, name: str, at: str) -> None:
    """Rename an add-on's attachment (its config var becomes `<name>_URL`)."""
    await conn.execute(
        "UPDATE addons SET attachment_name = ?, updated_at = ? WHERE id = ?", (name, at, addon_id)
    )


@dataclass(frozen=True)
class Tombstone:
    """What stays of a destroyed add-on: enough to list and restore its backups."""

    id: str
    app_id: str
    team_id: str
    name: str
    plan: str
    db_name: str
    db_user: str
    destroyed_by: str
    destroyed_at: str


async def insert_tombstone(conn: Conn, addon: Addon, by: str, at: str) -> None:
    """Remember a destroyed add-on (idempotent: a second destroy keeps the first)."""
    await conn.execute(
        "INSERT OR IGNORE INTO addon_tombstones (id, app_id, team_id, name, plan, db_name,"
        " db_user, destroyed_by, destroyed_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            addon.id,
            addon.app_id,
            addon.team_id,
            addon.name,
            addon.plan,
            addon.db_name,
            addon.db_user,
            by,
            at,
        ),
    )


async def tombstone(conn: Conn, app_id: str, ident: str) -> Tombstone | None:
    """The app's destroyed add-on with this id or name (the newest, if a name was reused)."""
    async with conn.execute(
        "SELECT id, app_id, team_id, name, plan, db_name, db_user, destroyed_by, destroyed_at"
        " FROM addon_tombstones WHERE app_id = ? AND (id = ? OR name = ?)"
        " ORDER BY destroyed_at DESC, rowid DESC LIMIT 1",
        (app_id, ident, ident),
    ) as cursor:
        row = await cursor.fetchone()
    return Tombstone(**{key: row[key] for key in row.keys()}) if row else None  # noqa: SIM118
