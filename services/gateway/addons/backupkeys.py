"""A team's backup keys: the age recipients its backups are sealed to, kept by the keyring.

    GET    /teams/{team}/backup-keys                 the keys and both flags (viewer and up)
    POST   /teams/{team}/backup-keys                 add a customer key {"recipient", "label"}
    DELETE /teams/{team}/backup-keys/{fingerprint}   remove one
    PATCH  /teams/{team}/backup-keys/platform        {"enabled": bool}: also seal to the
                                                     team's platform-held key (restorable by
                                                     the platform) or not
    PATCH  /teams/{team}/backup-keys/operator        {"enabled": bool}: also seal to the
                                                     operator's offline recovery keys (off
                                                     unless the team opts in)

Changes are for admins and owners, and audited in the team's chain. Only public keys
travel here: a customer's identity never reaches the platform.
"""

from __future__ import annotations

from typing import Literal

from aiohttp import web

from slipway.contracts import keyring as kc
from slipway.libs.errors import Gone
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, actor, team_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import Body
from slipway.services.gateway.outbox.changes import change

routes = Routes("backup-key")


class BackupKeyView(views.View, frozen=True, kw_only=True):
    fingerprint: str
    recipient: str  # "age1..."
    kind: str  # platform, customer, operator
    label: str
    created_at: str | None


class BackupKeysView(views.View, frozen=True, kw_only=True):
    """The recipients of the team's next backups (the platform key only while enabled, the
    operator's recovery keys only while the team opted in)."""

    team: views.NamedRef
    platform_enabled: bool
    operator_enabled: bool
    keys: list[BackupKeyView]


class AddKey(Body, frozen=True, kw_only=True):
    recipient: str
    label: str = ""


class PlatformKey(Body, frozen=True, kw_only=True):
    enabled: bool


class OperatorKey(Body, frozen=True, kw_only=True):
    enabled: bool


def _view(team: store.Team, found: kc.BackupRecipients) -> BackupKeysView:
    return BackupKeysView(
        team=views.NamedRef(id=team.id, name=team.name),
        platform_enabled=found.platform_enabled,
        operator_enabled=found.operator_enabled,
        keys=[
            BackupKeyView(
                fingerprint=r.fingerprint,
                recipient=r.recipient,
                kind=r.kind,
                label=r.label,
                created_at=r.created_at or None,
            )
            for r in found.recipients
        ],
    )


async def _team(request: web.Request, action: Action, doing: str) -> store.Team:
    team, _ = await team_for(request, request.match_info["team"], action, doing)
    if team.shredded_at:
        raise Gone(f"The key of team {team.name} was destroyed on {team.shredded_at}.")
    return team


@routes.get(
    "/teams/{team}/backup-keys",
    summary="Slipway: the keys the team's backups are sealed to",
    response=BackupKeysView,
    extension=True,
)
async def list_keys(request: web.Request) -> web.Response:
    team = await _team(request, Action.READ, "read it")
    found = await request.app[GATEWAY].bus.call(
        kc.BACKUP_RECIPIENTS_GET, kc.GetBackupRecipients(team_id=team.id)
    )
    return reply(_view(team, found))


@routes.post(
    "/teams/{team}/backup-keys",
    summary="Slipway: seal the team's backups to a customer-held age key too",
    body=AddKey,
    response=BackupKeysView,
    status=201,
    extension=True,
)
async def add_key(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    team = await _team(request, Action.MANAGE, "change the team's backup keys")
    body = await read_body(request, AddKey)
    recipient = body.recipient.strip()
    if not recipient.startswith("age1") or len(body.label) > 200:
        raise InvalidParams(
            "Give an age recipient (age1..., as `age-keygen -y` prints it) and a label of"
            " at most 200 characters."
        )
    found = await gw.bus.call(
        kc.BACKUP_KEY_ADD, kc.AddBackupKey(team_id=team.id, recipient=recipient, label=body.label)
    )
    added = next((r for r in found.recipients if r.recipient == recipient), None)
    async with change(gw, actor(request)) as tx:
        tx.audit(
            team.id,
            "backup_key.add",
            details={
                "fingerprint": added.fingerprint if added else "",
                "label": body.label[:200],
            },
        )
    return reply(_view(team, found), status=201)


@routes.delete(
    "/teams/{team}/backup-keys/{fingerprint}",
    summary="Slipway: stop sealing the team's backups to a customer key",
    response=BackupKeysView,
    extension=True,
)
async def remove_key(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    team = await _team(request, Action.MANAGE, "change the team's backup keys")
    fingerprint = request.match_info["fingerprint"]
    found = await gw.bus.call(
        kc.BACKUP_KEY_REMOVE, kc.RemoveBackupKey(team_id=team.id, fingerprint=fingerprint)
    )
    async with change(gw, actor(request)) as tx:
        tx.audit(team.id, "backup_key.remove", details={"fingerprint": fingerprint[:100]})
    return reply(_view(team, found))


@routes.patch(
    "/teams/{team}/backup-keys/platform",
    summary="Slipway: also seal new backups to the team's platform-held key, or not",
    body=PlatformKey,
    response=BackupKeysView,
    extension=True,
)
async def set_platform(request: web.Request) -> web.Response:
    body = await read_body(request, PlatformKey)
    return await _switch(request, "platform", body.enabled)


@routes.patch(
    "/teams/{team}/backup-keys/operator",
    summary="Slipway: also seal new backups to the operator's recovery keys, or not",
    body=OperatorKey,
    response=BackupKeysView,
    extension=True,
)
async def set_operator(request: web.Request) -> web.Response:
    body = await read_body(request, OperatorKey)
    return await _switch(request, "operator", body.enabled)


async def _switch(
    request: web.Request, which: Literal["platform", "operator"], enabled: bool
) -> web.Response:
    """Turn the platform's or the operator's key on or off for new backups; audited."""
    gw = request.app[GATEWAY]
    team = await _team(request, Action.MANAGE, "change the team's backup keys")
    if which == "platform":
        found = await gw.bus.call(
            kc.BACKUP_PLATFORM_KEY_SET, kc.SetPlatformBackupKey(team_id=team.id, enabled=enabled)
        )
    else:
        found = await gw.bus.call(
            kc.BACKUP_OPERATOR_KEY_SET, kc.SetOperatorBackupKey(team_id=team.id, enabled=enabled)
        )
    async with change(gw, actor(request)) as tx:
        tx.audit(
            team.id, f"backup_key.{which}", details={"enabled": "true" if enabled else "false"}
        )
    return reply(_view(team, found))
