"""Envelope encryption through the keyring: a fresh data key per record, stored wrapped.

    sealed = await envelope.encrypt(bus, team_id, Purpose.CONFIG, binding, plaintext)
    plaintext = await envelope.decrypt(bus, team_id, Purpose.CONFIG, binding, sealed)

`binding` is a `Binding(team, app, kind, record)` (or a mapping with exactly
those keys) naming the record's place. It is bound twice: into the data blob
(AES-GCM associated data) and, as the keyring `context`, into the wrapped data
key, so a record copied to another place fails at the keyring and again here.

The stored bytes are one `EncryptedRecord`:

    offset  size  field
    0       1     format (0x02)
    1       4     KEK version, big-endian (also inside the wrapped key, authenticated there)
    5       2     length w of the wrapped data key
    7       w     wrapped data key (an aead blob sealed by the team's KEK, in the keyring)
    7+w     rest  data blob (an aead blob sealed by the data key, key version 0: data keys are
                  used once, the KEK version lives in the wrapped key)

Plaintext data keys live only in local variables for the duration of one call:
nothing here caches, logs or stores them. (Python cannot wipe the bytes it
frees; keeping no reference is what can be done.)
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from slipway.contracts.keyring import (
    DATAKEY_DECRYPT,
    DATAKEY_GENERATE,
    DATAKEY_RENEW,
    DATAKEY_REWRAP,
    DataKey,
    DecryptDataKey,
    GenerateDataKey,
    Purpose,
    RenewDataKey,
    RewrapDataKey,
)
from slipway.libs.bus import Bus
from slipway.libs.crypto import aead
from slipway.libs.crypto.binding import Binding
from slipway.libs.crypto.errors import DecryptionFailed, IntegrityError

__all__ = [
    "BindingLike",
    "DecryptionFailed",
    "EncryptedRecord",
    "IntegrityError",
    "decrypt",
    "decrypt_record",
    "encrypt",
    "encrypt_record",
    "generate_data_key",
    "kek_version_of",
    "open_and_renew",
    "rewrap",
    "unwrap_data_key",
]

FORMAT_RECORD_V1 = 0x02
_HEAD = struct.Struct(">BIH")

BindingLike = Binding | Mapping[str, str]


@dataclass(frozen=True, slots=True)
class EncryptedRecord:
    """A ciphertext with the wrapped data key that opens it and that key's KEK version."""

    wrapped_key: bytes
    kek_version: int
    blob: bytes

    def to_bytes(self) -> bytes:
        """The record as one byte string, for a single BLOB column or file."""
        return _HEAD.pack(FORMAT_RECORD_V1, self.kek_version, len(self.wrapped_key)) + (
            self.wrapped_key + self.blob
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedRecord:
        """Parse `to_bytes()` output; DecryptionFailed if it is not a well-formed record."""
        if len(data) < _HEAD.size:
            raise DecryptionFailed("too short to be an encrypted record")
        fmt, version, length = _HEAD.unpack_from(data)
        if fmt != FORMAT_RECORD_V1:
            raise DecryptionFailed(f"not an encrypted record of a known format ({fmt:#04x})")
        wrapped = data[_HEAD.size : _HEAD.size + length]
        blob = data[_HEAD.size + length :]
        if len(wrapped) != length or len(blob) < aead.OVERHEAD:
            raise DecryptionFailed("the encrypted record is truncated")
        if aead.key_version_of(wrapped) != version:
            raise DecryptionFailed("the record's KEK version does not match its wrapped key")
        return cls(wrapped_key=wrapped, kek_version=int(version), blob=blob)


def kek_version_of(data: bytes) -> int:
    """The KEK version a stored record's data key is wrapped with (to find records to rewrap)."""
    return EncryptedRecord.from_bytes(data).kek_version


async def generate_data_key(
    bus: Bus, team_id: str, purpose: Purpose, binding: BindingLike, *, timeout: float = 5.0
) -> DataKey:
    """A fresh data key for `binding` (plaintext and wrapped), e.g. to encrypt a stream.

    Use the plaintext at once and drop it; store `wrapped` and `kek_version`.
    """
    place = _place(team_id, binding)
    request = GenerateDataKey(team_id=team_id, purpose=purpose, context=place.as_context())
    return await bus.call(DATAKEY_GENERATE, request, timeout=timeout)


async def unwrap_data_key(
    bus: Bus,
    team_id: str,
    purpose: Purpose,
    binding: BindingLike,
    wrapped: bytes,
    *,
    timeout: float = 5.0,
) -> bytes:
    """The plaintext of a data key wrapped for `binding`; DecryptionFailed if it is not."""
    place = _place(team_id, binding)
    request = DecryptDataKey(
        team_id=team_id, purpose=purpose, wrapped=wrapped, context=place.as_context()
    )
    reply = await bus.call(DATAKEY_DECRYPT, request, timeout=timeout)
    return reply.plaintext


async def encrypt_record(
    bus: Bus,
    team_id: str,
    purpose: Purpose,
    binding: BindingLike,
    plaintext: bytes,
    *,
    timeout: float = 5.0,
) -> EncryptedRecord:
    """Encrypt `plaintext` under a fresh data key of `team_id`, bound to `binding`."""
    place = _place(team_id, binding)
    key = await generate_data_key(bus, team_id, purpose, place, timeout=timeout)
    blob = aead.seal(key.plaintext, plaintext, place)
    return EncryptedRecord(wrapped_key=key.wrapped, kek_version=key.kek_version, blob=blob)


async def decrypt_record(
    bus: Bus,
    team_id: str,
    purpose: Purpose,
    binding: BindingLike,
    record: EncryptedRecord,
    *,
    timeout: float = 5.0,
) -> bytes:
    """The plaintext of `record`; DecryptionFailed if it was altered or moved, Gone if shredded."""
    place = _place(team_id, binding)
    key = await unwrap_data_key(bus, team_id, purpose, place, record.wrapped_key, timeout=timeout)
    return aead.open_(key, record.blob, place)


async def encrypt(
    bus: Bus,
    team_id: str,
    purpose: Purpose,
    binding: BindingLike,
    plaintext: bytes,
    *,
    timeout: float = 5.0,
) -> bytes:
    """`encrypt_record` as one byte string (`EncryptedRecord.to_bytes()`)."""
    record = await encrypt_record(bus, team_id, purpose, binding, plaintext, timeout=timeout)
    return record.to_bytes()


async def decrypt(
    bus: Bus,
    team_id: str,
    purpose: Purpose,
    binding: BindingLike,
    data: bytes,
    *,
    timeout: float = 5.0,
) -> bytes:
    """The plaintext of bytes made by `encrypt`; raises like `decrypt_record`."""
    record = EncryptedRecord.from_bytes(data)
    return await decrypt_record(bus, team_id, purpose, binding, record, timeout=timeout)


async def open_and_renew(
    bus: Bus,
    team_id: str,
    purpose: Purpose,
    binding: BindingLike,
    data: bytes,
    next_binding: BindingLike,
    *,
    timeout: float = 5.0,
) -> tuple[bytes, DataKey]:
    """`decrypt(binding, data)` and `generate_data_key(next_binding)` in one keyring call.

    For a record replaced by its next version (a config change): one round trip
    instead of two. Raises like `decrypt`; the new key is for immediate use only.
    """
    record = EncryptedRecord.from_bytes(data)
    place = _place(team_id, binding)
    request = RenewDataKey(
        team_id=team_id,
        purpose=purpose,
        wrapped=record.wrapped_key,
        context=place.as_context(),
        next_context=_place(team_id, next_binding).as_context(),
    )
    reply = await bus.call(DATAKEY_RENEW, request, timeout=timeout)
    plaintext = aead.open_(reply.current, record.blob, place)
    key = DataKey(plaintext=reply.plaintext, wrapped=reply.wrapped, kek_version=reply.kek_version)
    return plaintext, key


async def rewrap(
    bus: Bus,
    team_id: str,
    purpose: Purpose,
    binding: BindingLike,
    data: bytes,
    *,
    timeout: float = 5.0,
) -> bytes:
    """The same record with its data key wrapped by the team's current KEK.

    The data blob is unchanged and no plaintext leaves the keyring: this is how
    records move off a KEK version before that version is retired.
    """
    place = _place(team_id, binding)
    record = EncryptedRecord.from_bytes(data)
    request = RewrapDataKey(
        team_id=team_id, purpose=purpose, wrapped=record.wrapped_key, context=place.as_context()
    )
    reply = await bus.call(DATAKEY_REWRAP, request, timeout=timeout)
    rewrapped = EncryptedRecord(
        wrapped_key=reply.wrapped, kek_version=reply.kek_version, blob=record.blob
    )
    return rewrapped.to_bytes()


def _place(team_id: str, binding: BindingLike) -> Binding:
    place = Binding.coerce(binding)
    if place.team != team_id:
        raise ValueError(f"binding names team {place.team!r} but the key is {team_id!r}'s")
    return place
