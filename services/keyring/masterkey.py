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

The key can be rotated (rotation.py): every blob the master key seals names its
version in its header, and the database records each version's fingerprint
(`master_keys`). While a rotation runs, or after one crashed, the new key waits in
`<key>.next` and the old one may linger in `<key>.old`; the keyring loads every file
whose fingerprint the database knows, so it opens blobs of either version.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import secrets
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import aiosqlite
import structlog

from slipway.libs.crypto import aead
from slipway.libs.crypto.binding import AssociatedData
from slipway.libs.crypto.errors import DecryptionFailed
from slipway.services.keyring.errors import MasterKeyError
from slipway.services.keyring.settings import KeyringSettings
from slipway.services.keyring.store import KeyringStore, MasterKeyRecord

log = structlog.get_logger("slipway.keyring.masterkey")

# The generation of the first master key, written into every blob it seals; each
# rotation makes the next one.
MASTER_KEY_VERSION = 1
_FINGERPRINT_LABEL = b"slipway-master-key-fingerprint/1\n"


def fingerprint(key: bytes) -> str:
    """A master key's public name: it tells keys apart and reveals nothing of them."""
    return hashlib.sha256(_FINGERPRINT_LABEL + key).hexdigest()[:32]


@dataclass(frozen=True)
class KeyFiles:
    """The master key file and its two companions during a rotation."""

    path: Path

    @property
    def next(self) -> Path:
        """The new key, while a rotation moves the wraps to it."""
        return self.path.with_name(self.path.name + ".next")

    @property
    def old(self) -> Path:
        """The old key, from the swap until it is destroyed."""
        return self.path.with_name(self.path.name + ".old")


class MasterKey:
    """The master key(s) in memory: they wrap and unwrap, and never hand out their bytes.

    Usually one version; two while a rotation runs (blobs say which one sealed them).
    `wrap` uses `current`, the newest version the database makes current.
    """

    def __init__(self, key: bytes, source: str, *, files: KeyFiles | None = None) -> None:
        aead.check_key(key)
        self._primary = key
        self._keys = {MASTER_KEY_VERSION: key}
        self.current = MASTER_KEY_VERSION
        self.source = source
        self.files = files
        self._store: KeyringStore | None = None
        # No row in master_keys yet (a keyring from before rotation, or a fresh one).
        self.unrecorded = False

    def wrap(self, plaintext: bytes, ad: AssociatedData) -> bytes:
        """Seal a key (a KEK, the audit signing key) under the current master key."""
        return aead.seal(self._keys[self.current], plaintext, ad, key_version=self.current)

    def wrap_with(self, version: int, plaintext: bytes, ad: AssociatedData) -> bytes:
        """Seal under a given version (a rotation's new key, before it is current everywhere)."""
        return aead.seal(self._keys[version], plaintext, ad, key_version=version)

    def unwrap(self, blob: bytes, ad: AssociatedData) -> bytes:
        """Open what `wrap` sealed; DecryptionFailed if altered, moved or another master key's."""
        version = aead.key_version_of(blob)
        key = self._keys.get(version)
        if key is None:
            raise DecryptionFailed(f"master key version {version} is not loaded")
        return aead.open_(key, blob, ad, key_version=version)

    def versions(self) -> list[int]:
        """The versions held in memory."""
        return sorted(self._keys)

    def key_of(self, version: int) -> bytes | None:
        """The raw key of a version (for rotation.py, which writes key files)."""
        return self._keys.get(version)

    def adopt(self, version: int, key: bytes, *, current: bool) -> None:
        """Hold another version (a rotation's new key); make it the one `wrap` uses."""
        aead.check_key(key)
        self._keys[version] = key
        if current:
            self.current = version

    def forget(self, version: int) -> None:
        """Drop a destroyed version from memory."""
        if version != self.current:
            self._keys.pop(version, None)

    async def attach(self, store: KeyringStore) -> None:
        """Tie the keys to the versions the database records (and read rotation's files)."""
        self._store = store
        await self.reload()

    async def record_first(self) -> None:
        """Record the key a keyring started with as version 1 (once it proved it opens the db)."""
        if self._store is None or not self.unrecorded:
            return
        async with self._store.transaction() as conn:
            await self._store.add_master_key(
                conn, MASTER_KEY_VERSION, fingerprint(self._primary), "active"
            )
        await self.reload()

    async def reload(self) -> None:
        """Read the key files and the database again: another instance may have rotated."""
        if self._store is None:
            return
        await self._resolve(await self._store.master_keys())

    async def ensure(self, version: int) -> None:
        """Make sure `version` is held, reloading once if it is not (a rotation elsewhere)."""
        if version not in self._keys:
            await self.reload()

    async def sync_current(self, conn: aiosqlite.Connection) -> None:
        """Inside a write transaction, before a wrap: follow a rotation made by another instance."""
        if self._store is None:
            return
        records = await self._store.master_keys_in(conn)
        if records and _wanted(records, self._keys) != self.current:
            await self._resolve(records)

    async def _resolve(self, records: list[MasterKeyRecord]) -> None:
        found = [self._primary]
        if self.files is not None:
            found = _read_present(self.files)
            self._primary = found[0]
        if not records:
            self._keys = {MASTER_KEY_VERSION: self._primary}
            self.current = MASTER_KEY_VERSION
            self.unrecorded = True
            return
        by_fingerprint = {r.fingerprint: r for r in records}
        keys: dict[int, bytes] = {}
        for key in found:
            record = by_fingerprint.get(fingerprint(key))
            if record is not None and record.state in ("pending", "active", "retiring"):
                keys[record.version] = key
        active = next((r for r in records if r.state == "active"), None)
        if active is None or active.version not in keys:
            expected = active.fingerprint if active else "none recorded"
            raise MasterKeyError(
                f"The master key from {self.source} does not open this keyring's database: its"
                f" keys are wrapped by the master key with fingerprint {expected}. Restore that"
                " key; a new one can never read the keys already stored."
            )
        self._keys = keys
        self.current = _wanted(records, keys)
        self.unrecorded = False

    def __repr__(self) -> str:
        return f"MasterKey(source={self.source!r}, versions={self.versions()})"


