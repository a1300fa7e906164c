"""pg:psql and pg:credentials:rotate: using a database's credentials.

`pg:psql` opens psql on the database in a one-off dyno (from the PostgreSQL add-on
image, which has psql; the app's own image need not), attached to this terminal like
`slipway run`. SQL piped in (`echo 'select 1' | slipway pg:psql`) or given with `-c`
goes through the dyno's terminal, never into its command line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import stat
import sys
import threading
from urllib.parse import quote

from slipway.cli.commands.apps import app_path
from slipway.cli.commands.pg import default_addon
from slipway.cli.commands.run import RemoteExit, attach
from slipway.cli.errors import UsageError
from slipway.cli.registry import Context, arg, command

_ADDON = arg("addon", metavar="ADDON", nargs="?", help="the database (default: the app's DATABASE)")


def _addon_path(app: str, addon: str) -> str:
    return f"{app_path(app)}/addons/{quote(addon, safe='')}"


def _pipe_from(data: bytes | int) -> int:
    """A pipe's read end carrying `data` (bytes, or all of a file descriptor).

    The terminal bridge waits on its input with the event loop, which takes pipes and
    terminals but not regular files (`< script.sql`)."""
    read, write = os.pipe()

    def feed() -> None:
        with os.fdopen(write, "wb") as out:
            if isinstance(data, bytes):
                out.write(data)
                return
            while chunk := os.read(data, 65536):
                out.write(chunk)

    threading.Thread(target=feed, daemon=True).start()
    return read


@command(
    "pg:psql",
    "open psql on a database (in a one-off dyno)",
    _ADDON,
    arg("--command", "-c", dest="sql", metavar="SQL", help="run SQL and exit"),
    examples=(
        "slipway pg:psql -a hello",
        "echo 'select count(*) from users' | slipway pg:psql -a hello",
        "slipway pg:psql -a hello -c 'select 1'",
    ),
    needs_app=True,
)
def pg_psql(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/addons/{addon}/psql, then bridge the terminal to its websocket."""
    app = ctx.app(args)
    client = ctx.client()
    addon = args.addon or default_addon(client, app)
    stdin = sys.stdin.fileno()
    interactive = args.sql is None and os.isatty(stdin)
    ctx.note(f"Connecting to {addon} on {app}... ")
    dyno = client.post(f"{_addon_path(app, addon)}/psql", {"interactive": interactive})
    source = stdin
    if args.sql is not None:
        # Like `psql -c`: the statement runs whether or not it ends with ";".
        source = _pipe_from(args.sql.encode() + b"\n;\n")
    elif stat.S_ISREG(os.fstat(stdin).st_mode):
        source = _pipe_from(stdin)
    status = asyncio.run(attach(dyno["attach_url"], source, sys.stdout.fileno()))
    if status:
        raise RemoteExit(status)


@command(
    "pg:credentials:rotate",
    "give a database a new password (every connection is cut; a new release)",
    _ADDON,
    arg("--confirm", metavar="APP", help="the app's name: rotating cuts every connection"),
    examples=("slipway pg:credentials:rotate -a hello --confirm hello",),
    needs_app=True,
)
def pg_credentials_rotate(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/addons/{addon}/credentials/rotate with the confirmation."""
    app = ctx.app(args)
    if args.confirm != app:
        raise UsageError(
            f"Rotating cuts every connection to the database and restarts {app}:"
            f" confirm with --confirm {app}."
        )
    client = ctx.client()
    addon = args.addon or default_addon(client, app)
    ctx.note(f"Rotating the credentials of {addon} on {app}... ")
    rotated = client.post(f"{_addon_path(app, addon)}/credentials/rotate", {"confirm": app})
    names = ", ".join(rotated.get("config_vars") or [])
    ctx.out(f"{addon}: new credentials set{f' in {names}' if names else ''}")
