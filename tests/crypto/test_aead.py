"""The sealed-blob format: AES-256-GCM bound to a key version and a place."""

from __future__ import annotations

import pytest

from slipway.libs.crypto import aead
from slipway.libs.crypto.aead import generate_key, key_version_of, open_, seal
from slipway.libs.crypto.binding import Binding
from slipway.libs.crypto.errors import DecryptionFailed, IntegrityError, InvalidKey
from slipway.libs.errors import InvalidRequest, SlipwayError

PLACE = Binding(team="team-1", app="app-1", kind="config", record="v1")


def test_round_trip() -> None:
    """What is sealed opens with the same key and binding."""
    key = generate_key()
    assert open_(key, seal(key, b"DATABASE_URL=postgres://x", PLACE), PLACE) == (
        b"DATABASE_URL=postgres://x"
    )


def test_empty_plaintext_round_trips() -> None:
    """An empty plaintext is sealed and authenticated like any other."""
    key = generate_key()
    assert open_(key, seal(key, b"", PLACE), PLACE) == b""


@pytest.mark.parametrize(
    "moved",
    [
        Binding(team="team-1", app="app-1", kind="config", record="v2"),
        Binding(team="team-1", app="app-2", kind="config", record="v1"),
        Binding(team="team-2", app="app-1", kind="config", record="v1"),
        Binding(team="team-1", app="app-1", kind="logs", record="v1"),
    ],
    ids=["other-record", "other-app", "other-team", "other-kind"],
)
def test_moved_ciphertext_fails(moved: Binding) -> None:
    """A blob presented as another record, app, team or kind does not open."""
    key = generate_key()
    blob = seal(key, b"secret", PLACE)
    with pytest.raises(DecryptionFailed, match="integrity check"):
        open_(key, blob, moved)


@pytest.mark.parametrize("position", [0, 1, 4, 5, 16, 17, -1], ids=lambda p: f"byte{p}")
def test_flipped_bit_fails(position: int) -> None:
    """Flipping one bit anywhere (header, nonce, ciphertext, tag) makes the blob fail."""
    key = generate_key()
    blob = bytearray(seal(key, b"some secret value", PLACE))
    blob[position] ^= 0x01
    with pytest.raises(DecryptionFailed):
        open_(key, bytes(blob), PLACE)


def test_wrong_key_fails() -> None:
    """Another key does not open the blob."""
    blob = seal(generate_key(), b"secret", PLACE)
    with pytest.raises(DecryptionFailed):
        open_(generate_key(), blob, PLACE)


def test_rewritten_key_version_fails() -> None:
    """Changing the key version in the header breaks the tag: the version is authenticated."""
    key = generate_key()
    blob = seal(key, b"secret", PLACE, key_version=3)
    forged = blob[:1] + (4).to_bytes(4, "big") + blob[5:]
    assert key_version_of(forged) == 4
    with pytest.raises(DecryptionFailed, match="integrity check"):
        open_(key, forged, PLACE)


def test_expected_key_version_is_checked() -> None:
    """A blob of key version 2 handed to version 1's key is refused before decrypting."""
    key = generate_key()
    blob = seal(key, b"secret", PLACE, key_version=2)
    assert key_version_of(blob) == 2
    with pytest.raises(DecryptionFailed, match="key version 2, not 1"):
        open_(key, blob, PLACE, key_version=1)


def test_truncated_blob_fails() -> None:
    """A blob shorter than header, nonce and tag is refused as malformed."""
    key = generate_key()
    blob = seal(key, b"", PLACE)
    with pytest.raises(DecryptionFailed, match="at least"):
        open_(key, blob[:-1], PLACE)


def test_unknown_format_fails() -> None:
    """A blob of another format (first byte) is refused by name."""
    key = generate_key()
    blob = seal(key, b"x", PLACE)
    with pytest.raises(DecryptionFailed, match="format"):
        open_(key, b"\x09" + blob[1:], PLACE)


def test_each_seal_uses_a_fresh_nonce() -> None:
    """Sealing the same plaintext twice gives different blobs."""
    key = generate_key()
    assert seal(key, b"same", PLACE) != seal(key, b"same", PLACE)
    assert len(seal(key, b"same", PLACE)) == len(b"same") + aead.OVERHEAD


def test_short_key_is_refused() -> None:
    """A 128-bit key is refused: the format promises AES-256."""
    with pytest.raises(InvalidKey):
        seal(b"k" * 16, b"x", PLACE)


def test_errors_are_slipway_errors() -> None:
    """DecryptionFailed carries its code; InvalidKey is an InvalidRequest."""
    assert issubclass(DecryptionFailed, SlipwayError)
    assert DecryptionFailed("x").code == "decryption_failed"
    assert IntegrityError is DecryptionFailed
    assert issubclass(InvalidKey, InvalidRequest)
    assert InvalidKey("x").code == "invalid_request"
