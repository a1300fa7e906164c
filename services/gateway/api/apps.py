"""Apps: create (with release v1), list, info, rename, maintenance, delete.

App names are global (they become hostnames), so a name taken in any team is
taken: 422 "Name is already taken", as Heroku says it.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from slipway.contracts.gateway import (
    APP_CREATED,
    APP_DESTROYED,
    APP_RENAMED,
    MAINTENANCE_CHANGED,
    AppCreated,
    AppDestroyed,
    AppRenamed,
    MaintenanceChanged,
)
from slipway.libs.errors import Gone, NotFound
from slipway.services.gateway.api.releases import new_release
from slipway.services.gateway.core import store
from slipway.services.gateway.core.names import check_name
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.core.store import new_uuid, timestamp
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, actor, app_for, principal, team_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import CreateApp, UpdateApp
from slipway.services.gateway.outbox.changes import Change, change

routes = Routes("apps")

REGION = views.NamedRef(id="00000000-0000-4000-8000-000000000001", name="local")
STACK = views.NamedRef(id="00000000-0000-4000-8000-000000000024", name="slipway-24")


def app_view(gw: Gateway, app: store.App) -> views.App:
    team = views.NamedRef(id=app.team_id, name=app.team_name)
    return views.App(
        id=app.id,
        name=app.name,
        created_at=app.created_at,
        updated_at=app.updated_at,
        released_at=app.released_at,
        maintenance=app.maintenance,
        git_url=gw.git_url(app.name),
        web_url=gw.web_url(app.name),
        owner=views.UserRef(id=app.owner_id, email=app.owner_email),
        team=team,
        organization=team,
        region=REGION,
        stack=STACK,
        build_stack=STACK,
    )


async def _claim_name(tx: Change, name: str) -> None:
    if await store.app_name_taken(tx.conn, name):
        raise InvalidParams("Name is already taken.")


async def _target_team(request: web.Request, team: str | None) -> store.Team:
    user = principal(request).user
    ident = team or user.default_team_id
    if ident is None:
        raise InvalidParams('You have no default team: name one with {"team": ...}.')
    found, _ = await team_for(request, ident, Action.DEPLOY, "create apps in it")
    if found.shredded_at:
        raise Gone(f"The key of team {found.name} was destroyed; it cannot hold new apps.")
    return found


@routes.post("/apps", summary="Create an app", body=CreateApp, response=views.App, status=201)
async def create(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    body = await read_body(request, CreateApp)
    name = check_name("app", body.name) if body.name is not None else f"app-{secrets.token_hex(4)}"
    team = await _target_team(request, body.team)
    user = principal(request).user
    async with change(gw, actor(request)) as tx:
        await _claim_name(tx, name)
        at = timestamp()
        await store.insert_app(
            tx.conn,
            store.App(
                new_uuid(),
                name,
                team.id,
                team.name,
                user.id,
                user.email,
                False,
                None,
                at,
                at,
                None,
                None,
            ),
        )
        app = await store.get_app(tx.conn, name)
        assert app is not None
        tx.audit(team.id, "app.create", app_name=name, app_id=app.id)
        tx.emit(
            APP_CREATED, AppCreated(app_id=app.id, name=name, team_id=team.id, actor=user.email)
        )
        await new_release(tx, app, description="Initial release")
        app = await store.get_app(tx.conn, app.id)
    assert app is not None
    return reply(app_view(gw, app), 201)


@routes.get("/apps", summary="List the apps of your teams", response=list[views.App])
async def list_apps(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    apps = await store.apps_of(gw.reader, principal(request).user.id)
    return reply([app_view(gw, app) for app in apps])


@routes.get("/apps/{app}", summary="Info for an app", response=views.App)
async def info(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    return reply(app_view(request.app[GATEWAY], app))


async def rename(tx: Change, app: store.App, name: str) -> None:
    check_name("app", name)
    await _claim_name(tx, name)
    await store.update_app(tx.conn, app.id, timestamp(), name=name)
    tx.audit(
        app.team_id,
        "app.rename",
        app_name=name,
        app_id=app.id,
        details={"from": app.name, "to": name},
    )
    tx.emit(
        APP_RENAMED,
        AppRenamed(
            app_id=app.id,
            old_name=app.name,
            new_name=name,
            team_id=app.team_id,
            actor=tx.actor.email,
        ),
    )


async def set_maintenance(tx: Change, app: store.App, name: str, on: bool) -> None:
    await store.update_app(tx.conn, app.id, timestamp(), maintenance=int(on))
    tx.audit(
        app.team_id,
        "app.maintenance",
        app_name=name,
        app_id=app.id,
        details={"maintenance": "on" if on else "off"},
    )
    tx.emit(
        MAINTENANCE_CHANGED,
        MaintenanceChanged(
            app_id=app.id, name=name, team_id=app.team_id, maintenance=on, actor=tx.actor.email
        ),
    )


@routes.patch(
    "/apps/{app}",
    summary="Rename an app or switch maintenance mode",
    body=UpdateApp,
    response=views.App,
)
async def update(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "change the app")
    body = await read_body(request, UpdateApp)
    async with change(gw, actor(request)) as tx:
        name = app.name
        if body.name is not None and body.name != app.name:
            await rename(tx, app, body.name)
            name = body.name
        if body.maintenance is not None and body.maintenance != app.maintenance:
            await set_maintenance(tx, app, name, body.maintenance)
        updated = await store.get_app(tx.conn, app.id)
    if updated is None:
        raise NotFound("Couldn't find that app.")
    return reply(app_view(gw, updated))


@routes.delete("/apps/{app}", summary="Delete an app", response=views.App)
async def delete(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.MANAGE, "delete the app")
    async with change(gw, actor(request)) as tx:
        await store.delete_app(tx.conn, app.id)
        tx.audit(app.team_id, "app.destroy", app_name=app.name, app_id=app.id)
        tx.emit(
            APP_DESTROYED,
            AppDestroyed(app_id=app.id, name=app.name, team_id=app.team_id, actor=tx.actor.email),
        )
    return reply(app_view(gw, app))
