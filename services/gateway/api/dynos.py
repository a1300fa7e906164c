"""Dynos: list, info, restart and stop, in Heroku's shapes, answered by the scheduler.

The scheduler owns the dynos; these endpoints ask it over the bus (`DYNOS_LIST`,
`DYNOS_RESTART`, `DYNOS_STOP`) and render its answer. Slipway adds `restart_count`
to Heroku's dyno shape, which `slipway ps` shows. A dyno's id is a UUID, as Heroku's
clients expect, derived from its container's id (a new container, a new id); a dyno
may be named by it, by its name (`web.1`) or by its process type (`web`), and Heroku's
`/formations/{type}` restart and stop are the same as naming the type. Creating one-off
dynos (`POST /apps/{app}/dynos`) lives in oneoff.py.
"""

from __future__ import annotations

import datetime

from aiohttp import web

from slipway.contracts import scheduler as sc
from slipway.libs.errors import NotFound
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, app_for
from slipway.services.gateway.http.routing import Routes, reply

routes = Routes("dyno")


class DynoView(views.View, frozen=True, kw_only=True):
    """Heroku's dyno, plus Slipway's `restart_count`."""

    id: str
    name: str
    type: str
    command: str
    size: str
    state: str
    attach_url: str | None
    app: views.AppRef
    release: views.ReleaseRef
    restart_count: int
    created_at: str
    updated_at: str


def dyno_id(dyno: sc.Dyno) -> str:
    """The dyno's id as Heroku's clients expect one (a UUID), the same for its container's life."""
    return views.stable_id("dyno", dyno.container_id or f"{dyno.app_id}/{dyno.name}")


async def _target(request: web.Request, app_id: str) -> str:
    """The dyno or process type the path names: a dyno's id (a UUID) becomes its name."""
    wanted = request.match_info["dyno"]
    if len(wanted) == 36 and wanted.count("-") == 4:
        for dyno in await _dynos(request, app_id):
            if dyno_id(dyno) == wanted:
                return dyno.name
        raise NotFound(f"Couldn't find that dyno ({wanted}).")
    return wanted


def _time(seconds: float) -> str:
    moment = datetime.datetime.fromtimestamp(seconds or 0, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def _views(request: web.Request, app_id: str, dynos: list[sc.Dyno]) -> list[DynoView]:
    gw = request.app[GATEWAY]
    release_ids: dict[int, str] = {}
    for dyno in dynos:
        if dyno.release_version not in release_ids:
            found = await store.get_release(gw.reader, app_id, str(dyno.release_version))
            release_ids[dyno.release_version] = found.id if found else ""
    return [
        DynoView(
            id=dyno_id(dyno),
            name=dyno.name,
            type=dyno.process_type,
            command=dyno.command,
            size=dyno.size,
            state=dyno.state,
            attach_url=None,
            app=views.AppRef(id=dyno.app_id, name=dyno.app_name),
            release=views.ReleaseRef(
                id=release_ids[dyno.release_version], version=dyno.release_version
            ),
            restart_count=dyno.restart_count,
            created_at=_time(dyno.updated_at),
            updated_at=_time(dyno.updated_at),
        )
        for dyno in dynos
    ]


async def _dynos(request: web.Request, app_id: str) -> list[sc.Dyno]:
    answer = await request.app[GATEWAY].bus.call(sc.DYNOS_LIST, sc.ListDynos(app_id=app_id))
    return answer.dynos


@routes.get("/apps/{app}/dynos", summary="List dynos", response=list[DynoView])
async def list_dynos(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    return reply(await _views(request, app.id, await _dynos(request, app.id)))


@routes.get("/apps/{app}/dynos/{dyno}", summary="Info for a dyno", response=DynoView)
async def info(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    wanted = request.match_info["dyno"]
    for dyno in await _dynos(request, app.id):
        if wanted in (dyno.name, dyno.container_id, dyno_id(dyno)):
            (view,) = await _views(request, app.id, [dyno])
            return reply(view)
    raise NotFound(f"Couldn't find that dyno ({wanted[:40]}).")


@routes.delete(
    "/apps/{app}/dynos", summary="Restart all dynos", response=dict[str, str], status=202
)
async def restart_all(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "restart its dynos")
    await request.app[GATEWAY].bus.call(sc.DYNOS_RESTART, sc.RestartDynos(app_id=app.id))
    return reply({}, status=202)


@routes.delete(
    "/apps/{app}/dynos/{dyno}",
    summary="Restart a dyno or a process type",
    response=dict[str, str],
    status=202,
)
async def restart(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "restart its dynos")
    target = await _target(request, app.id)
    await request.app[GATEWAY].bus.call(
        sc.DYNOS_RESTART, sc.RestartDynos(app_id=app.id, target=target)
    )
    return reply({}, status=202)


@routes.post(
    "/apps/{app}/dynos/{dyno}/actions/stop",
    summary="Stop a dyno or a process type (the formation starts it again)",
    response=dict[str, str],
    status=202,
)
async def stop(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "stop its dynos")
    target = await _target(request, app.id)
    await request.app[GATEWAY].bus.call(sc.DYNOS_STOP, sc.StopDyno(app_id=app.id, target=target))
    return reply({}, status=202)


@routes.delete(
    "/apps/{app}/formations/{type}",
    summary="Restart a process type's dynos (Heroku's `Restart formation`)",
    response=dict[str, str],
    status=202,
)
async def restart_formation(request: web.Request) -> web.StreamResponse:
    # The scheduler takes a process type wherever it takes a dyno name.
    request.match_info["dyno"] = request.match_info["type"]
    return await restart(request)


@routes.post(
    "/apps/{app}/formations/{type}/actions/stop",
    summary="Stop a process type's dynos (Heroku's `Stop formation`)",
    response=dict[str, str],
    status=202,
)
async def stop_formation(request: web.Request) -> web.StreamResponse:
    request.match_info["dyno"] = request.match_info["type"]
    return await stop(request)
