"""features, features:info, features:enable, features:disable: an app's switches (Heroku's)."""

from __future__ import annotations

import argparse
from typing import Any

from slipway.cli import output
from slipway.cli.client import segment
from slipway.cli.output import APP_MARK
from slipway.cli.registry import Context, arg, command


def _path(app: str, feature: str | None = None) -> str:
    path = f"/apps/{segment(app)}/features"
    return f"{path}/{segment(feature)}" if feature else path


@command("features", "list an app's features and whether each is on", needs_app=True, json=True)
def features(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/features."""
    found: list[dict[str, Any]] = ctx.client().get(_path(ctx.app(args))) or []
    if args.json:
        ctx.emit_json(found)
        return
    ctx.out(output.header(f"{ctx.app(args)} Features"))
    width = max((len(str(f.get("name", ""))) for f in found), default=0)
    for feature in found:
        mark = "[+]" if feature.get("enabled") else "[ ]"
        name = str(feature.get("name", ""))
        ctx.out(f"{mark} {name:<{width}}  {feature.get('display_name', '')}")


@command(
    "features:info",
    "show what a feature does",
    arg("feature", metavar="FEATURE"),
    needs_app=True,
    json=True,
)
def info(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/features/{feature}."""
    found: dict[str, Any] = ctx.client().get(_path(ctx.app(args), args.feature))
    if args.json:
        ctx.emit_json(found)
        return
    ctx.out(output.header(str(found.get("name", ""))))
    ctx.out(
        output.key_values(
            [
                ("Enabled", "yes" if found.get("enabled") else "no"),
                ("Name", str(found.get("display_name", ""))),
                ("Description", str(found.get("description", ""))),
            ]
        )
    )


@command(
    "features:enable",
    "switch a feature on",
    arg("feature", metavar="FEATURE"),
    needs_app=True,
    examples=("slipway features:enable hsts -a hello",),
)
def enable(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /apps/{app}/features/{feature} {enabled: true}."""
    _switch(ctx, ctx.app(args), args.feature, enabled=True)


@command(
    "features:disable", "switch a feature off", arg("feature", metavar="FEATURE"), needs_app=True
)
def disable(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /apps/{app}/features/{feature} {enabled: false}."""
    _switch(ctx, ctx.app(args), args.feature, enabled=False)


def _switch(ctx: Context, app: str, feature: str, *, enabled: bool) -> None:
    ctx.client().patch(_path(app, feature), {"enabled": enabled})
    verb = "Enabling" if enabled else "Disabling"
    ctx.note(f"{verb} {feature} for {APP_MARK} {app}... done")
