"""webhooks:* (an app's webhooks, Heroku's commands) and admin:webhooks* (the platform's).

A webhook POSTs what happens to an app (`api:release`, `api:build`, `dyno`, `alert`) to a
URL, signed with HMAC-SHA256 under its secret (`Heroku-Webhook-Hmac-SHA256`). Without
`--secret` the CLI makes one and prints it once: keep it where the receiver can check
signatures; Slipway never shows it again.
"""

from __future__ import annotations

import argparse
import secrets
from typing import Any

from slipway.cli import output
from slipway.cli.client import segment
from slipway.cli.commands.apps import app_path
from slipway.cli.errors import UsageError
from slipway.cli.registry import Context, arg, command

ADMIN = "/admin"
LEVELS = ("notify", "sync")


def _base(ctx: Context, args: argparse.Namespace, admin: bool) -> tuple[str, str]:
    """The path the webhooks live under and how to name their owner in messages."""
    if admin:
        return ADMIN, "the platform"
    app = ctx.app(args)
    return app_path(app), app


def _include(value: str) -> list[str]:
    found = [part.strip() for part in value.split(",") if part.strip()]
    if not found:
        raise UsageError("--include names at least one entity, e.g. api:release,alert")
    return found


def _when(value: Any) -> str:
    return str(value) if value else "-"


def _list(ctx: Context, args: argparse.Namespace, admin: bool) -> None:
    base, owner = _base(ctx, args, admin)
    found = ctx.client().get_list(f"{base}/webhooks")
    if args.json:
        ctx.emit_json(found)
        return
    if not found:
        ctx.out(f"{owner} has no webhooks.")
        return
    rows = [
        {
            "id": str(h.get("id", "")),
            "url": str(h.get("url", "")),
            "include": ",".join(h.get("include", [])),
            "level": str(h.get("level", "")),
        }
        for h in found
    ]
    ctx.out(output.header(f"{owner} Webhooks"))
    columns = [("id", "Webhook ID"), ("url", "URL"), ("include", "Include"), ("level", "Level")]
    ctx.out(output.table(rows, columns))


def _add(ctx: Context, args: argparse.Namespace, admin: bool) -> None:
    base, owner = _base(ctx, args, admin)
    secret = args.secret or secrets.token_hex(32)
    body: dict[str, Any] = {
        "url": args.url,
        "include": _include(args.include),
        "level": args.level,
        "secret": secret,
    }
    if args.authorization:
        body["authorization"] = args.authorization
    made = ctx.client().post(f"{base}/webhooks", body)
    if args.json:
        ctx.emit_json(made)
        return
    ctx.out(f"Added webhook {made.get('id')} to {owner}.")
    if not args.secret:
        ctx.out(output.header("Webhook Signing Secret"))
        ctx.out(secret)
        ctx.out(
            "Keep it: receivers check Heroku-Webhook-Hmac-SHA256 with it; it is not shown again."
        )


def _update(ctx: Context, args: argparse.Namespace, admin: bool) -> None:
    base, owner = _base(ctx, args, admin)
    body: dict[str, Any] = {}
    if args.url:
        body["url"] = args.url
    if args.include:
        body["include"] = _include(args.include)
    if args.level:
        body["level"] = args.level
    if args.secret:
        body["secret"] = args.secret
    if args.authorization is not None:
        body["authorization"] = args.authorization
    if not body:
        raise UsageError(
            "Say what to change: --url, --include, --level, --secret or --authorization"
        )
    done = ctx.client().patch(f"{base}/webhooks/{segment(args.id)}", body)
    if args.json:
        ctx.emit_json(done)
        return
    ctx.out(f"Updated webhook {done.get('id')} of {owner}.")


def _remove(ctx: Context, args: argparse.Namespace, admin: bool) -> None:
    base, owner = _base(ctx, args, admin)
    removed = ctx.client().delete(f"{base}/webhooks/{segment(args.id)}")
    ctx.out(f"Removed webhook {removed.get('id')} ({removed.get('url')}) from {owner}.")


def _deliveries(ctx: Context, args: argparse.Namespace, admin: bool) -> None:
    base, owner = _base(ctx, args, admin)
    found = ctx.client().get_list(f"{base}/webhook-deliveries")
    if args.status:
        found = [d for d in found if d.get("status") == args.status]
    if args.json:
        ctx.emit_json(found)
        return
    if not found:
        ctx.out(f"{owner} has no webhook deliveries.")
        return
    rows = []
    for d in found:
        last = d.get("last_attempt") or {}
        rows.append(
            {
                "id": str(d.get("id", "")),
                "created": _when(d.get("created_at")),
                "include": str((d.get("event") or {}).get("include", "")),
                "status": str(d.get("status", "")),
                "attempts": str(d.get("num_attempts", 0)),
                "last": str(last.get("code") or last.get("error_class") or "-"),
                "next": _when(d.get("next_attempt_at")),
            }
        )
    ctx.out(output.header(f"{owner} Webhook Deliveries"))
    columns = [
        ("id", "Delivery ID"),
        ("created", "Created"),
        ("include", "Event"),
        ("status", "Status"),
        ("attempts", "Attempts"),
        ("last", "Last"),
        ("next", "Next Attempt"),
    ]
    ctx.out(output.table(rows, columns))


