"""Add-ons and their attachments, in Heroku's shapes: PostgreSQL databases run by the scheduler.

Creating one (202, state `provisioning`) stores the add-on with a random password sealed
like config vars (envelope encryption through the keyring, bound to team, app, kind
"addon" and the add-on's id) and emits `ADDON_CREATED`. The scheduler starts the
database, asks `ADDON_CREDENTIALS_GET` for the role's SCRAM verifier (the password never
leaves the gateway) and answers `ADDON_CHANGED`; then the attachment's config var
(`DATABASE_URL` for the first database, `SLIPWAY_POSTGRESQL_<WORD>_URL` for the next ones)
is set exactly as `config:set` would, which makes a release, and the state becomes
`provisioned`.

Destroying one first takes a final backup (`backups.final_backup`: if it fails, nothing
is destroyed), then removes the config var (a release), marks it `deprovisioned`, leaves a
tombstone (its backups stay listed and restorable) and emits `ADDON_DESTROYED`; the
scheduler removes the container and its volume, and the record goes once it says so.

A restore is a create with `"config": {"restore_from": <add-on>, "backup": "b003"?,
"to_time": ISO 8601?}`: the new add-on takes the source's database and role names (the
restored cluster has them), a new password, and a second-database attachment;
`ADDON_CREATED` carries `restore`. `POST /apps/{app}/addon-attachments {"addon", "name":
"DATABASE"}` then moves DATABASE_URL to it in one release (`pg:promote`).
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import re
import secrets
import sqlite3
from urllib.parse import quote

import msgspec
import structlog
from aiohttp import web

from slipway.contracts import addons as ac
from slipway.contracts.keyring import Purpose
from slipway.libs.bus import context
from slipway.libs.crypto import Binding, envelope
from slipway.libs.errors import Conflict, NotFound
from slipway.services.gateway.addons import addonstore, backups
from slipway.services.gateway.addons.addonstore import Addon
from slipway.services.gateway.addons.addonviews import (
    AddonView,
    AttachedAddon,
    AttachmentView,
    DatabaseView,
    addon_view,
    attachment_view,
)
from slipway.services.gateway.addons.backupviews import backup_name
from slipway.services.gateway.api.config import read_config, update_config
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.core.store import new_uuid, timestamp
from slipway.services.gateway.http import diskpressure, views
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import Body
from slipway.services.gateway.outbox.changes import Actor, Change, change

log = structlog.get_logger("slipway.gateway.addons")

routes = Routes("add-on")

DEFAULT_PLANS = {"postgresql": "postgresql:mini"}
ADDON_NAME = re.compile(r"^[a-zA-Z][A-Za-z0-9_-]{1,62}\Z")
ATTACHMENT_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,59}\Z")
PRIMARY_ATTACHMENT = "DATABASE"
WORDS = (
    "amber", "aqua", "azure", "beige", "black", "blue", "bronze", "brown", "cobalt", "copper",
    "coral", "crimson", "cyan", "gold", "gray", "green", "indigo", "ivory", "jade", "lime",
    "magenta", "maroon", "mauve", "navy", "olive", "onyx", "orange", "pink", "plum", "purple",
    "red", "rose", "ruby", "rust", "sage", "silver", "teal", "violet", "white", "yellow",
)  # fmt: skip
SCRAM_ITERATIONS = 4096  # PostgreSQL's own default


class AttachmentBody(Body, frozen=True, kw_only=True):
    name: str | None = None


class CreateAddon(Body, frozen=True, kw_only=True):
    """Heroku's add-on create body; `config` may ask for a restore, `confirm` is unused."""

    plan: str
    name: str | None = None
    attachment: AttachmentBody | None = None
    config: dict[str, str] | None = None
    confirm: str | None = None


