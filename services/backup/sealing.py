"""Compress, seal and open objects; sign manifests: the keyring does every part that needs a key.

Sealing needs only public keys (the team's recipients, from the keyring). Opening
needs each object's file key, which the keyring unwraps from the object's header
with the team's platform identity: that identity never leaves the keyring, and a
team that removed it from its recipients gets nothing back (SealedToCustomer).
Manifests are signed by the keyring's Ed25519 audit key under their own prefix.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import zstandard

from slipway.contracts import keyring
from slipway.libs.bus import Bus
from slipway.libs.crypto import age
from slipway.services.backup.errors import IntegrityError, SealedToCustomer

MANIFEST_FORMAT = "slipway-backup-manifest/1"
RECIPIENTS_TTL = 30.0  # seconds: a key added or removed applies to objects sealed after that


@dataclass(frozen=True)
class Recipients:
    publics: tuple[bytes, ...]
    fingerprints: tuple[str, ...]


class Sealer:
    """The team's recipients (cached briefly), sealing, opening through the keyring, signing."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self._cache: dict[str, tuple[float, Recipients]] = {}

    async def recipients(self, team_id: str) -> Recipients:
        cached = self._cache.get(team_id)
        if cached and time.monotonic() - cached[0] < RECIPIENTS_TTL:
            return cached[1]
        answer = await self.bus.call(
            keyring.BACKUP_RECIPIENTS_GET, keyring.GetBackupRecipients(team_id=team_id)
        )
        found = Recipients(
            publics=tuple(age.parse_recipient(r.recipient) for r in answer.recipients),
            fingerprints=tuple(r.fingerprint for r in answer.recipients),
        )
        if not found.publics:
            # The keyring always lists the platform key unless a customer key replaces it.
            raise SealedToCustomer(f"team {team_id} has no backup recipient")
        self._cache[team_id] = (time.monotonic(), found)
        return found

    def forget(self, team_id: str) -> None:
        self._cache.pop(team_id, None)

    async def file_keys(self, team_id: str, sealed: Sequence[bytes]) -> list[bytes]:
        """The file key of each sealed object; SealedToCustomer if the platform has none."""
        headers = [age.header_bytes(blob) for blob in sealed]
        keys: list[bytes] = []
        for start in range(0, len(headers), 64):
            answer = await self.bus.call(
                keyring.BACKUP_FILEKEYS_UNWRAP,
                keyring.UnwrapFileKeys(team_id=team_id, headers=headers[start : start + 64]),
                timeout=30.0,
            )
            keys.extend(answer.file_keys)
        if any(not key for key in keys):
            raise SealedToCustomer(
                "These backups are sealed to the team's own keys only: the platform cannot open"
                " them. Download them (pg:backups:download) and open them with your identity"
                " (pg:backups:open --identity FILE)."
            )
        return keys

    async def sign(self, team_id: str, canonical: bytes) -> dict[str, Any]:
        message = f"{MANIFEST_FORMAT}\n{team_id}\n".encode() + canonical
        signed = await self.bus.call(
            keyring.BACKUP_MANIFEST_SIGN,
            keyring.SignManifest(team_id=team_id, message=message),
        )
        return {
            "signature": base64.b64encode(signed.signature).decode(),
            "key_id": signed.key_id,
            "public_key": base64.b64encode(signed.public_key).decode(),
        }


def seal_compressed(compressed: bytes, recipients: Recipients) -> tuple[bytes, str]:
    """Seal already-compressed bytes; the sealed bytes and their SHA-256 (hex)."""
    sealed = age.seal(compressed, recipients.publics)
    return sealed, hashlib.sha256(sealed).hexdigest()


def compress_and_seal(plain: bytes, recipients: Recipients, level: int) -> tuple[bytes, str]:
    """One zstd frame of `plain`, sealed (WAL pieces, counts)."""
    return seal_compressed(zstandard.ZstdCompressor(level=level).compress(plain), recipients)


def check_hash(key: str, sealed: bytes, sha256: str) -> None:
    if hashlib.sha256(sealed).hexdigest() != sha256:
        raise IntegrityError(
            f"the stored object {key} does not match its manifest (SHA-256 differs):"
            " it was changed or damaged; the restore stops here"
        )


def open_object(sealed: bytes, file_key: bytes) -> bytes:
    """The compressed bytes inside one sealed object (DecryptionFailed if tampered)."""
    return age.open_with_file_key(sealed, file_key)


async def open_many(sealer: Sealer, team_id: str, sealed: Sequence[bytes]) -> list[bytes]:
    keys = await sealer.file_keys(team_id, sealed)
    return await asyncio.to_thread(
        lambda: [open_object(blob, key) for blob, key in zip(sealed, keys, strict=True)]
    )


def canonical(manifest: dict[str, Any]) -> bytes:
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
