"""Request bodies: msgspec Structs that refuse fields they do not know.

A typo in a field name is an error the customer sees (422 naming the field),
never a silently ignored setting. Rules that need a friendly sentence (names,
config keys, quantities) are checked in the resource modules, not here.
"""

from __future__ import annotations

import msgspec


class Body(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Root of the request bodies."""


class CreateUser(Body, frozen=True, kw_only=True):
    """Slipway: a platform admin registers a user (who gets a personal team)."""

    email: str
    name: str | None = None


class CreateAuthorization(Body, frozen=True, kw_only=True):
    description: str = ""
    # Seconds; null or absent means the gateway's default lifetime (tokens always expire).
    expires_in: int | None = None
    scope: list[str] = msgspec.field(default_factory=lambda: ["global"])


class CreateTeam(Body, frozen=True, kw_only=True):
    name: str


class MemberBody(Body, frozen=True, kw_only=True):
    email: str
    role: str
    federated: bool | None = None


class CreateApp(Body, frozen=True, kw_only=True):
    name: str | None = None
    team: str | None = None


class UpdateApp(Body, frozen=True, kw_only=True):
    name: str | None = None
    maintenance: bool | None = None


class UpdateFeature(Body, frozen=True, kw_only=True):
    enabled: bool


# PATCH /apps/{app}/config-vars: a string sets a key, null removes it.
ConfigPatch = dict[str, str | None]


class Rollback(Body, frozen=True, kw_only=True):
    release: str


class DynoSizeIdentity(Body, frozen=True, kw_only=True):
    id: str | None = None
    name: str | None = None


class FormationUpdate(Body, frozen=True, kw_only=True):
    quantity: int | None = None
    size: str | None = None
    dyno_size: DynoSizeIdentity | None = None


class FormationBatchItem(Body, frozen=True, kw_only=True):
    type: str
    quantity: int | None = None
    size: str | None = None
    dyno_size: DynoSizeIdentity | None = None


class FormationBatch(Body, frozen=True, kw_only=True):
    updates: list[FormationBatchItem]


class ConfirmTeam(Body, frozen=True, kw_only=True):
    """Destroying a team's key cannot be undone: the caller types the team's name."""

    confirm: str
