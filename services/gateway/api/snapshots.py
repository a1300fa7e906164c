"""Platform snapshots (platform admins only): take, list, check — a Slipway extension.

The backup service does the work (services/backup/snapshots.py): a snapshot of every
service's state, sealed to the operator's offline recovery key, with a manifest the
keyring signs. Taking one answers at once with the running snapshot (202); the caller
follows it with `GET /admin/snapshots/{id}`. Each request is logged naming the admin
(a snapshot is the platform's, not a team's, so no team audit chain holds it).
"""

from __future__ import annotations

import msgspec
import structlog
from aiohttp import web

from slipway.contracts import snapshot as sc
from slipway.libs.errors import NotFound
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.http.auth import actor, require_admin
from slipway.services.gateway.http.routing import Routes, reply

routes = Routes("snapshot")
log = structlog.get_logger("slipway.gateway.snapshots")

# A check reads every stored piece back and hashes it: gigabytes on a large platform.
VERIFY_TIMEOUT = 1800.0
LIST_TIMEOUT = 30.0


class SnapshotVerification(msgspec.Struct, frozen=True, kw_only=True):
    """Slipway: a keyless check of a stored snapshot (signature, every piece's size and hash)."""

    snapshot_id: str
    ok: bool
    problems: list[str]
    pieces_checked: int
    bytes_checked: int


@routes.post(
    "/admin/snapshots",
    summary="Take a platform snapshot (answers at once with the running one)",
    response=sc.SnapshotInfo,
    status=202,
    extension=True,
)
async def take(request: web.Request) -> web.Response:
    require_admin(request)
    who = actor(request)
    answer = await request.app[GATEWAY].bus.call(
        sc.SNAPSHOT_TAKE, sc.TakeSnapshot(requested_by=who.email), timeout=LIST_TIMEOUT
    )
    log.info("snapshot.take", actor=str(who), snapshot=answer.snapshot.id)
    return reply(answer.snapshot, status=202)


@routes.get(
    "/admin/snapshots",
    summary="List platform snapshots, newest first",
    response=list[sc.SnapshotInfo],
    extension=True,
)
async def list_snapshots(request: web.Request) -> web.Response:
    require_admin(request)
    answer = await request.app[GATEWAY].bus.call(
        sc.SNAPSHOTS_LIST, sc.ListSnapshots(), timeout=LIST_TIMEOUT
    )
    return reply(answer.snapshots)


@routes.get(
    "/admin/snapshots/{snapshot}",
    summary="Info for a platform snapshot",
    response=sc.SnapshotInfo,
    extension=True,
)
async def info(request: web.Request) -> web.Response:
    require_admin(request)
    wanted = request.match_info["snapshot"]
    answer = await request.app[GATEWAY].bus.call(
        sc.SNAPSHOTS_LIST, sc.ListSnapshots(), timeout=LIST_TIMEOUT
    )
    for found in answer.snapshots:
        if found.id == wanted:
            return reply(found)
    raise NotFound("Couldn't find that snapshot.")


@routes.post(
    "/admin/snapshots/{snapshot}/verify",
    summary="Check a stored snapshot without its key: signature, every piece's size and hash",
    response=SnapshotVerification,
    extension=True,
)
async def verify(request: web.Request) -> web.Response:
    require_admin(request)
    who = actor(request)
    snapshot_id = request.match_info["snapshot"]
    answer = await request.app[GATEWAY].bus.call(
        sc.SNAPSHOT_VERIFY, sc.VerifySnapshot(snapshot_id=snapshot_id), timeout=VERIFY_TIMEOUT
    )
    log.info(
        "snapshot.verify",
        actor=str(who),
        snapshot=snapshot_id,
        ok=answer.ok,
        problems=len(answer.problems),
    )
    return reply(
        SnapshotVerification(
            snapshot_id=answer.snapshot_id,
            ok=answer.ok,
            problems=answer.problems,
            pieces_checked=answer.pieces_checked,
            bytes_checked=answer.bytes_checked,
        )
    )
