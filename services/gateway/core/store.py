"""The gateway's database: rows and the queries the resources share (schema: `schema.py`).

One SQLite file, `<SLIPWAY_HOME>/gateway/gateway.db`, opened twice: a writer
(every change goes through `Database.transaction()`, so audit entries and outbox
rows commit with the change they describe) and a reader. Reads go to the reader
because aiosqlite runs one connection's statements in order, so a read on the
writer during another task's open transaction would see its uncommitted rows.

Config values are stored only as envelope ciphertext (`config_versions`); tokens
only as SHA-256 hashes. The outbox and the audit chain keep their SQL next to
the code that owns them: `outbox.py`, `changes.py` (append), `checkpoints.py`
and `audit.py` (read).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiosqlite

from slipway.libs.storage import InlineReader

Conn = aiosqlite.Connection
# What the point lookups below accept: a connection, or the reader that queries on the
# loop's thread (`Gateway.lookups`, see `libs.storage.InlineReader`).
Reads = Conn | InlineReader


def new_uuid() -> str:
    """An id as Heroku shows them: a UUID with dashes."""
    return str(uuid.uuid4())


def timestamp() -> str:
    """Now, as the API shows times: RFC 3339, UTC, whole seconds."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- rows -------------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    id: str
    email: str
    name: str | None
    platform_admin: bool
    default_team_id: str | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class Token:
    id: str
    user_id: str
    description: str
    scope: list[str]
    issued_by: str | None
    created_at: str
    updated_at: str
    expires_at: float | None
    revoked_at: str | None


@dataclass(frozen=True)
class Team:
    id: str
    name: str
    personal: bool
    created_at: str
    updated_at: str
    shredded_at: str | None


@dataclass(frozen=True)
class Member:
    id: str
    team_id: str
    user_id: str
    email: str
    name: str | None
    role: str
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class App:
    id: str
    name: str
    team_id: str
    team_name: str
    owner_id: str
    owner_email: str
    maintenance: bool
    config_version_id: str | None
    created_at: str
    updated_at: str
    released_at: str | None
    shredded_at: str | None
    hsts: bool = False  # the app feature (api/catalog.py)


@dataclass(frozen=True)
class Release:
    id: str
    app_id: str
    version: int
    description: str
    status: str
    image_ref: str | None
    image_digest: str | None
    config_version_id: str | None
    process_types: dict[str, str]
    user_id: str | None
    user_email: str
    rollback_of: int | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class Formation:
    id: str
    app_id: str
    type: str
    quantity: int
    size: str
    command: str
    created_at: str
    updated_at: str


def _user(row: Any) -> User:
    return User(
        row["id"],
        row["email"],
        row["name"],
        bool(row["platform_admin"]),
        row["default_team_id"],
        row["created_at"],
        row["updated_at"],
    )


def _token(row: Any) -> Token:
    return Token(
        row["id"],
        row["user_id"],
        row["description"],
        json.loads(row["scope"]),
        row["issued_by"],
        row["created_at"],
        row["updated_at"],
        row["expires_at"],
        row["revoked_at"],
    )


def _team(row: Any) -> Team:
    return Team(
        row["id"],
        row["name"],
        bool(row["personal"]),
        row["created_at"],
        row["updated_at"],
        row["shredded_at"],
    )


def _member(row: Any) -> Member:
    return Member(
        row["id"],
        row["team_id"],
        row["user_id"],
        row["email"],
        row["name"],
        row["role"],
        row["created_at"],
        row["updated_at"],
    )


def _app(row: Any) -> App:
    return App(
        row["id"],
        row["name"],
        row["team_id"],
        row["team_name"],
        row["owner_id"],
        row["owner_email"],
        bool(row["maintenance"]),
        row["config_version_id"],
        row["created_at"],
        row["updated_at"],
        row["released_at"],
        row["shredded_at"],
        bool(row["hsts"]),
    )


def _release(row: Any) -> Release:
    return Release(
        row["id"],
        row["app_id"],
        row["version"],
        row["description"],
        row["status"],
        row["image_ref"],
        row["image_digest"],
        row["config_version_id"],
        json.loads(row["process_types"]),
        row["user_id"],
        row["user_email"],
        row["rollback_of"],
        row["created_at"],
        row["updated_at"],
    )


