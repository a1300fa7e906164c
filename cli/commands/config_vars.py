"""config, config:get, config:set, config:unset."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from slipway.cli import output, specs
from slipway.cli.commands.apps import app_path
from slipway.cli.errors import CliError
from slipway.cli.output import APP_MARK
from slipway.cli.registry import Context, arg, command

_SHELL = arg("-s", "--shell", action="store_true", help="print as KEY=value for a shell or .env")


def _vars_path(app: str) -> str:
    return f"{app_path(app)}/config-vars"


def _shell_line(key: str, value: str) -> str:
    return f"{key}={shlex.quote(value)}"


@command("config", "show an app's config vars", _SHELL, needs_app=True, json=True)
def show(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/config-vars."""
    app = ctx.app(args)
    variables: dict[str, Any] = ctx.client().get(_vars_path(app)) or {}
    if args.json:
        ctx.emit_json(variables)
    elif args.shell:
        for key in sorted(variables):
            ctx.out(_shell_line(key, str(variables[key])))
    else:
        ctx.out(output.header(f"{app} Config Vars"))
        ctx.out(output.key_values([(key, str(variables[key])) for key in sorted(variables)]))


@command(
    "config:get",
    "print one config var's value",
    arg("key", metavar="KEY"),
    _SHELL,
    description="An unset var prints an empty line, as with Heroku.",
    needs_app=True,
)
def get(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/config-vars and print one value."""
    key = specs.check_config_key(args.key)
    variables = ctx.client().get(_vars_path(ctx.app(args))) or {}
    value = variables.get(key)
    text = "" if value is None else str(value)
    ctx.out(_shell_line(key, text) if args.shell else text)


@command(
    "config:set",
    "set config vars and restart the app",
    arg("assignments", metavar="KEY=VALUE", nargs="+", help="a value may itself contain '='"),
    examples=("slipway config:set DEBUG=0 DATABASE_URL='postgres://u:p@h/db?sslmode=require'",),
    aliases=("config:add",),
    needs_app=True,
)
def set_vars(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /apps/{app}/config-vars with the new values."""
    changes = specs.parse_assignments(args.assignments)
    app = ctx.app(args)
    ctx.client().patch(_vars_path(app), changes)
    version = _version(ctx, app)
    ctx.note(f"Setting {_names(changes)} and restarting {APP_MARK} {app}... done{version}")
    ctx.out(output.key_values([(key, changes[key]) for key in sorted(changes)]))


@command(
    "config:unset",
    "remove config vars and restart the app",
    arg("keys", metavar="KEY", nargs="+"),
    aliases=("config:remove",),
    needs_app=True,
)
def unset(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /apps/{app}/config-vars with nulls, which delete."""
    changes: dict[str, None] = {specs.check_config_key(key): None for key in args.keys}
    app = ctx.app(args)
    ctx.client().patch(_vars_path(app), changes)
    version = _version(ctx, app)
    ctx.note(f"Unsetting {_names(changes)} and restarting {APP_MARK} {app}... done{version}")


def _names(changes: dict[str, Any]) -> str:
    keys = list(changes)
    return keys[0] if len(keys) == 1 else ", ".join(keys[:-1]) + f" and {keys[-1]}"


def _version(ctx: Context, app: str) -> str:
    """`, vN` for the release the change produced; the change itself already succeeded."""
    try:
        releases = ctx.client().get_list(f"{app_path(app)}/releases")
    except CliError:
        return ""  # best effort: failing here would misreport a successful change
    versions = [r["version"] for r in releases if isinstance(r.get("version"), int)]
    return f", v{max(versions)}" if versions else ""
