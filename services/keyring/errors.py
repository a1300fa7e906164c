"""Why the keyring refuses to start.

    KeyringError (SlipwayError)
    ├── MasterKeyError         the master key is missing, malformed, too widely readable,
    │                          or does not open this keyring's database
    └── AuditRollback          audit.sign asked for a head that does not extend the last
                               one signed for the team (a cut or rewritten chain)

At run time handlers raise the shared kinds of `slipway.libs.errors` (Forbidden,
Gone, NotFound, InvalidRequest) and `slipway.libs.crypto.errors.DecryptionFailed`;
the bus carries them to the caller.
"""

from __future__ import annotations

from slipway.libs.errors import SlipwayError


class KeyringError(SlipwayError):
    """Root of the keyring service's own errors."""


class MasterKeyError(KeyringError):
    """The master key cannot be used; the message says what to fix."""

    code = "master_key"


class AuditRollback(KeyringError):
    """A checkpoint that would cut or rewrite a chain the keyring already signed further."""

    code = "audit_rollback"
