"""The error tree every Slipway service raises and every caller catches.

    SlipwayError                  code, message, retryable, details
    ├── InvalidRequest            "invalid_request"  the input is wrong; fix it and retry
    ├── Unauthorized              "unauthorized"     no valid credentials
    ├── Forbidden                 "forbidden"        valid credentials, not allowed
    ├── NotFound                  "not_found"
    ├── Conflict                  "conflict"         the state changed under you
    ├── Gone                      "gone"             destroyed on purpose (crypto-shredded)
    ├── Unavailable               "unavailable"      retryable: a dependency is down
    │   └── Timeout               "timeout"          retryable: no answer in time
    ├── InsufficientStorage       "insufficient_storage"  a disk is full: the message
    │                                                  says which, and what to do
    ├── Internal                  "internal"         a bug; the message says no more
    └── RemoteError               raised by a caller when the answer was an ErrorReply;
        └── Remote<Kind>          also a subclass of the matching kind above, so
                                  `except NotFound` catches local and remote alike
                                  (kinds declared in other packages, with their own
                                  code, get a Remote<Kind> made on first use)

Handlers raise the kinds above; the bus turns them into `ErrorReply` and back.
"""

from __future__ import annotations

import errno
import sqlite3
from typing import ClassVar

from slipway.contracts.base import ErrorReply

_LOCAL_BY_CODE: dict[str, type[SlipwayError]] = {}


class SlipwayError(Exception):
    """Root of Slipway's errors: a machine-readable code and whether a retry can help."""

    code: ClassVar[str] = "internal"
    retryable: ClassVar[bool] = False

    def __init__(self, message: str, *, details: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        # Every kind declared anywhere (libs/crypto's "decryption_failed", say) can be
        # rebuilt on the caller's side from its code; the first class with a code owns it.
        remote = globals().get("RemoteError")  # None while this module defines its kinds
        if "code" in cls.__dict__ and not (remote and issubclass(cls, remote)):
            _LOCAL_BY_CODE.setdefault(cls.code, cls)

    def to_reply(self) -> ErrorReply:
        """This error as it crosses the wire."""
        return ErrorReply(
            code=self.code, message=self.message, retryable=self.retryable, details=self.details
        )


class InvalidRequest(SlipwayError):
    code = "invalid_request"


class Unauthorized(SlipwayError):
    code = "unauthorized"


class Forbidden(SlipwayError):
    code = "forbidden"


class NotFound(SlipwayError):
    code = "not_found"


class Conflict(SlipwayError):
    code = "conflict"


class Gone(SlipwayError):
    code = "gone"


class Unavailable(SlipwayError):
    code = "unavailable"
    retryable = True


class Timeout(Unavailable):
    code = "timeout"


class InsufficientStorage(SlipwayError):
    """A write refused because a disk is full (or above the platform's high-water mark)."""

    code = "insufficient_storage"


class Internal(SlipwayError):
    code = "internal"


class RemoteError(SlipwayError):
    """An error another service answered with. `code` is per instance here."""

    def __init__(
        self,
        message: str,
        *,
        code: str = "internal",
        retryable: bool = False,
        details: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, details=details)
        # Instance attributes shadow the ClassVars so unknown codes survive the trip.
        self.code = code  # type: ignore[misc]
        self.retryable = retryable  # type: ignore[misc]

    @classmethod
    def from_reply(cls, reply: ErrorReply) -> RemoteError:
        """The typed exception for an ErrorReply: `Remote<Kind>` when the code is known."""
        kind = _REMOTE_BY_CODE.get(reply.code) or _remote_kind(reply.code)
        return kind(
            reply.message, code=reply.code, retryable=reply.retryable, details=dict(reply.details)
        )


class RemoteInvalidRequest(RemoteError, InvalidRequest):
    pass


class RemoteUnauthorized(RemoteError, Unauthorized):
    pass


class RemoteForbidden(RemoteError, Forbidden):
    pass


class RemoteNotFound(RemoteError, NotFound):
    pass


class RemoteConflict(RemoteError, Conflict):
    pass


class RemoteGone(RemoteError, Gone):
    pass


class RemoteUnavailable(RemoteError, Unavailable):
    pass


class RemoteTimeout(RemoteError, Timeout):
    pass


class RemoteInsufficientStorage(RemoteError, InsufficientStorage):
    pass


class RemoteInternal(RemoteError, Internal):
    pass


_REMOTE_BY_CODE: dict[str, type[RemoteError]] = {
    "invalid_request": RemoteInvalidRequest,
    "unauthorized": RemoteUnauthorized,
    "forbidden": RemoteForbidden,
    "not_found": RemoteNotFound,
    "conflict": RemoteConflict,
    "gone": RemoteGone,
    "unavailable": RemoteUnavailable,
    "timeout": RemoteTimeout,
    "insufficient_storage": RemoteInsufficientStorage,
    "internal": RemoteInternal,
}


def _remote_kind(code: str) -> type[RemoteError]:
    """`Remote<Kind>` for a code declared outside this module, made once; else RemoteError."""
    local = _LOCAL_BY_CODE.get(code)
    if local is None:
        return RemoteError
    kind = type(f"Remote{local.__name__}", (RemoteError, local), {})
    _REMOTE_BY_CODE[code] = kind
    return kind


# JetStream's "insufficient resources" (its store is out of disk or over its limits).
_JETSTREAM_NO_RESOURCES = frozenset({10023, 10047})


def disk_full(exc: BaseException) -> bool:
    """Whether `exc` (or what caused it) is a write refused for want of disk space:
    ENOSPC/EDQUOT, SQLite's SQLITE_FULL, JetStream's insufficient resources."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, InsufficientStorage):
            return True
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(current, sqlite3.Error) and (
            getattr(current, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or "database or disk is full" in str(current)
        ):
            return True
        # nats-py's APIError, matched by shape: libs/ sits below the bus client here.
        if getattr(current, "err_code", None) in _JETSTREAM_NO_RESOURCES:
            return True
        current = current.__cause__ or current.__context__
    return False
