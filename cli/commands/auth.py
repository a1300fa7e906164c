"""login, logout, auth:token, auth:whoami; auth:invite-code and auth:join (a first token);
users:invite/disable/enable and access:grant/grants/revoke (break-glass).

A new user's first token comes from an invitation that only they can redeem:
`auth:invite-code` makes a secret, keeps it in the config dir (0600) and prints
its SHA-256 for the platform admin, who invites the user with it
(`POST /users/{user}/invitations`); `auth:join` then trades the secret for a
token and logs in. The admin never sees the secret.
"""

from __future__ import annotations

import argparse
import getpass
import hashlib
import json
import os
import secrets
from pathlib import Path

from slipway.cli import config, output
from slipway.cli.client import Client, segment
from slipway.cli.commands import gitcredential
from slipway.cli.errors import ApiError, CliError, NotLoggedIn
from slipway.cli.registry import Context, arg, command


@command(
    "login",
    "log in with an API token and store it",
    arg("--api-url", metavar="URL", help=f"the Slipway API (default {config.DEFAULT_API_URL})"),
    arg("--email", help="your email, for your own reference; the token decides who you are"),
    arg("--token", help="the API token (else prompted for, or read from stdin when piped)"),
    arg(
        "--web",
        action="store_true",
        help="print a one-time link that signs a browser in to the dashboard as you",
    ),
    description=(
        "The token is checked with GET /account before it is stored in\n"
        "$SLIPWAY_CONFIG_DIR/credentials.json (mode 0600). On a terminal, missing values\n"
        "are prompted for; otherwise the token is read from the first line of stdin.\n"
        "With --web (once logged in): a link for the dashboard, good once, for 10 minutes;\n"
        "the page it opens asks for your email before it signs the browser in."
    ),
    examples=(
        "slipway login",
        "slipway login --api-url http://127.0.0.1:5100 < token.txt",
        "slipway login --web",
    ),
)
def login(ctx: Context, args: argparse.Namespace) -> None:
    """Verify a token against the API, then store it with the API URL."""
    if args.web:
        _web_link(ctx)
        return
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
    if gitcredential.install(api_url, ctx.env):
        ctx.note(f"git pushes to {gitcredential.origin(api_url)} use this token (no URL to edit).")
    if ctx.env.get("SLIPWAY_API_KEY"):
        ctx.note("Note: SLIPWAY_API_KEY is set and takes precedence over the stored token.")


def _web_link(ctx: Context) -> None:
    """Print a one-time dashboard sign-in link made with the stored token."""
    link = ctx.client().post("/account/web-login-links")
    if not isinstance(link, dict) or not link.get("url"):
        raise CliError("The API answered no login link.")
    ctx.out(str(link["url"]))
    ctx.note(
        f"Open it in your browser and enter your email; it works once, until {link['expires_at']}."
    )


@command("logout", "forget the stored token")
def logout(ctx: Context, args: argparse.Namespace) -> None:
    """Delete the credentials file; the token itself stays valid until revoked or expired."""
    stored = config.load_stored(ctx.env)
    if stored is not None:
        gitcredential.uninstall(stored.api_url)
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


def _invitation_path(ctx: Context) -> Path:
    return config.config_dir(ctx.env) / "invitation.json"


@command(
    "auth:invite-code",
    "make the code a platform admin needs to invite you (the secret stays here)",
    arg("--email", required=True, help="the email the admin registered you with"),
    description=(
        "Prints the SHA-256 of a new secret kept in $SLIPWAY_CONFIG_DIR/invitation.json\n"
        "(0600). Send the printed code to your platform admin; once invited, run\n"
        "`slipway auth:join`. Running this again replaces the secret."
    ),
    examples=("slipway auth:invite-code --email alice@example.com",),
)
def invite_code(ctx: Context, args: argparse.Namespace) -> None:
    """Create and store the secret; print its verifier."""
    secret = "slpi_" + secrets.token_urlsafe(32)
    path = _invitation_path(ctx)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"email": args.email, "secret": secret}, handle)
    ctx.out(hashlib.sha256(secret.encode()).hexdigest())
    ctx.note("Send this code to your platform admin; then run `slipway auth:join`.")


@command(
    "auth:join",
    "redeem your invitation: get your first token and log in",
    arg("--api-url", metavar="URL", help=f"the Slipway API (default {config.DEFAULT_API_URL})"),
    description="Uses the secret `slipway auth:invite-code` kept; it works once.",
)
def join(ctx: Context, args: argparse.Namespace) -> None:
    """POST /invitations/actions/redeem with the stored secret, then store the token."""
    path = _invitation_path(ctx)
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        raise CliError("No invitation secret here: run `slipway auth:invite-code` first.") from None
    api_url = config.normalize_api_url(
        args.api_url or ctx.env.get("SLIPWAY_API_URL") or config.DEFAULT_API_URL
    )
    body = {"email": stored["email"], "secret": stored["secret"], "description": "slipway login"}
    created = Client(api_url, None).post("/invitations/actions/redeem", body)
    token = str(created["access_token"]["token"])
    saved = config.save(
        config.Credentials(api_url=api_url, token=token, email=stored["email"]), ctx.env
    )
    path.unlink()
    ctx.note(f"Logged in as {stored['email']} at {api_url} (saved to {saved}).")
    gitcredential.install(api_url, ctx.env)


