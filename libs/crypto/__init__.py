"""Slipway's cryptography, on `cryptography`'s AES-256-GCM, X25519, HKDF-SHA256 and nothing else.

    binding     Binding(team, app, kind, record) and Context: canonical associated data
    aead        seal / open_: one blob, format + key version + random nonce, bound to its place
    envelope    encrypt / decrypt through the keyring: a fresh data key per record, stored wrapped
    stream      chunked STREAM encryption for large payloads (reorder, truncation, extension fail)
    sealedbox   seal_to / open_sealed: to a customer-held X25519 key the platform cannot open
    errors      CryptoError, DecryptionFailed (alias IntegrityError), InvalidKey

Every format starts with its own byte (aead 0x01, envelope record 0x02, stream
0x03, sealed box 0x04), so a blob handed to the wrong reader fails with a clear
message rather than a bare tag mismatch. `envelope` talks to the bus and is not
imported here: `from slipway.libs.crypto import envelope`.
"""

from slipway.libs.crypto.aead import KEY_SIZE, generate_key, key_version_of, open_, seal
from slipway.libs.crypto.binding import AssociatedData, Binding, Context
from slipway.libs.crypto.errors import CryptoError, DecryptionFailed, IntegrityError, InvalidKey
from slipway.libs.crypto.sealedbox import (
    fingerprint,
    generate_keypair,
    open_sealed,
    public_key_of,
    seal_to,
    validate_public_key,
)
from slipway.libs.crypto.stream import (
    DEFAULT_CHUNK_SIZE,
    StreamDecryptor,
    StreamEncryptor,
    decrypt_chunks,
    decrypt_file,
    encrypt_chunks,
    encrypt_file,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "KEY_SIZE",
    "AssociatedData",
    "Binding",
    "Context",
    "CryptoError",
    "DecryptionFailed",
    "IntegrityError",
    "InvalidKey",
    "StreamDecryptor",
    "StreamEncryptor",
    "decrypt_chunks",
    "decrypt_file",
    "encrypt_chunks",
    "encrypt_file",
    "fingerprint",
    "generate_key",
    "generate_keypair",
    "key_version_of",
    "open_",
    "open_sealed",
    "public_key_of",
    "seal",
    "seal_to",
    "validate_public_key",
]
