"""Regions, stacks and app features: what Heroku's clients ask about before they create an app.

A Slipway installation is one region (its Docker hosts, `local`) and runs one stack
(the Debian run image `scripts/build-stack` makes, `slipway-24`): the same two every
app shows in its `region` and `stack`. Both answer with the time the installation was
set up (its first user) as their creation time, since neither has a row of its own.

Slipway has no app features (Heroku's labs flags): the list is empty, and naming one
answers 404 saying so rather than pretending a flag was switched.
"""

from __future__ import annotations

from aiohttp import web

from slipway.libs.errors import NotFound
from slipway.services.gateway.api.apps import REGION, STACK
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.core.store import Conn, timestamp
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, app_for
from slipway.services.gateway.http.routing import Routes, reply

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
    """Heroku's app feature (a labs flag); Slipway has none, so no instance is ever answered."""

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


NO_FEATURES = (
    "Slipway has no app features (Heroku's labs flags): nothing can be switched per app;"
    " settings live in config vars (config:set) and the app's own endpoints."
)


@routes.get("/apps/{app}/features", summary="List app features (none)", response=list[AppFeature])
async def list_features(request: web.Request) -> web.Response:
    await app_for(request, Action.READ, "read it")
    return reply([])


@routes.get(
    "/apps/{app}/features/{feature}", summary="Info for an app feature", response=AppFeature
)
async def feature_info(request: web.Request) -> web.Response:
    await app_for(request, Action.READ, "read it")
    raise NotFound(f"Couldn't find that feature. {NO_FEATURES}")


@routes.patch(
    "/apps/{app}/features/{feature}", summary="Switch an app feature", response=AppFeature
)
async def update_feature(request: web.Request) -> web.Response:
    await app_for(request, Action.DEPLOY, "change the app")
    raise NotFound(f"Couldn't find that feature. {NO_FEATURES}")
