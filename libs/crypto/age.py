"""age v1 files (https://age-encryption.org/v1) to X25519 recipients, from the spec.

What backups are sealed with: a customer can open them with the `age` CLI, rage or
pyrage, and the platform's own identity can live in the keyring, which unwraps file
keys from headers without ever handing the identity out.

    age-encryption.org/v1
    -> X25519 <base64 ephemeral share>
    <base64 body: the 16-byte file key sealed to one recipient, wrapped at 64 columns>
    --- <base64 HMAC-SHA-256 of the header up to and including "---">
    <16-byte nonce><payload: 64 KiB chunks, ChaCha20-Poly1305, STREAM nonces>

Reading is strict, as the spec asks: canonical unpadded base64 only, exactly two
arguments in an X25519 stanza, a 32-byte share and body, the header MAC, and a
payload that is neither truncated nor extended and whose last chunk is empty only
for an empty file. Anything else raises `DecryptionFailed`; keys and key strings
that cannot be used raise `InvalidKey`. Stanzas of other recipient types are
skipped, as the spec requires. Whole buffers only: objects are at most a few MiB.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from slipway.libs.crypto import sealedbox
from slipway.libs.crypto.errors import DecryptionFailed, InvalidKey

RECIPIENT_HRP = "age"
IDENTITY_HRP = "AGE-SECRET-KEY-"

KEY_SIZE = 32
FILE_KEY_SIZE = 16
NONCE_SIZE = 16
TAG_SIZE = 16
CHUNK_SIZE = 64 * 1024

VERSION_LINE = b"age-encryption.org/v1\n"
_VERSION_PREFIX = b"age-encryption.org/"
_ARMOR = b"-----BEGIN AGE ENCRYPTED FILE-----"
_X25519 = b"X25519"
_X25519_INFO = b"age-encryption.org/v1/X25519"
_COLUMNS = 64
_MAC_SIZE = 32
_ZERO_NONCE = bytes(12)
_BASE64 = re.compile(rb"[A-Za-z0-9+/]*")
_VCHAR = re.compile(rb"[\x21-\x7e]+")


# ---- keys and their text forms ---------------------------------------------------------------


def generate_identity() -> bytes:
    """A new X25519 identity: 32 random bytes (the private scalar)."""
    return X25519PrivateKey.generate().private_bytes_raw()


def public_of(identity: bytes) -> bytes:
    """The 32-byte X25519 public key (the recipient) of an identity."""
    return _private(identity).public_key().public_bytes_raw()


def format_recipient(public: bytes) -> str:
    """`age1...`, the recipient string age and pyrage take with `-r`."""
    _check_size(public, "an X25519 recipient")
    return _bech32_encode(RECIPIENT_HRP, public)


def parse_recipient(text: str) -> bytes:
    """The public key of an `age1...` recipient; InvalidKey for anything else."""
    hrp, data = _bech32_decode(text, "recipient")
    if hrp != RECIPIENT_HRP or len(data) != KEY_SIZE:
        raise InvalidKey("not an age X25519 recipient: it must look like age1... (62 characters)")
    sealedbox.validate_public_key(data)
    return data


def format_identity(identity: bytes) -> str:
    """`AGE-SECRET-KEY-1...`, upper case as age-keygen writes it."""
    _check_size(identity, "an X25519 identity")
    return _bech32_encode(IDENTITY_HRP.lower(), identity).upper()


def parse_identity(text: str) -> bytes:
    """The 32-byte identity of an `AGE-SECRET-KEY-1...` string; InvalidKey for anything else."""
    hrp, data = _bech32_decode(text, "identity")
    if hrp != IDENTITY_HRP or len(data) != KEY_SIZE:
        raise InvalidKey("not an age X25519 identity: it must look like AGE-SECRET-KEY-1...")
    return data


def parse_identity_file(text: str) -> list[bytes]:
    """Every identity of an age identity file (blank lines and `#` comments skipped)."""
    found = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            found.append(parse_identity(line))
        except InvalidKey as exc:
            raise InvalidKey(f"line {number} of the identity file: {exc.message}") from None
    if not found:
        raise InvalidKey("the identity file holds no identity (AGE-SECRET-KEY-1... lines)")
    return found


def fingerprint(public: bytes) -> str:
    """How Slipway names a key: hex SHA-256 of the public key (as `sealedbox.fingerprint`)."""
    return sealedbox.fingerprint(public)


# ---- sealing -------------------------------------------------------------------------------


def seal(plaintext: bytes, recipients: Sequence[bytes]) -> bytes:
    """A whole age file of `plaintext` that each of `recipients` (public keys) can open."""
    if not recipients:
        raise InvalidKey("an age file needs at least one recipient")
    file_key = os.urandom(FILE_KEY_SIZE)
    parts = [VERSION_LINE]
    parts.extend(_x25519_stanza(file_key, recipient) for recipient in recipients)
    parts.append(b"---")
    unmacced = b"".join(parts)
    header = unmacced + b" " + _b64encode(_header_mac(file_key, unmacced)) + b"\n"
    nonce = os.urandom(NONCE_SIZE)
    return b"".join((header, nonce, *_encrypt_payload(_payload_key(file_key, nonce), plaintext)))


def _x25519_stanza(file_key: bytes, recipient: bytes) -> bytes:
    _check_size(recipient, "an X25519 recipient")
    ephemeral = X25519PrivateKey.generate()
    share = ephemeral.public_key().public_bytes_raw()
    try:
        secret = ephemeral.exchange(X25519PublicKey.from_public_bytes(recipient))
    except ValueError:
        raise InvalidKey("that X25519 recipient is a low-order point; use a real key") from None
    body = ChaCha20Poly1305(_wrap_key(secret, share, recipient)).encrypt(
        _ZERO_NONCE, file_key, None
    )
    return b"-> X25519 " + _b64encode(share) + b"\n" + _wrap_body(_b64encode(body))


def _encrypt_payload(key: bytes, plaintext: bytes) -> list[bytes]:
    # One AEAD call per chunk over a view: no copy of the plaintext, one join at the end.
    encrypt = ChaCha20Poly1305(key).encrypt
    view = memoryview(plaintext)
    last = max(0, (len(view) - 1) // CHUNK_SIZE)
    out = [
        encrypt(_chunk_nonce(i, final=False), view[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE], None)
        for i in range(last)
    ]
    out.append(encrypt(_chunk_nonce(last, final=True), view[last * CHUNK_SIZE :], None))
    return out


# ---- opening -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Stanza:
    args: list[bytes]
    body: bytes


@dataclass(frozen=True, slots=True)
class _Header:
    stanzas: list[_Stanza]
    mac: bytes
    macced_end: int  # the MAC covers data[:macced_end], through "---"
    end: int  # the payload starts here


def header_bytes(sealed: bytes) -> bytes:
    """The header of an age file, from the version line through the MAC line."""
    return sealed[: _parse_header(sealed).end]


def unwrap_file_key(header: bytes, identity: bytes) -> bytes | None:
    """The file key `identity` unwraps from a header (or a whole file), MAC checked.

    None if no X25519 stanza of the header is addressed to `identity`;
    DecryptionFailed if the header is malformed or its MAC does not match.
    """
    return _unwrap(_parse_header(header), header, _private(identity))


def open_with_file_key(sealed: bytes, file_key: bytes) -> bytes:
    """The plaintext of an age file given its file key; DecryptionFailed on any tamper."""
    if len(file_key) != FILE_KEY_SIZE:
        raise DecryptionFailed(f"an age file key is {FILE_KEY_SIZE} bytes, not {len(file_key)}")
    parsed = _parse_header(sealed)
    _check_mac(parsed, sealed, file_key)
    return _decrypt_payload(file_key, memoryview(sealed)[parsed.end :])


def open_sealed(sealed: bytes, identities: Sequence[bytes]) -> bytes:
    """The plaintext of an age file, opened with whichever of `identities` is a recipient."""
    parsed = _parse_header(sealed)
    for identity in identities:
        file_key = _unwrap(parsed, sealed, _private(identity))
        if file_key is not None:
            return _decrypt_payload(file_key, memoryview(sealed)[parsed.end :])
    raise DecryptionFailed("none of the given identities is a recipient of this age file")


def _unwrap(parsed: _Header, data: bytes, private: X25519PrivateKey) -> bytes | None:
    public = private.public_key().public_bytes_raw()
    for stanza in parsed.stanzas:
        if stanza.args[0] != _X25519:
            continue
        if len(stanza.args) != 2:
            raise DecryptionFailed(
                f"an X25519 stanza has exactly 2 arguments, this one has {len(stanza.args)}"
            )
        share = _b64decode(stanza.args[1])
        if len(share) != KEY_SIZE or len(stanza.body) != FILE_KEY_SIZE + TAG_SIZE:
            raise DecryptionFailed("an X25519 stanza's share and body are 32 bytes each")
        try:
            secret = private.exchange(X25519PublicKey.from_public_bytes(share))
        except ValueError:  # an all-zero shared secret: the spec says abort
            raise DecryptionFailed("an X25519 stanza carries a low-order share") from None
        wrap = ChaCha20Poly1305(_wrap_key(secret, share, public))
        try:
            file_key = wrap.decrypt(_ZERO_NONCE, stanza.body, None)
        except InvalidTag:
            continue  # addressed to another recipient
        _check_mac(parsed, data, file_key)
        return file_key
    return None


def _decrypt_payload(file_key: bytes, payload: memoryview) -> bytes:
    if len(payload) < NONCE_SIZE + TAG_SIZE:
        raise DecryptionFailed("the age payload is truncated: it has no final chunk")
    decrypt = ChaCha20Poly1305(_payload_key(file_key, bytes(payload[:NONCE_SIZE]))).decrypt
    body = payload[NONCE_SIZE:]
    full = CHUNK_SIZE + TAG_SIZE
    last = (len(body) - 1) // full
    tail = len(body) - last * full
    if tail < TAG_SIZE or (tail == TAG_SIZE and last > 0):
        # A final chunk must hold a tag, and be empty only when the whole file is.
        raise DecryptionFailed("the age payload was truncated or extended")
    try:
        out = [
            decrypt(_chunk_nonce(i, final=False), body[i * full : (i + 1) * full], None)
            for i in range(last)
        ]
        out.append(decrypt(_chunk_nonce(last, final=True), body[last * full :], None))
    except InvalidTag:
        raise DecryptionFailed(
            "the age payload failed its integrity check: it was altered, truncated or extended"
        ) from None
    return b"".join(out)


def _parse_header(data: bytes) -> _Header:
    if not data.startswith(VERSION_LINE):
        if data.startswith(_ARMOR):
            raise DecryptionFailed("armored (PEM) age files are not read here; use the binary")
        if data.startswith(_VERSION_PREFIX):
            raise DecryptionFailed("an age file of another version than v1")
        raise DecryptionFailed("not an age file (it does not start with age-encryption.org/v1)")
    pos = len(VERSION_LINE)
    stanzas: list[_Stanza] = []
    while True:
        line, pos_after = _line(data, pos)
        if line.startswith(b"-> "):
            args = line[3:].split(b" ")
            if not all(_VCHAR.fullmatch(arg) for arg in args):
                raise DecryptionFailed("a stanza argument is empty or not printable ASCII")
            body, pos = _stanza_body(data, pos_after)
            stanzas.append(_Stanza(args, body))
        elif line.startswith(b"---"):
            if not stanzas:
                raise DecryptionFailed("the age header has no recipient stanza")
            mac = _b64decode(line[4:]) if line[3:4] == b" " else b""
            if len(mac) != _MAC_SIZE:
                raise DecryptionFailed("the age header's MAC line is malformed")
            return _Header(stanzas, mac, macced_end=pos + 3, end=pos_after)
        else:
            raise DecryptionFailed("the age header holds a line that is neither stanza nor MAC")


def _stanza_body(data: bytes, pos: int) -> tuple[bytes, int]:
    lines = []
    while True:
        line, pos = _line(data, pos)
        if len(line) > _COLUMNS:
            raise DecryptionFailed("a stanza body line is longer than 64 columns")
        lines.append(line)
        if len(line) < _COLUMNS:
            return _b64decode(b"".join(lines)), pos


def _line(data: bytes, pos: int) -> tuple[bytes, int]:
    end = data.find(b"\n", pos)
    if end < 0:
        raise DecryptionFailed("the age header is truncated")
    return data[pos:end], end + 1


def _check_mac(parsed: _Header, data: bytes, file_key: bytes) -> None:
    expected = _header_mac(file_key, data[: parsed.macced_end])
    if not hmac.compare_digest(expected, parsed.mac):
        raise DecryptionFailed(
            "the age header's MAC does not match: the header was altered, or the file key is wrong"
        )


# ---- derivations and encodings ---------------------------------------------------------------


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    # An empty salt and None are the same to HKDF (both become a block of zeros in HMAC).
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt or None, info=info).derive(ikm)


def _wrap_key(secret: bytes, share: bytes, recipient: bytes) -> bytes:
    return _hkdf(secret, share + recipient, _X25519_INFO)


def _header_mac(file_key: bytes, macced: bytes) -> bytes:
    return hmac.digest(_hkdf(file_key, b"", b"header"), macced, hashlib.sha256)


def _payload_key(file_key: bytes, nonce: bytes) -> bytes:
    return _hkdf(file_key, nonce, b"payload")


def _chunk_nonce(counter: int, *, final: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def _b64encode(raw: bytes) -> bytes:
    return base64.b64encode(raw).rstrip(b"=")


def _b64decode(text: bytes) -> bytes:
    """Canonical unpadded base64 only: no '=', no stray bits in the last character."""
    if not _BASE64.fullmatch(text) or len(text) % 4 == 1:
        raise DecryptionFailed("the age header holds invalid base64")
    try:
        raw = base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise DecryptionFailed("the age header holds invalid base64") from None
    if _b64encode(raw) != text:
        raise DecryptionFailed("the age header holds non-canonical base64")
    return raw


def _wrap_body(encoded: bytes) -> bytes:
    # Full 64-column lines, then a shorter (possibly empty) last line ends the stanza.
    lines = [encoded[i : i + _COLUMNS] for i in range(0, len(encoded) + 1, _COLUMNS)]
    return b"\n".join(lines) + b"\n"


def _check_size(key: bytes, what: str) -> None:
    if len(key) != KEY_SIZE:
        raise InvalidKey(f"{what} is {KEY_SIZE} bytes, not {len(key)}")


def _private(identity: bytes) -> X25519PrivateKey:
    _check_size(identity, "an X25519 identity")
    return X25519PrivateKey.from_private_bytes(identity)


# ---- Bech32 (BIP 173, without its 90-character limit, as age uses it) --------------------------

_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATOR = (0x3B6A57B2, 0x26508E6D, 0x1EA119FA, 0x3D4233DD, 0x2A1462B3)


def _polymod(values: Sequence[int]) -> int:
    check = 1
    for value in values:
        top = check >> 25
        check = (check & 0x1FFFFFF) << 5 ^ value
        for i, generator in enumerate(_GENERATOR):
            if (top >> i) & 1:
                check ^= generator
    return check


def _hrp_expand(hrp: str) -> list[int]:
    return [ord(c) >> 5 for c in hrp] + [0] + [ord(c) & 31 for c in hrp]


def _regroup(data: bytes | Sequence[int], source: int, target: int, *, pad: bool) -> list[int]:
    acc = bits = 0
    out = []
    mask = (1 << target) - 1
    keep = (1 << (source + target - 1)) - 1
    for value in data:
        acc = ((acc << source) | value) & keep
        bits += source
        while bits >= target:
            bits -= target
            out.append((acc >> bits) & mask)
    if pad:
        if bits:
            out.append((acc << (target - bits)) & mask)
    elif bits >= source or (acc << (target - bits)) & mask:
        raise InvalidKey("the key string's Bech32 data has stray padding bits")
    return out


def _bech32_encode(hrp: str, data: bytes) -> str:
    words = _regroup(data, 8, 5, pad=True)
    check = _polymod([*_hrp_expand(hrp), *words, 0, 0, 0, 0, 0, 0]) ^ 1
    words += [(check >> 5 * (5 - i)) & 31 for i in range(6)]
    return hrp + "1" + "".join(_CHARSET[w] for w in words)


def _bech32_decode(text: str, what: str) -> tuple[str, bytes]:
    """(human-readable part as written, data) of a Bech32 string, checksum verified."""
    bad = InvalidKey(f"that is not a valid age {what} (Bech32 encoding or checksum is wrong)")
    if not text or any(not 33 <= ord(c) <= 126 for c in text):
        raise bad
    if text != text.lower() and text != text.upper():
        raise bad  # mixed case
    split = text.rfind("1")
    if split < 1 or split + 7 > len(text):
        raise bad
    hrp, lowered = text[:split], text.lower()
    try:
        words = [_CHARSET.index(c) for c in lowered[split + 1 :]]
    except ValueError:
        raise bad from None
    if _polymod([*_hrp_expand(hrp.lower()), *words]) != 1:
        raise bad
    return hrp, bytes(_regroup(words[:-6], 5, 8, pad=False))
