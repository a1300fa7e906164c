"""Heroku resources Slipway does not offer, answered with what it does instead.

A client asking for one of these (a script moved from Heroku, a CLI plugin) gets 404
in Heroku's error shape, as for any unknown path, but with a message naming what to use
here instead of aiohttp's bare "Not Found". Paths under an app check the caller's access
first, so another team's app stays indistinguishable from no app at all.
"""

from __future__ import annotations

from aiohttp import web

from slipway.libs.errors import NotFound
from slipway.services.gateway.http.auth import Action, app_for
from slipway.services.gateway.http.errors import ErrorBody
from slipway.services.gateway.http.routing import Handler, Routes

routes = Routes("not-offered")

BUILDPACKS = (
    "Buildpacks are not stored per app: a build detects them, or names them itself"
    ' (POST /apps/{app}/builds with {"buildpacks": [{"url": ...}]}).'
)
SLUGS = (
    "Slugs are not offered: releases run OCI images built by `git push` or"
    " POST /apps/{app}/builds, and `slipway releases:rollback` returns to an earlier one."
)
ACM = (
    "HTTPS for custom domains is always on: the router obtains and renews each domain's"
    " certificate itself once it is added (`slipway domains:add`)."
)
PIPELINES = (
    "Pipelines are not offered: promote a build by pushing the same commit to each app"
    " (`git push`), and go back with `slipway releases:rollback`."
)
SPACES = (
    "Private Spaces are not offered as such: every app already runs on its own Docker"
    " network, which reaches neither other apps nor the platform's services."
)
APP_SETUPS = (
    "App setups (app.json) are not offered: create the app (`slipway apps:create`),"
    " set its config (`slipway config:set`), add its database (`slipway addons:create"
    " postgresql`) and `git push`."
)
INVITATIONS = (
    "Team invitations by email are not sent: the newcomer makes an invite code"
    " (`slipway auth:invite-code`), a platform admin registers it (`slipway users:invite`),"
    " and a team owner or admin adds them (`slipway members:add`)."
)

# path, methods, message: Heroku's paths as its schema spells them.
NOT_OFFERED: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("/apps/{app}/buildpack-installations", ("GET", "PUT"), BUILDPACKS),
    ("/apps/{app}/slugs", ("POST",), SLUGS),
    ("/apps/{app}/slugs/{slug}", ("GET",), SLUGS),
    ("/apps/{app}/acm", ("POST", "PATCH", "DELETE"), ACM),
    ("/pipelines", ("GET", "POST"), PIPELINES),
    ("/pipelines/{pipeline}", ("GET", "PATCH", "DELETE"), PIPELINES),
    ("/pipeline-couplings", ("GET", "POST"), PIPELINES),
    ("/pipeline-promotions", ("POST",), PIPELINES),
    ("/spaces", ("GET", "POST"), SPACES),
    ("/spaces/{space}", ("GET", "PATCH", "DELETE"), SPACES),
    ("/app-setups", ("POST",), APP_SETUPS),
    ("/app-setups/{setup}", ("GET",), APP_SETUPS),
    ("/teams/{team}/invitations", ("GET", "PUT"), INVITATIONS),
)


def _refusal(method: str, path: str, message: str) -> Handler:
    under_app = path.startswith("/apps/{app}/")

    async def refuse(request: web.Request) -> web.Response:
        if under_app:
            await app_for(request, Action.READ, "read it")
        raise NotFound(message)

    # operationIds in the OpenAPI document come from handler names: one per path.
    words = "".join(c if c.isalnum() else "_" for c in path if c not in "{}").strip("_")
    refuse.__name__ = f"{method.lower()}_{words}"
    return refuse


for _path, _methods, _message in NOT_OFFERED:
    for _method in _methods:
        routes.route(
            _method,
            _path,
            summary=f"Not offered: {_message.split(':', 1)[0]}",
            response=ErrorBody,
            status=404,
        )(_refusal(_method, _path, _message))