def _events(ctx: Context, args: argparse.Namespace, admin: bool) -> None:
    base, owner = _base(ctx, args, admin)
    found = ctx.client().get_list(f"{base}/webhook-events")
    if args.json:
        ctx.emit_json(found)
        return
    if not found:
        ctx.out(f"{owner} has no webhook events.")
        return
    rows = [
        {
            "id": str(e.get("id", "")),
            "created": _when(e.get("created_at")),
            "include": str(e.get("include", "")),
            "action": str((e.get("payload") or {}).get("action", "")),
        }
        for e in found
    ]
    ctx.out(output.header(f"{owner} Webhook Events"))
    columns = [
        ("id", "Event ID"),
        ("created", "Created"),
        ("include", "Include"),
        ("action", "Action"),
    ]
    ctx.out(output.table(rows, columns))


_ADD_ARGS = (
    arg("-u", "--url", required=True, help="where to POST (https://)"),
    arg("-i", "--include", required=True, help="comma-separated: api:release,api:build,dyno,alert"),
    arg("-l", "--level", choices=LEVELS, default="sync", help="sync retries; notify tries once"),
    arg("-s", "--secret", help="the signing secret (default: one is made and printed once)"),
    arg("-t", "--authorization", help="an Authorization header value sent with each delivery"),
)
_UPDATE_ARGS = (
    arg("id", metavar="ID", help="the webhook's id"),
    arg("-u", "--url", help="a new URL"),
    arg("-i", "--include", help="the new comma-separated entities"),
    arg("-l", "--level", choices=LEVELS),
    arg("-s", "--secret", help="a new signing secret"),
    arg("-t", "--authorization", help='a new Authorization value ("" removes it)'),
)
_ID = arg("id", metavar="ID", help="the webhook's id")
_STATUS = arg("--status", choices=("pending", "retrying", "failed", "succeeded"), help="only these")


@command("webhooks", "list an app's webhooks", needs_app=True, json=True)
def webhooks(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/webhooks."""
    _list(ctx, args, admin=False)


@command(
    "webhooks:add",
    "send an app's events to a URL, signed",
    *_ADD_ARGS,
    examples=("slipway webhooks:add -u https://hooks.example.com/slipway -i api:release,alert",),
    needs_app=True,
    json=True,
)
def webhooks_add(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/webhooks."""
    _add(ctx, args, admin=False)


@command("webhooks:update", "change an app's webhook", *_UPDATE_ARGS, needs_app=True, json=True)
def webhooks_update(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /apps/{app}/webhooks/{id}."""
    _update(ctx, args, admin=False)


@command("webhooks:remove", "remove an app's webhook", _ID, needs_app=True)
def webhooks_remove(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /apps/{app}/webhooks/{id}."""
    _remove(ctx, args, admin=False)


@command(
    "webhooks:deliveries",
    "list an app's webhook deliveries, newest first",
    _STATUS,
    needs_app=True,
    json=True,
)
def webhooks_deliveries(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/webhook-deliveries."""
    _deliveries(ctx, args, admin=False)


@command("webhooks:events", "list an app's webhook events, newest first", needs_app=True, json=True)
def webhooks_events(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/webhook-events."""
    _events(ctx, args, admin=False)


@command("admin:webhooks", "list the platform's webhooks (platform alerts)", json=True)
def admin_webhooks(ctx: Context, args: argparse.Namespace) -> None:
    """GET /admin/webhooks."""
    _list(ctx, args, admin=True)


@command(
    "admin:webhooks:add",
    "send platform alerts to a URL, signed",
    *_ADD_ARGS,
    examples=("slipway admin:webhooks:add -u https://ops.example.com/alerts -i alert",),
    json=True,
)
def admin_webhooks_add(ctx: Context, args: argparse.Namespace) -> None:
    """POST /admin/webhooks."""
    _add(ctx, args, admin=True)


@command("admin:webhooks:update", "change a platform webhook", *_UPDATE_ARGS, json=True)
def admin_webhooks_update(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /admin/webhooks/{id}."""
    _update(ctx, args, admin=True)


@command("admin:webhooks:remove", "remove a platform webhook", _ID)
def admin_webhooks_remove(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /admin/webhooks/{id}."""
    _remove(ctx, args, admin=True)


@command("admin:webhooks:deliveries", "list the platform's webhook deliveries", _STATUS, json=True)
def admin_webhooks_deliveries(ctx: Context, args: argparse.Namespace) -> None:
    """GET /admin/webhook-deliveries."""
    _deliveries(ctx, args, admin=True)
