"""tokens, tokens:create, tokens:revoke: the Heroku OAuth authorizations of your account."""

from __future__ import annotations

import argparse
from typing import Any

from slipway.cli import output
from slipway.cli.client import segment
from slipway.cli.errors import UsageError
from slipway.cli.registry import Context, arg, command


def _expires(authorization: dict[str, Any]) -> str:
    token = authorization.get("access_token")
    if isinstance(token, dict) and token.get("expires_in") is not None:
        return f"in {output.duration(int(token['expires_in']))}"
    return output.when(authorization.get("expires_at")) or "never"


@command("tokens", "list your API tokens", aliases=("authorizations",), json=True)
def list_tokens(ctx: Context, args: argparse.Namespace) -> None:
    """GET /oauth/authorizations (the tokens themselves are never shown again)."""
    tokens = ctx.client().get_list("/oauth/authorizations")
    if args.json:
        ctx.emit_json(tokens)
        return
    if not tokens:
        ctx.out("No tokens.")
        return
    rows = [
        {
            "id": str(t.get("id", "")),
            "description": str(t.get("description") or ""),
            "scope": ",".join(t.get("scope") or []),
            "expires": _expires(t),
            "created": output.when(t.get("created_at")),
        }
        for t in tokens
    ]
    columns = [
        ("id", "ID"),
        ("description", "Description"),
        ("scope", "Scope"),
        ("expires", "Expires"),
        ("created", "Created"),
    ]
    ctx.out(output.table(rows, columns))


@command(
    "tokens:create",
    "create an API token (shown only this once)",
    arg("-d", "--description", help="what the token is for"),
    arg("-e", "--expires-in", type=int, metavar="SECONDS", help="lifetime in seconds"),
    arg("-S", "--short", action="store_true", help="print only the token"),
    examples=("slipway tokens:create --description ci --expires-in 86400 --short",),
    aliases=("authorizations:create",),
    json=True,
)
def create_token(ctx: Context, args: argparse.Namespace) -> None:
    """POST /oauth/authorizations; the secret is in access_token.token."""
    if args.expires_in is not None and args.expires_in <= 0:
        raise UsageError("--expires-in must be a positive number of seconds.")
    body: dict[str, Any] = {}
    if args.description:
        body["description"] = args.description
    if args.expires_in is not None:
        body["expires_in"] = args.expires_in
    created = ctx.client().post("/oauth/authorizations", body)
    secret = output.name_of(created.get("access_token"), "token")
    if args.json:
        ctx.emit_json(created)
    elif args.short:
        ctx.out(secret)
    else:
        ctx.out(
            output.key_values(
                [
                    ("ID", str(created.get("id", ""))),
                    ("Description", str(created.get("description") or "")),
                    ("Token", secret),
                    ("Expires", _expires(created)),
                ]
            )
        )
        ctx.note("Store the token now: it cannot be shown again.")


@command(
    "tokens:revoke",
    "revoke an API token",
    arg("id", metavar="ID", help="the token's id, from `slipway tokens`"),
    aliases=("authorizations:revoke",),
)
def revoke_token(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /oauth/authorizations/{id}."""
    ctx.client().delete(f"/oauth/authorizations/{segment(args.id)}")
    ctx.note(f"Revoking token {args.id}... done")
