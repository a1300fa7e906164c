"""Per-token API rate limits, in Heroku's form.

Each caller has a token bucket holding at most `api_rate_limit` requests (4,500 by
default) and refilled continuously at that many per hour (75 a minute), as Heroku's
is. Every request takes one; an empty bucket answers 429 with Heroku's body
(`rate_limit`), and every answer carries `RateLimit-Remaining`.
`GET /account/rate-limits` says `{"remaining": N}` without spending one.

Who a caller is, without a database read on the hot path:

- a bearer token, or the token in git's HTTP Basic header: the token's SHA-256;
- a dashboard session cookie (no token header): the cookie's SHA-256;
- no credentials (signed URLs, /openapi.json): the client address.

A token or session the limiter has not seen yet also spends one request of its client address,
so inventing tokens to get fresh buckets is itself limited. Full buckets are
forgotten when the table grows (a forgotten bucket is a full one), so memory follows
the callers active in the last few minutes.

The buckets live in this process's memory: the gateway runs as one instance, and a
restart refills them. Behind a proxy the client address is the proxy's.
"""

from __future__ import annotations

import base64
import binascii
import math
import time
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.typedefs import Handler

from slipway.services.gateway.http.auth import token_hash
from slipway.services.gateway.http.errors import ApiError
from slipway.services.gateway.web.sessions import COOKIE as SESSION_COOKIE

HOUR = 3600.0
REMAINING_HEADER = "RateLimit-Remaining"
STATUS_PATH = "/account/rate-limits"
# Buckets kept before full ones are swept out; a sweep runs again once the table doubles.
SWEEP_AT = 50_000


class RateLimited(ApiError):
    """The caller's bucket is empty: Heroku's 429 and its exact words."""

    status = 429
    heroku_id = "rate_limit"

    def __init__(self) -> None:
        super().__init__(
            "Your account reached the API rate limit\n"
            "Please wait a few minutes before making new requests"
        )


class _Bucket:
    __slots__ = ("at", "tokens")

    def __init__(self, tokens: float, at: float) -> None:
        self.tokens = tokens
        self.at = at


@dataclass
class RateLimiter:
    """Token buckets by caller key, each holding `per_hour` requests and refilled hourly."""

    per_hour: int
    _buckets: dict[str, _Bucket] = field(default_factory=dict)
    _sweep_at: int = SWEEP_AT

    def __post_init__(self) -> None:
        if self.per_hour < 1:
            raise ValueError(
                f"SLIPWAY_API_RATE_LIMIT must be at least 1 request an hour (got {self.per_hour})."
            )

    def _refilled(self, key: str, now: float) -> _Bucket | None:
        bucket = self._buckets.get(key)
        if bucket is not None:
            rate = self.per_hour / HOUR
            bucket.tokens = min(float(self.per_hour), bucket.tokens + (now - bucket.at) * rate)
            bucket.at = now
        return bucket

    def peek(self, key: str, now: float) -> float:
        """Requests left for `key`, spending none."""
        bucket = self._refilled(key, now)
        return float(self.per_hour) if bucket is None else bucket.tokens

    def known(self, key: str) -> bool:
        return key in self._buckets

    def take(self, key: str, now: float) -> float:
        """Spend one request of `key`; the requests left, or -1 when none was left."""
        bucket = self._refilled(key, now)
        if bucket is None:
            self._sweep(now)
            bucket = self._buckets[key] = _Bucket(float(self.per_hour), now)
        if bucket.tokens < 1.0:
            return -1.0
        bucket.tokens -= 1.0
        return bucket.tokens

    def retry_after(self, key: str, now: float) -> int:
        """Seconds until `key` may make one request again."""
        missing = 1.0 - self.peek(key, now)
        return max(1, math.ceil(missing * HOUR / self.per_hour))

    def _sweep(self, now: float) -> None:
        if len(self._buckets) < self._sweep_at:
            return
        for key in [k for k in self._buckets if self.peek(k, now) >= self.per_hour]:
            del self._buckets[key]
        self._sweep_at = max(SWEEP_AT, 2 * len(self._buckets))


LIMITER = web.AppKey("rate_limiter", RateLimiter)
# The bucket a request was counted against, and what was left after it.
_KEY = web.RequestKey("rate_limit_key", str)
_LEFT = web.RequestKey("rate_limit_left", float)


def caller_key(request: web.Request) -> str:
    """Who the request counts against: its token's or session's hash, else its address."""
    token = _token(request.headers.get("Authorization", ""))
    if token:
        return "token:" + token_hash(token)
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return "session:" + token_hash(cookie)
    return f"address:{request.remote}"


def _token(header: str) -> str:
    scheme, _, value = header.partition(" ")
    scheme, value = scheme.lower(), value.strip()
    if scheme == "bearer":
        return value
    if scheme == "basic":  # git: the token is the password (or the user name alone)
        try:
            user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return password or user
    return ""


def _spend(limiter: RateLimiter, request: web.Request, key: str, now: float) -> tuple[str, float]:
    """(the bucket that decided, requests left in it or -1)."""
    if key.startswith(("token:", "session:")) and not limiter.known(key):
        address = f"address:{request.remote}"
        if limiter.take(address, now) < 0:
            return address, -1.0
    return key, limiter.take(key, now)


# Handlers no bucket pays for: the dashboard's page and files, served from memory. Counted,
# a page load (twenty files) would spend a client address's hour in a few hundred loads,
# for everyone behind one office NAT at once.
EXEMPT = web.AppKey("rate_limit_exempt", frozenset[Handler])


@web.middleware
async def rate_limit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Spend one request of the caller's bucket, or answer 429 when it is empty."""
    if request.match_info.handler in request.app.get(EXEMPT, frozenset()):
        return await handler(request)
    limiter = request.app[LIMITER]
    key, now = caller_key(request), time.monotonic()
    if request.method == "GET" and request.path == STATUS_PATH:
        left = limiter.peek(key, now)
    else:
        key, left = _spend(limiter, request, key, now)
    request[_KEY], request[_LEFT] = key, max(0.0, left)
    if left < 0:
        raise RateLimited
    return await handler(request)


def remaining(request: web.Request) -> int:
    """The requests the caller has left, as counted for this request."""
    return int(request[_LEFT])


async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
    """`RateLimit-Remaining` on every answer, and `Retry-After` on a 429."""
    left = request.get(_LEFT)
    if left is None:
        return
    response.headers[REMAINING_HEADER] = str(int(left))
    if response.status == 429:
        limiter = request.app[LIMITER]
        response.headers["Retry-After"] = str(limiter.retry_after(request[_KEY], time.monotonic()))


def install(app: web.Application, per_hour: int, exempt: frozenset[Handler] = frozenset()) -> None:
    """Give `app` its limiter and the response headers (the middleware is in its list)."""
    app[LIMITER] = RateLimiter(per_hour)
    app[EXEMPT] = exempt
    app.on_response_prepare.append(add_headers)
