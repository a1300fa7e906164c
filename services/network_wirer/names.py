"""The one check every certificate name passes: a plain DNS name, nothing else.

Domains are customer input. The gateway validates them before they are stored, but the
names also end up in runtime commands, file names and certificate requests here, so they
are checked again where they are used: lowercase LDH labels (RFC 1123), at least two of
them, no IP address, no trailing dot, at most 253 characters.
"""

from __future__ import annotations

import re

from slipway.libs.errors import InvalidRequest

LABEL = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
MAX_NAME = 253


class InvalidName(InvalidRequest):
    """A name that is not a plain DNS name; the message says which and why."""


def plain_dns_name(name: str, *, wildcard: bool = False) -> str:
    """`name` lowercased, or InvalidName. `wildcard` allows one leading `*.` label (the
    internal CA's `*.localhost`-style certificates; never for ACME's HTTP-01)."""
    shown = repr(name[:70])
    if not isinstance(name, str) or not name.isascii():
        raise InvalidName(f"{shown} is not a DNS name: use ASCII (punycode for IDNs).")
    lowered = name.lower()
    if len(lowered) > MAX_NAME:
        raise InvalidName(f"{shown}… is longer than {MAX_NAME} characters.")
    labels = lowered.split(".")
    if wildcard and labels[0] == "*":
        labels = labels[1:]
    if len(labels) < 2:
        raise InvalidName(f"{shown} is not a DNS name: it needs at least two labels.")
    if not all(LABEL.match(label) for label in labels):
        raise InvalidName(
            f"{shown} is not a DNS name: each label is 1 to 63 letters, digits or inner hyphens."
        )
    if labels[-1].isdigit():
        raise InvalidName(f"{shown} looks like an IP address, not a DNS name.")
    return lowered
