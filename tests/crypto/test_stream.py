"""Chunked STREAM encryption: large payloads, and every way of cutting or shuffling them."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest

from slipway.libs.crypto.aead import TAG_SIZE, generate_key
from slipway.libs.crypto.binding import Binding
from slipway.libs.crypto.errors import DecryptionFailed
from slipway.libs.crypto.stream import (
    HEADER_SIZE,
    StreamDecryptor,
    StreamEncryptor,
    decrypt_chunks,
    decrypt_file,
    encrypt_chunks,
    encrypt_file,
)

PLACE = Binding(team="team-1", app="app-1", kind="backup", record="b-42")
SMALL = 1024  # a chunk size that keeps tampering tests quick and readable


def seal_stream(key: bytes, data: bytes, chunk_size: int = SMALL) -> bytes:
    return b"".join(encrypt_chunks(key, [data], PLACE, chunk_size=chunk_size))


def open_stream(key: bytes, sealed: bytes, place: Binding = PLACE) -> bytes:
    return b"".join(decrypt_chunks(key, [sealed], place))


def split(sealed: bytes, chunk_size: int = SMALL) -> tuple[bytes, list[bytes]]:
    """The header and the sealed chunks of a stream."""
    step = chunk_size + TAG_SIZE
    body = sealed[HEADER_SIZE:]
    return sealed[:HEADER_SIZE], [body[i : i + step] for i in range(0, len(body), step)]


def pieces(data: bytes, sizes: list[int]) -> Iterator[bytes]:
    """`data` cut in pieces cycling through `sizes`, as a network or a pipe would hand it."""
    offset, turn = 0, 0
    while offset < len(data):
        size = sizes[turn % len(sizes)]
        yield data[offset : offset + size]
        offset, turn = offset + size, turn + 1


def test_multi_megabyte_file_round_trip() -> None:
    """A 5 MiB + 123 byte payload survives encrypt_file / decrypt_file with 64 KiB chunks."""
    key, data = generate_key(), os.urandom(5 * 1024 * 1024 + 123)
    sealed, opened = io.BytesIO(), io.BytesIO()
    written = encrypt_file(key, io.BytesIO(data), sealed, PLACE)
    assert written == len(sealed.getvalue()) > len(data)
    assert decrypt_file(key, io.BytesIO(sealed.getvalue()), opened, PLACE) == len(data)
    assert opened.getvalue() == data


def test_ragged_pieces_round_trip() -> None:
    """Input and ciphertext fed in pieces that never line up with chunks still round-trip."""
    key, data = generate_key(), os.urandom(3 * 1024 * 1024 + 7)
    sealed = b"".join(encrypt_chunks(key, pieces(data, [1, 70_000, 65_536, 999]), PLACE))
    opened = b"".join(decrypt_chunks(key, pieces(sealed, [5, 100_003, 31, 65_552]), PLACE))
    assert opened == data


@pytest.mark.parametrize("size", [0, 1, SMALL - 1, SMALL, SMALL + 1, 3 * SMALL])
def test_sizes_around_chunk_boundaries_round_trip(size: int) -> None:
    """Empty, partial, exact and multiple-chunk payloads all round-trip."""
    key, data = generate_key(), os.urandom(size)
    assert open_stream(key, seal_stream(key, data)) == data


def test_reordered_chunks_fail() -> None:
    """Swapping two chunks is detected."""
    key = generate_key()
    header, chunks = split(seal_stream(key, os.urandom(4 * SMALL)))
    chunks[0], chunks[1] = chunks[1], chunks[0]
    with pytest.raises(DecryptionFailed, match="chunk 0"):
        open_stream(key, header + b"".join(chunks))


def test_duplicated_chunk_fails() -> None:
    """Repeating a chunk is detected."""
    key = generate_key()
    header, chunks = split(seal_stream(key, os.urandom(4 * SMALL)))
    forged = header + chunks[0] + chunks[0] + b"".join(chunks[1:])
    with pytest.raises(DecryptionFailed, match="chunk 1"):
        open_stream(key, forged)


def test_truncation_at_chunk_boundary_fails() -> None:
    """Dropping the last chunks, cutting exactly between chunks, is detected."""
    key = generate_key()
    header, chunks = split(seal_stream(key, os.urandom(4 * SMALL)))
    with pytest.raises(DecryptionFailed, match="chunk 2"):
        open_stream(key, header + b"".join(chunks[:3]))


def test_truncation_inside_a_chunk_fails() -> None:
    """A stream cut in the middle of a chunk is detected."""
    key = generate_key()
    sealed = seal_stream(key, os.urandom(4 * SMALL))
    with pytest.raises(DecryptionFailed):
        open_stream(key, sealed[:-10])


def test_truncation_to_the_header_fails() -> None:
    """A stream with a header and no chunk, or half a header, is detected."""
    key = generate_key()
    sealed = seal_stream(key, b"")
    with pytest.raises(DecryptionFailed, match="truncated"):
        open_stream(key, sealed[:HEADER_SIZE])
    with pytest.raises(DecryptionFailed, match="header"):
        open_stream(key, sealed[: HEADER_SIZE - 1])


def test_extension_fails() -> None:
    """Appending a chunk after the last one is detected, even a chunk of the same stream."""
    key = generate_key()
    header, chunks = split(seal_stream(key, os.urandom(2 * SMALL)))
    with pytest.raises(DecryptionFailed):
        open_stream(key, header + b"".join(chunks) + chunks[0])


def test_splicing_chunks_of_another_stream_fails() -> None:
    """A chunk taken from another stream under the same key is detected."""
    key = generate_key()
    header, chunks = split(seal_stream(key, os.urandom(3 * SMALL)))
    _, others = split(seal_stream(key, os.urandom(3 * SMALL)))
    with pytest.raises(DecryptionFailed, match="chunk 1"):
        open_stream(key, header + chunks[0] + others[1] + chunks[2])


def test_wrong_binding_fails() -> None:
    """A stream presented as another record does not open."""
    key = generate_key()
    sealed = seal_stream(key, b"backup bytes")
    other = Binding(team="team-1", app="app-1", kind="backup", record="b-43")
    with pytest.raises(DecryptionFailed):
        open_stream(key, sealed, other)


def test_altered_header_fails() -> None:
    """Changing the header (here the salt) makes every chunk fail."""
    key = generate_key()
    sealed = bytearray(seal_stream(key, b"backup bytes"))
    sealed[12] ^= 0x80
    with pytest.raises(DecryptionFailed):
        open_stream(key, bytes(sealed))


def test_no_plaintext_before_the_first_chunk_authenticates() -> None:
    """A tampered first chunk raises before any plaintext is handed out."""
    key = generate_key()
    sealed = bytearray(seal_stream(key, os.urandom(4 * SMALL)))
    sealed[HEADER_SIZE + 3] ^= 0x01
    decryptor = StreamDecryptor(key, PLACE)
    with pytest.raises(DecryptionFailed, match="chunk 0"):
        decryptor.update(bytes(sealed))


def test_key_version_is_in_the_header() -> None:
    """The decryptor reports the key version the stream was written with."""
    key = generate_key()
    encryptor = StreamEncryptor(key, PLACE, chunk_size=SMALL, key_version=7)
    sealed = encryptor.update(b"x") + encryptor.finalize()
    decryptor = StreamDecryptor(key, PLACE)
    assert decryptor.update(sealed) + decryptor.finalize() == b"x"
    assert decryptor.key_version == 7


def test_two_streams_under_one_key_differ() -> None:
    """The same payload encrypts differently each time (fresh salt and nonce prefix)."""
    key, data = generate_key(), b"same payload" * 100
    assert seal_stream(key, data) != seal_stream(key, data)


def test_data_after_the_end_is_refused() -> None:
    """Feeding a finalized decryptor more bytes is an error, not silently ignored."""
    key = generate_key()
    decryptor = StreamDecryptor(key, PLACE)
    decryptor.update(seal_stream(key, b"x"))
    decryptor.finalize()
    with pytest.raises(DecryptionFailed, match="after the end"):
        decryptor.update(b"more")
