"""Short-lived, scoped registry credentials: an HMAC-signed token used as the password.

    token = "v1." + b64url(claims JSON) + "." + b64url(HMAC-SHA256(key, "v1." + b64url(claims)))
    claims = {"app": <app_id>, "acc": "pull" | "push", "exp": <unix seconds>, "jti": <random>}

The token carries everything needed to check it, so the proxy stores nothing per
credential; the key is 32 random bytes in a 0600 file under registry-proxy's home,
created on first start. Replacing the file revokes every credential issued.
The user name is informative only (`<access>-<app_id>`): the token alone decides.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from slipway.contracts.registry import Access
from slipway.services.registry_proxy.errors import RegistryProxyError

VERSION = "v1"
KEY_BYTES = 32
ACCESS: tuple[Access, ...] = ("pull", "push")


class _Claims(msgspec.Struct, frozen=True):
    app: str
    acc: str
    exp: int
    jti: str


@dataclass(frozen=True)
class Grant:
    """What a valid credential lets its holder do."""

    app_id: str
    access: Access
    expires_at: int
    token_id: str

    def allows(self, method: str) -> bool:
        """Pull reads; push also writes. Nobody deletes through the proxy."""
        if method in ("GET", "HEAD"):
            return True
        return self.access == "push" and method in ("POST", "PUT", "PATCH")


class Rejected(Exception):
    """A credential that is malformed, forged or expired; the message says which."""


def load_key(path: Path) -> bytes:
    """Read the signing key, creating it (mode 0600) on first use."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes()
        if len(key) != KEY_BYTES:
            raise RegistryProxyError(f"{path} is not a {KEY_BYTES}-byte signing key") from None
        if path.stat().st_mode & 0o077:
            raise RegistryProxyError(
                f"{path} must not be readable by others: chmod 600 it"
            ) from None
        return key
    key = secrets.token_bytes(KEY_BYTES)
    with os.fdopen(fd, "wb") as out:
        out.write(key)
        out.flush()
        os.fsync(out.fileno())
    return key


class Issuer:
    """Issues and checks credentials with one signing key."""

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(_Claims)

    def issue(self, app_id: str, access: Access, ttl_s: int, *, now: float | None = None) -> str:
        """A token granting `access` to `app_id`'s repository for `ttl_s` seconds."""
        now = time.time() if now is None else now
        claims = _Claims(app=app_id, acc=access, exp=int(now) + ttl_s, jti=secrets.token_hex(8))
        body = f"{VERSION}.{_b64(self._encoder.encode(claims))}"
        return f"{body}.{_b64(self._sign(body))}"

    def check(self, token: str, *, now: float | None = None) -> Grant:
        """The grant of a valid, unexpired token; raise Rejected otherwise."""
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != VERSION:
            raise Rejected("not a registry credential issued by Slipway")
        body = f"{parts[0]}.{parts[1]}"
        try:
            signature = _unb64(parts[2])
            claims = self._decoder.decode(_unb64(parts[1]))
        except (binascii.Error, ValueError, msgspec.DecodeError):
            raise Rejected("malformed registry credential") from None
        if not hmac.compare_digest(signature, self._sign(body)):
            raise Rejected("registry credential with a bad signature")
        if claims.acc not in ACCESS:
            raise Rejected("registry credential with an unknown access")
        if claims.exp <= (time.time() if now is None else now):
            raise Rejected("registry credential expired: ask for a new one")
        return Grant(claims.app, claims.acc, claims.exp, claims.jti)

    def _sign(self, body: str) -> bytes:
        return hmac.digest(self._key, body.encode(), hashlib.sha256)


def username(app_id: str, access: Literal["pull", "push"]) -> str:
    """The user name written into credentials (for humans reading engine logs)."""
    return f"{access}-{app_id}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
