"""A database's credentials in use: `pg:credentials:rotate` and `pg:psql`.

Rotating makes a new random password, seals it in the add-on's record (as at create),
has the scheduler set its SCRAM verifier in the running database (ADDON_CREDENTIALS_APPLY:
the scheduler asks ADDON_CREDENTIALS_GET, the usual path, so still only a verifier leaves
the gateway) and end the sessions opened with the old one, then puts the new URL in the
attachment's config var in one release. If the database refuses, the record gets the old
password back and nothing else changed. The old password is refused from then on.

`pg:psql` is a one-off dyno (contracts/oneoff.py) running `psql "$<ATTACHMENT>_URL"` with
the app's config, from the PostgreSQL add-on image (`tool="psql"`: the scheduler picks the
image), since an app's image need not have psql. It is attached like `slipway run`; SQL
typed or piped goes through the terminal, never into the dyno's command line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets

import structlog
from aiohttp import web

from slipway.contracts import addons as ac
from slipway.contracts.keyring import Purpose
from slipway.contracts.oneoff import ONEOFF_RUN, RunOneOff
from slipway.libs.crypto import envelope
from slipway.libs.errors import Conflict, NotFound
from slipway.services.gateway.addons import addonstore
from slipway.services.gateway.addons.addons import _binding, database_url
from slipway.services.gateway.addons.addonstore import Addon
from slipway.services.gateway.addons.addonviews import AddonView, addon_view
from slipway.services.gateway.api.config import update_config
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import Body
from slipway.services.gateway.oneoff.oneoff import OneOffDyno, offer, websocket_url
from slipway.services.gateway.outbox.changes import Actor, change

log = structlog.get_logger("slipway.gateway.addoncreds")

routes = Routes("add-on")

APPLY_TIMEOUT = 60.0
PSQL_TIME_TO_LIVE = 3600
# One rotation at a time per add-on: two would race on which password the database keeps.
_locks: dict[str, asyncio.Lock] = {}


class RotateCredentials(Body, frozen=True, kw_only=True):
    """The app's name, as `--confirm APP` gives it: every connection is cut."""

    confirm: str


class PsqlSession(Body, frozen=True, kw_only=True):
    """`interactive`: a person types (prompts, line editing); False: piped SQL."""

    interactive: bool = True


async def _addon_of(request: web.Request, app: store.App) -> Addon:
    gw = request.app[GATEWAY]
    wanted = request.match_info["addon"]
    addon = await addonstore.get(gw.reader, wanted)
    if addon is None or addon.app_id != app.id or addon.state == "deprovisioned":
        raise NotFound(f"Couldn't find that add-on ({wanted[:60]}).")
    if addon.state != "provisioned":
        raise Conflict(f"{addon.name} is {addon.state}: wait until it is provisioned.")
    return addon


async def _store_password(gw: Gateway, who: Actor, addon_id: str, sealed: bytes) -> None:
    async with change(gw, who) as tx:
        await tx.conn.execute(
            "UPDATE addons SET password = ?, updated_at = ? WHERE id = ?",
            (sealed, store.timestamp(), addon_id),
        )


async def rotate(gw: Gateway, who: Actor, app: store.App, addon: Addon) -> Addon:
    """New password: in the record, in the database, in the config var (one release)."""
    async with _locks.setdefault(addon.id, asyncio.Lock()):
        current = await addonstore.get(gw.reader, addon.id)
        if current is None or current.state != "provisioned":
            raise Conflict(f"{addon.name} is not provisioned.")
        password = secrets.token_urlsafe(32)
        sealed = await envelope.encrypt(
            gw.bus, app.team_id, Purpose.CONFIG, _binding(current), password.encode()
        )
        # First the record: the scheduler reads the verifier from it.
        await _store_password(gw, who, current.id, sealed)
        try:
            await gw.bus.call(
                ac.ADDON_CREDENTIALS_APPLY,
                ac.ApplyAddonCredentials(
                    addon_id=current.id,
                    app_id=app.id,
                    database=current.db_name,
                    user=current.db_user,
                ),
                timeout=APPLY_TIMEOUT,
            )
        except Exception:
            await _store_password(gw, who, current.id, current.password)
            raise
        await update_config(
            gw,
            who,
            app,
            {current.config_var: database_url(current, password)},
            description=f"Rotate {current.attachment_name} credentials (@ref:{current.name})",
        )
        async with change(gw, who) as tx:
            tx.audit(
                app.team_id,
                "addon.credentials.rotate",
                app_name=app.name,
                app_id=app.id,
                details={"addon": current.name, "attachment": current.attachment_name},
            )
    log.info("addon.credentials_rotated", app=app.name, addon=current.name)
    return dataclasses.replace(current, password=sealed)


