"""logs, drains and metrics: an app's log stream, where its logs are shipped, its dynos' load."""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import msgspec

from slipway.cli import output
from slipway.cli.client import segment
from slipway.cli.commands.apps import app_path
from slipway.cli.errors import CliError, UsageError
from slipway.cli.registry import Context, arg, command
from slipway.contracts.log_shipper import LogEntry
from slipway.libs.crypto import KEY_SIZE, Binding, DecryptionFailed, open_sealed

SOURCES = ("app", "heroku", "api", "router")
MAX_LINES = 1500
_ENTRIES = msgspec.msgpack.Decoder(list[LogEntry])


def session_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /apps/{app}/log-sessions body for `slipway logs`' flags."""
    if not 0 <= args.num <= MAX_LINES:
        raise UsageError(f"-n/--num must be between 0 and {MAX_LINES}, not {args.num}.")
    body: dict[str, Any] = {"lines": args.num, "tail": bool(args.tail)}
    if args.dyno:
        body["dyno"] = args.dyno
    if args.source:
        body["source"] = args.source
    return body


def _stream(ctx: Context, url: str, tail: bool) -> None:
    # The URL is the credential: no token goes with it. A tail may stay silent for long.
    request = urllib.request.Request(url, headers={"User-Agent": "slipway-cli"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=None if tail else 60) as answer:  # noqa: S310
            for raw in answer:
                ctx.stdout.write(raw.decode("utf-8", "replace"))
                ctx.stdout.flush()
    except urllib.error.HTTPError as exc:
        raise CliError(f"The log session failed: HTTP {exc.code}.") from None
    except (TimeoutError, urllib.error.URLError, ConnectionError) as exc:
        raise CliError(f"The log stream broke off: {exc}.") from None


@command(
    "logs",
    "display recent log output (and follow it with --tail)",
    arg("-n", "--num", type=int, default=100, help="how many lines of history (default 100)"),
    arg("-t", "--tail", action="store_true", help="keep streaming new lines"),
    arg("-d", "--dyno", help="only this dyno (web.1) or process type (web)"),
    arg("-s", "--source", choices=SOURCES, help="only lines from this source"),
    examples=("slipway logs -n 200", "slipway logs --tail --dyno web.1 --source app"),
    needs_app=True,
)
def logs(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/log-sessions, then read its logplex_url until it ends (or Ctrl-C)."""
    body = session_body(args)
    app = ctx.app(args)
    session = ctx.client().post(f"{app_path(app)}/log-sessions", body)
    try:
        _stream(ctx, str(session["logplex_url"]), bool(args.tail))
    except KeyboardInterrupt:
        return


def read_private_key(path: Path) -> bytes:
    """A 32-byte X25519 private key from a file: raw, hex or base64."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CliError(f"Cannot read the key file {path}: {exc.strerror}.") from None
    if len(raw) == KEY_SIZE:
        return raw
    text = raw.decode("ascii", "replace").strip()
    with contextlib.suppress(ValueError):
        if len(text) == 2 * KEY_SIZE:
            return bytes.fromhex(text)
        decoded = base64.b64decode(text, validate=True)
        if len(decoded) == KEY_SIZE:
            return decoded
    raise CliError(f"{path} does not hold a 32-byte private key (raw, hex or base64).")


def open_archive_batch(private_key: bytes, batch: dict[str, Any]) -> list[LogEntry]:
    """The lines of one sealed batch, opened with the team's private key."""
    place = Binding(team=batch["team_id"], app=batch["app_id"], kind="logs", record=batch["id"])
    try:
        sealed = open_sealed(private_key, base64.b64decode(batch["box"]), place)
    except DecryptionFailed as exc:
        raise CliError(f"Cannot open log batch {batch['id']}: {exc}") from None
    return _ENTRIES.decode(zlib.decompress(sealed))


@command(
    "logs:export",
    "print the stored logs sealed to your team's own key, opening them with its private key",
    arg("--key", required=True, type=Path, help="file holding the X25519 private key"),
    description="Only for teams that registered a public key: the platform cannot read"
    " those logs, so they are opened here, on your machine.",
    needs_app=True,
)
def export(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/log-archive page by page; open each batch locally."""
    private_key = read_private_key(args.key)
    app = ctx.app(args)
    after = ""  # the server's cursor: the last seq exported of each host
    while True:
        page = ctx.client().get(f"{app_path(app)}/log-archive?after={quote(after)}")
        for batch in page.get("batches", []):
            for entry in open_archive_batch(private_key, batch):
                ctx.out(text_line(entry))
        for notice in page.get("notices", []):
            ctx.note(notice)
        after = str(page.get("after", ""))
        if not page.get("more"):
            return


def text_line(entry: LogEntry) -> str:
    """`2026-11-27T21:00:00.123456+00:00 app[web.1]: text`."""
    at = datetime.datetime.fromtimestamp(entry.timestamp, datetime.UTC)
    return f"{at.isoformat(timespec='microseconds')} {entry.source}[{entry.dyno}]: {entry.text}"


def _drain_rows(drains: list[dict[str, Any]]) -> list[dict[str, str]]:
    return [
        {
            "url": str(d.get("url", "")),
            "token": str(d.get("token", "")),
            # Why a drain is not shipping ("refused: ..." by the egress guard, "failing: ...").
            "status": str(d.get("status", "")),
        }
        for d in drains
    ]


@command("drains", "list an app's log drains", needs_app=True, json=True)
def drains(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/log-drains."""
    app = ctx.app(args)
    found = ctx.client().get_list(f"{app_path(app)}/log-drains")
    if args.json:
        ctx.emit_json(found)
        return
    if not found:
        ctx.out(f"{app} has no log drains.")
        return
    ctx.out(output.header(f"{app} Drains"))
    columns = [("url", "URL"), ("token", "Token"), ("status", "Status")]
    ctx.out(output.table(_drain_rows(found), columns))


@command(
    "drains:add",
    "ship an app's logs to a syslog+tls:// or https:// endpoint",
    arg("url", metavar="URL"),
    examples=("slipway drains:add syslog+tls://logs.example.com:6514",),
    needs_app=True,
    json=True,
)
def drains_add(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/log-drains."""
    app = ctx.app(args)
    drain = ctx.client().post(f"{app_path(app)}/log-drains", {"url": args.url})
    if args.json:
        ctx.emit_json(drain)
        return
    ctx.out(f"Successfully added drain {drain.get('url')} (token {drain.get('token')}).")


@command(
    "drains:remove",
    "stop shipping an app's logs to a drain",
    arg("drain", metavar="URL_OR_ID", help="the drain's URL, id or token"),
    needs_app=True,
)
def drains_remove(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /apps/{app}/log-drains/{drain}."""
    app = ctx.app(args)
    removed = ctx.client().delete(f"{app_path(app)}/log-drains/{segment(args.drain)}")
    ctx.out(f"Successfully removed drain {removed.get('url')}.")


def _cell(value: Any, unit: str = "") -> str:
    """A series value for the table: `-` where nothing was measured."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}{unit}"
    return f"{value}{unit}"


def _series(ctx: Context, app: str, period: str, *, as_json: bool) -> None:
    found = ctx.client().get(f"{app_path(app)}/metrics/series?period={period}") or {}
    if as_json:
        ctx.emit_json(found)
        return
    # Steps before the app existed are all null: left out, the table starts with the app.
    points = [p for p in found.get("points", []) if p.get("requests") is not None]
    rows = [
        {
            "at": time.strftime("%H:%M", time.gmtime(int(p.get("at", 0)))),
            "cpu": _cell(p.get("cpu_percent"), "%"),
            "memory": _cell(p.get("memory_mb")),
            "requests": _cell(p.get("requests")),
            "statuses": "/".join(_cell(p.get(f"status_{n}xx")) for n in range(2, 6)),
            "p50": _cell(p.get("p50_ms")),
            "p95": _cell(p.get("p95_ms")),
        }
        for p in points
    ]
    columns = [
        ("at", "UTC"),
        ("cpu", "CPU"),
        ("memory", "Memory MB"),
        ("requests", "Requests"),
        ("statuses", "2xx/3xx/4xx/5xx"),
        ("p50", "p50 ms"),
        ("p95", "p95 ms"),
    ]
    step = int(found.get("step", 0))
    ctx.out(f"{app} over the last {period}, one row per {step // 60} min:")
    ctx.out(output.table(rows, columns))


def _age(at: float) -> str:
    return f"{max(0, int(time.time() - at))}s ago"


@command(
    "metrics",
    "show each dyno's latest CPU, memory and restarts, or the app's over a period",
    arg(
        "--period",
        choices=("1h", "24h"),
        help="the app's CPU, memory, requests and response times per minute (1h) or 5 min (24h)",
    ),
    needs_app=True,
    json=True,
)
def metrics(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/metrics, or GET /apps/{app}/metrics/series?period= with --period."""
    app = ctx.app(args)
    if args.period:
        _series(ctx, app, args.period, as_json=args.json)
        return
    found = ctx.client().get(f"{app_path(app)}/metrics") or {}
    if args.json:
        ctx.emit_json(found)
        return
    rows = [
        {
            "dyno": str(s.get("dyno")),
            "load": f"{s.get('load_avg_1m', 0):.2f}",
            "memory": f"{s.get('memory_total_mb', 0):.1f}/{s.get('memory_quota_mb', 0):.0f} MB",
            "restarts": str(s.get("restarts", 0)),
            "sampled": _age(float(s.get("at", 0))),
        }
        for s in found.get("dynos", [])
    ]
    if not rows:
        ctx.out(f"No metrics for {app} yet: they are sampled from running dynos.")
        return
    columns = [
        ("dyno", "Dyno"),
        ("load", "Load 1m"),
        ("memory", "Memory"),
        ("restarts", "Restarts"),
        ("sampled", "Sampled"),
    ]
    ctx.out(output.table(rows, columns))


def _retention_line(app: str, found: dict[str, Any]) -> str:
    days = float(found.get("retention_days", 0))
    unit = "day" if days == 1 else "days"
    source = " (the platform default)" if found.get("default") else ""
    return f"{app} keeps its log history for {days:g} {unit}{source}."


@command(
    "logs:retention",
    "show or set how long an app's log history is kept",
    arg("--days", type=float, help="keep log history this many days (1 to 365)"),
    arg("--default", action="store_true", help="go back to the platform default"),
    examples=("slipway logs:retention --days 30", "slipway logs:retention --default"),
    description="History older than this is deleted; each app's history is also bounded"
    " in size, oldest first. Ship logs elsewhere for longer with `slipway drains:add`.",
    needs_app=True,
    json=True,
)
def retention(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/log-settings, or PATCH it with --days / --default."""
    if args.days is not None and args.default:
        raise UsageError("Give either --days or --default, not both.")
    app = ctx.app(args)
    path = f"{app_path(app)}/log-settings"
    if args.days is None and not args.default:
        found = ctx.client().get(path)
    else:
        found = ctx.client().patch(path, {"retention_days": args.days})
    if args.json:
        ctx.emit_json(found)
        return
    ctx.out(_retention_line(app, found))
