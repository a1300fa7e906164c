"""What libs/crypto raises.

    CryptoError (SlipwayError)
    ├── DecryptionFailed           "decryption_failed"  altered, truncated, reordered, moved to
    │                                                   another place, or opened with the wrong key
    └── InvalidKey (InvalidRequest) "invalid_request"   a key of the wrong size, or a public key
                                                        that is not a usable X25519 point

`IntegrityError` is another name for `DecryptionFailed`, for callers that read
better with it. A decryption failure never says which check failed beyond what
the caller could see anyway: the point is that nothing was returned.
"""

from __future__ import annotations

from slipway.libs.errors import InvalidRequest, SlipwayError


class CryptoError(SlipwayError):
    """Root of libs/crypto's errors."""


class DecryptionFailed(CryptoError):
    """A ciphertext did not authenticate: nothing of it may be used."""

    code = "decryption_failed"


IntegrityError = DecryptionFailed


class InvalidKey(CryptoError, InvalidRequest):
    """A key that cannot be used: wrong length, or not a valid curve point."""
