"""Formation: how many dynos of each process type run, and of which size.

Process types come from the current release (the Procfile of its build). A
release that adds a type adds it to the formation (`web` at 1, others at 0, like
Heroku); one that drops a type drops it. Quantities go from 0 to 100; sizes come
from `contracts.gateway.DYNO_SIZES`, the table the scheduler turns into limits.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from aiohttp import web

from slipway.contracts.gateway import (
    DEFAULT_DYNO_SIZE,
    DYNO_SIZES,
    FORMATION_CHANGED,
    FormationChanged,
    ProcessFormation,
)
from slipway.libs.errors import NotFound
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.core.store import new_uuid, timestamp
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import (
    DynoSizeIdentity,
    FormationBatch,
    FormationBatchItem,
    FormationUpdate,
)
from slipway.services.gateway.outbox.changes import Change, change

routes = Routes("formation")

MAX_QUANTITY = 100
PROCESS_TYPE = re.compile(r"^[-\w]{1,128}\Z", re.ASCII)


@dataclass(frozen=True)
class Scale:
    """One requested change to one process type."""

    type: str
    quantity: int | None
    size: str | None


def size_name(size: str | None, dyno_size: DynoSizeIdentity | None) -> str | None:
    """The canonical size asked for (`size` or Heroku's `dyno_size`), or None."""
    asked = size or (dyno_size.name or dyno_size.id if dyno_size else None)
    if asked is None:
        return None
    # Heroku's clients may send back the `dyno_size.id` a formation answered with.
    by_id = {views.stable_id("dyno-size", size): size for size in DYNO_SIZES}
    name = by_id.get(asked, asked.lower())
    if name not in DYNO_SIZES:
        raise InvalidParams(f"Unknown dyno size {asked!r}: use one of {', '.join(DYNO_SIZES)}.")
    return name


def check_quantity(quantity: int | None) -> int | None:
    if quantity is not None and not 0 <= quantity <= MAX_QUANTITY:
        raise InvalidParams(f"Quantity must be between 0 and {MAX_QUANTITY}, not {quantity}.")
    return quantity


def scale_of(item: FormationBatchItem | FormationUpdate, process_type: str) -> Scale:
    return Scale(process_type, check_quantity(item.quantity), size_name(item.size, item.dyno_size))


def check_process_types(process_types: dict[str, str]) -> None:
    for name in process_types:
        if not PROCESS_TYPE.match(name):
            raise InvalidParams(f"{name[:40]!r} is not a valid process type name.")


async def sync_formation(
    conn: store.Conn, app_id: str, process_types: dict[str, str]
) -> list[store.Formation]:
    """Make the formation's types those of a new release, keeping quantities and sizes."""
    at = timestamp()
    existing = {row.type: row for row in await store.list_formation(conn, app_id)}
    for process_type, command in process_types.items():
        row = existing.get(process_type)
        if row is None:
            quantity = 1 if process_type == "web" else 0
            row = store.Formation(
                new_uuid(), app_id, process_type, quantity, DEFAULT_DYNO_SIZE, command, at, at
            )
            await store.upsert_formation(conn, row)
        elif row.command != command:
            row = dataclasses.replace(row, command=command, updated_at=at)
            await store.upsert_formation(conn, row)
    for process_type in existing.keys() - process_types.keys():
        await store.delete_formation(conn, app_id, process_type)
    return await store.list_formation(conn, app_id)


def desired(rows: list[store.Formation]) -> list[ProcessFormation]:
    """The formation as events carry it."""
    return [
        ProcessFormation(type=r.type, quantity=r.quantity, size=r.size, command=r.command)
        for r in rows
    ]


async def apply_scales(tx: Change, app: store.App, scales: list[Scale]) -> list[store.Formation]:
    """Apply every change or none; 404 for a process type the current release lacks."""
    existing = {row.type: row for row in await store.list_formation(tx.conn, app.id)}
    at = timestamp()
    changed: list[store.Formation] = []
    for scale in scales:
        row = existing.get(scale.type) or next(
            (r for r in existing.values() if r.id == scale.type), None
        )
        if row is None:
            raise NotFound(f"Couldn't find that process type ({scale.type[:40]}).")
        row = dataclasses.replace(
            row,
            updated_at=at,
            quantity=row.quantity if scale.quantity is None else scale.quantity,
            size=scale.size or row.size,
        )
        existing[row.type] = row
        changed.append(row)
        await store.upsert_formation(tx.conn, row)
    release = await store.current_release(tx.conn, app.id)
    tx.audit(
        app.team_id,
        "formation.update",
        app_name=app.name,
        app_id=app.id,
        details={r.type: f"{r.quantity}:{r.size}" for r in changed},
    )
    tx.emit(
        FORMATION_CHANGED,
        FormationChanged(
            app_id=app.id,
            app_name=app.name,
            team_id=app.team_id,
            release_version=release.version if release else 0,
            formation=desired(sorted(existing.values(), key=lambda r: r.type)),
            actor=tx.actor.email,
        ),
    )
    return changed


def formation_view(app: store.App, row: store.Formation) -> views.Formation:
    return views.Formation(
        id=row.id,
        type=row.type,
        quantity=row.quantity,
        size=row.size,
        dyno_size=views.DynoSizeRef(id=views.stable_id("dyno-size", row.size), name=row.size),
        command=row.command,
        app=views.AppRef(id=app.id, name=app.name),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


@routes.get("/apps/{app}/formation", summary="List the formation", response=list[views.Formation])
async def list_formation(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    rows = await store.list_formation(request.app[GATEWAY].reader, app.id)
    return reply([formation_view(app, row) for row in rows])


@routes.get(
    "/apps/{app}/formation/{type}", summary="Info for a process type", response=views.Formation
)
async def info(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    wanted = request.match_info["type"]
    rows = await store.list_formation(request.app[GATEWAY].reader, app.id)
    for row in rows:
        if wanted in (row.type, row.id):
            return reply(formation_view(app, row))
    raise NotFound(f"Couldn't find that process type ({wanted[:40]}).")


@routes.patch(
    "/apps/{app}/formation/{type}",
    summary="Scale or resize one process type",
    body=FormationUpdate,
    response=views.Formation,
)
async def update(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "scale the app")
    body = await read_body(request, FormationUpdate)
    scale = scale_of(body, request.match_info["type"])
    async with change(request.app[GATEWAY], actor(request)) as tx:
        (row,) = await apply_scales(tx, app, [scale])
    return reply(formation_view(app, row))


@routes.patch(
    "/apps/{app}/formation",
    summary="Scale or resize several process types",
    body=FormationBatch,
    response=list[views.Formation],
)
async def batch_update(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "scale the app")
    body = await read_body(request, FormationBatch)
    if not body.updates:
        raise InvalidParams("`updates` is empty: name at least one process type.")
    scales = [scale_of(item, item.type) for item in body.updates]
    async with change(request.app[GATEWAY], actor(request)) as tx:
        rows = await apply_scales(tx, app, scales)
    return reply([formation_view(app, row) for row in rows])
