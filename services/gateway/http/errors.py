"""How every failure reaches a customer: an HTTP status and a Heroku error body.

    ApiError (SlipwayError)          status  Heroku id
    ├── BadRequest (InvalidRequest)  400     bad_request          malformed JSON, bad header
    ├── InvalidParams (InvalidRequest) 422   invalid_params       the input breaks a rule
    ├── NotAcceptable                406     not_acceptable       an API version we do not speak
    ├── PayloadTooLarge              413     payload_too_large    body over the size limit
    ├── RangeNotSatisfiable (ranges.py) 416  requested_range_not_satisfiable  a bad Range header
    └── DataIntegrity (Internal)     500     data_integrity       stored ciphertext failed its check

The shared kinds of `slipway.libs.errors` (raised here or answered by another
service over the bus) map by class: NotFound → 404 not_found, Forbidden → 403,
Unauthorized → 401, Conflict → 409, Gone → 410, Unavailable → 503,
InsufficientStorage → 507 insufficient_storage (a disk full or above the high-water
mark: the message names it), any other InvalidRequest → 422 invalid_params,
anything else → 500.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from slipway.libs import errors


class ApiError(errors.SlipwayError):
    """Root of the gateway's own errors: each knows its HTTP status and Heroku id."""

    status: ClassVar[int] = 500
    heroku_id: ClassVar[str] = "internal_server_error"


class BadRequest(ApiError, errors.InvalidRequest):
    status = 400
    heroku_id = "bad_request"


class InvalidParams(ApiError, errors.InvalidRequest):
    status = 422
    heroku_id = "invalid_params"


class NotAcceptable(ApiError, errors.InvalidRequest):
    status = 406
    heroku_id = "not_acceptable"


class PayloadTooLarge(ApiError, errors.InvalidRequest):
    status = 413
    heroku_id = "payload_too_large"


class DataIntegrity(ApiError, errors.Internal):
    """A ciphertext that does not decrypt in its place: moved, altered or corrupted."""

    status = 500
    heroku_id = "data_integrity"


class ErrorBody(msgspec.Struct, frozen=True, kw_only=True):
    """The Heroku error body: a stable machine id and a sentence for a human."""

    id: str
    message: str


# Order matters: the first class an error is an instance of wins.
_BY_KIND: tuple[tuple[type[errors.SlipwayError], int, str], ...] = (
    (errors.Unauthorized, 401, "unauthorized"),
    (errors.Forbidden, 403, "forbidden"),
    (errors.NotFound, 404, "not_found"),
    (errors.Conflict, 409, "conflict"),
    (errors.Gone, 410, "gone"),
    (errors.InvalidRequest, 422, "invalid_params"),
    (errors.Unavailable, 503, "unavailable"),
    (errors.InsufficientStorage, 507, "insufficient_storage"),
)


def http_error(exc: errors.SlipwayError) -> tuple[int, ErrorBody]:
    """The status and body a Slipway error is answered with."""
    if isinstance(exc, ApiError):
        return exc.status, ErrorBody(id=exc.heroku_id, message=exc.message)
    for kind, status, heroku_id in _BY_KIND:
        if isinstance(exc, kind):
            return status, ErrorBody(id=heroku_id, message=exc.message)
    # Internal errors say no more than that: details stay in the log.
    return 500, ErrorBody(id="internal_server_error", message="Internal server error.")


# aiohttp's own refusals (unknown path, wrong method, ...) in Heroku's words.
HTTP_IDS: dict[int, str] = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_params",
    429: "rate_limit",
    503: "unavailable",
    507: "insufficient_storage",
}