def plan_of(asked: str) -> ac.AddonPlan:
    """The plan `asked` names ("postgresql:standard", or a service for its default plan)."""
    name = DEFAULT_PLANS.get(asked.lower(), asked.lower())
    plan = ac.ADDON_PLANS.get(name)
    if plan is None:
        raise InvalidParams(
            f"Couldn't find either the add-on service or the add-on plan of {asked[:60]!r}:"
            f" use one of {', '.join(ac.ADDON_PLANS)}."
        )
    return plan


def scram_verifier(password: str, salt: bytes | None = None) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for `password` (RFC 5802, RFC 7677)."""
    salt = salt or secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"


def _binding(addon: Addon) -> Binding:
    return Binding(team=addon.team_id, app=addon.app_id, kind="addon", record=addon.id)


async def _password(gw: Gateway, addon: Addon) -> str:
    plaintext = await envelope.decrypt(
        gw.bus, addon.team_id, Purpose.CONFIG, _binding(addon), addon.password
    )
    return plaintext.decode()


def database_url(addon: Addon, password: str) -> str:
    """What the attachment's config var holds: the host is the add-on's name on the app network.

    TLS is required; `require`, not `verify-full`: dynos are not given the platform's CA."""
    return (
        f"postgres://{addon.db_user}:{quote(password, safe='')}@{addon.name}:"
        f"{ac.POSTGRES_PORT}/{addon.db_name}?sslmode=require"
    )


def desired(addon: Addon, app_name: str) -> ac.AddonDesired:
    """The add-on as the scheduler runs it."""
    restore = msgspec.json.decode(addon.restore, type=ac.RestoreFrom) if addon.restore else None
    return ac.AddonDesired(
        addon_id=addon.id,
        addon_name=addon.name,
        app_id=addon.app_id,
        app_name=app_name,
        team_id=addon.team_id,
        plan=addon.plan,
        database=addon.db_name,
        user=addon.db_user,
        restore=restore,
    )


async def _new_name(gw: Gateway, service: str) -> str:
    for _ in range(20):
        name = f"{service}-{secrets.choice(WORDS)}-{secrets.randbelow(90000) + 10000}"
        if not await addonstore.name_taken(gw.reader, name):
            return name
    raise InvalidParams("Couldn't find a free add-on name: give one with `name`.")


def _attachment_name(body: CreateAddon, name: str, taken: set[str], *, primary: bool = True) -> str:
    asked = body.attachment.name if body.attachment else None
    if asked is not None:
        if not ATTACHMENT_NAME.match(asked):
            raise InvalidParams(
                f"Invalid attachment name {asked[:60]!r}: use upper-case letters, digits and"
                " underscores, starting with a letter (its config var is <NAME>_URL)."
            )
        chosen = asked
    elif primary and PRIMARY_ATTACHMENT not in taken:
        chosen = PRIMARY_ATTACHMENT
    else:
        # Heroku says HEROKU_POSTGRESQL_<COLOR>; the add-on's own word keeps it recognisable.
        word = name.split("-")[1] if name.count("-") >= 2 else secrets.token_hex(3)
        chosen = re.sub(r"[^A-Z0-9_]", "_", f"SLIPWAY_POSTGRESQL_{word.upper()}")
        if chosen in taken:
            # Forty words collide soon on an app with several databases; the whole add-on
            # name is unique, so its tail settles it instead of refusing a name nobody chose.
            tail = re.sub(r"[^A-Z0-9_]", "_", name.upper().split("-", 1)[-1])
            chosen = f"SLIPWAY_POSTGRESQL_{tail}"
    if chosen in taken:
        raise InvalidParams(f"The app already has an attachment named {chosen}.")
    return chosen


