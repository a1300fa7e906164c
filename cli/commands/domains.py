"""domains, domains:add, domains:remove: the hostnames an app answers on."""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import quote

from slipway.cli import output
from slipway.cli.commands.apps import app_path
from slipway.cli.output import APP_MARK
from slipway.cli.registry import Context, arg, command

_HOSTNAME = arg("hostname", metavar="HOSTNAME", help="e.g. www.example.com")


def _domains_path(app: str) -> str:
    return f"{app_path(app)}/domains"


@command("domains", "list an app's domains", needs_app=True, json=True)
def list_domains(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/domains."""
    app = ctx.app(args)
    domains: list[dict[str, Any]] = ctx.client().get(_domains_path(app)) or []
    if args.json:
        ctx.emit_json(domains)
        return
    default = [d for d in domains if d.get("kind") == "heroku"]
    custom = [d for d in domains if d.get("kind") != "heroku"]
    ctx.out(output.header(f"{app} Router Domain"))
    for domain in default:
        ctx.out(str(domain["hostname"]))
    if custom:
        ctx.out("")
        ctx.out(output.header(f"{app} Custom Domains"))
        rows = [
            {"hostname": str(d["hostname"]), "status": str(d.get("status", ""))} for d in custom
        ]
        ctx.out(output.table(rows, [("hostname", "Domain Name"), ("status", "Status")]))


@command(
    "domains:add",
    "add a custom domain to an app",
    _HOSTNAME,
    examples=("slipway domains:add www.example.com",),
    description="Point the hostname's DNS at the router; HTTPS is served on the router's TLS port.",
    needs_app=True,
)
def add(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/domains."""
    app = ctx.app(args)
    added = ctx.client().post(_domains_path(app), {"hostname": args.hostname, "sni_endpoint": None})
    ctx.note(f"Adding {added['hostname']} to {APP_MARK} {app}... done")


@command(
    "domains:remove",
    "remove a custom domain from an app",
    _HOSTNAME,
    aliases=("domains:delete",),
    needs_app=True,
)
def remove(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /apps/{app}/domains/{hostname}."""
    app = ctx.app(args)
    ctx.client().delete(f"{_domains_path(app)}/{quote(args.hostname.lower(), safe='')}")
    ctx.note(f"Removing {args.hostname.lower()} from {APP_MARK} {app}... done")