def _formation(row: Any) -> Formation:
    return Formation(
        row["id"],
        row["app_id"],
        row["type"],
        row["quantity"],
        row["size"],
        row["command"],
        row["created_at"],
        row["updated_at"],
    )


# aiosqlite runs each call on the connection's own thread and wakes the event loop with
# its answer: `execute` + `fetchone` + closing the cursor is three such round trips, and
# under load those hand-offs, not SQLite, are what a request waits for. One call does it all.


async def _one(conn: Reads, sql: str, params: tuple[Any, ...]) -> Any:
    rows = list(await conn.execute_fetchall(sql, params))
    return rows[0] if rows else None


async def _all(conn: Reads, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return list(await conn.execute_fetchall(sql, params))


# ---- users and tokens ---------------------------------------------------------------------


async def count_users(conn: Conn) -> int:
    row = await _one(conn, "SELECT count(*) FROM users", ())
    return int(row[0])


async def insert_user(conn: Conn, user: User) -> None:
    await conn.execute(
        "INSERT INTO users (id, email, name, platform_admin, default_team_id, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            user.id,
            user.email,
            user.name,
            int(user.platform_admin),
            user.default_team_id,
            user.created_at,
            user.updated_at,
        ),
    )


async def get_user(conn: Conn, ident: str) -> User | None:
    """A user by id or email."""
    row = await _one(conn, "SELECT * FROM users WHERE id = ? OR email = ?", (ident, ident))
    return _user(row) if row else None


async def set_default_team(conn: Conn, user_id: str, team_id: str) -> None:
    await conn.execute("UPDATE users SET default_team_id = ? WHERE id = ?", (team_id, user_id))


async def insert_token(conn: Conn, token: Token, token_hash: str) -> None:
    await conn.execute(
        "INSERT INTO tokens (id, user_id, token_hash, description, scope, issued_by,"
        " created_at, updated_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            token.id,
            token.user_id,
            token_hash,
            token.description,
            json.dumps(token.scope),
            token.issued_by,
            token.created_at,
            token.updated_at,
            token.expires_at,
        ),
    )


async def user_by_token_hash(conn: Reads, token_hash: str) -> tuple[User, Token] | None:
    """The user a token hash belongs to, with the token (whatever its state)."""
    found = await token_owner(conn, token_hash)
    return (found[0], found[1]) if found else None


async def token_owner(conn: Reads, token_hash: str) -> tuple[User, Token, str | None] | None:
    """`user_by_token_hash` plus when the user was disabled (None: enabled), in one query."""
    row = await _one(
        conn,
        "SELECT u.*, t.id AS t_id, t.description, t.scope, t.issued_by, t.created_at AS t_created,"
        " t.updated_at AS t_updated, t.expires_at, t.revoked_at FROM tokens t"
        " JOIN users u ON u.id = t.user_id WHERE t.token_hash = ?",
        (token_hash,),
    )
    if row is None:
        return None
    token = Token(
        row["t_id"],
        row["id"],
        row["description"],
        json.loads(row["scope"]),
        row["issued_by"],
        row["t_created"],
        row["t_updated"],
        row["expires_at"],
        row["revoked_at"],
    )
    return _user(row), token, row["disabled_at"] or None


async def list_tokens(conn: Conn, user_id: str) -> list[Token]:
    rows = await _all(
        conn,
        "SELECT * FROM tokens WHERE user_id = ? AND revoked_at IS NULL ORDER BY created_at, id",
        (user_id,),
    )
    return [_token(r) for r in rows]


async def get_token(conn: Conn, user_id: str, token_id: str) -> Token | None:
    row = await _one(
        conn,
        "SELECT * FROM tokens WHERE id = ? AND user_id = ? AND revoked_at IS NULL",
        (token_id, user_id),
    )
    return _token(row) if row else None


async def revoke_token(conn: Conn, token_id: str, at: str) -> None:
    await conn.execute(
        "UPDATE tokens SET revoked_at = ?, updated_at = ? WHERE id = ?", (at, at, token_id)
    )


# ---- teams and members --------------------------------------------------------------------


async def insert_team(conn: Conn, team: Team) -> None:
    await conn.execute(
        "INSERT INTO teams (id, name, personal, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
        (team.id, team.name, int(team.personal), team.created_at, team.updated_at),
    )


async def get_team(conn: Reads, ident: str) -> Team | None:
    row = await _one(conn, "SELECT * FROM teams WHERE id = ? OR name = ?", (ident, ident))
    return _team(row) if row else None


