"""pg:backups and friends: a database's backups, restores, promote and download.

Restores always make a new add-on (`pg:backups:restore ... --as NAME`), attached next
to the one it copies; `pg:promote NAME` then moves DATABASE_URL to it in one release.
`pg:backups:download` fetches the sealed objects and signed manifests a restore needs
(checking each object's SHA-256 against the listing) and pins the platform's audit keys,
so that `pg:backups:open` can later check and open them with no network at all.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

from slipway.cli import output
from slipway.cli.auditpins import Pins
from slipway.cli.client import ACCEPT, USER_AGENT, Client
from slipway.cli.commands.addons import wait_provisioned
from slipway.cli.commands.apps import app_path
from slipway.cli.commands.audit import parse_keys
from slipway.cli.errors import ApiError, CliError, Unreachable
from slipway.cli.registry import Context, arg, command

T = TypeVar("T")

CAPTURE_TIMEOUT = 3600.0  # seconds: as long as the gateway waits for the backup service
READ_SIZE = 256 * 1024
METADATA = "slipway-backup.json"  # what pg:backups:download wrote, for pg:backups:open

_ADDON = arg("addon", metavar="ADDON", nargs="?", help="the database (default: the app's DATABASE)")
_ADDON_FLAG = arg(
    "--addon", metavar="ADDON", help="the database (default: the app's DATABASE; a destroyed"
    " one by its id)",
)  # fmt: skip


def addon_path(app: str, addon: str) -> str:
    return f"{app_path(app)}/addons/{quote(addon, safe='')}"


def default_addon(client: Client, app: str) -> str:
    """The database attached as DATABASE, else the app's only one."""
    addons: list[dict[str, Any]] = client.get(f"{app_path(app)}/addons") or []
    for addon in addons:
        if "DATABASE_URL" in (addon.get("config_vars") or []):
            return str(addon["name"])
    if len(addons) == 1:
        return str(addons[0]["name"])
    found = "no database" if not addons else "several databases and none as DATABASE"
    raise CliError(f"{app} has {found}: name one (see `slipway addons -a {app}`).")


def _which(ctx: Context, args: argparse.Namespace, client: Client) -> tuple[str, str]:
    app = ctx.app(args)
    return app, args.addon or default_addon(client, app)


def _size(size: object) -> str:
    scaled = float(size) if isinstance(size, int | float) else 0.0
    for unit in ("B", "kB", "MB", "GB"):
        if scaled < 1024 or unit == "GB":
            return f"{scaled:.0f} {unit}" if unit == "B" else f"{scaled:.1f} {unit}"
        scaled /= 1024
    return f"{scaled:.1f} TB"


def _state(backup: dict[str, Any]) -> str:
    state = str(backup.get("state") or "")
    if state == "completed" and backup.get("verified") == "failed":
        return "Completed (verification FAILED)"
    return state.capitalize()


