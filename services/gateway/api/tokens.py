"""API tokens in Heroku's oauth-authorization shape, and how a user gets their first one.

`POST /oauth/authorizations` answers the only copy of the token
(`access_token.token`); every later read shows `token: null`. Tokens always
expire: no `expires_in` means the gateway's default lifetime, and no lifetime
exceeds `token_max_ttl` nor the expiry of the token that asks (a token never
creates one that outlives it: a leaked short-lived token stays short-lived).
`DELETE` revokes at once.

No operator impersonation: nobody, a platform admin included, can mint a token
for another user (`POST /users/{user}/authorizations` creates one for yourself
only). A new user gets their first token through an invitation bound to a
secret only they hold: the user makes a secret (`slipway auth:invite-code`)
and hands its SHA-256 (the verifier) to the admin, who invites them with it
(`POST /users/{user}/invitations`); the user redeems it once, anonymously,
with the secret (`POST /invitations/actions/redeem`). The admin never sees the
secret, and an invitation is refused for a user who has ever held a token, so
an admin cannot take over an existing account by re-inviting it. Every step is
written to the audit chain of each of the user's teams.

A platform admin may disable a user (`POST /users/{user}/actions/disable`):
every token of theirs answers 401 from that commit on (`auth.py`), and
`/actions/enable` lets the same tokens work again.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from datetime import UTC, datetime

from aiohttp import web

from slipway.libs.errors import Conflict, Forbidden, NotFound, Unauthorized
from slipway.services.gateway.core import store
from slipway.services.gateway.core.settings import GatewaySettings
from slipway.services.gateway.core.state import GATEWAY, REQUEST_ID
from slipway.services.gateway.core.store import new_uuid, timestamp
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import (
    actor,
    disabled_at,
    forget_principals,
    new_token,
    principal,
    require_admin,
    token_hash,
)
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import Body, CreateAuthorization
from slipway.services.gateway.outbox.changes import Actor, Change, change

routes = Routes("oauth-authorizations")

SCOPES = {"global"}
INVITATION_TTL = 3 * 86400
INVITATION_MAX_TTL = 14 * 86400
VERIFIER = re.compile(r"^[0-9a-f]{64}\Z")
BAD_INVITATION = (
    "This invitation is not valid (unknown, used, expired or wrong secret):"
    " ask your platform admin for a new one."
)


class CreateInvitation(Body, frozen=True, kw_only=True):
    """Slipway: invite a user who never signed in; `verifier` is SHA-256 (hex) of their secret."""

    verifier: str
    expires_in: int | None = None


class RedeemInvitation(Body, frozen=True, kw_only=True):
    """Slipway: the invited user trades their secret for their first token."""

    email: str
    secret: str
    description: str = ""
    expires_in: int | None = None


class Invitation(views.View, frozen=True, kw_only=True):
    """Slipway: a one-time invitation (the secret is never sent to or stored by the gateway)."""

    id: str
    user: views.UserRef
    created_at: views.Timestamp
    expires_at: views.Timestamp
    redeemed_at: views.Timestamp | None = None


class UserAccess(views.View, frozen=True, kw_only=True):
    """Slipway: whether a user may use the platform."""

    id: str
    email: str
    disabled_at: views.Timestamp | None


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def lifetime(
    requested: int | None,
    settings: GatewaySettings,
    parent: store.Token | None = None,
    now: float | None = None,
) -> int:
    """The token lifetime in seconds: the default when none is asked, never above the cap,
    and never past the expiry of `parent`, the token asking for it."""
    if requested is not None and (requested <= 0 or requested > settings.token_max_ttl):
        raise InvalidParams(f"expires_in must be between 1 and {settings.token_max_ttl} seconds.")
    if parent is None or parent.expires_at is None:
        return settings.token_ttl if requested is None else requested
    remaining = int(parent.expires_at - (time.time() if now is None else now))
    if requested is None:
        return max(1, min(settings.token_ttl, remaining))
    if requested > remaining:
        raise InvalidParams(
            f"expires_in must be at most {remaining} seconds: a token cannot create a token"
            " that outlives it (the one you use expires then)."
        )
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


async def _audit_everywhere(
    tx: Change, user: store.User, action: str, details: dict[str, str]
) -> None:
    """Record `action` about `user` in every team they belong to: each team sees who may act."""
    for team, _ in await store.teams_of(tx.conn, user.id):
        tx.audit(team.id, action, details={"user": user.email, **details})


async def _create_own(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    body = await read_body(request, CreateAuthorization)
    caller = principal(request)
    async with change(gw, actor(request)) as tx:
        token, secret = await issue_token(
            tx,
            caller.user,
            description=body.description,
            scope=body.scope,
            expires_in=lifetime(body.expires_in, gw.settings, caller.token),
        )
        _audit_token(tx, caller.user, "token.create", token)
    return reply(authorization_view(caller.user, token, secret), 201)


@routes.post(
    "/oauth/authorizations",
    summary="Create a token",
    body=CreateAuthorization,
    response=views.OAuthAuthorization,
    status=201,
)
async def create(request: web.Request) -> web.Response:
    return await _create_own(request)


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
    forget_principals(request)
    return reply(authorization_view(user, token, None))


@routes.post(
    "/users/{user}/authorizations",
    summary="Create a token for yourself (nobody can create one for another user)",
    body=CreateAuthorization,
    response=views.OAuthAuthorization,
    status=201,
    extension=True,
)
async def create_for_user(request: web.Request) -> web.Response:
    me = principal(request).user
    if request.match_info["user"] not in (me.id, me.email, "~"):
        raise Forbidden(
            "Nobody can create a token for another user, platform admins included:"
            " invite a new user with POST /users/{user}/invitations instead."
        )
    return await _create_own(request)


# ---- invitations: a user's first token ------------------------------------------------------


async def _user_or_404(conn: store.Conn, ident: str) -> store.User:
    user = await store.get_user(conn, ident)
    if user is None:
        raise NotFound("Couldn't find that user.")
    return user


async def _ever_signed_in(conn: store.Conn, user_id: str) -> bool:
    async with conn.execute("SELECT 1 FROM tokens WHERE user_id = ? LIMIT 1", (user_id,)) as c:
        return await c.fetchone() is not None


def _invitation_ttl(requested: int | None) -> int:
    ttl = INVITATION_TTL if requested is None else requested
    if not 0 < ttl <= INVITATION_MAX_TTL:
        raise InvalidParams(f"expires_in must be between 1 and {INVITATION_MAX_TTL} seconds.")
    return ttl


@routes.post(
    "/users/{user}/invitations",
    summary="Invite a user who has never signed in (platform admins only)",
    body=CreateInvitation,
    response=Invitation,
    status=201,
    extension=True,
)
async def invite(request: web.Request) -> web.Response:
    require_admin(request)
    gw = request.app[GATEWAY]
    body = await read_body(request, CreateInvitation)
    if not VERIFIER.match(body.verifier):
        raise InvalidParams(
            "verifier must be the SHA-256 (64 lowercase hex digits) of a secret the user"
            " made with `slipway auth:invite-code`."
        )
    expires_at = time.time() + _invitation_ttl(body.expires_in)
    async with change(gw, actor(request)) as tx:
        user = await _user_or_404(tx.conn, request.match_info["user"])
        if await _ever_signed_in(tx.conn, user.id):
            raise Conflict(
                f"{user.email} has signed in before: an invitation is only for a new user."
                " A user who lost every token creates a new account."
            )
        invitation = Invitation(
            id=new_uuid(),
            user=views.UserRef(id=user.id, email=user.email),
            created_at=timestamp(),
            expires_at=_rfc3339(expires_at),
        )
        await tx.conn.execute(
            "INSERT INTO invitations (id, user_id, verifier, created_by, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                invitation.id,
                user.id,
                body.verifier,
                tx.actor.email,
                invitation.created_at,
                expires_at,
            ),
        )
        await _audit_everywhere(tx, user, "invitation.create", {"invitation_id": invitation.id})
    return reply(invitation, 201)


async def _pending_invitation(conn: store.Conn, user: store.User, secret: str) -> str:
    """The id of `user`'s unexpired, unused invitation whose verifier `secret` matches."""
    digest = hashlib.sha256(secret.encode()).hexdigest()
    async with conn.execute(
        "SELECT id, verifier FROM invitations WHERE user_id = ? AND redeemed_at IS NULL"
        " AND expires_at > ?",
        (user.id, time.time()),
    ) as cursor:
        for row in await cursor.fetchall():
            if hmac.compare_digest(str(row["verifier"]), digest):
                return str(row["id"])
    raise Unauthorized(BAD_INVITATION)


