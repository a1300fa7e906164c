"""Streaming AES-256-GCM for payloads too large to hold at once (backups, log archives).

The STREAM construction (Hoang, Reyhanitabar, Rogaway, Vizár, 2015): the
plaintext is cut into chunks of `chunk_size` bytes and each is sealed on its own,
with a nonce made of a per-stream random prefix, the chunk's index and a flag
marking the last chunk:

    nonce = prefix (7 bytes) || index (4 bytes, big-endian) || last (1 byte: 0 or 1)

So a reordered or duplicated chunk fails (wrong index), a stream cut at a chunk
boundary fails (its new last chunk was sealed as not-last), and one extended
with more chunks fails (its real last chunk was sealed as last).

    header  format 0x03 (1) | key version (4) | chunk size (4) | salt (16) | nonce prefix (7)
    chunks  every chunk but the last is chunk_size + 16 bytes; the last is 16..chunk_size + 16

Each stream encrypts under its own subkey, HKDF-SHA256(key, salt), so one data
key may protect many streams without their random nonce prefixes ever meeting.
Every chunk's associated data is the whole header plus the caller's binding.

Decryption hands out a chunk's plaintext only after that chunk authenticated,
but the stream as a whole is proven complete only when `finalize()` (or the end
of iteration) returns without error: write to a temporary file and keep it only
then.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from slipway.libs.crypto.aead import MAX_KEY_VERSION, TAG_SIZE, check_key
from slipway.libs.crypto.binding import AssociatedData
from slipway.libs.crypto.errors import DecryptionFailed

FORMAT_STREAM_V1 = 0x03
DEFAULT_CHUNK_SIZE = 64 * 1024
# A reader allocates one chunk from the (not yet authenticated) header: keep that bounded.
MAX_CHUNK_SIZE = 16 * 1024 * 1024
SALT_SIZE = 16
PREFIX_SIZE = 7
MAX_CHUNKS = 2**32

_HEADER = struct.Struct(">BII16s7s")
HEADER_SIZE = _HEADER.size
_INFO = b"slipway.stream.v1"


def _subkey(key: bytes, salt: bytes) -> AESGCM:
    check_key(key)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO)
    return AESGCM(hkdf.derive(key))


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= MAX_CHUNKS:
        raise ValueError("a stream holds at most 2^32 chunks; use a larger chunk size")
    return prefix + struct.pack(">IB", index, 1 if last else 0)


class StreamEncryptor:
    """Incremental encryption: `update()` as data comes, then `finalize()` once."""

    def __init__(
        self,
        key: bytes,
        ad: AssociatedData,
        *,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        key_version: int = 0,
    ) -> None:
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be 1..{MAX_CHUNK_SIZE} bytes, not {chunk_size}")
        if not 0 <= key_version <= MAX_KEY_VERSION:
            raise ValueError(f"key version {key_version} does not fit in 32 bits")
        salt, self._prefix = os.urandom(SALT_SIZE), os.urandom(PREFIX_SIZE)
        self._aead = _subkey(key, salt)
        self._header = _HEADER.pack(FORMAT_STREAM_V1, key_version, chunk_size, salt, self._prefix)
        self._ad = self._header + ad.canonical()
        self._chunk_size = chunk_size
        self._buffer = bytearray()
        self._index = 0
        self._pending_header = True
        self._done = False

    def update(self, data: bytes) -> bytes:
        """Take more plaintext; return the ciphertext ready so far (maybe empty)."""
        if self._done:
            raise ValueError("the stream was already finalized")
        self._buffer += data
        out = bytearray(self._take_header())
        size, offset = self._chunk_size, 0
        # Keep at least one byte back: only finalize() knows which chunk is the last.
        while len(self._buffer) - offset > size:
            out += self._seal(bytes(self._buffer[offset : offset + size]), last=False)
            offset += size
        # One compaction per call, not per chunk: large writes stay linear.
        del self._buffer[:offset]
        return bytes(out)

    def finalize(self) -> bytes:
        """Seal the last chunk (possibly empty) and end the stream."""
        if self._done:
            raise ValueError("the stream was already finalized")
        out = self._take_header() + self._seal(bytes(self._buffer), last=True)
        self._buffer.clear()
        self._done = True
        return out

    def _take_header(self) -> bytes:
        if not self._pending_header:
            return b""
        self._pending_header = False
        return self._header

    def _seal(self, chunk: bytes, *, last: bool) -> bytes:
        sealed = self._aead.encrypt(_nonce(self._prefix, self._index, last), chunk, self._ad)
        self._index += 1
        return sealed


class StreamDecryptor:
    """Incremental decryption: `update()` as ciphertext comes, then `finalize()` once."""

    def __init__(self, key: bytes, ad: AssociatedData) -> None:
        check_key(key)
        self._key = key
        self._binding = ad.canonical()
        self._aead: AESGCM | None = None
        self._buffer = bytearray()
        self._index = 0
        self._done = False
        self._sealed_chunk = 0
        self._prefix = b""
        self._ad = b""
        self.key_version: int | None = None

    def update(self, data: bytes) -> bytes:
        """Take more ciphertext; return the plaintext of every chunk proven so far."""
        if self._done:
            raise DecryptionFailed("data after the end of the stream")
        self._buffer += data
        if self._aead is None and not self._read_header():
            return b""
        out = bytearray()
        size, offset = self._sealed_chunk, 0
        # A chunk is known not to be the last only once at least one more byte follows it.
        while len(self._buffer) - offset > size:
            out += self._open(bytes(self._buffer[offset : offset + size]), last=False)
            offset += size
        del self._buffer[:offset]
        return bytes(out)

    def finalize(self) -> bytes:
        """Open the last chunk; DecryptionFailed if the stream was cut short or extended."""
        if self._done:
            raise DecryptionFailed("the stream was already finalized")
        if self._aead is None and not self._read_header():
            raise DecryptionFailed("the stream ends inside its header: it was truncated")
        if len(self._buffer) < TAG_SIZE:
            raise DecryptionFailed("the stream ends inside a chunk: it was truncated")
        out = self._open(bytes(self._buffer), last=True)
        self._buffer.clear()
        self._done = True
        return out

    def _read_header(self) -> bool:
        if len(self._buffer) < HEADER_SIZE:
            return False
        header = bytes(self._buffer[:HEADER_SIZE])
        fmt, version, chunk_size, salt, prefix = _HEADER.unpack(header)
        if fmt != FORMAT_STREAM_V1:
            raise DecryptionFailed(f"not an encrypted stream of a known format ({fmt:#04x})")
        if not 1 <= chunk_size <= MAX_CHUNK_SIZE:
            raise DecryptionFailed(f"the stream header names an impossible chunk size {chunk_size}")
        self._aead = _subkey(self._key, salt)
        self._prefix, self._sealed_chunk = prefix, chunk_size + TAG_SIZE
        self._ad = header + self._binding
        self.key_version = int(version)
        del self._buffer[:HEADER_SIZE]
        return True

    def _open(self, sealed: bytes, *, last: bool) -> bytes:
        assert self._aead is not None
        try:
            chunk = self._aead.decrypt(_nonce(self._prefix, self._index, last), sealed, self._ad)
        except InvalidTag:
            raise DecryptionFailed(
                f"chunk {self._index} of the stream failed its integrity check: the stream was"
                " altered, reordered, truncated or extended, or the key or binding is wrong"
            ) from None
        self._index += 1
        return chunk


def encrypt_chunks(
    key: bytes,
    chunks: Iterable[bytes],
    ad: AssociatedData,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    key_version: int = 0,
) -> Iterator[bytes]:
    """The encrypted stream of `chunks` (pieces of any size), as it becomes ready."""
    encryptor = StreamEncryptor(key, ad, chunk_size=chunk_size, key_version=key_version)
    for piece in chunks:
        out = encryptor.update(piece)
        if out:
            yield out
    yield encryptor.finalize()


def decrypt_chunks(key: bytes, chunks: Iterable[bytes], ad: AssociatedData) -> Iterator[bytes]:
    """The plaintext of an encrypted stream; raises DecryptionFailed at the first bad chunk."""
    decryptor = StreamDecryptor(key, ad)
    for piece in chunks:
        out = decryptor.update(piece)
        if out:
            yield out
    last = decryptor.finalize()
    if last:
        yield last


def _read_pieces(src: BinaryIO, size: int) -> Iterator[bytes]:
    while piece := src.read(size):
        yield piece


def encrypt_file(
    key: bytes,
    src: BinaryIO,
    dst: BinaryIO,
    ad: AssociatedData,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    key_version: int = 0,
) -> int:
    """Encrypt everything `src` holds into `dst`; returns the bytes written."""
    written = 0
    pieces = _read_pieces(src, chunk_size)
    for out in encrypt_chunks(key, pieces, ad, chunk_size=chunk_size, key_version=key_version):
        written += dst.write(out)
    return written


def decrypt_file(
    key: bytes, src: BinaryIO, dst: BinaryIO, ad: AssociatedData, *, read_size: int = 1 << 20
) -> int:
    """Decrypt `src` into `dst`; returns the plaintext bytes written.

    On DecryptionFailed, `dst` holds a partial plaintext that must be discarded.
    """
    written = 0
    for out in decrypt_chunks(key, _read_pieces(src, read_size), ad):
        written += dst.write(out)
    return written