def _read_present(files: KeyFiles) -> list[bytes]:
    """The key at `files.path`, then those of the rotation files that exist.

    The companions are read first: another instance renaming `.next` over the key
    meanwhile then leaves the new key in one of the two reads, never in neither.
    """
    extras = []
    for extra in (files.next, files.old):
        try:
            extras.append(_read_key(extra))
        except MasterKeyError:
            if os.path.lexists(extra):
                raise
            # Not there, or gone since: renamed into place or destroyed by a rotation.
    return [_read_key(files.path), *extras]


def _wanted(records: list[MasterKeyRecord], keys: Mapping[int, bytes]) -> int:
    """The version new wraps use: a rotation's pending key once it is held, else the active."""
    pending = [r.version for r in records if r.state == "pending" and r.version in keys]
    if pending:
        return max(pending)
    return next(r.version for r in records if r.state == "active")


async def open_master_key(
    settings: KeyringSettings, store: KeyringStore, environ: Mapping[str, str] | None = None
) -> MasterKey:
    """The configured master key with every version the database and the files hold."""
    master = load_master_key(settings, environ)
    await master.attach(store)
    return master


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
    master = _from_file(path)
    master.files = KeyFiles(path)
    return master


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
    sync_folder(path.parent)


def _from_file(path: Path) -> MasterKey:
    return MasterKey(_read_key(path), source=str(path))


def _read_key(path: Path) -> bytes:
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
    return key


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


# ---- writing and destroying key files (rotation.py) --------------------------------------------


def read_key_file(path: Path) -> bytes:
    """The 32 bytes of a key file, checked like the master key itself."""
    return _read_key(path)


def write_key_file(path: Path, key: bytes, owner: os.stat_result) -> None:
    """Put `key` at `path` atomically: temporary file, fsync, rename, fsync of the folder.

    Mode 0600 and, when the keyring runs as root, the owner of `owner` (the old key file):
    whoever could read the old key, and only they, can read the new one.
    """
    aead.check_key(key)
    write_private_file(path, key, owner)


def write_private_file(path: Path, data: bytes, owner: os.stat_result) -> None:
    """`data` at `path`, mode 0600, atomically and durably (see `write_key_file`)."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as out:
            if os.geteuid() == 0:
                os.fchown(out.fileno(), owner.st_uid, owner.st_gid)
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    sync_folder(path.parent)


def destroy_key_file(path: Path) -> bool:
    """Overwrite a key file with random bytes, fsync, unlink it; False if it was not there."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    with os.fdopen(fd, "wb") as out:
        info = os.fstat(out.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise MasterKeyError(f"{path} is not a regular file; refusing to overwrite it.")
        out.write(os.urandom(max(info.st_size, aead.KEY_SIZE)))
        out.flush()
        os.fsync(out.fileno())
    os.unlink(path)
    sync_folder(path.parent)
    return True


def sync_folder(folder: Path) -> None:
    """fsync a folder, so a rename or unlink in it survives a power cut."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