# ---- platform admins: users -------------------------------------------------------------------


@command(
    "users:invite",
    "register a user and invite them with the code they made (platform admins)",
    arg("email", help="the user's email"),
    arg("--code", required=True, help="the code the user's `slipway auth:invite-code` printed"),
    arg("--name", help="the user's full name, for a new user"),
    description=(
        "Creates the user if they do not exist yet, then a one-time invitation that only\n"
        "the holder of the code's secret can redeem (`slipway auth:join`). A user who\n"
        "has signed in before cannot be invited again: nobody takes over an account."
    ),
    examples=("slipway users:invite alice@example.com --code 3f2a...",),
)
def invite(ctx: Context, args: argparse.Namespace) -> None:
    """POST /users when new, then POST /users/{user}/invitations with the verifier."""
    client = ctx.client()
    try:
        client.post("/users", {"email": args.email, "name": args.name})
    except ApiError as exc:
        if exc.status != 422 or "already exists" not in str(exc):
            raise
    invitation = client.post(f"/users/{segment(args.email)}/invitations", {"verifier": args.code})
    ctx.note(
        f"Invited {args.email} until {output.when(invitation.get('expires_at'))}:"
        " they run `slipway auth:join` to log in."
    )


def _set_disabled(ctx: Context, email: str, action: str) -> None:
    ctx.client().post(f"/users/{segment(email)}/actions/{action}")
    ctx.note(f"{email} is {action}d.")


@command(
    "users:disable",
    "disable a user: all their tokens stop working at once (platform admins)",
    arg("email", help="the user's email"),
)
def disable(ctx: Context, args: argparse.Namespace) -> None:
    """POST /users/{user}/actions/disable."""
    _set_disabled(ctx, args.email, "disable")


@command(
    "users:enable",
    "let a disabled user's tokens work again (platform admins)",
    arg("email", help="the user's email"),
)
def enable(ctx: Context, args: argparse.Namespace) -> None:
    """POST /users/{user}/actions/enable."""
    _set_disabled(ctx, args.email, "enable")


# ---- break-glass access grants ------------------------------------------------------------------


@command(
    "access:grant",
    "break-glass: give yourself time-boxed access to a team (platform admins)",
    arg("-t", "--team", required=True, metavar="TEAM", help="the team to open"),
    arg("--reason", required=True, help="why: it goes into the team's audit log"),
    arg("--role", default="viewer", choices=("viewer", "member"), help="default viewer"),
    arg("--minutes", type=int, default=60, help="how long (default 60, at most 1440)"),
    description="The team sees the grant at once in `slipway audit --team` and can revoke it.",
    examples=('slipway access:grant -t acme --reason "INC-42: customer asked"',),
)
def grant(ctx: Context, args: argparse.Namespace) -> None:
    """POST /teams/{team}/access-grants."""
    body = {"reason": args.reason, "role": args.role, "expires_in": args.minutes * 60}
    made = ctx.client().post(f"/teams/{segment(args.team)}/access-grants", body)
    ctx.note(
        f"Access to team {args.team} as {made.get('role')} until"
        f" {output.when(made.get('expires_at'))} (grant {made.get('id')}); recorded in its audit."
    )


_GRANT_COLUMNS = [
    ("id", "Id"),
    ("user", "User"),
    ("role", "Role"),
    ("reason", "Reason"),
    ("expires_at", "Expires"),
    ("state", "State"),
]


@command(
    "access:grants",
    "list the break-glass access grants made on a team",
    arg("-t", "--team", required=True, metavar="TEAM", help="the team"),
    json=True,
)
def grants(ctx: Context, args: argparse.Namespace) -> None:
    """GET /teams/{team}/access-grants."""
    found = ctx.client().get(f"/teams/{segment(args.team)}/access-grants")
    if args.json:
        ctx.emit_json(found)
        return
    rows = [
        {
            "id": str(g.get("id")),
            "user": str((g.get("user") or {}).get("email")),
            "role": str(g.get("role")),
            "reason": str(g.get("reason")),
            "expires_at": output.when(g.get("expires_at")),
            "state": "active"
            if g.get("active")
            else ("revoked" if g.get("revoked_at") else "ended"),
        }
        for g in found
    ]
    ctx.out(output.header(f"Access grants of team {args.team}"))
    ctx.out(output.table(rows, _GRANT_COLUMNS))


@command(
    "access:revoke",
    "end a break-glass access grant at once (team owners and admins)",
    arg("id", help="the grant's id (from access:grants)"),
    arg("-t", "--team", required=True, metavar="TEAM", help="the team"),
)
def revoke(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /teams/{team}/access-grants/{id}."""
    ctx.client().delete(f"/teams/{segment(args.team)}/access-grants/{segment(args.id)}")
    ctx.note(f"Revoked grant {args.id} on team {args.team}.")
