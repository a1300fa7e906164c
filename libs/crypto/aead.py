"""The sealed-blob format: AES-256-GCM with a self-describing header.

    offset  size  field
    0       1     format (0x01)
    1       4     key version, big-endian (which KEK/master key version sealed it; 0 = unversioned)
    5       12    nonce, random
    17      n+16  ciphertext and GCM tag

The associated data is the header (format and key version) followed by the
canonical bytes of the caller's binding, so neither the version nor the place
can be changed without the tag failing. Nonces are random: with 96 bits, one key
may seal about 2^32 blobs before the collision risk matters (NIST SP 800-38D);
data keys seal one blob each, and KEKs wrap data keys, far below that.
"""

from __future__ import annotations

import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from slipway.libs.crypto.binding import AssociatedData
from slipway.libs.crypto.errors import DecryptionFailed, InvalidKey

FORMAT_V1 = 0x01
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
MAX_KEY_VERSION = 2**32 - 1

_HEADER = struct.Struct(">BI")
HEADER_SIZE = _HEADER.size
OVERHEAD = HEADER_SIZE + NONCE_SIZE + TAG_SIZE


def generate_key() -> bytes:
    """A fresh random 256-bit key."""
    return os.urandom(KEY_SIZE)


def check_key(key: bytes) -> None:
    """Refuse anything but a 256-bit key (AESGCM would quietly accept 128 and 192)."""
    if len(key) != KEY_SIZE:
        raise InvalidKey(f"an AES-256 key is {KEY_SIZE} bytes, not {len(key)}")


def seal(key: bytes, plaintext: bytes, ad: AssociatedData, *, key_version: int = 0) -> bytes:
    """Encrypt and authenticate `plaintext`, bound to `ad` and to `key_version`."""
    check_key(key)
    if not 0 <= key_version <= MAX_KEY_VERSION:
        raise ValueError(f"key version {key_version} does not fit in 32 bits")
    header = _HEADER.pack(FORMAT_V1, key_version)
    nonce = os.urandom(NONCE_SIZE)
    return header + nonce + AESGCM(key).encrypt(nonce, plaintext, header + ad.canonical())


def open_(key: bytes, blob: bytes, ad: AssociatedData, *, key_version: int | None = None) -> bytes:
    """The plaintext of `blob`, or DecryptionFailed if it was altered, moved or the key is wrong.

    `key_version`, when given, must match the version in the header: it catches
    a blob handed to the wrong key before any decryption is tried.
    """
    check_key(key)
    version = key_version_of(blob)
    if key_version is not None and version != key_version:
        raise DecryptionFailed(
            f"the ciphertext was sealed with key version {version}, not {key_version}"
        )
    header = blob[:HEADER_SIZE]
    nonce = blob[HEADER_SIZE : HEADER_SIZE + NONCE_SIZE]
    try:
        return AESGCM(key).decrypt(nonce, blob[HEADER_SIZE + NONCE_SIZE :], header + ad.canonical())
    except InvalidTag:
        raise DecryptionFailed(
            "the ciphertext failed its integrity check: it was altered, moved from another"
            " place, or the key is wrong"
        ) from None


def key_version_of(blob: bytes) -> int:
    """The key version a blob names in its header (not yet authenticated: a hint for lookup)."""
    if len(blob) < OVERHEAD:
        raise DecryptionFailed(f"a sealed blob is at least {OVERHEAD} bytes, not {len(blob)}")
    fmt, version = _HEADER.unpack_from(blob)
    if fmt != FORMAT_V1:
        raise DecryptionFailed(f"not a sealed blob of a known format (format byte {fmt:#04x})")
    return int(version)
