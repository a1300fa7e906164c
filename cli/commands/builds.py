"""builds, builds:info, builds:output, builds:cache:purge."""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

from slipway.cli import output
from slipway.cli.client import USER_AGENT, segment
from slipway.cli.commands.apps import app_path
from slipway.cli.errors import CliError
from slipway.cli.output import APP_MARK
from slipway.cli.registry import Context, arg, command

Build = dict[str, Any]
STREAM_TIMEOUT = 3600.0  # a quiet build may print nothing for a long while


def _builds_path(app: str) -> str:
    return f"{app_path(app)}/builds"


def newest_first(builds: Sequence[Build]) -> list[Build]:
    """Builds by creation time, newest first (the API lists them oldest first)."""
    indexed = list(enumerate(builds))
    indexed.sort(key=lambda pair: (str(pair[1].get("created_at") or ""), pair[0]), reverse=True)
    return [build for _, build in indexed]


def _version(build: Build) -> str:
    blob = build.get("source_blob") or {}
    version = str(blob.get("version") or "")
    return version[:12] if len(version) == 40 else version


def _release(build: Build) -> str:
    release = build.get("release")
    return f"v{release['version']}" if isinstance(release, dict) and "version" in release else ""


def _find(ctx: Context, app: str, ident: str | None) -> Build:
    client = ctx.client()
    if ident:
        found: Build = client.get(f"{_builds_path(app)}/{segment(ident)}")
        return found
    builds = newest_first(client.get_list(_builds_path(app)))
    if not builds:
        raise CliError(f"{app} has no builds yet: `git push slipway main` makes one.")
    return builds[0]


@command(
    "builds",
    "list an app's builds, newest first",
    arg("-n", "--num", type=int, default=15, metavar="N", help="how many (default 15)"),
    needs_app=True,
    json=True,
)
def list_builds(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/builds."""
    app = ctx.app(args)
    builds = newest_first(ctx.client().get_list(_builds_path(app)))
    shown = builds[: args.num] if args.num > 0 else builds
    if args.json:
        ctx.emit_json(shown)
        return
    if not builds:
        ctx.out(f"{app} has no builds.")
        return
    ctx.out(output.header(f"{app} Builds"))
    rows = [
        {
            "id": str(b.get("id") or ""),
            "status": str(b.get("status") or ""),
            "version": _version(b),
            "release": _release(b),
            "user": output.name_of(b.get("user"), "email", "id"),
            "created": output.when(b.get("created_at")),
        }
        for b in shown
    ]
    columns = [
        ("id", "ID"),
        ("status", "Status"),
        ("version", "Version"),
        ("release", "Release"),
        ("user", "User"),
        ("created", "Created"),
    ]
    ctx.out(output.table(rows, columns))


@command(
    "builds:info",
    "show one build (default: the newest)",
    arg("build", metavar="BUILD", nargs="?", help="a build id"),
    needs_app=True,
    json=True,
)
def info(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/builds/{id}."""
    build = _find(ctx, ctx.app(args), args.build)
    if args.json:
        ctx.emit_json(build)
        return
    ctx.out(output.header(f"Build {build.get('id', '')}"))
    fields = [
        ("Status", str(build.get("status") or "")),
        ("Error", str(build.get("error") or "")),
        ("Version", _version(build)),
        ("Release", _release(build)),
        ("By", output.name_of(build.get("user"), "email", "id")),
        ("When", output.when(build.get("created_at"))),
        ("Output", str(build.get("output_stream_url") or "")),
    ]
    ctx.out(output.key_values([(key, value) for key, value in fields if value]))


@command(
    "builds:output",
    "print a build's output, following it while it runs (default: the newest build)",
    arg("build", metavar="BUILD", nargs="?", help="a build id"),
    needs_app=True,
)
def build_output(ctx: Context, args: argparse.Namespace) -> None:
    """Stream the build's `output_stream_url` (signed: no token is sent) to stdout."""
    build = _find(ctx, ctx.app(args), args.build)
    url = str(build.get("output_stream_url") or "")
    if not url.startswith(("http://", "https://")):
        raise CliError("This build has no output stream.")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=STREAM_TIMEOUT) as stream:  # noqa: S310
            while chunk := stream.read1(65536):
                ctx.stdout.write(chunk.decode(errors="replace"))
                ctx.stdout.flush()
    except urllib.error.HTTPError as exc:
        raise CliError(f"The build's output is not available (HTTP {exc.code}).") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"Lost the build's output stream: {exc}") from None
    if build.get("status") == "failed" and ctx.stdout is sys.stdout:
        ctx.note(f"Build {build.get('id')} failed.")


@command(
    "builds:cache:purge",
    "empty the app's build cache: the next build starts cold",
    arg("--confirm", metavar="APP", help="the app's name, to skip the confirmation prompt"),
    examples=("slipway builds:cache:purge -a hello --confirm hello",),
    needs_app=True,
)
def purge(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /apps/{app}/build-cache once the user has typed the app's name."""
    app = ctx.app(args)
    confirmation: str | None = args.confirm
    if confirmation is None:
        if ctx.interactive:
            ctx.note(f" ▸    This empties the build cache of {APP_MARK} {app}.")
            ctx.note(f" ▸    To proceed, type {app} or re-run this command with --confirm {app}")
        confirmation = ctx.ask("> " if ctx.interactive else "").strip()
    if confirmation != app:
        raise CliError(f"Confirmation required: type {app}, or pass --confirm {app}.")
    ctx.client().delete(f"{app_path(app)}/build-cache")
    ctx.note(f"Purging the build cache of {APP_MARK} {app}... done")
