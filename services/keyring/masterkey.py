"""The master key: the one secret only the keyring reads, wrapping every team's KEKs.

It comes from one of two places (see `KeyringSettings`):

- a file of exactly 32 raw bytes, `<home>/keyring/master.key` unless
  `master_key_path` names another. Missing, it is created on first start with
  mode 0600 (written to a temporary file, then linked into place, so two
  starting keyrings never see half a key). Present, it must be a regular file
  readable by its owner only (0600 or 0400) and owned by the keyring's user or
  root: a key any other account can read protects nothing, so the keyring
  refuses to start rather than run on it;
- an environment variable named by `master_key_env`, holding the key in base64.

Losing the master key makes every team's data unreadable; back it up apart
from the keyring's database (the two together are what must never leak).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from slipway.libs.crypto import aead
from slipway.libs.crypto.binding import AssociatedData
from slipway.services.keyring.errors import MasterKeyError
from slipway.services.keyring.settings import KeyringSettings

# The generation of the master key, written into every blob it seals: rotating the
# master key (not built yet) would make version 2 and rewrap the KEKs.
MASTER_KEY_VERSION = 1


class MasterKey:
    """The master key in memory: it wraps and unwraps, and never hands out its bytes."""

    def __init__(self, key: bytes, source: str) -> None:
        aead.check_key(key)
        self._key = key
        self.source = source

    def wrap(self, plaintext: bytes, ad: AssociatedData) -> bytes:
        """Seal a key (a KEK, the audit signing key) under the master key."""
        return aead.seal(self._key, plaintext, ad, key_version=MASTER_KEY_VERSION)

    def unwrap(self, blob: bytes, ad: AssociatedData) -> bytes:
        """Open what `wrap` sealed; DecryptionFailed if altered, moved or another master key's."""
        return aead.open_(self._key, blob, ad, key_version=MASTER_KEY_VERSION)

    def __repr__(self) -> str:
        return f"MasterKey(source={self.source!r})"


def load_master_key(
    settings: KeyringSettings, environ: Mapping[str, str] | None = None
) -> MasterKey:
    """The configured master key, created on first start if it is a missing file."""
    if settings.master_key_env:
        if settings.master_key_path:
            raise MasterKeyError(
                "Both SLIPWAY_MASTER_KEY_PATH and SLIPWAY_MASTER_KEY_ENV are set; set only one."
            )
        return _from_env(settings.master_key_env, os.environ if environ is None else environ)
    path = settings.master_key_file()
    if not os.path.lexists(path):
        _create(path)
    return _from_file(path)


def _from_env(name: str, environ: Mapping[str, str]) -> MasterKey:
    value = environ.get(name, "").strip()
    if not value:
        raise MasterKeyError(
            f"SLIPWAY_MASTER_KEY_ENV names {name}, which is not set: put the base64 of a"
            " 32-byte key in it (e.g. `head -c 32 /dev/urandom | base64`)."
        )
    try:
        key = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise MasterKeyError(f"{name} is not valid base64.") from None
    if len(key) != aead.KEY_SIZE:
        raise MasterKeyError(f"{name} decodes to {len(key)} bytes; a master key is 32 bytes.")
    return MasterKey(key, source=f"env:{name}")


def _create(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(aead.generate_key())
            out.flush()
            os.fsync(out.fileno())
        # link() never replaces: if another keyring created the key meanwhile, keep theirs.
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def _from_file(path: Path) -> MasterKey:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        raise MasterKeyError(f"Cannot open the master key {path}: {exc.strerror}.") from None
    with os.fdopen(fd, "rb") as src:
        # Checked on the open file, not the path: nothing can swap it between check and read.
        info = os.fstat(src.fileno())
        _check_file(path, info)
        key = src.read(aead.KEY_SIZE + 1)
    if len(key) != aead.KEY_SIZE:
        raise MasterKeyError(
            f"The master key {path} is {len(key)} bytes; it must be exactly 32 raw bytes."
        )
    return MasterKey(key, source=str(path))


def _check_file(path: Path, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise MasterKeyError(f"The master key {path} is not a regular file.")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o177:
        raise MasterKeyError(
            f"The master key {path} has mode {mode:04o}: anyone but its owner must not be able"
            f" to read it. Refusing to start; run `chmod 600 {path}` (and ask who read it)."
        )
    if info.st_uid not in (os.geteuid(), 0):
        raise MasterKeyError(
            f"The master key {path} belongs to uid {info.st_uid}; it must belong to the"
            f" keyring's user (uid {os.geteuid()}) or root."
        )
