"""pg:backups:schedule, pg:backups:schedules, pg:backups:unschedule: a database's daily backup.

Every database is backed up daily from the start, at an hour of its own; `--at` moves it,
Heroku's way (`--at '02:00 America/New_York'`: whole hours, any IANA zone).
"""

from __future__ import annotations

import argparse
from typing import Any

from slipway.cli import output
from slipway.cli.commands.apps import app_path
from slipway.cli.commands.pg import addon_path, default_addon
from slipway.cli.errors import CliError
from slipway.cli.registry import Context, arg, command
from slipway.contracts.backup import parse_at

_ADDON = arg("addon", metavar="ADDON", nargs="?", help="the database (default: the app's DATABASE)")


def describe(found: dict[str, Any]) -> str:
    """One line: "daily at 02:00 UTC" (or that it is off), and the retention."""
    retention = found.get("retention") or {}
    kept = [
        f"{n} {unit}"
        for unit, key in (("daily", "daily"), ("weekly", "weekly"), ("monthly", "monthly"))
        if (n := int(retention.get(key) or 0))
    ]
    keeps = f"; keeps {', '.join(kept)}" if kept else ""
    if not found.get("enabled"):
        return f"not scheduled{keeps}"
    default = " (default)" if found.get("default") else ""
    return f"daily at {found.get('at')}{default}{keeps}"


def _schedule_path(app: str, addon: str) -> str:
    return f"{addon_path(app, addon)}/backup-schedule"


@command(
    "pg:backups:schedule",
    "take a database's daily backup at this hour",
    _ADDON,
    arg("--at", metavar="'HH:00 TZ'", required=True, help="e.g. '02:00 UTC', '03:00 Europe/Paris'"),
    needs_app=True,
    json=True,
    description=(
        "Daily base backups run at this hour in this time zone (daylight saving included).\n"
        "Until it is set, a database is backed up daily at an hour chosen for it. How long\n"
        "backups are kept depends on the plan (see pg:backups:schedules)."
    ),
    examples=("slipway pg:backups:schedule DATABASE --at '02:00 America/Los_Angeles' -a hello",),
)
def schedule(ctx: Context, args: argparse.Namespace) -> None:
    """PUT /apps/{app}/addons/{addon}/backup-schedule."""
    try:
        hour, zone = parse_at(args.at)
    except ValueError as exc:
        raise CliError(f"--at {exc}.") from None
    client = ctx.client()
    app = ctx.app(args)
    addon = args.addon or default_addon(client, app)
    found: dict[str, Any] = client.request(
        "PUT", _schedule_path(app, addon), {"hour": hour, "timezone": zone}
    )
    if args.json:
        ctx.emit_json(found)
        return
    ctx.note(f"Scheduled daily backups of {addon} at {found.get('at')}.")
    ctx.out(f"{addon}: {describe(found)}")


@command(
    "pg:backups:schedules",
    "when the app's databases are backed up, and for how long backups are kept",
    needs_app=True,
    json=True,
)
def schedules(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/backup-schedules."""
    client = ctx.client()
    app = ctx.app(args)
    found: list[dict[str, Any]] = client.get(f"{app_path(app)}/backup-schedules") or []
    if args.json:
        ctx.emit_json(found)
        return
    ctx.out(output.header(f"Backup schedules of {app}"))
    if not found:
        ctx.out(f"{app} has no database.")
        return
    for item in found:
        name = str((item.get("addon") or {}).get("name") or "")
        ctx.out(f"{name}: {describe(item)}")
        if item.get("next_at"):
            ctx.out(f"  next: {output.when(item.get('next_at'))}")
        if item.get("last_expiry"):
            ctx.out(f"  last expiry: {item.get('last_expiry')}")


@command(
    "pg:backups:unschedule",
    "stop a database's daily backups (manual captures and the WAL archive go on)",
    _ADDON,
    needs_app=True,
    json=True,
    description=(
        "Without daily base backups, a restore replays ever more WAL from the last one,\n"
        "and the WAL since the oldest kept backup stays stored: schedule again soon."
    ),
)
def unschedule(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /apps/{app}/addons/{addon}/backup-schedule."""
    client = ctx.client()
    app = ctx.app(args)
    addon = args.addon or default_addon(client, app)
    found: dict[str, Any] = client.delete(_schedule_path(app, addon))
    if args.json:
        ctx.emit_json(found)
        return
    ctx.note(f"Stopped the daily backups of {addon}.")
    ctx.out(f"{addon}: {describe(found)}")
