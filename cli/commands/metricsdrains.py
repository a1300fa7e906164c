"""metrics:drains*: scrape credentials for an app's OpenMetrics endpoint.

`metrics:drains:add` prints the endpoint's URL, the token (shown this once: Slipway keeps
only its hash) and a Prometheus `scrape_configs` entry using it. The token can scrape
that one app's metrics and nothing else.
"""

from __future__ import annotations

import argparse
from typing import Any
from urllib.parse import urlsplit

from slipway.cli import output
from slipway.cli.client import segment
from slipway.cli.commands.apps import app_path
from slipway.cli.registry import Context, arg, command


def scrape_config(app: str, url: str, token: str) -> str:
    """A Prometheus `scrape_configs` entry for the endpoint at `url`."""
    parts = urlsplit(url)
    return "\n".join(
        [
            "scrape_configs:",
            f"  - job_name: slipway-{app}",
            f"    scheme: {parts.scheme or 'https'}",
            f"    metrics_path: {parts.path}",
            "    authorization:  # before Prometheus 2.26: bearer_token: <token>",
            "      type: Bearer",
            f"      credentials: {token}",
            "    static_configs:",
            f'      - targets: ["{parts.netloc}"]',
        ]
    )


@command(
    "metrics:drains",
    "list the app's metrics drains (scrape credentials of its OpenMetrics endpoint)",
    needs_app=True,
    json=True,
    examples=("slipway metrics:drains -a hello",),
)
def drains(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/metrics-drains."""
    app = ctx.app(args)
    found: list[Any] = ctx.client().get_list(f"{app_path(app)}/metrics-drains")
    if args.json:
        ctx.emit_json(found)
        return
    if not found:
        ctx.out(f"{app} has no metrics drains.")
        return
    rows = [
        {
            "id": str(d.get("id", "")),
            "created": str(d.get("created_at", "")),
            "by": str(d.get("created_by", "")),
        }
        for d in found
    ]
    ctx.out(output.header(f"{app} Metrics Drains"))
    ctx.out(output.table(rows, [("id", "ID"), ("created", "Created"), ("by", "Added by")]))
    ctx.out(f"Scrape URL: {found[0].get('url', '')}")


@command(
    "metrics:drains:add",
    "create a token that can scrape only this app's metrics (OpenMetrics), shown once",
    needs_app=True,
    json=True,
    examples=("slipway metrics:drains:add -a hello",),
)
def add(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/metrics-drains."""
    app = ctx.app(args)
    made = ctx.client().post(f"{app_path(app)}/metrics-drains")
    if args.json:
        ctx.emit_json(made)
        return
    url, token = str(made.get("url", "")), str(made.get("token", ""))
    ctx.out(f"Added metrics drain {made.get('id')} to {app}.")
    ctx.out(f"URL:   {url}")
    ctx.out(f"Token: {token}")
    ctx.out("Keep the token: it is not shown again. It can scrape this app's metrics only.")
    ctx.out("")
    ctx.out(scrape_config(app, url, token))


@command(
    "metrics:drains:remove",
    "remove a metrics drain: its token stops working at once",
    arg("id", help="the drain's ID (from metrics:drains)"),
    needs_app=True,
    examples=("slipway metrics:drains:remove -a hello 01234567-89ab-...",),
)
def remove(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /apps/{app}/metrics-drains/{id}."""
    app = ctx.app(args)
    removed = ctx.client().delete(f"{app_path(app)}/metrics-drains/{segment(args.id)}")
    ctx.out(f"Removed metrics drain {removed.get('id')} from {app}.")
