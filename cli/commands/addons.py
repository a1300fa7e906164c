"""addons, addons:create, addons:info, addons:destroy, pg:info: an app's databases."""

from __future__ import annotations

import argparse
import time
from typing import Any
from urllib.parse import quote

from slipway.cli import output
from slipway.cli.client import Client
from slipway.cli.commands.apps import app_path
from slipway.cli.errors import CliError
from slipway.cli.output import APP_MARK
from slipway.cli.registry import Context, arg, command

Addon = dict[str, Any]

WAIT = 180.0  # seconds addons:create shows progress before leaving it to `slipway addons`
POLL = 0.5

_NAME = arg("name", metavar="ADDON", help="the add-on's name (postgresql-amber-12345) or id")


def _addons_path(app: str) -> str:
    return f"{app_path(app)}/addons"


def _addon_path(app: str, name: str) -> str:
    return f"{_addons_path(app)}/{quote(name, safe='')}"


def _plan(addon: Addon) -> str:
    return output.name_of(addon.get("plan"))


@command("addons", "list an app's add-ons", needs_app=True, json=True)
def list_addons(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/addons."""
    app = ctx.app(args)
    addons: list[Addon] = ctx.client().get(_addons_path(app)) or []
    if args.json:
        ctx.emit_json(addons)
        return
    if not addons:
        ctx.out(f"No add-ons for app {app}.")
        return
    rows = [
        {
            "name": str(a.get("name", "")),
            "plan": _plan(a),
            "as": ", ".join(a.get("config_vars") or []),
            "state": str(a.get("state", "")),
        }
        for a in addons
    ]
    columns = [("name", "Add-on"), ("plan", "Plan"), ("as", "Config vars"), ("state", "State")]
    ctx.out(output.table(rows, columns))


def wait_provisioned(ctx: Context, client: Client, app: str, addon: Addon) -> Addon:
    """Poll the add-on until it is provisioned, printing a dot per poll on stderr."""
    deadline = time.monotonic() + float(ctx.env.get("SLIPWAY_ADDON_WAIT") or WAIT)
    ctx.stderr.write(f"Creating {addon['name']} on {APP_MARK} {app}")
    ctx.stderr.flush()
    while addon.get("state") == "provisioning":
        message = str(addon.get("provision_message") or "")
        if message.startswith("Provisioning failed"):
            ctx.note(" failed")
            raise CliError(f"{message} Destroy it with `slipway addons:destroy {addon['name']}`.")
        if time.monotonic() >= deadline:
            ctx.note(" still provisioning")
            ctx.note(f"Check with `slipway addons:info {addon['name']}`.")
            return addon
        time.sleep(POLL)
        ctx.stderr.write(".")
        ctx.stderr.flush()
        addon = client.get(_addon_path(app, str(addon["id"])))
    ctx.note(" done")
    return addon


@command(
    "addons:create",
    "create an add-on (a PostgreSQL database) and attach it to an app",
    arg("plan", metavar="PLAN", help="postgresql:mini, postgresql:standard or postgresql:premium"),
    arg("--name", metavar="NAME", help="the add-on's name (default: postgresql-<word>-<number>)"),
    arg("--as", dest="attachment", metavar="NAME", help="the attachment: its var is NAME_URL"),
    arg("--wait", action="store_true", help="wait until provisioned (the default)", default=True),
    arg("--no-wait", dest="wait", action="store_false", help="return while it provisions"),
    examples=("slipway addons:create postgresql:standard",),
    description=(
        "The first database is attached as DATABASE (DATABASE_URL), the next ones as"
        " SLIPWAY_POSTGRESQL_<WORD> (…_URL); setting it makes a new release."
    ),
    needs_app=True,
    json=True,
)
def create(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/addons, then follow the add-on until it is provisioned."""
    app = ctx.app(args)
    client = ctx.client()
    body: dict[str, Any] = {"plan": args.plan}
    if args.name:
        body["name"] = args.name
    if args.attachment:
        body["attachment"] = {"name": args.attachment}
    addon: Addon = client.post(_addons_path(app), body)
    if args.wait:
        addon = wait_provisioned(ctx, client, app, addon)
    if args.json:
        ctx.emit_json(addon)
        return
    ctx.out(f"{addon['name']} ({_plan(addon)}) is {addon.get('state')}")
    if addon.get("state") == "provisioned":
        ctx.note(f"Created {addon['name']} as {', '.join(addon.get('config_vars') or [])}")


@command("addons:info", "show an add-on", _NAME, needs_app=True, json=True)
def info(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/addons/{addon}."""
    app = ctx.app(args)
    addon: Addon = ctx.client().get(_addon_path(app, args.name))
    if args.json:
        ctx.emit_json(addon)
        return
    ctx.out(output.header(str(addon.get("name"))))
    pairs = [
        ("Plan", _plan(addon)),
        ("Attachments", ", ".join(addon.get("config_vars") or [])),
        ("App", output.name_of(addon.get("app"))),
        ("State", str(addon.get("state", ""))),
        ("Created at", output.when(addon.get("created_at"))),
        ("Message", str(addon.get("provision_message") or "")),
    ]
    ctx.out(output.key_values(pairs))


@command(
    "addons:destroy",
    "destroy an add-on and all its data",
    _NAME,
    arg("--confirm", metavar="APP", help="the app's name, to skip the confirmation prompt"),
    examples=("slipway addons:destroy postgresql-amber-12345 -a hello --confirm hello",),
    description="Removes its config var (a new release), then the database and its volume.",
    aliases=("addons:remove",),
    needs_app=True,
)
def destroy(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /apps/{app}/addons/{addon} once the user has typed the app's name."""
    app = ctx.app(args)
    confirmation: str | None = args.confirm
    if confirmation is None:
        if ctx.interactive:
            ctx.note(f" ▸    WARNING: This destroys {args.name} and all its data.")
            ctx.note(f" ▸    To proceed, type {app} or re-run this command with --confirm {app}")
        confirmation = ctx.ask("> " if ctx.interactive else "").strip()
    if confirmation != app:
        raise CliError(f"Confirmation {confirmation!r} did not match {app}. Aborted.")
    gone: Addon = ctx.client().delete(_addon_path(app, args.name))
    ctx.note(f"Destroying {gone['name']} on {APP_MARK} {app}... done")


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    scaled = float(size)
    for unit in ("kB", "MB", "GB"):
        scaled /= 1024
        if scaled < 1024 or unit == "GB":
            break
    return f"{scaled:.1f} {unit}"


@command(
    "pg:info",
    "show an app's databases: plan, state, size and connections",
    arg("name", metavar="ADDON", nargs="?", help="one database (default: all of the app's)"),
    needs_app=True,
    json=True,
)
def pg_info(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/addons/{addon}/database for each database of the app."""
    app = ctx.app(args)
    client = ctx.client()
    names = [args.name] if args.name else [a["name"] for a in client.get(_addons_path(app)) or []]
    found = [client.get(f"{_addon_path(app, name)}/database") for name in names]
    if args.json:
        ctx.emit_json(found)
        return
    if not found:
        ctx.out(f"{app} has no databases.")
        return
    for position, db in enumerate(found):
        if position:
            ctx.out("")
        ctx.out(output.header(f"{db['attachment']}_URL ({output.name_of(db['addon'])})"))
        pairs = [
            ("Plan", str(db["plan"])),
            ("Status", "Available" if db["running"] else str(db["state"]).capitalize()),
            ("PG Version", str(db.get("version") or "")),
            ("Data Size", _size(int(db.get("size_bytes") or 0))),
            ("Tables", str(db.get("tables", 0))),
            ("Connections", f"{db.get('connections', 0)}/{db.get('max_connections', 0)}"),
            ("Memory", f"{db.get('memory_mb')} MB"),
            ("Storage", f"{db.get('storage_gb')} GB (a guide, not enforced)"),
        ]
        ctx.out(output.key_values(pairs))
