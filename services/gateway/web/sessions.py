"""Browser sessions for the dashboard: a cookie that stands in for the token it was made from.

A browser signs in by handing over an API token once (`POST /account/web-sessions`
`{"token"}`), or an email and the code of a one-time login link that `slipway login --web`
made with the CLI's token (`POST /account/web-login-links`). Either way the session is
bound to that token: it acts as that token's principal on the same API, so a role, a scope,
an expiry, a revocation or a disabled user applies to the browser exactly as to the CLI, and
every change it makes is audited as the same API call would be.

The cookie (`slipway_session`) holds 256 random bits; the database keeps only their
SHA-256. It is HttpOnly, SameSite=Strict, Path=/, and Secure when the API is served over
TLS. A session ends after `web_idle_timeout` seconds without a request (15 minutes, the
HIPAA habit), after `web_session_ttl` whatever happens, when its token expires or is
revoked, on sign-out (`DELETE /account/web-sessions/current`) and on sign-out everywhere
(`DELETE /account/web-sessions`: every browser of that user).

Cross-site request forgery: SameSite=Strict does not separate two ports of one host (they
are one *site*), so it is not the defence. A request that authenticates with the cookie and
changes anything (POST, PUT, PATCH, DELETE) must carry `X-CSRF-Token`, a value derived from
the cookie that a page can learn only by reading a same-origin answer, and when the browser
says where it comes from (`Origin`) that must be the API's own origin. Both are checked in
`check_csrf`; `tests/security/test_web_sessions.py` forges requests from another origin.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import msgspec
import structlog
from aiohttp import web

from slipway.libs.errors import Forbidden, Unauthorized, disk_full
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import PRINCIPAL, Principal, actor, principal
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.outbox.changes import Change, change

routes = Routes("web-sessions")
log = structlog.get_logger("slipway.gateway.web.sessions")

COOKIE = "slipway_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# last_seen is written at most this often: an idle timeout of minutes does not need a write
# per request, and the dashboard polls.
TOUCH_EVERY = 30.0


@dataclass(frozen=True)
class WebSession:
    """The browser session a request came with."""

    id_hash: str
    csrf_token: str
    expires_at: float


SESSION = web.RequestKey("web_session", WebSession)


class SignIn(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """POST /account/web-sessions: a token, or an email with a login link's code."""

    token: str | None = None
    email: str | None = None
    code: str | None = None


class SessionView(views.View, frozen=True, kw_only=True):
    """A browser session as its own page sees it."""

    email: str
    user_id: str
    csrf_token: str
    idle_timeout: int
    expires_at: views.Timestamp


class LoginLink(views.View, frozen=True, kw_only=True):
    """A one-time sign-in link for the dashboard."""

    url: str
    code: str
    expires_at: views.Timestamp


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def csrf_token(cookie: str) -> str:
    """The CSRF token of a session cookie: only a page that can read our answers learns it."""
    return hmac.new(cookie.encode(), b"slipway-csrf/v1", hashlib.sha256).hexdigest()


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


# ---- reading a session on each request ------------------------------------------------------


async def authenticate(request: web.Request, cookie: str, now: float) -> Principal:
    """The principal behind a session cookie; Unauthorized when the session is not live."""
    gw = request.app[GATEWAY]
    key = _hash(cookie)
    row = await _one(
        gw,
        "SELECT user_id, token_id, last_seen, expires_at FROM web_sessions WHERE id_hash = ?",
        (key,),
    )
    if row is None:
        raise Unauthorized("Your dashboard session has ended: sign in again.")
    idle = gw.settings.web_idle_timeout
    if now >= row["expires_at"] or now - row["last_seen"] >= idle:
        async with gw.db.transaction() as conn:
            await conn.execute("DELETE FROM web_sessions WHERE id_hash = ?", (key,))
        minutes = round(idle / 60)
        reason = "was idle for " + (f"{minutes} minutes" if minutes else f"{round(idle)} seconds")
        if now >= row["expires_at"]:
            reason = "reached its maximum age"
        raise Unauthorized(f"Your dashboard session {reason}: sign in again.")
    found = await _token_principal(gw, row["token_id"], now)
    if now - row["last_seen"] >= TOUCH_EVERY:
        try:
            async with gw.db.transaction() as conn:
                await conn.execute(
                    "UPDATE web_sessions SET last_seen = ? WHERE id_hash = ?", (now, key)
                )
        except Exception as exc:
            # A read must not need a write: on a full disk the session is not refreshed
            # (it may end idle sooner), and the request it came with is still answered.
            if not disk_full(exc):
                raise
            log.warning("web_session.touch_skipped", reason="disk full")
    request[SESSION] = WebSession(key, csrf_token(cookie), row["expires_at"])
    return found


