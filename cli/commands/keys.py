"""keys, keys:add, keys:remove, keys:platform, keys:operator: the age keys a team's backups
are sealed to.

Only public keys (age1...) leave this machine: given an identity file, `keys:add`
derives its recipient here and sends that.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from slipway.cli import output
from slipway.cli.client import segment
from slipway.cli.commands.apps import app_path
from slipway.cli.errors import CliError, UsageError
from slipway.cli.registry import Context, arg, command

_TEAM = arg("-t", "--team", metavar="TEAM", help="the team (default: the app's, or $SLIPWAY_TEAM)")
_RECIPIENT = re.compile(r"\bage1[02-9ac-hj-np-z]{58}\b")


def _team(ctx: Context, args: argparse.Namespace) -> str:
    """-t/--team, else the app's team (-a/--app, git remote), else $SLIPWAY_TEAM."""
    if args.team:
        return str(args.team)
    try:
        app = ctx.app(args)
    except CliError:
        app = ""  # no app chosen: the environment's team, if any
    if app:
        return output.name_of(ctx.client().get(app_path(app)).get("team"))
    if ctx.env.get("SLIPWAY_TEAM"):
        return ctx.env["SLIPWAY_TEAM"]
    raise UsageError("No team specified: use -t/--team TEAM or -a/--app APP.")


def _path(team: str) -> str:
    return f"/teams/{segment(team)}/backup-keys"


def _show(ctx: Context, found: dict[str, Any]) -> None:
    team = output.name_of(found.get("team"))
    ctx.out(output.header(f"Backup keys of team {team}"))
    rows = [
        {
            "fingerprint": str(k.get("fingerprint", ""))[:16],
            "kind": str(k.get("kind", "")),
            "label": str(k.get("label") or ""),
            "recipient": str(k.get("recipient", "")),
        }
        for k in found.get("keys") or []
    ]
    columns = [("fingerprint", "Fingerprint"), ("kind", "Kind"), ("label", "Label")]
    ctx.out(output.table(rows, [*columns, ("recipient", "Recipient")]))
    if found.get("platform_enabled"):
        ctx.out("The platform's key is on: the platform can restore these backups for you.")
    else:
        ctx.out("The platform's key is OFF: only your keys open new backups.")
    if found.get("operator_enabled"):
        ctx.out("The operator's recovery key is on: the operator can open new backups too.")
    else:
        ctx.out("The operator's recovery key is off (`slipway keys:operator --on` to add it).")


def recipient_of(text: str, source: str) -> str:
    """The age recipient `text` is, or holds (a recipients or identity file)."""
    found = _RECIPIENT.findall(text)
    if found:
        return str(found[0])
    from slipway.libs.crypto import age
    from slipway.libs.crypto.errors import InvalidKey

    try:
        identities = age.parse_identity_file(text)
    except InvalidKey:
        raise CliError(
            f"{source} holds no age key: give age1... (`age-keygen -y key.txt` prints it) or"
            " the file `age-keygen` wrote."
        ) from None
    return age.format_recipient(age.public_of(identities[0]))


@command("keys", "list the keys a team's backups are sealed to", _TEAM, needs_app=True, json=True)
def list_keys(ctx: Context, args: argparse.Namespace) -> None:
    """GET /teams/{team}/backup-keys."""
    found = ctx.client().get(_path(_team(ctx, args)))
    if args.json:
        ctx.emit_json(found)
        return
    _show(ctx, found)


@command(
    "keys:add",
    "seal the team's backups to your own age key too",
    arg("key", metavar="age1...|FILE", help="a recipient, or a file holding one (or an identity)"),
    arg("--label", metavar="TEXT", default="", help='what the key is ("laptop", "vault")'),
    _TEAM,
    examples=("age-keygen -o backup-key.txt && slipway keys:add backup-key.txt -t acme",),
    description="Only the public key is sent, even when FILE holds the private one.",
    needs_app=True,
    json=True,
)
def add(ctx: Context, args: argparse.Namespace) -> None:
    """POST /teams/{team}/backup-keys {"recipient", "label"}."""
    text = str(args.key)
    source = "the argument"
    if not text.startswith("age1"):
        try:
            text = Path(text).read_text()
        except OSError as exc:
            raise CliError(f"Cannot read {args.key}: {exc.strerror or exc}.") from None
        source = str(args.key)
    recipient = recipient_of(text, source)
    found = ctx.client().post(
        _path(_team(ctx, args)), {"recipient": recipient, "label": args.label}
    )
    if args.json:
        ctx.emit_json(found)
        return
    ctx.note(f"Added {recipient}: new backups are sealed to it too.")
    _show(ctx, found)


@command(
    "keys:remove",
    "stop sealing new backups to a key",
    arg("fingerprint", metavar="FINGERPRINT", help="as `slipway keys` shows it"),
    _TEAM,
    needs_app=True,
    json=True,
)
def remove(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /teams/{team}/backup-keys/{fingerprint} (a shown prefix is expanded first)."""
    client = ctx.client()
    team = _team(ctx, args)
    listed = client.get(_path(team)).get("keys") or []
    matches = [
        str(k["fingerprint"])
        for k in listed
        if str(k.get("fingerprint", "")).startswith(args.fingerprint.lower())
    ]
    if len(matches) != 1:
        raise CliError(
            f"{'No' if not matches else 'More than one'} key of team {team} has the fingerprint"
            f" {args.fingerprint}: see `slipway keys -t {team}`."
        )
    found = client.delete(f"{_path(team)}/{matches[0]}")
    if args.json:
        ctx.emit_json(found)
        return
    ctx.note(f"Removed key {matches[0][:16]}: backups taken from now on are not sealed to it.")
    _show(ctx, found)


@command(
    "keys:platform",
    "turn the platform-held backup key on or off",
    arg("--on", dest="enabled", action="store_true", default=None, help="the platform can restore"),
    arg("--off", dest="enabled", action="store_false", help="only your keys open new backups"),
    _TEAM,
    description=(
        "Off: new backups are sealed to your keys only; the platform can store them but\n"
        "never read them, and only `pg:backups:download` + `pg:backups:open` restore them."
    ),
    needs_app=True,
    json=True,
)
def platform(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /teams/{team}/backup-keys/platform {"enabled"}."""
    _switch(ctx, args, "platform")


@command(
    "keys:operator",
    "seal new backups to the operator's offline recovery key too, or not",
    arg("--on", dest="enabled", action="store_true", default=None, help="the operator can open"),
    arg("--off", dest="enabled", action="store_false", help="the operator cannot open them"),
    _TEAM,
    description=(
        "On: new backups are also sealed to the platform operator's offline recovery key\n"
        "(if the operator configured one), a way back should every key of yours be lost."
    ),
    needs_app=True,
    json=True,
)
def operator(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /teams/{team}/backup-keys/operator {"enabled"}."""
    _switch(ctx, args, "operator")


def _switch(ctx: Context, args: argparse.Namespace, which: str) -> None:
    """PATCH one of the team's key switches (platform, operator) and show the result."""
    if args.enabled is None:
        raise UsageError("Say --on or --off.")
    found = ctx.client().patch(f"{_path(_team(ctx, args))}/{which}", {"enabled": args.enabled})
    if args.json:
        ctx.emit_json(found)
        return
    _show(ctx, found)
