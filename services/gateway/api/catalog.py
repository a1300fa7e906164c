"""Regions, stacks and app features: what Heroku's clients ask about before they create an app.

A Slipway installation is one region (its Docker hosts, `local`) and runs one stack
(the Debian run image `scripts/build-stack` makes, `slipway-24`): the same two every
app shows in its `region` and `stack`. Both answer with the time the installation was
set up (its first user) as their creation time, since neither has a row of its own.

App features are Heroku's per-app switches (`heroku features:enable NAME`). Slipway has
one, `hsts`: the router adds `Strict-Transport-Security` to the app's HTTPS answers.
Any other name answers 404 saying which exist, rather than pretending a flag was switched.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from aiohttp import web

from slipway.contracts.gateway import APP_FEATURE_CHANGED, AppFeatureChanged
from slipway.libs.errors import NotFound
from slipway.services.gateway.api.apps import REGION, STACK
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.core.store import Conn, timestamp
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import UpdateFeature
from slipway.services.gateway.outbox.changes import change

routes = Routes("catalog")


class RegionProvider(views.View, frozen=True, kw_only=True):
    # Heroku's `region` here names a cloud provider's region; the hosts are the operator's.
    name: str


class Region(views.View, frozen=True, kw_only=True):
    """Heroku's region: where dynos run."""

    id: str
    name: str
    description: str
    country: str
    locale: str
    private_capable: bool = False
    provider: RegionProvider
    created_at: views.Timestamp
    updated_at: views.Timestamp


class Stack(views.View, frozen=True, kw_only=True):
    """Heroku's stack: the operating system image dynos run on."""

    id: str
    name: str
    state: str
    default: bool
    created_at: views.Timestamp
    updated_at: views.Timestamp


class AppFeature(views.View, frozen=True, kw_only=True):
    """Heroku's app feature: a per-app switch (Slipway's are in FEATURES)."""

    id: str
    name: str
    display_name: str
    description: str
    doc_url: str
    enabled: bool
    state: str
    feedback_email: str
    created_at: views.Timestamp
    updated_at: views.Timestamp


async def installed_at(conn: Conn) -> str:
    """When the installation was set up: its first user (the bootstrap admin) was made."""
    async with conn.execute("SELECT MIN(created_at) AS at FROM users") as cursor:
        row = await cursor.fetchone()
    return str(row["at"]) if row and row["at"] else timestamp()


def region_view(at: str) -> Region:
    return Region(
        id=REGION.id,
        name=REGION.name,
        description="This installation's Docker hosts",
        # Where the operator's machines stand is not known to the platform.
        country="",
        locale="",
        provider=RegionProvider(name="docker"),
        created_at=at,
        updated_at=at,
    )


def stack_view(at: str) -> Stack:
    return Stack(
        id=STACK.id, name=STACK.name, state="public", default=True, created_at=at, updated_at=at
    )


@routes.get("/regions", summary="List regions (this installation is one)", response=list[Region])
async def list_regions(request: web.Request) -> web.Response:
    return reply([region_view(await installed_at(request.app[GATEWAY].reader))])


@routes.get("/regions/{region}", summary="Info for a region", response=Region)
async def region_info(request: web.Request) -> web.Response:
    if request.match_info["region"] not in (REGION.id, REGION.name):
        raise NotFound(
            f"Couldn't find that region: this installation has one, {REGION.name!r}; its apps"
            " run on the Docker hosts the operator registered (GET /hosts for admins)."
        )
    return reply(region_view(await installed_at(request.app[GATEWAY].reader)))


@routes.get("/stacks", summary="List stacks (apps run on one)", response=list[Stack])
async def list_stacks(request: web.Request) -> web.Response:
    return reply([stack_view(await installed_at(request.app[GATEWAY].reader))])


@routes.get("/stacks/{stack}", summary="Info for a stack", response=Stack)
async def stack_info(request: web.Request) -> web.Response:
    if request.match_info["stack"] not in (STACK.id, STACK.name):
        raise NotFound(
            f"Couldn't find that stack: every app runs on {STACK.name!r} (Debian, built from"
            " its packages); a Dockerfile at the root of the source picks its own image."
        )
    return reply(stack_view(await installed_at(request.app[GATEWAY].reader)))


@dataclass(frozen=True)
class Feature:
    """One app feature Slipway offers: its name, what it does, its column in `apps`."""

    name: str
    display_name: str
    description: str
    column: str


HSTS = Feature(
    name="hsts",
    display_name="HTTP Strict Transport Security",
    description=(
        "The router adds `Strict-Transport-Security: max-age=31536000` to the app's HTTPS"
        " answers: browsers then refuse plain HTTP to its hosts for a year. Serve every"
        " host over HTTPS before you switch it on; switching it off does not make browsers"
        " forget."
    ),
    column="hsts",
)
FEATURES = {feature.name: feature for feature in (HSTS,)}
# A feature's id is stable and the same on every installation: a name-based UUID.
FEATURE_IDS = {
    name: str(uuid.uuid5(uuid.NAMESPACE_URL, f"slipway:feature:{name}")) for name in FEATURES
}


def feature_view(feature: Feature, app: store.App) -> AppFeature:
    enabled = bool(getattr(app, feature.column))
    return AppFeature(
        id=FEATURE_IDS[feature.name],
        name=feature.name,
        display_name=feature.display_name,
        description=feature.description,
        doc_url="https://slipway.invalid/docs/features#" + feature.name,
        enabled=enabled,
        state="general",
        feedback_email="",
        created_at=app.created_at,
        updated_at=app.updated_at,
    )


def feature_named(request: web.Request) -> Feature:
    wanted = request.match_info["feature"]
    for feature in FEATURES.values():
        if wanted in (feature.name, FEATURE_IDS[feature.name]):
            return feature
    raise NotFound(
        f"Couldn't find that feature. Slipway's app features are: {', '.join(sorted(FEATURES))}."
    )


@routes.get("/apps/{app}/features", summary="List app features", response=list[AppFeature])
async def list_features(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    return reply([feature_view(feature, app) for feature in FEATURES.values()])


@routes.get(
    "/apps/{app}/features/{feature}", summary="Info for an app feature", response=AppFeature
)
async def feature_info(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    return reply(feature_view(feature_named(request), app))


@routes.patch(
    "/apps/{app}/features/{feature}",
    summary="Switch an app feature",
    body=UpdateFeature,
    response=AppFeature,
)
async def update_feature(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "change the app")
    feature = feature_named(request)
    body = await read_body(request, UpdateFeature)
    async with change(gw, actor(request)) as tx:
        if body.enabled != bool(getattr(app, feature.column)):
            # The column comes from FEATURES above, never from the request.
            await store.update_app(
                tx.conn, app.id, timestamp(), **{feature.column: int(body.enabled)}
            )
            tx.audit(
                app.team_id,
                "app.feature",
                app_name=app.name,
                app_id=app.id,
                details={"feature": feature.name, "enabled": "on" if body.enabled else "off"},
            )
            tx.emit(
                APP_FEATURE_CHANGED,
                AppFeatureChanged(
                    app_id=app.id,
                    name=app.name,
                    team_id=app.team_id,
                    feature=feature.name,
                    enabled=body.enabled,
                    actor=tx.actor.email,
                ),
            )
        updated = await store.get_app(tx.conn, app.id)
    if updated is None:
        raise NotFound("Couldn't find that app.")
    return reply(feature_view(feature, updated))
