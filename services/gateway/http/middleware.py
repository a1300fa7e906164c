"""What every request goes through, outermost first.

1. `context`: a request id (the client's `X-Request-Id` if sane, else a new one),
   echoed as `Request-Id`, carried on the bus and bound into every log line; any
   failure becomes a Heroku error body; one canonical log line per request.
2. `version`: `Accept: application/vnd.heroku+json; version=3` (absent or plain
   JSON is taken as version 3; another version is refused with 406).
3. `body_limit`: a declared body over the limit is refused with 413 before it is
   read (aiohttp's `client_max_size` catches bodies that do not declare a length).
4. `authentication`: a valid bearer token, or a dashboard session cookie with its CSRF
   checks on changes (`services/gateway/web/sessions.py`), except on public endpoints.

Never logged: bodies, query strings, headers, tokens.
"""

from __future__ import annotations

import re
import time
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from slipway.libs import logcontext
from slipway.libs.bus import context as bus_context
from slipway.libs.errors import SlipwayError
from slipway.libs.metrics import HTTP_METRICS
from slipway.services.gateway.core.state import REQUEST_ID
from slipway.services.gateway.http.auth import PRINCIPAL, authenticate
from slipway.services.gateway.http.errors import (
    HTTP_IDS,
    BadRequest,
    ErrorBody,
    NotAcceptable,
    PayloadTooLarge,
    http_error,
)
from slipway.services.gateway.http.routing import reply
from slipway.services.gateway.web import sessions

log = structlog.get_logger("slipway.gateway.http")

MEDIA_TYPE = "application/vnd.heroku+json"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_JSON_TYPES = {"application/json", "*/*", "application/*"}


def _request_id(request: web.Request) -> str:
    offered = request.headers.get("X-Request-Id") or request.headers.get("Request-Id") or ""
    return offered if _REQUEST_ID.match(offered) else str(uuid.uuid4())


@web.middleware
async def context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, Heroku error bodies and the canonical log line."""
    started = time.perf_counter()
    rid = _request_id(request)
    request[REQUEST_ID] = rid
    bus_context.set_request_id(rid)
    bound = logcontext.bind(request_id=rid)
    response: web.StreamResponse
    try:
        response = await handler(request)
    except SlipwayError as exc:
        status, body = http_error(exc)
        if status >= 500:
            log.error("http.failed", error=repr(exc))
        response = reply(body, status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        heroku_id = HTTP_IDS.get(exc.status, "bad_request")
        # aiohttp's own text says the limit and the size; other texts only repeat the reason.
        message = exc.text if exc.status == 413 and exc.text else exc.reason
        response = reply(ErrorBody(id=heroku_id, message=f"{message}."), exc.status)
    except Exception:
        log.exception("http.crashed")
        response = reply(
            ErrorBody(id="internal_server_error", message="Internal server error."), 500
        )
    response.headers["Request-Id"] = rid
    user = request.get(PRINCIPAL)
    resource = request.match_info.route.resource
    route = resource.canonical if resource else None  # the template, never the path
    elapsed = time.perf_counter() - started
    log.info(
        "http",
        method=request.method,
        path=request.path,
        route=route,
        status=response.status,
        user=user.user.email if user else None,
        duration_ms=round(elapsed * 1000, 3),
    )
    http_metrics = request.app.get(HTTP_METRICS)
    if http_metrics is not None:
        http_metrics.observe(request.method, route, response.status, elapsed)
    logcontext.reset(bound)
    return response


def check_accept(accept: str | None) -> None:
    """Raise unless the Accept header allows API version 3."""
    if not accept:
        return
    plain_json = False
    for part in accept.split(","):
        media, *params = (piece.strip() for piece in part.split(";"))
        media = media.lower()
        if media == MEDIA_TYPE:
            version = next(
                (p.split("=", 1)[1].strip() for p in params if p.lower().startswith("version=")),
                None,
            )
            if version is None:
                raise BadRequest(f"Please specify a version: `Accept: {MEDIA_TYPE}; version=3`.")
            # "3" and its variants ("3.sdk", ...) all mean version 3 here.
            if version == "3" or version.startswith("3."):
                return
            raise NotAcceptable(
                f"API version {version!r} is not supported; this server speaks version 3"
                f" (`Accept: {MEDIA_TYPE}; version=3`)."
            )
        plain_json = plain_json or media in _JSON_TYPES
    if not plain_json:
        raise NotAcceptable(f"This API answers JSON only: `Accept: {MEDIA_TYPE}; version=3`.")


def version(pages: set[Handler]) -> Middleware:
    """Refuse an Accept header without API version 3, except on the dashboard's pages."""

    @web.middleware
    async def versioned(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.handler not in pages:
            check_accept(request.headers.get("Accept"))
        return await handler(request)

    return versioned


def body_limit(max_bytes: int) -> Middleware:
    """Refuse a declared body over `max_bytes` before reading any of it."""

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        length = request.content_length
        if length is not None and length > max_bytes:
            raise PayloadTooLarge(
                f"The request body ({length} bytes) is over the limit of {max_bytes} bytes."
            )
        return await handler(request)

    return limit


def authentication(public: set[Handler]) -> Middleware:
    """Require a bearer token or a dashboard session, except for the handlers in `public`.

    A bearer token wins when both come: a script's header is what it meant. A change
    made with the cookie alone must prove it comes from the dashboard's own page.
    """

    @web.middleware
    async def authenticated(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.handler not in public and request.match_info.http_exception is None:
            cookie = request.cookies.get(sessions.COOKIE)
            if cookie and "Authorization" not in request.headers:
                request[PRINCIPAL] = await sessions.authenticate(request, cookie, time.time())
                sessions.check_csrf(request)
            else:
                request[PRINCIPAL] = await authenticate(request, time.time())
        return await handler(request)

    return authenticated
