"""The health path an app declares (`SLIPWAY_HEALTH_PATH`): a path on the dyno, nothing more.

The gateway refuses a bad value when it is set; the scheduler ignores one it finds
in stored config (set before this rule, or planted) and says so in the app's log.
Both read the rule here, so "valid" means one thing.

A value is a path only: it starts with one `/` (so `@host`, `//host` and
`http://host` are refused: glued after `http://address:port` they would name
another host), and holds only the characters RFC 3986 allows in a path and
query, so nothing in it can end the request line or start a fragment.
"""

from __future__ import annotations

import re

HEALTH_PATH_VAR = "SLIPWAY_HEALTH_PATH"
MAX_LENGTH = 1024

# pchar / "/" / "?" (RFC 3986, sections 3.3 and 3.4); percent-escapes are pchars too.
_PATH = re.compile(r"^/(?!/)[A-Za-z0-9\-._~!$&'()*+,;=:@%/?]*\Z")

RULE = (
    f"{HEALTH_PATH_VAR} must be an absolute path on the app, such as /health or"
    " /status?full=1: one leading slash, no scheme, no host, no '//' or '@' at the start,"
    f" no spaces, at most {MAX_LENGTH} characters."
)


def is_valid(value: str) -> bool:
    """Whether `value` is a health path the platform may request on the dyno itself."""
    return len(value) <= MAX_LENGTH and _PATH.match(value) is not None


def split(value: str) -> tuple[str, str]:
    """(path, query string) of a valid health path."""
    path, _, query = value.partition("?")
    return path, query