@command(
    "pg:backups",
    "list a database's backups and the state of its continuous archive",
    _ADDON,
    needs_app=True,
    json=True,
)
def backups(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/addons/{addon}/backups and .../wal."""
    client = ctx.client()
    app, addon = _which(ctx, args, client)
    listed: list[dict[str, Any]] = client.get(f"{addon_path(app, addon)}/backups") or []
    wal: dict[str, Any] = client.get(f"{addon_path(app, addon)}/wal") or {}
    if args.json:
        ctx.emit_json({"backups": listed, "wal": wal})
        return
    ctx.out(output.header(f"Backups of {addon}"))
    if not listed:
        ctx.out(f"No backups. Capture one with `slipway pg:backups:capture {addon} -a {app}`.")
    else:
        rows = [
            {
                "id": str(b.get("id")),
                "at": output.when(b.get("created_at")),
                "state": _state(b),
                "size": _size(b.get("stored_size")),
                "kind": str(b.get("kind") or ""),
            }
            for b in listed
        ]
        columns = [("id", "ID"), ("at", "Created at"), ("state", "Status"), ("size", "Size")]
        ctx.out(output.table(rows, [*columns, ("kind", "Kind")]))
    ctx.out("")
    ctx.out(output.header("Continuous protection (WAL archive)"))
    pairs = [
        ("Streaming", "yes" if wal.get("streaming") else "no"),
        ("Last stored at", output.when(wal.get("last_stored_at"))),
        ("Last LSN", str(wal.get("last_lsn") or "")),
        ("Restorable from", output.when(wal.get("earliest_restore_at"))),
    ]
    ctx.out(output.key_values(pairs))


def _waiting(ctx: Context, label: str, work: Callable[[], T]) -> T:
    """Run `work` (one long request) while showing the time it has taken on stderr."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(work)
        while True:
            try:
                result = future.result(timeout=1.0)
                break
            except concurrent.futures.TimeoutError:
                ctx.stderr.write(f"\r{label}... {int(time.monotonic() - started)}s")
                ctx.stderr.flush()
    ctx.stderr.write(f"\r{label}... done ({int(time.monotonic() - started)}s)\n")
    ctx.stderr.flush()
    return result


@command(
    "pg:backups:capture",
    "take a base backup of a database now (waits for it)",
    _ADDON,
    needs_app=True,
    json=True,
)
def capture(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/addons/{addon}/backups, with progress while the backup runs."""
    client = ctx.client()
    app, addon = _which(ctx, args, client)
    slow = Client(client.api_url, client.token, timeout=CAPTURE_TIMEOUT + 60)
    taken: dict[str, Any] = _waiting(
        ctx,
        f"Backing up {addon}",
        lambda: slow.post(f"{addon_path(app, addon)}/backups"),
    )
    if args.json:
        ctx.emit_json(taken)
        return
    ctx.out(f"{taken['id']} of {addon}: {_state(taken)}, {_size(taken.get('stored_size'))} stored")


@command(
    "pg:backups:info",
    "show one backup",
    arg("backup", metavar="BACKUP", help="the backup id (b001)"),
    _ADDON_FLAG,
    needs_app=True,
    json=True,
)
def info(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/addons/{addon}/backups/{backup}."""
    client = ctx.client()
    app, addon = _which(ctx, args, client)
    found: dict[str, Any] = client.get(f"{addon_path(app, addon)}/backups/{args.backup}")
    if args.json:
        ctx.emit_json(found)
        return
    ctx.out(output.header(f"Backup {found['id']} of {output.name_of(found.get('addon'))}"))
    pairs = [
        ("Status", _state(found)),
        ("Kind", str(found.get("kind") or "")),
        ("Started at", output.when(found.get("created_at"))),
        ("Finished at", output.when(found.get("finished_at"))),
        ("Database size", _size(found.get("size"))),
        ("Stored size", _size(found.get("stored_size"))),
        ("WAL", f"{found.get('start_lsn')} - {found.get('end_lsn')}"),
        ("Sealed to", ", ".join(str(r)[:16] for r in found.get("recipients") or [])),
        ("Verified", str(found.get("verified") or "not yet")),
        ("Tables", str(len(found.get("tables") or {}))),
    ]
    if found.get("error"):
        pairs.append(("Error", str(found["error"])))
    ctx.out(output.key_values(pairs))


@command(
    "pg:backups:restore",
    "restore a backup (or a point in time) into a NEW database",
    arg("backup", metavar="BACKUP", nargs="?", help="the backup id (default: the latest)"),
    arg("--to-time", metavar="ISO8601", help="recover up to this time (no offset: UTC)"),
    arg("--as", dest="name", metavar="NAME", required=True, help="the new add-on's name"),
    _ADDON_FLAG,
    arg("--plan", metavar="PLAN", help="the new database's plan (default: the source's)"),
    arg("--no-wait", dest="wait", action="store_false", help="return while it provisions"),
    examples=(
        "slipway pg:backups:restore b003 --as reports-copy -a hello",
        "slipway pg:backups:restore --to-time 2026-12-03T06:30:00+00:00 --as before-the-bug",
    ),
    description=(
        "The new database is attached next to the old one (SLIPWAY_POSTGRESQL_<WORD>_URL);"
        " `slipway pg:promote NAME` then makes it the app's DATABASE_URL."
    ),
    needs_app=True,
    json=True,
)
def restore(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/addons with config.restore_from, then wait until it is provisioned."""
    client = ctx.client()
    app, source = _which(ctx, args, client)
    plan = args.plan
    if not plan:
        try:
            plan = output.name_of(client.get(addon_path(app, source)).get("plan"))
        except ApiError as exc:
            if exc.status != 404:
                raise
            plan = "postgresql"  # a destroyed source: the default plan
    config = {"restore_from": source}
    if args.backup:
        config["backup"] = args.backup
    if args.to_time:
        config["to_time"] = args.to_time
    made: dict[str, Any] = client.post(
        f"{app_path(app)}/addons", {"plan": plan, "name": args.name, "config": config}
    )
    if args.wait:
        made = wait_provisioned(ctx, client, app, made)
    if args.json:
        ctx.emit_json(made)
        return
    ctx.out(f"{made['name']} ({output.name_of(made.get('plan'))}) is {made.get('state')}")
    if made.get("state") == "provisioned":
        ctx.note(
            f"Restored {source} into {made['name']} as {', '.join(made.get('config_vars') or [])}."
            f" Make it the app's DATABASE_URL with `slipway pg:promote {made['name']} -a {app}`."
        )


@command(
    "pg:promote",
    "make a database the app's DATABASE_URL (one release)",
    arg("name", metavar="ADDON", help="the database to promote"),
    needs_app=True,
    json=True,
)
def promote(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/addon-attachments {"addon": NAME, "name": "DATABASE"}."""
    app = ctx.app(args)
    attached: dict[str, Any] = ctx.client().post(
        f"{app_path(app)}/addon-attachments", {"addon": args.name, "name": "DATABASE"}
    )
    if args.json:
        ctx.emit_json(attached)
        return
    ctx.note(f"Promoted {output.name_of(attached.get('addon'))} to DATABASE_URL on {app}.")


# ---- download -------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Refuse redirects: urllib would resend the bearer token to wherever they point."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def safe_relative(key: str) -> Path:
    """A stored object's key as a path inside the download folder (never outside it)."""
    parts = PurePosixPath(key).parts
    if not parts or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise CliError(f"The listing names an object with an unsafe key: {key[:120]!r}.")
    return Path(*parts)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(READ_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


class _Progress:
    """One line on stderr: bytes done out of the total."""

    def __init__(self, ctx: Context, label: str, total: int) -> None:
        self.ctx, self.label, self.total, self.done = ctx, label, max(total, 1), 0
        self.shown = -1

    def add(self, count: int) -> None:
        self.done += count
        percent = min(100, 100 * self.done // self.total)
        if percent == self.shown:
            return  # a line per percent, not per block
        self.shown = percent
        width = 30
        filled = width * percent // 100
        bar = "#" * filled + "." * (width - filled)
        self.ctx.stderr.write(f"\r{self.label} [{bar}] {percent:3d}% {_size(self.done)}")
        self.ctx.stderr.flush()

    def finish(self) -> None:
        self.ctx.stderr.write("\n")
        self.ctx.stderr.flush()


def _fetch(client: Client, url: str, target: Path, item: dict[str, Any], bar: _Progress) -> None:
    """Stream one object into `target`, refusing it unless its SHA-256 is the listed one."""
    split = urlsplit(url)
    path = split.path + (f"?{split.query}" if split.query else "")
    # The listing's URL names the API it came from; the token goes to ours only.
    request = urllib.request.Request(client.api_url + path, method="GET")  # noqa: S310
    request.add_header("Accept", ACCEPT)
    request.add_header("User-Agent", USER_AGENT)
    if client.token:
        request.add_header("Authorization", f"Bearer {client.token}")
    partial = target.with_name(target.name + ".partial")
    digest = hashlib.sha256()
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(request, timeout=client.timeout) as response, partial.open("wb") as out:
            for block in iter(lambda: response.read(READ_SIZE), b""):
                digest.update(block)
                out.write(block)
                bar.add(len(block))
    except urllib.error.HTTPError as exc:
        partial.unlink(missing_ok=True)
        try:
            message = str(json.loads(exc.read()).get("message") or exc)
        except (ValueError, AttributeError, OSError):
            message = str(exc)
        raise ApiError(
            exc.code, f"http_{exc.code}", f"Downloading {item['key']}: {message}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise Unreachable(f"Downloading {item['key']} failed: {exc}.") from None
    if digest.hexdigest() != item.get("sha256"):
        partial.unlink(missing_ok=True)
        raise CliError(
            f"Object {item['key']} arrived with SHA-256 {digest.hexdigest()}, not the listed"
            f" {item.get('sha256')}: it was not kept. Try again; if it persists, the stored"
            " object is damaged."
        )
    os.replace(partial, target)


@command(
    "pg:backups:download",
    "download the sealed objects and signed manifests of a backup (for pg:backups:open)",
    arg("backup", metavar="BACKUP", nargs="?", help="the backup id (default: the latest)"),
    arg("--to-time", metavar="ISO8601", help="the WAL up to this time (default: all of it)"),
    arg("-o", "--output", metavar="DIR", help="where to put them (default: ADDON-BACKUP)"),
    _ADDON_FLAG,
    description=(
        "Every object's SHA-256 is checked against the listing as it arrives; objects\n"
        "already there with the right hash are kept. The platform's audit keys are pinned\n"
        "(as `slipway audit --verify` does) so that `pg:backups:open` checks the manifests'\n"
        "signatures offline."
    ),
    needs_app=True,
)
def download(ctx: Context, args: argparse.Namespace) -> None:
    """GET .../backups/{backup}/objects, then each object's URL, into DIR."""
    client = ctx.client()
    app, addon = _which(ctx, args, client)
    if args.backup:
        backup = args.backup
    else:
        listed = client.get(f"{addon_path(app, addon)}/backups") or []
        done = [b for b in listed if b.get("state") == "completed"]
        if not done:
            raise CliError(f"{addon} has no completed backup to download.")
        backup = str(done[0]["id"])
    query = f"?to_time={quote(args.to_time, safe='')}" if args.to_time else ""
    objects: list[dict[str, Any]] = (
        client.get(f"{addon_path(app, addon)}/backups/{backup}/objects{query}") or []
    )
    if not objects:
        raise CliError(f"{backup} of {addon} lists no objects.")
    pins = Pins.load(ctx.env, ctx.credentials().api_url)  # as `audit --verify` pins them
    served = client.get("/audit/keys")
    parse_keys(served)
    for key_id in pins.check_keys(served):
        ctx.note(f"Pinned audit key {key_id} (first use): a later change to it will fail.")
    pins.save()
    folder = Path(args.output or f"{addon}-{backup}")
    folder.mkdir(parents=True, exist_ok=True)
    bar = _Progress(ctx, f"Downloading {backup}", sum(int(o.get("size") or 0) for o in objects))
    for item in objects:
        target = folder / safe_relative(str(item["key"]))
        if target.exists() and _sha256_of(target) == item.get("sha256"):
            bar.add(int(item.get("size") or 0))
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        _fetch(client, str(item["url"]), target, item, bar)
    bar.finish()
    metadata = {
        "api_url": ctx.credentials().api_url,
        "app": app,
        "addon": addon,
        "backup": backup,
        "to_time": args.to_time or "",
        "objects": objects,
    }
    (folder / METADATA).write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    ctx.note(
        f"Downloaded {output.plural(len(objects), 'object')} of {backup} into {folder}."
        f" Open them with `slipway pg:backups:open {folder} --identity FILE`."
    )