async def team_name_taken(conn: Conn, name: str) -> bool:
    return await _one(conn, "SELECT 1 FROM teams WHERE name = ?", (name,)) is not None


async def mark_team_shredded(conn: Conn, team_id: str, at: str) -> None:
    await conn.execute(
        "UPDATE teams SET shredded_at = ?, updated_at = ? WHERE id = ?", (at, at, team_id)
    )


async def teams_of(conn: Conn, user_id: str) -> list[tuple[Team, str]]:
    """The teams a user belongs to, with the user's role in each."""
    rows = await _all(
        conn,
        "SELECT t.*, m.role FROM teams t JOIN members m ON m.team_id = t.id"
        " WHERE m.user_id = ? ORDER BY t.name",
        (user_id,),
    )
    return [(_team(r), r["role"]) for r in rows]


async def role_in(conn: Reads, team_id: str, user_id: str) -> str | None:
    row = await _one(
        conn, "SELECT role FROM members WHERE team_id = ? AND user_id = ?", (team_id, user_id)
    )
    return str(row["role"]) if row else None


_MEMBER_SELECT = "SELECT m.*, u.email, u.name FROM members m JOIN users u ON u.id = m.user_id"


async def list_members(conn: Conn, team_id: str) -> list[Member]:
    rows = await _all(conn, f"{_MEMBER_SELECT} WHERE m.team_id = ? ORDER BY u.email", (team_id,))
    return [_member(r) for r in rows]


async def get_member(conn: Conn, team_id: str, ident: str) -> Member | None:
    """A membership by member id, user id or email."""
    row = await _one(
        conn,
        f"{_MEMBER_SELECT} WHERE m.team_id = ? AND (m.id = ? OR u.id = ? OR u.email = ?)",
        (team_id, ident, ident, ident),
    )
    return _member(row) if row else None


async def upsert_member(
    conn: Conn, member_id: str, team_id: str, user_id: str, role: str, at: str
) -> None:
    await conn.execute(
        "INSERT INTO members (id, team_id, user_id, role, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (team_id, user_id)"
        " DO UPDATE SET role = excluded.role, updated_at = excluded.updated_at",
        (member_id, team_id, user_id, role, at, at),
    )


async def delete_member(conn: Conn, team_id: str, user_id: str) -> None:
    await conn.execute("DELETE FROM members WHERE team_id = ? AND user_id = ?", (team_id, user_id))


async def count_owners(conn: Conn, team_id: str) -> int:
    row = await _one(
        conn, "SELECT count(*) FROM members WHERE team_id = ? AND role = 'owner'", (team_id,)
    )
    return int(row[0])


# ---- apps ---------------------------------------------------------------------------------

_APP_SELECT = (
    "SELECT a.*, t.name AS team_name, t.shredded_at, u.email AS owner_email FROM apps a"
    " JOIN teams t ON t.id = a.team_id JOIN users u ON u.id = a.owner_id"
)


async def insert_app(conn: Conn, app: App) -> None:
    await conn.execute(
        "INSERT INTO apps (id, name, team_id, owner_id, maintenance, created_at, updated_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (
            app.id,
            app.name,
            app.team_id,
            app.owner_id,
            int(app.maintenance),
            app.created_at,
            app.updated_at,
        ),
    )


async def app_name_taken(conn: Conn, name: str) -> bool:
    return await _one(conn, "SELECT 1 FROM apps WHERE name = ?", (name,)) is not None


async def get_app(conn: Reads, ident: str) -> App | None:
    """An app by id or name, whoever asks (callers check membership)."""
    row = await _one(conn, f"{_APP_SELECT} WHERE a.id = ? OR a.name = ?", (ident, ident))
    return _app(row) if row else None


async def app_for_user(conn: Reads, ident: str, user_id: str) -> tuple[App, str] | None:
    """An app by id or name with the user's role in its team; None if not a member."""
    row = await _one(
        conn,
        "SELECT a.*, t.name AS team_name, t.shredded_at, u.email AS owner_email,"
        " m.role AS member_role FROM apps a"
        " JOIN teams t ON t.id = a.team_id JOIN users u ON u.id = a.owner_id"
        " JOIN members m ON m.team_id = a.team_id AND m.user_id = ?"
        " WHERE a.id = ? OR a.name = ?",
        (user_id, ident, ident),
    )
    return (_app(row), str(row["member_role"])) if row else None