@routes.post(
    "/apps/{app}/addons/{addon}/credentials/rotate",
    summary="Slipway: a new password for the database (pg:credentials:rotate)",
    body=RotateCredentials,
    response=AddonView,
    extension=True,
)
async def rotate_credentials(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "rotate database credentials")
    body = await read_body(request, RotateCredentials)
    if body.confirm != app.name:
        raise InvalidParams(
            f'Every connection to the database is cut: confirm with {{"confirm": "{app.name}"}}.'
        )
    addon = await _addon_of(request, app)
    rotated = await rotate(request.app[GATEWAY], actor(request), app, addon)
    return reply(addon_view(rotated, app))


def psql_command(addon: Addon, interactive: bool) -> str:
    """The one-off's shell command: psql on the attachment's URL from the dyno's env."""
    # config_var is <ATTACHMENT_NAME>_URL, upper-case letters, digits and "_" only.
    command = f'psql -X -P pager=off "${addon.config_var}"'
    if interactive:
        return f"exec {command}"
    # Piped SQL reaches the dyno through its terminal, and psql on a terminal is interactive
    # (prompts; ON_ERROR_STOP does not stop). Through `cat` it reads a script: it stops at
    # the first error and exits non-zero, as a script's caller expects.
    return f"cat | {command} -q -v ON_ERROR_STOP=1"


@routes.post(
    "/apps/{app}/addons/{addon}/psql",
    summary="Slipway: psql on the database in an attached one-off dyno (pg:psql)",
    body=PsqlSession,
    response=OneOffDyno,
    status=201,
    extension=True,
)
async def psql(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "run commands in it")
    body = await read_body(request, PsqlSession)
    addon = await _addon_of(request, app)
    release = await store.current_release(gw.reader, app.id)
    if release is None:
        raise InvalidParams(f"{app.name} has no release yet.")
    session = secrets.token_hex(16)
    command = psql_command(addon, body.interactive)
    started = await gw.bus.call(
        ONEOFF_RUN,
        RunOneOff(
            app_id=app.id,
            app_name=app.name,
            team_id=app.team_id,
            release_version=release.version,
            image="",
            config_version=release.config_version_id,
            command=command,
            time_to_live=PSQL_TIME_TO_LIVE,
            attach=True,
            session=session,
            tool="psql",
        ),
        timeout=120.0,
    )
    async with change(gw, actor(request)) as tx:
        tx.audit(
            app.team_id,
            "addon.psql",
            app_name=app.name,
            app_id=app.id,
            details={"dyno": started.dyno.name, "addon": addon.name},
        )
    secret = offer(gw, app.id, started.dyno.name, session)
    at = store.timestamp()
    return reply(
        OneOffDyno(
            id=started.dyno.container_id or started.dyno.name,
            name=started.dyno.name,
            type="run",
            command=command,
            size=started.dyno.size,
            state=started.dyno.state,
            attach_url=websocket_url(gw, secret),
            app=views.AppRef(id=app.id, name=app.name),
            release=views.ReleaseRef(id=release.id, version=release.version),
            created_at=at,
            updated_at=at,
        ),
        status=201,
    )
