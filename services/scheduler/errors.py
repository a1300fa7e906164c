"""The scheduler's own failures, as the typed errors the bus carries."""

from __future__ import annotations

from slipway.libs.errors import Conflict, InvalidRequest, NotFound

__all__ = ["Conflict", "EngineUnavailable", "InvalidRequest", "NotFound"]


class EngineUnavailable(Exception):
    """A Docker engine did not answer (in time); the host may be going down."""