async def apps_of(conn: Conn, user_id: str) -> list[App]:
    rows = await _all(
        conn,
        f"{_APP_SELECT} JOIN members m ON m.team_id = a.team_id WHERE m.user_id = ?"
        " ORDER BY a.name",
        (user_id,),
    )
    return [_app(r) for r in rows]


async def update_app(conn: Conn, app_id: str, at: str, **fields: Any) -> None:
    # Column names come from this module's callers, never from a request.
    assignments = ", ".join(f"{column} = ?" for column in fields)
    await conn.execute(
        f"UPDATE apps SET {assignments}, updated_at = ? WHERE id = ?",  # noqa: S608
        (*fields.values(), at, app_id),
    )


async def delete_app(conn: Conn, app_id: str) -> None:
    await conn.execute("DELETE FROM apps WHERE id = ?", (app_id,))


# ---- config, releases, formation --------------------------------------------------------


async def insert_config_version(
    conn: Conn, version_id: str, app_id: str, ciphertext: bytes, at: str
) -> None:
    await conn.execute(
        "INSERT INTO config_versions (id, app_id, ciphertext, created_at) VALUES (?, ?, ?, ?)",
        (version_id, app_id, ciphertext, at),
    )


async def config_ciphertext(conn: Reads, app_id: str, version_id: str) -> bytes | None:
    row = await _one(
        conn,
        "SELECT ciphertext FROM config_versions WHERE id = ? AND app_id = ?",
        (version_id, app_id),
    )
    return bytes(row["ciphertext"]) if row else None


async def insert_release(conn: Conn, release: Release) -> None:
    await conn.execute(
        "INSERT INTO releases (id, app_id, version, description, status, image_ref,"
        " image_digest, config_version_id, process_types, user_id, user_email, rollback_of,"
        " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            release.id,
            release.app_id,
            release.version,
            release.description,
            release.status,
            release.image_ref,
            release.image_digest,
            release.config_version_id,
            json.dumps(release.process_types),
            release.user_id,
            release.user_email,
            release.rollback_of,
            release.created_at,
            release.updated_at,
        ),
    )


async def list_releases(conn: Conn, app_id: str) -> list[Release]:
    rows = await _all(conn, "SELECT * FROM releases WHERE app_id = ? ORDER BY version", (app_id,))
    return [_release(r) for r in rows]


async def get_release(conn: Conn, app_id: str, ident: str) -> Release | None:
    """A release by id, version number or "v<N>"."""
    version = ident[1:] if ident[:1] in ("v", "V") else ident
    row = await _one(
        conn,
        "SELECT * FROM releases WHERE app_id = ? AND (id = ? OR CAST(version AS TEXT) = ?)",
        (app_id, ident, version),
    )
    return _release(row) if row else None


async def current_release(conn: Conn, app_id: str) -> Release | None:
    row = await _one(
        conn, "SELECT * FROM releases WHERE app_id = ? ORDER BY version DESC LIMIT 1", (app_id,)
    )
    return _release(row) if row else None


async def list_formation(conn: Conn, app_id: str) -> list[Formation]:
    rows = await _all(conn, "SELECT * FROM formation WHERE app_id = ? ORDER BY type", (app_id,))
    return [_formation(r) for r in rows]


async def upsert_formation(conn: Conn, row: Formation) -> None:
    await conn.execute(
        "INSERT INTO formation (id, app_id, type, quantity, size, command, created_at,"
        " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (app_id, type) DO UPDATE SET"
        " quantity = excluded.quantity, size = excluded.size, command = excluded.command,"
        " updated_at = excluded.updated_at",
        (
            row.id,
            row.app_id,
            row.type,
            row.quantity,
            row.size,
            row.command,
            row.created_at,
            row.updated_at,
        ),
    )


async def delete_formation(conn: Conn, app_id: str, process_type: str) -> None:
    await conn.execute(
        "DELETE FROM formation WHERE app_id = ? AND type = ?", (app_id, process_type)
    )


async def all_apps(conn: Conn) -> list[App]:
    """Every app of every team, for the platform's own services (never for a customer)."""
    rows = await _all(conn, f"{_APP_SELECT} ORDER BY a.name")
    return [_app(r) for r in rows]