async def create_addon(gw: Gateway, who: Actor, app: store.App, body: CreateAddon) -> Addon:
    """Record a new add-on (provisioning) and ask the scheduler for its database."""
    plan = plan_of(body.plan)
    if body.name is not None:
        if not ADDON_NAME.match(body.name):
            raise InvalidParams(
                f"Invalid add-on name {body.name[:60]!r}: letters, digits, '-' and '_',"
                " starting with a letter, at most 63 characters."
            )
        if await addonstore.name_taken(gw.reader, body.name):
            raise InvalidParams("Name is already taken")
        name = body.name
    else:
        name = await _new_name(gw, plan.service)
    restore = await backups.restore_from(gw, app, plan, body.config or {})
    existing = await addonstore.of_app(gw.reader, app.id)
    # A restored database stands next to the one it copies until `pg:promote` switches them.
    attachment = _attachment_name(
        body, name, {a.attachment_name for a in existing}, primary=restore is None
    )
    config = await read_config(gw, app, app.config_version_id)
    if f"{attachment}_URL" in config:
        raise InvalidParams(
            f"The app already has a config var {attachment}_URL: remove it first, or give"
            ' the attachment another name ({"attachment": {"name": "..."}}).'
        )
    at = timestamp()
    addon = Addon(
        id=new_uuid(),
        app_id=app.id,
        team_id=app.team_id,
        name=name,
        plan=plan.name,
        state="provisioning",
        attachment_id=new_uuid(),
        attachment_name=attachment,
        db_name=restore[1].db_name if restore else f"d{secrets.token_hex(7)}",
        db_user=restore[1].db_user if restore else f"u{secrets.token_hex(7)}",
        password=b"",
        host_id=None,
        provision_message="",
        created_by=who.email,
        created_at=at,
        updated_at=at,
        restore=msgspec.json.encode(restore[0]).decode() if restore else "",
    )
    password = secrets.token_urlsafe(32)
    sealed = await envelope.encrypt(
        gw.bus, app.team_id, Purpose.CONFIG, _binding(addon), password.encode()
    )
    addon = dataclasses.replace(addon, password=sealed)
    try:
        async with change(gw, who) as tx:
            await _insert(tx, app, addon)
    except sqlite3.IntegrityError:
        # Another create took the name or the attachment between our check and our write.
        raise Conflict(
            f"The add-on name {name} or the attachment {attachment} was just taken; try again."
        ) from None
    return addon


async def _insert(tx: Change, app: store.App, addon: Addon) -> None:
    await addonstore.insert(tx.conn, addon)
    details = {"addon": addon.name, "plan": addon.plan, "attachment": addon.attachment_name}
    if addon.restore:
        restore = msgspec.json.decode(addon.restore, type=ac.RestoreFrom)
        details["restore_from"] = restore.source_addon_id
        details["backup"] = backup_name(restore.num) if restore.num else "latest"
        details["to_time"] = restore.to_time or "end of the archive"
    tx.audit(app.team_id, "addon.create", app_name=app.name, app_id=app.id, details=details)
    tx.emit(ac.ADDON_CREATED, ac.AddonCreated(addon=desired(addon, app.name), actor=tx.actor.email))


async def destroy_addon(gw: Gateway, who: Actor, app: store.App, addon: Addon) -> Addon:
    """Final backup, detach (a release without the config var), then have the scheduler
    remove it; one that never ran (provisioning, failed) has nothing to back up."""
    details = {"addon": addon.name, "plan": addon.plan}
    if addon.state == "provisioned":
        final = await backups.final_backup(gw, who, app, addon)
        details["final_backup"] = backup_name(final.num)
    if addon.state != "deprovisioned":
        await update_config(
            gw,
            who,
            app,
            {addon.config_var: None},
            description=f"Detach {addon.attachment_name} (@ref:{addon.name})",
        )
    at = timestamp()
    async with change(gw, who) as tx:
        await addonstore.set_state(tx.conn, addon.id, "deprovisioned", at)
        await addonstore.insert_tombstone(tx.conn, addon, who.email, at)
        tx.audit(app.team_id, "addon.destroy", app_name=app.name, app_id=app.id, details=details)
        tx.emit(
            ac.ADDON_DESTROYED, ac.AddonDestroyed(addon=desired(addon, app.name), actor=who.email)
        )
    return dataclasses.replace(addon, state="deprovisioned", updated_at=at)


