"""The audit log as customers read it, and the public keys that let them verify it offline.

`GET /teams/{team}/audit` answers the team's whole chain (`complete: true`) with
its signed checkpoints: `slipway.libs.auditchain.verify` recomputes it with the
keys of `GET /audit/keys`. `GET /apps/{app}/audit` answers the same team's
entries about that app only, plus the team's break-glass grants, which open
every app (`complete: false`): a subset of a hash chain cannot be verified
alone, so a verifier fetches the team's chain (named in `team`) and checks the
app's entries are in it.

`GET /audit/keys` lists every key that ever signed a checkpoint, with its
validity period (`checkpoints.record_key`), plus the keyring's current key
if it has signed nothing yet (`valid_from: null`). Keys are never dropped
from the list: the CLI pins them and fails loudly when one disappears.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from slipway.contracts import keyring
from slipway.libs.auditchain import AuditEntry, Checkpoint
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, app_for, team_for
from slipway.services.gateway.http.routing import Routes, reply

routes = Routes("audit")

_entry = msgspec.json.Decoder(AuditEntry)


async def entries(
    conn: store.Conn, team_id: str, app_id: str | None = None
) -> list[views.AuditRecord]:
    """A team's entries in sequence order, only those about `app_id` when given.

    Break-glass grants open every app of the team, so an app's log shows them too.
    """
    async with conn.execute(
        "SELECT entry, hash FROM audit_entries WHERE team_id = ?"
        " AND (? IS NULL OR app_id = ? OR (app_id IS NULL"
        " AND json_extract(entry, '$.action') LIKE 'access\\_grant.%' ESCAPE '\\'))"
        " ORDER BY seq",
        (team_id, app_id, app_id),
    ) as cursor:
        rows = await cursor.fetchall()
    return [
        views.AuditRecord(**msgspec.structs.asdict(_entry.decode(row["entry"])), hash=row["hash"])
        for row in rows
    ]


async def checkpoints(conn: store.Conn, team_id: str) -> list[Checkpoint]:
    async with conn.execute(
        "SELECT team_id, seq, head, at, key_id, signature FROM audit_checkpoints"
        " WHERE team_id = ? ORDER BY seq",
        (team_id,),
    ) as cursor:
        rows = await cursor.fetchall()
    return [
        Checkpoint(
            team_id=r["team_id"],
            seq=r["seq"],
            head=r["head"],
            at=r["at"],
            key_id=r["key_id"],
            signature=r["signature"],
        )
        for r in rows
    ]


@routes.get(
    "/teams/{team}/audit",
    summary="The team's audit chain and signed checkpoints",
    response=views.AuditLog,
    extension=True,
)
async def team_audit(request: web.Request) -> web.Response:
    reader = request.app[GATEWAY].reader
    team, _ = await team_for(request, request.match_info["team"], Action.READ, "read it")
    return reply(
        views.AuditLog(
            team=views.NamedRef(id=team.id, name=team.name),
            entries=await entries(reader, team.id),
            checkpoints=await checkpoints(reader, team.id),
            complete=True,
        )
    )


@routes.get(
    "/apps/{app}/audit",
    summary="The audit entries about one app",
    response=views.AuditLog,
    extension=True,
)
async def app_audit(request: web.Request) -> web.Response:
    reader = request.app[GATEWAY].reader
    app = await app_for(request, Action.READ, "read it")
    return reply(
        views.AuditLog(
            team=views.NamedRef(id=app.team_id, name=app.team_name),
            app=views.AppRef(id=app.id, name=app.name),
            entries=await entries(reader, app.team_id, app.id),
            checkpoints=await checkpoints(reader, app.team_id),
            complete=False,
        )
    )


@routes.get(
    "/audit/keys",
    summary="The public keys that sign audit checkpoints",
    response=list[views.AuditKey],
    extension=True,
)
async def keys(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    async with gw.reader.execute(
        "SELECT key_id, public_key, valid_from, valid_until FROM audit_keys"
        " ORDER BY valid_until IS NULL, valid_from, key_id"  # retired keys first, in order
    ) as cursor:
        used = [
            views.AuditKey(
                key_id=row["key_id"],
                public_key=row["public_key"],
                valid_from=row["valid_from"],
                valid_until=row["valid_until"],
            )
            for row in await cursor.fetchall()
        ]
    current = await gw.bus.call(keyring.AUDIT_KEY, keyring.GetAuditKey())
    if all(key.key_id != current.key_id for key in used):
        used.append(views.AuditKey(key_id=current.key_id, public_key=current.public_key.hex()))
    return reply(used)
