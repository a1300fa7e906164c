"""Sealing to a customer-held X25519 public key: the platform can write, never read back.

An ECIES-style sealed box. For every message a fresh ephemeral X25519 key pair
is made; its shared secret with the recipient's public key goes through
HKDF-SHA256 to an AES-256-GCM key and nonce, and the ephemeral private key is
dropped. Only the holder of the recipient's private key can derive them again.

    offset  size  field
    0       1     format (0x04)
    1       8     recipient key id: the first 8 bytes of SHA-256(recipient public key)
    9       32    ephemeral public key
    41      n+16  ciphertext and GCM tag

HKDF's info names the format and both public keys, so a box re-addressed to
another recipient, or with its ephemeral key swapped, derives another key. The
associated data is the header plus the caller's binding. The key is used for
one message only, which is why a derived (not random) nonce is safe.
"""

from __future__ import annotations

import hashlib
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from slipway.libs.crypto.aead import NONCE_SIZE, TAG_SIZE
from slipway.libs.crypto.binding import AssociatedData
from slipway.libs.crypto.errors import DecryptionFailed, InvalidKey

FORMAT_SEALED_V1 = 0x04
PUBLIC_KEY_SIZE = 32
KEY_ID_SIZE = 8
_HEADER = struct.Struct(">B8s32s")
HEADER_SIZE = _HEADER.size
OVERHEAD = HEADER_SIZE + TAG_SIZE
_INFO = b"slipway.sealed-box.v1"


def generate_keypair() -> tuple[bytes, bytes]:
    """A new (private key, public key) pair, 32 raw bytes each, for a customer to hold."""
    private = X25519PrivateKey.generate()
    return private.private_bytes_raw(), _raw(private.public_key())


def public_key_of(private_key: bytes) -> bytes:
    """The public key matching a raw X25519 private key."""
    return _raw(_private(private_key).public_key())


def fingerprint(public_key: bytes) -> str:
    """The SHA-256 of a public key, hex: how customers and the API name a key."""
    return hashlib.sha256(public_key).hexdigest()


def key_id(public_key: bytes) -> bytes:
    """The short recipient id written into each box (so a customer knows which key opens it)."""
    return hashlib.sha256(public_key).digest()[:KEY_ID_SIZE]


def validate_public_key(public_key: bytes) -> X25519PublicKey:
    """The key, if it is 32 bytes and a point a shared secret can be made with; else InvalidKey."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise InvalidKey(f"an X25519 public key is {PUBLIC_KEY_SIZE} bytes, not {len(public_key)}")
    key = X25519PublicKey.from_public_bytes(public_key)
    try:
        # Low-order points give an all-zero secret; OpenSSL refuses them, so probe once.
        X25519PrivateKey.generate().exchange(key)
    except ValueError:
        raise InvalidKey(
            "that X25519 public key is a low-order point; generate a real key"
        ) from None
    return key


def seal_to(public_key: bytes, plaintext: bytes, ad: AssociatedData) -> bytes:
    """Encrypt `plaintext` so that only the holder of `public_key`'s private key can read it."""
    recipient = validate_public_key(public_key)
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = _raw(ephemeral.public_key())
    aead, nonce = _derive(ephemeral.exchange(recipient), ephemeral_public, public_key)
    header = _HEADER.pack(FORMAT_SEALED_V1, key_id(public_key), ephemeral_public)
    return header + aead.encrypt(nonce, plaintext, header + ad.canonical())


def open_sealed(private_key: bytes | X25519PrivateKey, blob: bytes, ad: AssociatedData) -> bytes:
    """The plaintext of a sealed box, or DecryptionFailed if altered, misaddressed or misbound."""
    private = private_key if isinstance(private_key, X25519PrivateKey) else _private(private_key)
    public = _raw(private.public_key())
    if len(blob) < OVERHEAD:
        raise DecryptionFailed(f"a sealed box is at least {OVERHEAD} bytes, not {len(blob)}")
    fmt, recipient, ephemeral_public = _HEADER.unpack_from(blob)
    if fmt != FORMAT_SEALED_V1:
        raise DecryptionFailed(f"not a sealed box of a known format (format byte {fmt:#04x})")
    if recipient != key_id(public):
        raise DecryptionFailed(
            f"this box was sealed to another key (key id {recipient.hex()}, yours is"
            f" {key_id(public).hex()})"
        )
    try:
        secret = private.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
    except ValueError:
        raise DecryptionFailed("the sealed box carries an unusable ephemeral key") from None
    aead, nonce = _derive(secret, ephemeral_public, public)
    header = blob[:HEADER_SIZE]
    try:
        return aead.decrypt(nonce, blob[HEADER_SIZE:], header + ad.canonical())
    except InvalidTag:
        raise DecryptionFailed(
            "the sealed box failed its integrity check: it was altered, moved from another"
            " place, or the key is wrong"
        ) from None


def _derive(secret: bytes, ephemeral_public: bytes, recipient: bytes) -> tuple[AESGCM, bytes]:
    okm = HKDF(
        algorithm=hashes.SHA256(),
        length=32 + NONCE_SIZE,
        salt=None,
        info=_INFO + ephemeral_public + recipient,
    ).derive(secret)
    return AESGCM(okm[:32]), okm[32:]


def _private(raw: bytes) -> X25519PrivateKey:
    if len(raw) != 32:
        raise InvalidKey(f"an X25519 private key is 32 bytes, not {len(raw)}")
    return X25519PrivateKey.from_private_bytes(raw)


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)
