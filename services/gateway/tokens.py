"""API tokens in Heroku's oauth-authorization shape.

`POST /oauth/authorizations` answers the only copy of the token
(`access_token.token`); every later read shows `token: null`. Tokens always
expire: no `expires_in` means the gateway's default lifetime, and no lifetime
exceeds `token_max_ttl`. `DELETE` revokes at once.

A platform admin may issue a token for another user (Slipway extension,
`POST /users/{user}/authorizations`) so operators and tests can log users in.
That is recorded in the audit chain of every team the user belongs to, so the
teams see that someone may act as that user.
"""

from __future__ import annotations

import time

from aiohttp import web

from slipway.libs.errors import NotFound
from slipway.services.gateway import store, views
from slipway.services.gateway.auth import actor, new_token, principal, require_admin, token_hash
from slipway.services.gateway.changes import Change, change
from slipway.services.gateway.errors import InvalidParams
from slipway.services.gateway.routing import Routes, read_body, reply
from slipway.services.gateway.schemas import CreateAuthorization
from slipway.services.gateway.settings import GatewaySettings
from slipway.services.gateway.state import GATEWAY
from slipway.services.gateway.store import new_uuid, timestamp

routes = Routes("oauth-authorizations")

SCOPES = {"global"}


def lifetime(requested: int | None, settings: GatewaySettings) -> int:
    """The token lifetime in seconds: the default when none is asked, never above the cap."""
    if requested is None:
        return settings.token_ttl
    if requested <= 0 or requested > settings.token_max_ttl:
        raise InvalidParams(f"expires_in must be between 1 and {settings.token_max_ttl} seconds.")
    return requested


async def issue_token(
    tx: Change,
    user: store.User,
    *,
    description: str,
    expires_in: int,
    scope: list[str] | None = None,
    issued_by: str | None = None,
) -> tuple[store.Token, str]:
    """A new token for `user`; returns its record and the secret (shown once)."""
    scope = scope or ["global"]
    unknown = set(scope) - SCOPES
    if unknown:
        raise InvalidParams(f"Unknown scope {sorted(unknown)}: only 'global' is supported.")
    secret = new_token()
    at = timestamp()
    token = store.Token(
        new_uuid(),
        user.id,
        description,
        scope,
        issued_by,
        at,
        at,
        time.time() + expires_in,
        None,
    )
    await store.insert_token(tx.conn, token, token_hash(secret))
    return token, secret


def authorization_view(
    user: store.User, token: store.Token, secret: str | None
) -> views.OAuthAuthorization:
    expires_in = (
        max(0, int(token.expires_at - time.time())) if token.expires_at is not None else None
    )
    return views.OAuthAuthorization(
        id=token.id,
        description=token.description,
        scope=token.scope,
        created_at=token.created_at,
        updated_at=token.updated_at,
        access_token=views.AccessToken(id=token.id, token=secret, expires_in=expires_in),
        user=views.AuthorizationUser(id=user.id, email=user.email, full_name=user.name),
    )


def _audit_token(tx: Change, user: store.User, action: str, token: store.Token) -> None:
    if user.default_team_id:
        tx.audit(user.default_team_id, action, details={"token_id": token.id})


@routes.post(
    "/oauth/authorizations",
    summary="Create a token",
    body=CreateAuthorization,
    response=views.OAuthAuthorization,
    status=201,
)
async def create(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    body = await read_body(request, CreateAuthorization)
    user = principal(request).user
    async with change(gw, actor(request)) as tx:
        token, secret = await issue_token(
            tx,
            user,
            description=body.description,
            scope=body.scope,
            expires_in=lifetime(body.expires_in, gw.settings),
        )
        _audit_token(tx, user, "token.create", token)
    return reply(authorization_view(user, token, secret), 201)


@routes.get(
    "/oauth/authorizations",
    summary="List your tokens",
    response=list[views.OAuthAuthorization],
)
async def list_tokens(request: web.Request) -> web.Response:
    user = principal(request).user
    tokens = await store.list_tokens(request.app[GATEWAY].reader, user.id)
    return reply([authorization_view(user, token, None) for token in tokens])


async def _own_token(request: web.Request, conn: store.Conn) -> store.Token:
    token = await store.get_token(
        conn, principal(request).user.id, request.match_info["authorization"]
    )
    if token is None:
        raise NotFound("Couldn't find that authorization.")
    return token


@routes.get(
    "/oauth/authorizations/{authorization}",
    summary="Info for a token",
    response=views.OAuthAuthorization,
)
async def info(request: web.Request) -> web.Response:
    token = await _own_token(request, request.app[GATEWAY].reader)
    return reply(authorization_view(principal(request).user, token, None))


@routes.delete(
    "/oauth/authorizations/{authorization}",
    summary="Revoke a token",
    response=views.OAuthAuthorization,
)
async def revoke(request: web.Request) -> web.Response:
    user = principal(request).user
    async with change(request.app[GATEWAY], actor(request)) as tx:
        token = await _own_token(request, tx.conn)
        await store.revoke_token(tx.conn, token.id, timestamp())
        _audit_token(tx, user, "token.revoke", token)
    return reply(authorization_view(user, token, None))


@routes.post(
    "/users/{user}/authorizations",
    summary="Create a token for a user (platform admins only)",
    body=CreateAuthorization,
    response=views.OAuthAuthorization,
    status=201,
    extension=True,
)
async def create_for_user(request: web.Request) -> web.Response:
    require_admin(request)
    gw = request.app[GATEWAY]
    body = await read_body(request, CreateAuthorization)
    admin = principal(request).user
    async with change(gw, actor(request)) as tx:
        user = await store.get_user(tx.conn, request.match_info["user"])
        if user is None:
            raise NotFound("Couldn't find that user.")
        token, secret = await issue_token(
            tx,
            user,
            description=body.description,
            scope=body.scope,
            issued_by=admin.email,
            expires_in=lifetime(body.expires_in, gw.settings),
        )
        for team, _ in await store.teams_of(tx.conn, user.id):
            tx.audit(team.id, "token.issue", details={"token_id": token.id, "user": user.email})
    return reply(authorization_view(user, token, secret), 201)