async def _token_principal(gw: Gateway, token_id: str, now: float) -> Principal:
    """The principal of the token a session was made from, if that token still may act."""
    row = await _one(gw, "SELECT token_hash FROM tokens WHERE id = ?", (token_id,))
    if row is None:
        raise Unauthorized("Your dashboard session has ended: sign in again.")
    found = await store.token_owner(gw.reads, row["token_hash"])
    if found is None:
        raise Unauthorized("Your dashboard session has ended: sign in again.")
    user, token, disabled = found
    if disabled is not None:
        raise Unauthorized("This account is disabled: ask your platform admin to enable it.")
    if token.revoked_at is not None:
        raise Unauthorized("The token this session was signed in with was revoked: sign in again.")
    if token.expires_at is not None and token.expires_at <= now:
        raise Unauthorized("The token this session was signed in with has expired.")
    return Principal(user, token)


def _own_origin(request: web.Request) -> set[str]:
    """The origins this API answers at: the configured URL's and the one the request names."""
    origins = {f"{request.scheme}://{request.host}"}
    api_url = request.app[GATEWAY].api_url
    if api_url:
        parts = urlsplit(api_url)
        origins.add(f"{parts.scheme}://{parts.netloc}")
    return origins


def check_origin(request: web.Request) -> None:
    """Forbidden when the browser says the request comes from another origin."""
    origin = request.headers.get("Origin")
    if origin is not None and origin not in _own_origin(request):
        raise Forbidden(f"Cross-origin request refused: {origin[:100]} is not this dashboard.")


def check_csrf(request: web.Request) -> None:
    """Forbidden unless a cookie-authenticated change proves it comes from our own page."""
    if request.method in SAFE_METHODS:
        return
    check_origin(request)
    offered = request.headers.get(CSRF_HEADER, "")
    if not hmac.compare_digest(offered.encode(), request[SESSION].csrf_token.encode()):
        raise Forbidden(
            f"This change came with a session cookie but no valid {CSRF_HEADER} header:"
            " refused as a possible cross-site request forgery."
        )


# ---- the endpoints --------------------------------------------------------------------------


def _set_cookie(response: web.Response, request: web.Request, value: str, max_age: int) -> None:
    gw = request.app[GATEWAY]
    secure = request.secure or gw.api_url.startswith("https:")
    response.set_cookie(
        COOKIE, value, max_age=max_age, path="/", httponly=True, samesite="Strict", secure=secure
    )


def _view(gw: Gateway, user: store.User, cookie: str, expires_at: float) -> SessionView:
    return SessionView(
        email=user.email,
        user_id=user.id,
        csrf_token=csrf_token(cookie),
        idle_timeout=round(gw.settings.web_idle_timeout),
        expires_at=_iso(expires_at),
    )


def _audit(tx: Change, user: store.User, action: str) -> None:
    if user.default_team_id:
        tx.audit(user.default_team_id, action, details={"user": user.email})


@routes.post(
    "/account/web-sessions",
    summary="Sign a browser in to the dashboard with a token or a one-time login link",
    body=SignIn,
    response=SessionView,
    status=201,
    public=True,
    extension=True,
)
async def sign_in(request: web.Request) -> web.Response:
    check_origin(request)  # nobody signs a visitor in from their own page (login CSRF)
    gw = request.app[GATEWAY]
    body = await read_body(request, SignIn)
    now = time.time()
    if body.token:
        found = await store.token_owner(gw.reads, _hash(body.token.strip()))
        token_id = found[1].id if found else None
    elif body.code and body.email:
        token_id = await _redeem_link(gw, body.code.strip(), body.email.strip(), now)
    else:
        raise Unauthorized("Sign in with an API token, or with your email and a login link's code.")
    if token_id is None:
        raise Unauthorized("Invalid credentials provided.")
    caller = await _token_principal(gw, token_id, now)
    expires_at = now + gw.settings.web_session_ttl
    if caller.token.expires_at is not None:
        expires_at = min(expires_at, caller.token.expires_at)
    cookie = secrets.token_urlsafe(32)
    request[PRINCIPAL] = caller
    async with change(gw, actor(request)) as tx:
        # Ended sessions go as new ones come: the table holds live sessions, give or take.
        await tx.conn.execute(
            "DELETE FROM web_sessions WHERE expires_at <= ? OR last_seen <= ?",
            (now, now - gw.settings.web_idle_timeout),
        )
        await tx.conn.execute(
            "INSERT INTO web_sessions (id_hash, user_id, token_id, created_at, last_seen,"
            " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
            (_hash(cookie), caller.user.id, token_id, now, now, expires_at),
        )
        _audit(tx, caller.user, "session.create")
    response = reply(_view(gw, caller.user, cookie, expires_at), 201)
    _set_cookie(response, request, cookie, max_age=round(expires_at - now))
    return response


