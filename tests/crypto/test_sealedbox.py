"""Sealing to a customer-held X25519 key: only the private key opens it."""

from __future__ import annotations

import hashlib

import pytest

from slipway.libs.crypto.binding import Binding
from slipway.libs.crypto.errors import DecryptionFailed, InvalidKey
from slipway.libs.crypto.sealedbox import (
    HEADER_SIZE,
    fingerprint,
    generate_keypair,
    open_sealed,
    public_key_of,
    seal_to,
    validate_public_key,
)

PLACE = Binding(team="team-1", app="app-1", kind="backup", record="b-1")


def test_round_trip() -> None:
    """A box sealed to a public key opens with its private key."""
    private, public = generate_keypair()
    assert open_sealed(private, seal_to(public, b"pg_dump output", PLACE), PLACE) == (
        b"pg_dump output"
    )


def test_wrong_private_key_fails() -> None:
    """Another private key cannot open the box, and the error names the key it was sealed to."""
    _, public = generate_keypair()
    other, _ = generate_keypair()
    with pytest.raises(DecryptionFailed, match="another key"):
        open_sealed(other, seal_to(public, b"secret", PLACE), PLACE)


def test_wrong_binding_fails() -> None:
    """A box presented as another record does not open."""
    private, public = generate_keypair()
    box = seal_to(public, b"secret", PLACE)
    with pytest.raises(DecryptionFailed, match="integrity check"):
        open_sealed(private, box, Binding(team="team-2", app="app-1", kind="backup", record="b-1"))


@pytest.mark.parametrize("position", [HEADER_SIZE - 1, HEADER_SIZE, -1], ids=str)
def test_flipped_bit_fails(position: int) -> None:
    """Flipping a bit of the ephemeral key, the ciphertext or the tag makes the box fail."""
    private, public = generate_keypair()
    box = bytearray(seal_to(public, b"secret", PLACE))
    box[position] ^= 0x01
    with pytest.raises(DecryptionFailed):
        open_sealed(private, bytes(box), PLACE)


def test_each_box_uses_a_fresh_ephemeral_key() -> None:
    """Sealing the same plaintext twice gives different boxes."""
    _, public = generate_keypair()
    assert seal_to(public, b"same", PLACE) != seal_to(public, b"same", PLACE)


def test_low_order_public_key_is_refused() -> None:
    """A low-order point (all zeros) is not accepted as a recipient."""
    with pytest.raises(InvalidKey, match="low-order"):
        seal_to(bytes(32), b"secret", PLACE)


def test_wrong_length_public_key_is_refused() -> None:
    """A public key that is not 32 bytes is refused."""
    with pytest.raises(InvalidKey, match="32 bytes"):
        validate_public_key(b"\x09" * 31)


def test_fingerprint_is_sha256_hex() -> None:
    """The fingerprint is the hex SHA-256 of the raw public key."""
    private, public = generate_keypair()
    assert public_key_of(private) == public
    assert fingerprint(public) == hashlib.sha256(public).hexdigest()