@routes.post(
    "/invitations/actions/redeem",
    summary="Redeem an invitation with your secret: your first token",
    body=RedeemInvitation,
    response=views.OAuthAuthorization,
    status=201,
    public=True,
    extension=True,
)
async def redeem(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    body = await read_body(request, RedeemInvitation)
    user = await store.get_user(gw.reader, body.email)
    if user is None:
        raise Unauthorized(BAD_INVITATION)
    who = Actor(
        email=user.email,
        user_id=user.id,
        source_ip=request.remote,
        request_id=request.get(REQUEST_ID),
    )
    async with change(gw, who) as tx:
        invitation_id = await _pending_invitation(tx.conn, user, body.secret)
        if await disabled_at(tx.conn, user.id) is not None:
            raise Unauthorized("This account is disabled: ask your platform admin to enable it.")
        await tx.conn.execute(
            "UPDATE invitations SET redeemed_at = ? WHERE id = ?", (timestamp(), invitation_id)
        )
        token, secret = await issue_token(
            tx,
            user,
            description=body.description or "invitation",
            expires_in=lifetime(body.expires_in, gw.settings),
        )
        await _audit_everywhere(
            tx, user, "invitation.redeem", {"invitation_id": invitation_id, "token_id": token.id}
        )
    return reply(authorization_view(user, token, secret), 201)


# ---- disabling users --------------------------------------------------------------------------


async def _set_disabled(request: web.Request, disabled: bool) -> web.Response:
    require_admin(request)
    gw = request.app[GATEWAY]
    async with change(gw, actor(request)) as tx:
        user = await _user_or_404(tx.conn, request.match_info["user"])
        if user.id == principal(request).user.id:
            raise InvalidParams(
                "You cannot disable or enable yourself: ask another platform admin."
            )
        at = timestamp() if disabled else None
        await tx.conn.execute(
            "UPDATE users SET disabled_at = ?, updated_at = ? WHERE id = ?",
            (at, timestamp(), user.id),
        )
        await _audit_everywhere(tx, user, "user.disable" if disabled else "user.enable", {})
    forget_principals(request)
    return reply(UserAccess(id=user.id, email=user.email, disabled_at=at))


@routes.post(
    "/users/{user}/actions/disable",
    summary="Disable a user: every token of theirs stops working at once (platform admins only)",
    response=UserAccess,
    extension=True,
)
async def disable(request: web.Request) -> web.Response:
    return await _set_disabled(request, True)


@routes.post(
    "/users/{user}/actions/enable",
    summary="Enable a disabled user again (platform admins only)",
    response=UserAccess,
    extension=True,
)
async def enable(request: web.Request) -> web.Response:
    return await _set_disabled(request, False)
