"""Tokens and roles: who is calling, and what their role in a team lets them do.

Tokens are `slp_` + 256 random bits (URL-safe base64). Only their SHA-256 is
stored; the token itself is shown once, in the answer that created it. A token
is refused (401) once revoked or past its expiry.

Roles, per team:

    owner   everything, including granting owner and destroying the team's key
    admin   manage members (not owners), delete apps, rotate the team's key
    member  create apps, deploy, change config, scale, roll back
    viewer  read only

A user who is not a member of an app's team is told the app does not exist
(404, not 403): another team's app names are not theirs to learn. The one way
in without membership is an active break-glass grant (`grants.py`), which
gives its role until it expires or a team owner revokes it.

A disabled user (`users.disabled_at`) is refused (401) on every request, with
every token they hold, from the moment the change commits.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

from aiohttp import web

from slipway.libs.errors import Forbidden, NotFound, Unauthorized
from slipway.services.gateway.api import grants
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, REQUEST_ID
from slipway.services.gateway.outbox.changes import Actor

TOKEN_PREFIX = "slp_"  # noqa: S105 - a public marker that makes leaked tokens greppable


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    VIEWER = "viewer"


class Action(StrEnum):
    READ = "read"
    DEPLOY = "deploy"  # create apps, config, releases, formation
    MANAGE = "manage"  # members, deleting apps, key rotation
    DESTROY = "destroy"  # crypto-shredding the team, granting owner


ALLOWED: dict[Role, frozenset[Action]] = {
    Role.OWNER: frozenset(Action),
    Role.ADMIN: frozenset({Action.READ, Action.DEPLOY, Action.MANAGE}),
    Role.MEMBER: frozenset({Action.READ, Action.DEPLOY}),
    Role.VIEWER: frozenset({Action.READ}),
}


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request."""

    user: store.User
    token: store.Token


PRINCIPAL = web.RequestKey("principal", Principal)


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def bearer(header: str | None) -> str:
    """The token of an `Authorization: Bearer <token>` header."""
    if not header:
        raise Unauthorized("No credentials: send `Authorization: Bearer <token>`.")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Use `Authorization: Bearer <token>`.")
    return token.strip()


class PrincipalCache:
    """The principals of recently verified tokens, by token hash, in this process's memory.

    Every request used to read the token and the user from the database; most of them
    come from a handful of tokens in use right now. An entry lives `ttl` seconds at
    most; revoking a token or disabling a user empties the cache when its transaction
    commits (`forget_principals`), so those take effect at once, as before. The TTL
    bounds what nothing announces (a database edited by hand, a snapshot restored).
    Only valid principals are kept, and only under the token's SHA-256, never the
    token: an unknown, revoked or disabled one reads the database every time. Expiry
    is checked on every request against the cached token's `expires_at`.
    """

    def __init__(self, ttl: float = 10.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[Principal, float]] = {}
        # Bumped by every invalidation: a lookup that began before one (and may have
        # read the row as it was) must not store what it read.
        self.generation = 0

    def get(self, key: str, now: float) -> Principal | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        found, until = entry
        if now >= until:
            del self._entries[key]
            return None
        return found

    def put(self, key: str, found: Principal, generation: int, now: float) -> None:
        if generation != self.generation:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()  # a full table is rare: start again rather than track age
        self._entries[key] = (found, now + self.ttl)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()


PRINCIPALS = web.AppKey("principals", PrincipalCache)


def forget_principals(request: web.Request) -> None:
    """After a commit that revokes a token or (dis)ables a user: verify every token again."""
    cache = request.app.get(PRINCIPALS)
    if cache is not None:
        cache.clear()


async def authenticate(request: web.Request, now: float) -> Principal:
    """The user behind the request's bearer token; Unauthorized if none is valid."""
    key = token_hash(bearer(request.headers.get("Authorization")))
    cache = request.app.get(PRINCIPALS)
    clock = time.monotonic()
    found = cache.get(key, clock) if cache is not None else None
    if found is None:
        generation = cache.generation if cache is not None else 0
        found = await _verify(request.app[GATEWAY].reads, key)
        if cache is not None:
            cache.put(key, found, generation, clock)
    expires_at = found.token.expires_at
    if expires_at is not None and expires_at <= now:
        raise Unauthorized("This token has expired: create a new one.")
    return found


async def _verify(conn: store.Reads, key: str) -> Principal:
    """The principal of a token hash, read from the database; Unauthorized unless usable."""
    found = await store.token_owner(conn, key)
    if found is None:
        raise Unauthorized("Invalid credentials provided.")
    user, record, disabled = found
    if disabled is not None:
        raise Unauthorized("This account is disabled: ask your platform admin to enable it.")
    if record.revoked_at is not None:
        raise Unauthorized("This token was revoked.")
    return Principal(user, record)


async def disabled_at(conn: store.Conn, user_id: str) -> str | None:
    """When the user was disabled, or None for an enabled user."""
    async with conn.execute("SELECT disabled_at FROM users WHERE id = ?", (user_id,)) as cursor:
        row = await cursor.fetchone()
    return str(row["disabled_at"]) if row and row["disabled_at"] else None


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def actor(request: web.Request) -> Actor:
    """The acting user as the audit chain records them."""
    user = request[PRINCIPAL].user
    return Actor(
        email=user.email,
        user_id=user.id,
        source_ip=request.remote,
        request_id=request.get(REQUEST_ID),
    )


def require(role: str, action: Action, doing: str) -> None:
    """Forbidden unless `role` allows `action`; `doing` completes "cannot ..."."""
    if action not in ALLOWED[Role(role)]:
        raise Forbidden(f"Your role in this team ({role}) cannot {doing}.")


def require_admin(request: web.Request) -> None:
    if not request[PRINCIPAL].user.platform_admin:
        raise Forbidden("Only a platform admin can do this.")


async def app_for(request: web.Request, action: Action, doing: str) -> store.App:
    """The app named in the path if the caller's team role allows `action` on it."""
    gw = request.app[GATEWAY]
    user_id = request[PRINCIPAL].user.id
    found = await store.app_for_user(gw.reads, request.match_info["app"], user_id)
    if found is None:
        found = await _granted_app(gw.reader, request.match_info["app"], user_id)
    if found is None:
        raise NotFound("Couldn't find that app.")
    app, role = found
    require(role, action, doing)
    return app


async def _granted_app(conn: store.Conn, ident: str, user_id: str) -> tuple[store.App, str] | None:
    """The app and the role a break-glass grant on its team gives, if one is active."""
    app = await store.get_app(conn, ident)
    if app is None:
        return None
    role = await grants.active_role(conn, app.team_id, user_id, time.time())
    return (app, role) if role else None


async def team_for(
    request: web.Request, ident: str, action: Action, doing: str
) -> tuple[store.Team, str]:
    """A team by name or id with the caller's role, if the role allows `action`."""
    gw = request.app[GATEWAY]
    team = await store.get_team(gw.reader, ident)
    user_id = principal(request).user.id
    role = await store.role_in(gw.reader, team.id, user_id) if team else None
    if team is not None and role is None:
        role = await grants.active_role(gw.reader, team.id, user_id, time.time())
    if team is None or role is None:
        raise NotFound("Couldn't find that team.")
    require(role, action, doing)
    return team, role
