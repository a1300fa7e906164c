"""The caller's account, its API rate limit, and users registered by a platform admin.

A platform admin (the bootstrap user) may create users; each new user gets a
personal team they own. Being a platform admin gives no access to any team's
apps, config or audit: only membership does.
"""

from __future__ import annotations

import re

from aiohttp import web

from slipway.services.gateway.api.teams import create_team, personal_team_name
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.core.store import new_uuid, timestamp
from slipway.services.gateway.http import ratelimit, views
from slipway.services.gateway.http.auth import actor, principal, require_admin
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import CreateUser
from slipway.services.gateway.outbox.changes import Change, change

routes = Routes("account")

EMAIL = re.compile(r"^[^@\s\x00-\x1f]{1,64}@[A-Za-z0-9.-]{1,190}\Z")


def check_email(email: str) -> str:
    if not EMAIL.match(email):
        raise InvalidParams(f"{email[:80]!r} is not a valid email address.")
    return email


async def create_user(
    tx: Change, email: str, name: str | None = None, *, platform_admin: bool = False
) -> tuple[store.User, store.Team]:
    """A new user and the personal team they own; 422 if the email is taken."""
    check_email(email)
    if await store.get_user(tx.conn, email) is not None:
        raise InvalidParams(f"A user with email {email} already exists.")
    at = timestamp()
    user_id = new_uuid()
    user = store.User(user_id, email, name, platform_admin, None, at, at)
    await store.insert_user(tx.conn, user)
    team = await create_team(tx, await personal_team_name(tx.conn, email), user, personal=True)
    await store.set_default_team(tx.conn, user_id, team.id)
    tx.audit(team.id, "user.create", details={"email": email})
    created = await store.get_user(tx.conn, user_id)
    assert created is not None
    return created, team


async def account_view(conn: store.Conn, user: store.User) -> views.Account:
    team = await store.get_team(conn, user.default_team_id) if user.default_team_id else None
    default = views.NamedRef(id=team.id, name=team.name) if team else None
    return views.Account(
        id=user.id,
        email=user.email,
        name=user.name,
        created_at=user.created_at,
        updated_at=user.updated_at,
        default_team=default,
        default_organization=default,
        platform_admin=user.platform_admin,
    )


@routes.get("/account", summary="Info for your account", response=views.Account)
async def info(request: web.Request) -> web.Response:
    return reply(await account_view(request.app[GATEWAY].reader, principal(request).user))


class RateLimits(views.View, frozen=True, kw_only=True):
    """Heroku's rate-limit resource: the API requests the caller's token has left."""

    remaining: int


@routes.get(ratelimit.STATUS_PATH, summary="Your API rate limit status", response=RateLimits)
async def rate_limits(request: web.Request) -> web.Response:
    # Asking costs nothing: a client told to wait can still learn when to resume.
    return reply(RateLimits(remaining=ratelimit.remaining(request)))


@routes.post(
    "/users",
    summary="Create a user (platform admins only)",
    body=CreateUser,
    response=views.Account,
    status=201,
    extension=True,
)
async def create(request: web.Request) -> web.Response:
    require_admin(request)
    body = await read_body(request, CreateUser)
    async with change(request.app[GATEWAY], actor(request)) as tx:
        user, _ = await create_user(tx, body.email, body.name)
        view = await account_view(tx.conn, user)
    return reply(view, 201)
