"""The backup service's failures, as the typed errors the bus carries.

SlipwayError (libs/errors.py)
├── InvalidRequest
│   ├── NoBackup           nothing restorable matches the request
│   └── SealedToCustomer   the objects open only with the team's own identity
├── NotFound
├── Conflict               a capture of the same database is already running
├── Unavailable
│   ├── DatabaseUnreachable  its socket does not answer (the host or database is down)
│   └── StorageError         a destination failed to keep or give back an object
└── IntegrityError (Conflict)  a stored object or manifest does not match what was written
"""

from __future__ import annotations

from slipway.libs.errors import Conflict, InvalidRequest, NotFound, Unavailable

__all__ = [
    "Conflict",
    "DatabaseUnreachable",
    "IntegrityError",
    "InvalidRequest",
    "NoBackup",
    "NotFound",
    "SealedToCustomer",
    "StorageError",
]


class NoBackup(InvalidRequest):
    """No completed backup can serve the restore asked for."""


class SealedToCustomer(InvalidRequest):
    """The platform holds no identity that opens these objects, by the team's choice."""


class DatabaseUnreachable(Unavailable):
    """The database's socket in its run folder does not answer."""


class StorageError(Unavailable):
    """A storage destination failed."""


class IntegrityError(Conflict):
    """A stored object does not hash to what its manifest says: it was changed or damaged."""

    code = "integrity_error"
