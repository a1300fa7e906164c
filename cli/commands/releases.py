"""releases, releases:info, releases:rollback."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from slipway.cli import output, specs
from slipway.cli.client import segment
from slipway.cli.commands.apps import app_path
from slipway.cli.errors import CliError
from slipway.cli.output import APP_MARK
from slipway.cli.registry import Context, arg, command

Release = dict[str, Any]


def _releases_path(app: str) -> str:
    return f"{app_path(app)}/releases"


def _version(release: Release) -> int:
    version = release.get("version")
    return version if isinstance(version, int) else 0


def current_release(releases: Sequence[Release]) -> Release | None:
    """The release marked `current`, else the newest succeeded one, else the newest."""
    marked = [r for r in releases if r.get("current")]
    if marked:
        return max(marked, key=_version)
    succeeded = [r for r in releases if r.get("status", "succeeded") == "succeeded"]
    candidates = succeeded or list(releases)
    return max(candidates, key=_version) if candidates else None


def previous_release(releases: Sequence[Release]) -> Release | None:
    """The release `releases:rollback` goes back to by default: the last good one before current.

    Failed or pending releases are skipped, and so are those the API marks as not
    eligible for rollback.
    """
    current = current_release(releases)
    if current is None:
        return None
    earlier = [
        r
        for r in releases
        if _version(r) < _version(current)
        and r.get("status", "succeeded") == "succeeded"
        and r.get("eligible_for_rollback", True) is not False
    ]
    return max(earlier, key=_version) if earlier else None


def _description(release: Release) -> str:
    text = str(release.get("description") or "")
    status = release.get("status")
    return f"{text} ({status})" if status and status != "succeeded" else text


@command(
    "releases",
    "list an app's releases, newest first",
    arg("-n", "--num", type=int, default=15, metavar="N", help="how many (default 15)"),
    needs_app=True,
    json=True,
)
def list_releases(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/releases."""
    app = ctx.app(args)
    releases = sorted(ctx.client().get_list(_releases_path(app)), key=_version, reverse=True)
    if args.json:
        ctx.emit_json(releases[: args.num] if args.num > 0 else releases)
        return
    if not releases:
        ctx.out(f"{app} has no releases.")
        return
    current = current_release(releases)
    suffix = f" - Current: v{_version(current)}" if current else ""
    ctx.out(output.header(f"{app} Releases{suffix}"))
    rows = [
        {
            "version": f"v{_version(r)}",
            "description": _description(r),
            "user": output.name_of(r.get("user"), "email", "id"),
            "created": output.when(r.get("created_at")),
        }
        for r in (releases[: args.num] if args.num > 0 else releases)
    ]
    columns = [
        ("version", "Version"),
        ("description", "Description"),
        ("user", "User"),
        ("created", "Created"),
    ]
    ctx.out(output.table(rows, columns))


@command(
    "releases:info",
    "show one release (default: the current one)",
    arg("release", metavar="RELEASE", nargs="?", help="a version such as v3, or a release id"),
    needs_app=True,
    json=True,
)
def info(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/releases/{id_or_version}."""
    app = ctx.app(args)
    if args.release:
        release = ctx.client().get(
            f"{_releases_path(app)}/{segment(specs.parse_release(args.release))}"
        )
    else:
        release = current_release(ctx.client().get_list(_releases_path(app)))
        if release is None:
            raise CliError(f"{app} has no releases yet.")
    if args.json:
        ctx.emit_json(release)
        return
    ctx.out(output.header(f"Release v{_version(release)}"))
    fields = [
        ("Change", str(release.get("description") or "")),
        ("By", output.name_of(release.get("user"), "email", "id")),
        ("When", output.when(release.get("created_at"))),
        ("Status", str(release.get("status") or "")),
        ("Current", "yes" if release.get("current") else "no"),
        ("ID", str(release.get("id") or "")),
    ]
    ctx.out(output.key_values([(key, value) for key, value in fields if value]))


@command(
    "releases:rollback",
    "go back to an earlier release's image and config",
    arg(
        "release",
        metavar="RELEASE",
        nargs="?",
        help="the version to return to (default: the last good release before the current one)",
    ),
    description="A rollback creates a new release carrying the old release's image and config.",
    examples=("slipway releases:rollback", "slipway releases:rollback v4"),
    aliases=("rollback",),
    needs_app=True,
)
def rollback(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/releases {"release": <id of the target>}."""
    app = ctx.app(args)
    client = ctx.client()
    if args.release:
        target = client.get(f"{_releases_path(app)}/{segment(specs.parse_release(args.release))}")
    else:
        found = previous_release(client.get_list(_releases_path(app)))
        if found is None:
            raise CliError(f"{app} has no earlier release to roll back to.")
        target = found
    # The id names the target unambiguously; a version is only sent if the API gave no id.
    reference = str(target.get("id") or target["version"])
    created = client.post(_releases_path(app), {"release": reference})
    ctx.note(f"Rolling back {APP_MARK} {app} to v{_version(target)}... done, v{_version(created)}")
