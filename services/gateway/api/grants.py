"""Break-glass access: a platform admin's time-boxed, audited access to one team.

Being a platform admin gives no access to any team. When an operator must look
inside a team (an incident, a support case), they grant themselves access with
a reason: at most `member` (never admin or owner, so the grant cannot be used to
add a lasting membership), for `DEFAULT_TTL` unless asked (never over
`MAX_TTL`). The grant is written into the team's audit chain in the same
transaction, so `slipway audit --team` shows it at once; the team's owners and
admins list and revoke grants (`teams.py` routes). An expired or revoked grant
gives nothing: `auth.py` looks grants up on every request.

Domain only: the HTTP routes live in `teams.py`, next to the team they open.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from slipway.services.gateway.core import store
from slipway.services.gateway.core.store import new_uuid, timestamp
from slipway.services.gateway.http import views
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.schemas import Body
from slipway.services.gateway.outbox.changes import Change

DEFAULT_TTL = 3600
MAX_TTL = 24 * 3600
GRANTABLE_ROLES = ("viewer", "member")


class CreateGrant(Body, frozen=True, kw_only=True):
    """Slipway: a platform admin asks for break-glass access to a team."""

    reason: str
    role: str = "viewer"
    # Seconds; absent means one hour.
    expires_in: int | None = None


class AccessGrant(views.View, frozen=True, kw_only=True):
    """Slipway: a platform admin's time-boxed access to a team."""

    id: str
    team: views.NamedRef
    user: views.UserRef
    role: str
    reason: str
    created_at: views.Timestamp
    expires_at: views.Timestamp
    revoked_at: views.Timestamp | None = None
    revoked_by: str | None = None
    active: bool


@dataclass(frozen=True)
class Grant:
    id: str
    team_id: str
    user_id: str
    user_email: str
    role: str
    reason: str
    created_at: str
    expires_at: float
    revoked_at: str | None
    revoked_by: str | None

    def active(self, now: float) -> bool:
        return self.revoked_at is None and self.expires_at > now


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_request(body: CreateGrant) -> int:
    """The grant's lifetime in seconds, once the reason and role pass the rules."""
    if not body.reason.strip():
        raise InvalidParams("reason is required: say why you need access to this team.")
    if len(body.reason) > 500:
        raise InvalidParams("reason must be at most 500 characters.")
    if body.role not in GRANTABLE_ROLES:
        raise InvalidParams(
            f"role must be one of {', '.join(GRANTABLE_ROLES)}: break-glass access"
            " never makes an admin or owner."
        )
    ttl = DEFAULT_TTL if body.expires_in is None else body.expires_in
    if not 0 < ttl <= MAX_TTL:
        raise InvalidParams(f"expires_in must be between 1 and {MAX_TTL} seconds.")
    return ttl


_SELECT = "SELECT g.*, u.email AS user_email FROM access_grants g JOIN users u ON u.id = g.user_id"


def _grant(row: Any) -> Grant:
    return Grant(
        row["id"],
        row["team_id"],
        row["user_id"],
        row["user_email"],
        row["role"],
        row["reason"],
        row["created_at"],
        row["expires_at"],
        row["revoked_at"],
        row["revoked_by"],
    )


async def create(tx: Change, team: store.Team, user: store.User, body: CreateGrant) -> Grant:
    """A new grant for `user` on `team`, recorded in the team's audit chain."""
    ttl = check_request(body)
    grant = Grant(
        new_uuid(),
        team.id,
        user.id,
        user.email,
        body.role,
        body.reason.strip(),
        timestamp(),
        time.time() + ttl,
        None,
        None,
    )
    await tx.conn.execute(
        "INSERT INTO access_grants (id, team_id, user_id, role, reason, created_at, expires_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        (grant.id, team.id, user.id, grant.role, grant.reason, grant.created_at, grant.expires_at),
    )
    tx.audit(
        team.id,
        "access_grant.create",
        details={
            "grant_id": grant.id,
            "user": user.email,
            "role": grant.role,
            "reason": grant.reason,
            "expires_at": _rfc3339(grant.expires_at),
        },
    )
    return grant


async def active_role(conn: store.Conn, team_id: str, user_id: str, now: float) -> str | None:
    """The role an unexpired, unrevoked grant gives `user_id` in `team_id`, if any."""
    async with conn.execute(
        "SELECT role FROM access_grants WHERE team_id = ? AND user_id = ?"
        " AND revoked_at IS NULL AND expires_at > ? ORDER BY role = 'member' DESC LIMIT 1",
        (team_id, user_id, now),
    ) as cursor:
        row = await cursor.fetchone()
    return str(row["role"]) if row else None


async def of_team(conn: store.Conn, team_id: str) -> list[Grant]:
    """Every grant ever made on the team, newest first."""
    async with conn.execute(
        f"{_SELECT} WHERE g.team_id = ? ORDER BY g.created_at DESC, g.id", (team_id,)
    ) as cursor:
        return [_grant(row) for row in await cursor.fetchall()]


async def get(conn: store.Conn, team_id: str, grant_id: str) -> Grant | None:
    async with conn.execute(
        f"{_SELECT} WHERE g.team_id = ? AND g.id = ?", (team_id, grant_id)
    ) as cursor:
        row = await cursor.fetchone()
    return _grant(row) if row else None


async def revoke(tx: Change, grant: Grant) -> Grant:
    """End `grant` now (a no-op on one already revoked), recorded in the team's chain."""
    if grant.revoked_at is not None:
        return grant
    at = timestamp()
    await tx.conn.execute(
        "UPDATE access_grants SET revoked_at = ?, revoked_by = ? WHERE id = ?",
        (at, tx.actor.email, grant.id),
    )
    tx.audit(
        grant.team_id,
        "access_grant.revoke",
        details={"grant_id": grant.id, "user": grant.user_email},
    )
    return Grant(
        grant.id,
        grant.team_id,
        grant.user_id,
        grant.user_email,
        grant.role,
        grant.reason,
        grant.created_at,
        grant.expires_at,
        at,
        tx.actor.email,
    )


def view(grant: Grant, team: store.Team, now: float) -> AccessGrant:
    return AccessGrant(
        id=grant.id,
        team=views.NamedRef(id=team.id, name=team.name),
        user=views.UserRef(id=grant.user_id, email=grant.user_email),
        role=grant.role,
        reason=grant.reason,
        created_at=grant.created_at,
        expires_at=_rfc3339(grant.expires_at),
        revoked_at=grant.revoked_at,
        revoked_by=grant.revoked_by,
        active=grant.active(now),
    )
