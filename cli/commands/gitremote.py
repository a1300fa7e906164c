"""git:remote: point this repository's `slipway` remote at an app."""

from __future__ import annotations

import argparse

from slipway.cli import appselect, git
from slipway.cli.commands.apps import app_path, git_url
from slipway.cli.errors import CliError
from slipway.cli.registry import Context, arg, command


@command(
    "git:remote",
    "add or update the git remote of an app in this repository",
    arg("-a", "--app", metavar="APP", help="the app (default: SLIPWAY_APP or the current remote)"),
    arg(
        "-r",
        "--remote",
        metavar="REMOTE",
        default=git.DEFAULT_REMOTE,
        help=f"the remote's name (default {git.DEFAULT_REMOTE})",
    ),
    description="Afterwards `git push slipway main` deploys, and commands run here pick the app.",
    examples=("slipway git:remote -a hello",),
)
def remote(ctx: Context, args: argparse.Namespace) -> None:
    """Check the app exists, then `git remote add` (or `set-url`) to its git URL."""
    if not git.is_repository(ctx.cwd):
        raise CliError(f"{ctx.cwd} is not a git repository; run `git init` first.")
    app_name = appselect.resolve(
        app=args.app, remote=None, env=ctx.env, cwd=ctx.cwd, api_url=ctx.credentials().api_url
    )
    app = ctx.client().get(app_path(app_name))
    url = git_url(ctx, app)
    git.set_remote(ctx.cwd, args.remote, url)
    ctx.out(f"set git remote {args.remote} to {url}")
