"""login, logout, auth:token, auth:whoami."""

from __future__ import annotations

import argparse
import getpass

from slipway.cli import config
from slipway.cli.client import Client
from slipway.cli.errors import CliError, NotLoggedIn
from slipway.cli.registry import Context, arg, command


@command(
    "login",
    "log in with an API token and store it",
    arg("--api-url", metavar="URL", help=f"the Slipway API (default {config.DEFAULT_API_URL})"),
    arg("--email", help="your email, for your own reference; the token decides who you are"),
    arg("--token", help="the API token (else prompted for, or read from stdin when piped)"),
    description=(
        "The token is checked with GET /account before it is stored in\n"
        "$SLIPWAY_CONFIG_DIR/credentials.json (mode 0600). On a terminal, missing values\n"
        "are prompted for; otherwise the token is read from the first line of stdin."
    ),
    examples=(
        "slipway login",
        "slipway login --api-url http://127.0.0.1:5100 < token.txt",
    ),
)
def login(ctx: Context, args: argparse.Namespace) -> None:
    """Verify a token against the API, then store it with the API URL."""
    stored = config.load_stored(ctx.env)
    default_url = ctx.env.get("SLIPWAY_API_URL") or (stored.api_url if stored else None)
    default_url = default_url or config.DEFAULT_API_URL
    api_url: str = args.api_url or ""
    email: str | None = args.email
    token: str = args.token or ""
    if ctx.interactive:
        api_url = api_url or ctx.ask(f"API URL [{default_url}]: ").strip()
        email = email or ctx.ask("Email: ").strip() or None
        token = token or getpass.getpass("Token: ", stream=ctx.stderr)
    elif not token:
        token = ctx.stdin.readline()
    api_url = config.normalize_api_url(api_url or default_url)
    token = token.strip()
    if not token:
        raise CliError("No token given: pass --token, type it when asked, or pipe it on stdin.")
    account = Client(api_url, token).get("/account")
    account_email = str(account.get("email") or "") if isinstance(account, dict) else ""
    if email and account_email and email.lower() != account_email.lower():
        ctx.note(f"Note: this token belongs to {account_email}, not {email}.")
    path = config.save(
        config.Credentials(api_url=api_url, token=token, email=account_email or email), ctx.env
    )
    ctx.note(f"Logged in as {account_email or 'unknown user'} at {api_url} (saved to {path}).")
    if ctx.env.get("SLIPWAY_API_KEY"):
        ctx.note("Note: SLIPWAY_API_KEY is set and takes precedence over the stored token.")


@command("logout", "forget the stored token")
def logout(ctx: Context, args: argparse.Namespace) -> None:
    """Delete the credentials file; the token itself stays valid until revoked or expired."""
    removed = config.delete(ctx.env)
    ctx.note("Local credentials cleared." if removed else "You were not logged in.")
    if ctx.env.get("SLIPWAY_API_KEY"):
        ctx.note("Note: SLIPWAY_API_KEY is still set in your environment.")


@command(
    "auth:token",
    "print the API token in use",
    description="Revoke it with `slipway tokens:revoke ID` if it leaks.",
)
def token(ctx: Context, args: argparse.Namespace) -> None:
    """Print the effective token (SLIPWAY_API_KEY or the stored one)."""
    credentials = ctx.credentials()
    if not credentials.token:
        raise NotLoggedIn()
    ctx.out(credentials.token)


@command("auth:whoami", "show the account the token belongs to", aliases=("whoami",), json=True)
def whoami(ctx: Context, args: argparse.Namespace) -> None:
    """Ask the API who the token belongs to."""
    account = ctx.client().get("/account")
    if args.json:
        ctx.emit_json(account)
        return
    ctx.out(str(account.get("email") or account.get("id") or ""))