async def _redeem_link(gw: Gateway, code: str, email: str, now: float) -> str | None:
    """The token id a login link signs in with, spending the link; None if it cannot."""
    key = _hash(code)
    async with gw.db.transaction() as conn:
        # Spent by the first attempt whatever the email: a link seen over a shoulder gives
        # one guess at its owner's address, not many.
        cursor = await conn.execute(
            "UPDATE web_login_links SET used_at = ? WHERE code_hash = ? AND used_at IS NULL"
            " AND expires_at > ? RETURNING user_id, token_id",
            (now, key, now),
        )
        row = await cursor.fetchone()
        await cursor.close()
        if row is None:
            return None
        user = await store.get_user(conn, row["user_id"])
    if user is None or user.email.lower() != email.lower():
        return None
    return str(row["token_id"])


@routes.get(
    "/account/web-sessions/current",
    summary="This browser's dashboard session (and its CSRF token)",
    response=SessionView,
    extension=True,
)
async def current(request: web.Request) -> web.Response:
    session = request.get(SESSION)
    if session is None:
        raise Unauthorized("This request has no dashboard session: it used a token.")
    gw = request.app[GATEWAY]
    view = SessionView(
        email=principal(request).user.email,
        user_id=principal(request).user.id,
        csrf_token=session.csrf_token,
        idle_timeout=round(gw.settings.web_idle_timeout),
        expires_at=_iso(session.expires_at),
    )
    return reply(view)


@routes.delete(
    "/account/web-sessions/current",
    summary="Sign this browser out of the dashboard",
    status=204,
    extension=True,
)
async def sign_out(request: web.Request) -> web.Response:
    session = request.get(SESSION)
    gw = request.app[GATEWAY]
    if session is not None:
        async with change(gw, actor(request)) as tx:
            await tx.conn.execute("DELETE FROM web_sessions WHERE id_hash = ?", (session.id_hash,))
            _audit(tx, principal(request).user, "session.end")
    response = web.Response(status=204)
    response.del_cookie(COOKIE, path="/")
    return response


@routes.delete(
    "/account/web-sessions",
    summary="Sign out of the dashboard in every browser",
    status=204,
    extension=True,
)
async def sign_out_everywhere(request: web.Request) -> web.Response:
    user = principal(request).user
    async with change(request.app[GATEWAY], actor(request)) as tx:
        await tx.conn.execute("DELETE FROM web_sessions WHERE user_id = ?", (user.id,))
        _audit(tx, user, "session.end_all")
    response = web.Response(status=204)
    response.del_cookie(COOKIE, path="/")
    return response


@routes.post(
    "/account/web-login-links",
    summary="A one-time link that signs a browser in as you (`slipway login --web`)",
    response=LoginLink,
    status=201,
    extension=True,
)
async def login_link(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    caller = principal(request)
    code = secrets.token_urlsafe(24)
    now = time.time()
    expires_at = now + gw.settings.web_login_link_ttl
    async with gw.db.transaction() as conn:
        await conn.execute("DELETE FROM web_login_links WHERE expires_at <= ?", (now,))
        await conn.execute(
            "INSERT INTO web_login_links (code_hash, user_id, token_id, created_at, expires_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (_hash(code), caller.user.id, caller.token.id, now, expires_at),
        )
    # The code travels in the fragment: browsers never send it to a server or a Referer.
    url = f"{gw.api_url.rstrip('/')}/#/login/{code}"
    return reply(LoginLink(url=url, code=code, expires_at=_iso(expires_at)), 201)


async def _one(gw: Gateway, sql: str, params: tuple[str, ...]) -> Any:
    rows = list(await gw.reads.execute_fetchall(sql, params))
    return rows[0] if rows else None
