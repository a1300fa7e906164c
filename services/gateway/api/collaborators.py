"""Who works on which app, as Heroku's clients ask it: a user's apps, an app's collaborators.

Slipway gives access by team membership: every member of an app's team works on all
of the team's apps, with the permissions of their team role. So an app's
collaborators are its team's members (role and permissions from their team role),
and `/users/{user}/apps` is `/apps`: the apps of the caller's teams. Asked for someone
else's apps, it answers 404, as it does for another team's app.

Adding or removing a collaborator is refused (422) rather than mapped onto team
membership: a member joins every app of the team, which is more than a client adding
one collaborator to one app means to grant. The message names the command that does
it deliberately (`slipway members:add`, `PUT /teams/{team}/members`).
"""

from __future__ import annotations

from aiohttp import web

from slipway.libs.errors import NotFound
from slipway.services.gateway.api.apps import app_view
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, app_for, principal
from slipway.services.gateway.http.errors import ErrorBody, InvalidParams
from slipway.services.gateway.http.routing import Routes, reply

routes = Routes("collaborators")

# Heroku's app permissions, each team role's share of them (Heroku Teams' names).
PERMISSIONS = {
    "view": "Can view the app, its config, releases, logs and dynos.",
    "deploy": "Can deploy, change config, scale and roll back the app.",
    "operate": "Can restart and stop dynos.",
    "manage": "Can delete the app and manage the team's members.",
}
ROLE_PERMISSIONS = {
    "owner": ("view", "deploy", "operate", "manage"),
    "admin": ("view", "deploy", "operate", "manage"),
    "member": ("view", "deploy", "operate"),
    "viewer": ("view",),
}
# Heroku's collaborator roles have no read-only one: a viewer is a member with `view` only.
HEROKU_ROLE = {"owner": "owner", "admin": "admin", "member": "member", "viewer": "member"}


class Permission(views.View, frozen=True, kw_only=True):
    name: str
    description: str


class CollaboratorUser(views.View, frozen=True, kw_only=True):
    id: str
    email: str
    federated: bool = False


class Collaborator(views.View, frozen=True, kw_only=True):
    """Heroku's collaborator: a member of the app's team."""

    id: str
    app: views.AppRef
    user: CollaboratorUser
    role: str | None
    permissions: list[Permission]
    created_at: views.Timestamp
    updated_at: views.Timestamp


def collaborator_view(app: store.App, member: store.Member) -> Collaborator:
    return Collaborator(
        id=member.id,
        app=views.AppRef(id=app.id, name=app.name),
        user=CollaboratorUser(id=member.user_id, email=member.email),
        role=HEROKU_ROLE.get(member.role),
        permissions=[
            Permission(name=name, description=PERMISSIONS[name])
            for name in ROLE_PERMISSIONS.get(member.role, ())
        ],
        created_at=member.created_at,
        updated_at=member.updated_at,
    )


@routes.get(
    "/users/{user}/apps",
    summary="List your apps (`~` or your own email or id)",
    response=list[views.App],
)
async def apps_of_user(request: web.Request) -> web.Response:
    user = principal(request).user
    if request.match_info["user"] not in ("~", user.id, user.email):
        # Whether such a user exists is not the caller's to learn, as with apps.
        raise NotFound("Couldn't find that user: you can list your own apps only (/users/~/apps).")
    gw = request.app[GATEWAY]
    return reply([app_view(gw, app) for app in await store.apps_of(gw.reader, user.id)])


@routes.get(
    "/apps/{app}/collaborators",
    summary="List the app's collaborators (its team's members)",
    response=list[Collaborator],
)
async def list_collaborators(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    members = await store.list_members(request.app[GATEWAY].reader, app.team_id)
    return reply([collaborator_view(app, m) for m in members])


@routes.get(
    "/apps/{app}/collaborators/{collaborator}",
    summary="Info for a collaborator (email, user id or membership id)",
    response=Collaborator,
)
async def collaborator_info(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    wanted = request.match_info["collaborator"]
    member = await store.get_member(request.app[GATEWAY].reader, app.team_id, wanted)
    if member is None:
        raise NotFound(f"Couldn't find that collaborator ({wanted[:80]}).")
    return reply(collaborator_view(app, member))


def _membership_instead(app: store.App, doing: str, command: str) -> InvalidParams:
    return InvalidParams(
        f"Slipway has no per-app collaborators: access comes from membership of the app's"
        f" team ({app.team_name}), to all of its apps. To {doing}, run `slipway {command}"
        f" --team {app.team_name}` (PUT or DELETE /teams/{app.team_name}/members)."
    )


@routes.post(
    "/apps/{app}/collaborators",
    summary="Refused: access is by team membership (members:add)",
    response=ErrorBody,
    status=422,
)
async def create_collaborator(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    raise _membership_instead(app, "give someone access", "members:add EMAIL --role member")


@routes.delete(
    "/apps/{app}/collaborators/{collaborator}",
    summary="Refused: access is by team membership (members:remove)",
    response=ErrorBody,
    status=422,
)
async def delete_collaborator(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    raise _membership_instead(app, "take someone's access away", "members:remove EMAIL")


# Heroku's CLI asks for a team app's collaborators under /teams/apps: the same answers.


@routes.get(
    "/teams/apps/{app}/collaborators",
    summary="List a team app's collaborators (its team's members)",
    response=list[Collaborator],
)
async def list_team_app_collaborators(request: web.Request) -> web.StreamResponse:
    return await list_collaborators(request)


@routes.get(
    "/teams/apps/{app}/collaborators/{collaborator}",
    summary="Info for a team app's collaborator",
    response=Collaborator,
)
async def team_app_collaborator_info(request: web.Request) -> web.StreamResponse:
    return await collaborator_info(request)


@routes.post(
    "/teams/apps/{app}/collaborators",
    summary="Refused: access is by team membership (members:add)",
    response=ErrorBody,
    status=422,
)
async def create_team_app_collaborator(request: web.Request) -> web.StreamResponse:
    return await create_collaborator(request)


@routes.patch(
    "/teams/apps/{app}/collaborators/{collaborator}",
    summary="Refused: permissions follow the team role (members:set)",
    response=ErrorBody,
    status=422,
)
async def update_team_app_collaborator(request: web.Request) -> web.StreamResponse:
    app = await app_for(request, Action.READ, "read it")
    raise _membership_instead(app, "change someone's permissions", "members:set EMAIL --role ROLE")


@routes.delete(
    "/teams/apps/{app}/collaborators/{collaborator}",
    summary="Refused: access is by team membership (members:remove)",
    response=ErrorBody,
    status=422,
)
async def delete_team_app_collaborator(request: web.Request) -> web.StreamResponse:
    return await delete_collaborator(request)