async def changed(gw: Gateway, event: ac.AddonChanged) -> None:
    """The scheduler's answer: attach a provisioned database, forget a removed one."""
    addon = await addonstore.get(gw.reader, event.addon_id)
    app = await store.get_app(gw.reader, event.app_id)
    if addon is None or app is None or addon.app_id != app.id:
        return  # already forgotten (a redelivery), or the app went with it
    who = Actor(email="service:scheduler")
    if event.state == "deprovisioned":
        async with change(gw, who) as tx:
            await addonstore.delete(tx.conn, addon.id)
        return
    if addon.state == "provisioned" and event.state == "failed":
        # A database on no host that could not come back (gateway/addonrecovery.py): it
        # stays provisioned (config var and backups kept), the reason on it for the customer.
        async with change(gw, who) as tx:
            message = f"Not running: {event.reason[:300]}"
            await addonstore.set_state(
                tx.conn, addon.id, "provisioned", timestamp(), message=message
            )
            details = {"addon": addon.name, "reason": event.reason[:300]}
            tx.audit(app.team_id, "addon.failed", app_name=app.name, app_id=app.id, details=details)
        return
    if addon.state == "provisioned" and event.state == "provisioned":
        # A redelivery, or a database brought back (perhaps elsewhere) after a restore.
        if addon.host_id != event.host_id or addon.provision_message.startswith("Not running:"):
            async with change(gw, who) as tx:
                message = f"{addon.config_var} set on {app.name}."
                await addonstore.set_state(
                    tx.conn, addon.id, "provisioned", timestamp(), host_id=event.host_id,
                    message=message,
                )  # fmt: skip
        return
    if addon.state != "provisioning":
        return  # destroyed meanwhile, or a redelivery
    if event.state == "failed":
        async with change(gw, who) as tx:
            await addonstore.set_state(
                tx.conn,
                addon.id,
                "provisioning",
                timestamp(),
                message=f"Provisioning failed: {event.reason[:300]}",
            )
            tx.audit(
                app.team_id,
                "addon.failed",
                app_name=app.name,
                app_id=app.id,
                details={"addon": addon.name, "reason": event.reason[:300]},
            )
        return
    # The release is the add-on creator's change, as Heroku shows it.
    creator = Actor(email=addon.created_by)
    await update_config(
        gw,
        creator,
        app,
        {addon.config_var: database_url(addon, await _password(gw, addon))},
        description=f"Attach {addon.attachment_name} (@ref:{addon.name})",
    )
    async with change(gw, who) as tx:
        await addonstore.set_state(
            tx.conn,
            addon.id,
            "provisioned",
            timestamp(),
            host_id=event.host_id,
            message=f"{addon.config_var} set on {app.name}.",
        )
        tx.audit(
            app.team_id,
            "addon.provisioned",
            app_name=app.name,
            app_id=app.id,
            details={"addon": addon.name, "host": event.host_id},
        )
    log.info("addon.provisioned", app=app.name, addon=addon.name, host=event.host_id)


async def credentials(gw: Gateway, request: ac.GetAddonCredentials) -> ac.AddonCredentials:
    """The role's SCRAM verifier, for the scheduler to set in the database (never the password)."""
    context.require_caller(ac.ADDON_CREDENTIALS_GET)
    addon = await addonstore.get(gw.reader, request.addon_id)
    if addon is None or addon.app_id != request.app_id or addon.state == "deprovisioned":
        raise NotFound(f"No add-on {request.addon_id} on app {request.app_id}.")
    return ac.AddonCredentials(
        user=addon.db_user, verifier=scram_verifier(await _password(gw, addon))
    )


