"""pg:backups:verify: restore a backup into a throwaway database and check it.

The platform checks every manifest's signature, the hash chain, every stored object's
SHA-256 and the WAL's continuity, then restores the backup in a database nobody uses,
runs pg_verifybackup, waits for recovery and compares the row counts with those taken at
capture. The outcome is recorded on the backup (`pg:backups` shows a failure) and in the
audit log. A failed verification exits with status 1.
"""

from __future__ import annotations

import argparse
import re
from typing import Any
from urllib.parse import quote

from slipway.cli import output
from slipway.cli.client import Client
from slipway.cli.commands.pg import CAPTURE_TIMEOUT, _waiting, addon_path, default_addon
from slipway.cli.errors import CliError
from slipway.cli.registry import Context, arg, command

BACKUP_ID = re.compile(r"^[bB]?\d+\Z")


def backup_and_addon(first: str | None, second: str | None) -> tuple[str, str | None]:
    """("b001" or "latest", ADDON or None) from `[BACKUP] [ADDON]` given in either order."""
    if first is not None and second is None and not BACKUP_ID.match(first):
        return "latest", first  # only an add-on was named
    return first or "latest", second


@command(
    "pg:backups:verify",
    "restore a backup into a throwaway database and check it (default: the latest)",
    arg("backup", metavar="BACKUP", nargs="?", help="the backup id (b001; default: the latest)"),
    arg("addon", metavar="ADDON", nargs="?", help="the database (default: the app's DATABASE)"),
    needs_app=True,
    json=True,
)
def verify(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/addons/{addon}/backups/{backup}/actions/verify, waiting for it."""
    client = ctx.client()
    app = ctx.app(args)
    backup, addon = backup_and_addon(args.backup, args.addon)
    addon = addon or default_addon(client, app)
    slow = Client(client.api_url, client.token, timeout=CAPTURE_TIMEOUT + 60)
    path = f"{addon_path(app, addon)}/backups/{quote(backup, safe='')}/actions/verify"
    found: dict[str, Any] = _waiting(ctx, f"Verifying {backup} of {addon}", lambda: slow.post(path))
    if args.json:
        ctx.emit_json(found)
    else:
        shown = found.get("backup") or {}
        ctx.out(output.header(f"Verification of {shown.get('id', backup)} of {addon}"))
        rows = [
            {
                "check": str(c.get("name") or ""),
                "status": str(c.get("status") or ""),
                "detail": str(c.get("detail") or ""),
            }
            for c in found.get("checks") or []
        ]
        ctx.out(
            output.table(rows, [("check", "Check"), ("status", "Status"), ("detail", "Detail")])
        )
        ctx.out("")
        ctx.out(f"Result: {str(found.get('verified') or 'unknown').upper()}")
    if found.get("verified") != "passed":
        raise CliError(f"Backup {backup} of {addon} failed verification.")