async def _addon_of(request: web.Request, app: store.App) -> Addon:
    wanted = request.match_info["addon"]
    addon = await addonstore.get(request.app[GATEWAY].reader, wanted)
    if addon is None or addon.app_id != app.id or addon.state == "deprovisioned":
        raise NotFound(f"Couldn't find that add-on ({wanted[:60]}).")
    return addon


async def _live(gw: Gateway, app: store.App) -> list[Addon]:
    return [a for a in await addonstore.of_app(gw.reader, app.id) if a.state != "deprovisioned"]


@routes.post(
    "/apps/{app}/addons",
    summary="Create an add-on (provisioned in the background)",
    body=CreateAddon,
    response=AddonView,
    status=202,
)
async def create(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "create add-ons")
    body = await read_body(request, CreateAddon)
    diskpressure.refuse_new_work(request, "create an add-on")
    addon = await create_addon(request.app[GATEWAY], actor(request), app, body)
    return reply(addon_view(addon, app), status=202)


@routes.get("/apps/{app}/addons", summary="List the app's add-ons", response=list[AddonView])
async def list_by_app(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    return reply([addon_view(a, app) for a in await _live(request.app[GATEWAY], app)])


@routes.get("/apps/{app}/addons/{addon}", summary="Info for an add-on", response=AddonView)
async def info_by_app(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    return reply(addon_view(await _addon_of(request, app), app))


@routes.get("/addons/{addon}", summary="Info for an add-on", response=AddonView)
async def info(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    found = await addonstore.get(gw.reader, request.match_info["addon"])
    if found is None or found.state == "deprovisioned":
        raise NotFound("Couldn't find that add-on.")
    # Membership is checked on the add-on's app, as for the app's own routes.
    request.match_info["app"] = found.app_id
    app = await app_for(request, Action.READ, "read it")
    return reply(addon_view(found, app))


@routes.delete(
    "/apps/{app}/addons/{addon}", summary="Destroy an add-on and its data", response=AddonView
)
async def destroy(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "destroy add-ons")
    addon = await _addon_of(request, app)
    gone = await destroy_addon(request.app[GATEWAY], actor(request), app, addon)
    return reply(addon_view(gone, app))


@routes.delete("/addons/{addon}", summary="Destroy an add-on and its data", response=AddonView)
async def destroy_by_id(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    found = await addonstore.get(gw.reader, request.match_info["addon"])
    if found is None or found.state == "deprovisioned":
        raise NotFound("Couldn't find that add-on.")
    request.match_info["app"] = found.app_id
    app = await app_for(request, Action.DEPLOY, "destroy add-ons")
    gone = await destroy_addon(gw, actor(request), app, found)
    return reply(addon_view(gone, app))


@routes.get(
    "/apps/{app}/addon-attachments",
    summary="List the app's add-on attachments",
    response=list[AttachmentView],
)
async def attachments(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read it")
    return reply([attachment_view(a, app) for a in await _live(request.app[GATEWAY], app)])


class CreateAttachment(Body, frozen=True, kw_only=True):
    """Heroku's add-on attachment create body: `addon` takes the attachment `name`."""

    addon: str
    name: str | None = None
    app: str | None = None
    confirm: str | None = None
    namespace: str | None = None


def _secondary_name(addon: Addon, taken: set[str]) -> str:
    """The name a second database gets, made unique against `taken`."""
    word = addon.name.split("-")[1] if addon.name.count("-") >= 2 else addon.id[:6]
    base = re.sub(r"[^A-Z0-9_]", "_", f"SLIPWAY_POSTGRESQL_{word.upper()}")
    chosen, n = base, 1
    while chosen in taken:
        n += 1
        chosen = f"{base}_{n}"
    return chosen


async def attach(gw: Gateway, who: Actor, app: store.App, addon: Addon, name: str) -> Addon:
    """Give `addon` the attachment `name` in one release (`pg:promote` for DATABASE).

    The add-on holding DATABASE before keeps a name of its own (as a second database
    would get), so its data stays reachable; any other taken name is refused.
    """
    if not ATTACHMENT_NAME.match(name):
        raise InvalidParams(
            f"Invalid attachment name {name[:60]!r}: use upper-case letters, digits and"
            " underscores, starting with a letter (its config var is <NAME>_URL)."
        )
    if addon.attachment_name == name:
        return addon
    if addon.state != "provisioned":
        raise Conflict(f"{addon.name} is {addon.state}: attach it once it is provisioned.")
    live = await _live(gw, app)
    holder = next((a for a in live if a.attachment_name == name and a.id != addon.id), None)
    if holder is not None and name != PRIMARY_ATTACHMENT:
        raise InvalidParams(f"{name} is attached to {holder.name}: choose another name.")
    config = await read_config(gw, app, app.config_version_id)
    if holder is None and f"{name}_URL" in config:
        raise InvalidParams(f"The app already has a config var {name}_URL: remove it first.")
    changes: dict[str, str | None] = {
        addon.config_var: None,
        f"{name}_URL": database_url(addon, await _password(gw, addon)),
    }
    moved = ""
    if holder is not None:
        taken = {a.attachment_name for a in live} | {k[:-4] for k in config if k.endswith("_URL")}
        moved = _secondary_name(holder, taken)
        changes[f"{moved}_URL"] = database_url(holder, await _password(gw, holder))
    await update_config(gw, who, app, changes, description=f"Attach {name} (@ref:{addon.name})")
    at = timestamp()
    async with change(gw, who) as tx:
        details = {"addon": addon.name, "attachment": name, "previous": addon.attachment_name}
        if holder is not None:
            # First the old holder: (app, attachment name) is unique at every step.
            await addonstore.set_attachment(tx.conn, holder.id, moved, at)
            details["moved"] = f"{holder.name} to {moved}"
        await addonstore.set_attachment(tx.conn, addon.id, name, at)
        tx.audit(app.team_id, "addon.attach", app_name=app.name, app_id=app.id, details=details)
    return dataclasses.replace(addon, attachment_name=name, updated_at=at)


@routes.post(
    "/apps/{app}/addon-attachments",
    summary="Attach an add-on under a name (DATABASE: promote it to DATABASE_URL)",
    body=CreateAttachment,
    response=AttachmentView,
    status=201,
)
async def create_attachment(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "attach add-ons")
    body = await read_body(request, CreateAttachment)
    addon = await addonstore.get(gw.reader, body.addon)
    if addon is None or addon.app_id != app.id or addon.state == "deprovisioned":
        raise InvalidParams(f"Couldn't find the add-on {body.addon[:60]!r} on {app.name}.")
    attached = await attach(gw, actor(request), app, addon, body.name or PRIMARY_ATTACHMENT)
    return reply(attachment_view(attached, app), status=201)


@routes.get(
    "/apps/{app}/addons/{addon}/database",
    summary="Slipway: a database add-on's plan, size and connections (pg:info)",
    response=DatabaseView,
    extension=True,
)
async def database(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.READ, "read it")
    addon = await _addon_of(request, app)
    plan = ac.ADDON_PLANS[addon.plan]
    if addon.state == "provisioned":
        found = await gw.bus.call(
            ac.ADDON_INFO_GET,
            ac.GetDatabaseInfo(addon_id=addon.id, app_id=app.id, database=addon.db_name),
        )
    else:
        found = ac.DatabaseInfo(running=False)
    return reply(
        DatabaseView(
            addon=AttachedAddon(
                id=addon.id, name=addon.name, app=views.AppRef(id=app.id, name=app.name)
            ),
            plan=plan.name,
            state=addon.state,
            attachment=addon.attachment_name,
            running=found.running,
            version=found.version,
            size_bytes=found.size_bytes,
            connections=found.connections,
            max_connections=found.max_connections or plan.max_connections,
            tables=found.tables,
            memory_mb=plan.memory_mb,
            storage_gb=plan.storage_gb,
        )
    )
