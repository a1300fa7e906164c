"""apps, apps:create, apps:info, apps:rename, apps:destroy, maintenance[:on|:off]."""

from __future__ import annotations

import argparse
from typing import Any

from slipway.cli import git, output
from slipway.cli.client import segment
from slipway.cli.errors import CliError
from slipway.cli.output import APP_MARK
from slipway.cli.registry import Context, arg, command


def app_path(app: str) -> str:
    """The API path of one app."""
    return f"/apps/{segment(app)}"


def git_url(ctx: Context, app: dict[str, Any]) -> str:
    """The app's git URL: the API's `git_url` if it sends one, else `<api url>/<name>.git`."""
    return str(app.get("git_url") or git.app_git_url(ctx.credentials().api_url, app["name"]))


@command(
    "apps",
    "list the apps you can see",
    arg("-t", "--team", metavar="TEAM", help="only the apps of this team"),
    aliases=("apps:list",),
    json=True,
)
def list_apps(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps, optionally narrowed to one team."""
    apps = ctx.client().get_list("/apps")
    if args.team:
        apps = [a for a in apps if output.name_of(a.get("team")) == args.team]
    if args.json:
        ctx.emit_json(apps)
        return
    if not apps:
        ctx.out("You have no apps." if not args.team else f"Team {args.team} has no apps.")
        return
    ctx.out(output.header(f"{args.team} Apps" if args.team else "Apps"))
    rows = [
        {
            "name": str(a.get("name", "")),
            "team": output.name_of(a.get("team")),
            "maintenance": "on" if a.get("maintenance") else "",
            "created": output.when(a.get("created_at")),
        }
        for a in sorted(apps, key=lambda a: str(a.get("name", "")))
    ]
    columns = [
        ("name", "Name"),
        ("team", "Team"),
        ("maintenance", "Maintenance"),
        ("created", "Created"),
    ]
    ctx.out(output.table(rows, columns))


@command(
    "apps:create",
    "create an app",
    arg("name", metavar="NAME", nargs="?", help="the app's name (the API picks one if omitted)"),
    arg("-t", "--team", metavar="TEAM", help="the team that owns the app"),
    arg(
        "--remote",
        metavar="REMOTE",
        default=git.DEFAULT_REMOTE,
        help=f"git remote to add when run inside a repository (default {git.DEFAULT_REMOTE})",
    ),
    arg("--no-remote", action="store_true", help="do not add a git remote"),
    examples=("slipway apps:create hello --team acme",),
    aliases=("create",),
    json=True,
)
def create(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps; inside a git repository, also add the `slipway` remote."""
    body = {key: value for key, value in (("name", args.name), ("team", args.team)) if value}
    app = ctx.client().post("/apps", body)
    if args.json:
        ctx.emit_json(app)
    else:
        ctx.note(f"Creating {APP_MARK} {app['name']}... done")
        urls = [str(app["web_url"])] if app.get("web_url") else []
        ctx.out(" | ".join([*urls, git_url(ctx, app)]))
    if not args.no_remote:
        _add_remote(ctx, args.remote, git_url(ctx, app))


def _add_remote(ctx: Context, name: str, url: str) -> None:
    """Add the remote unless one of that name exists (Heroku leaves an existing one alone)."""
    if not git.is_repository(ctx.cwd):
        return
    existing = {r.name: r.url for r in git.remotes(ctx.cwd)}
    if name not in existing:
        git.set_remote(ctx.cwd, name, url)
        ctx.note(f"Git remote {name} added")
    elif existing[name] != url:
        ctx.note(f"Git remote {name} already points at {existing[name]}; left unchanged.")


@command("apps:info", "show an app's details", needs_app=True, aliases=("info",), json=True)
def info(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}."""
    app = ctx.client().get(app_path(ctx.app(args)))
    if args.json:
        ctx.emit_json(app)
        return
    fields = [
        ("Name", str(app.get("name", ""))),
        ("ID", str(app.get("id", ""))),
        ("Team", output.name_of(app.get("team"))),
        ("Owner", output.name_of(app.get("owner"), "email", "name", "id")),
        ("Maintenance", "on" if app.get("maintenance") else "off"),
        ("Git URL", git_url(ctx, app)),
        ("Web URL", str(app.get("web_url") or "")),
        ("Stack", output.name_of(app.get("stack") or app.get("build_stack"))),
        ("Created", output.when(app.get("created_at"))),
        ("Updated", output.when(app.get("updated_at"))),
        ("Released", output.when(app.get("released_at"))),
    ]
    ctx.out(output.header(str(app.get("name", ""))))
    ctx.out(output.key_values([(key, value) for key, value in fields if value]))


@command(
    "apps:rename",
    "rename an app",
    arg("new_name", metavar="NEWNAME", help="the app's new name"),
    description="Git remotes of this repository that point at the app are updated too.",
    needs_app=True,
)
def rename(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /apps/{app} {name}, then repoint this repository's remotes."""
    old = ctx.app(args)
    app = ctx.client().patch(app_path(old), {"name": args.new_name})
    ctx.note(f"Renaming {old} to {app['name']}... done")
    ctx.out(git_url(ctx, app))
    api_host = git.host_of(ctx.credentials().api_url)
    for remote in git.remotes(ctx.cwd):
        ours = remote.name == git.DEFAULT_REMOTE or git.host_of(remote.url) == api_host
        if ours and git.app_from_url(remote.url) == old:
            url = remote.url.removesuffix(f"{old}.git") + f"{app['name']}.git"
            git.set_remote(ctx.cwd, remote.name, url)
            ctx.note(f"Git remote {remote.name} updated")


@command(
    "apps:destroy",
    "permanently destroy an app",
    arg("target", metavar="APP", nargs="?", help="the app (same as -a)"),
    arg("--confirm", metavar="APP", help="the app's name, to skip the confirmation prompt"),
    description="You must type the app's name to confirm, or pass it with --confirm.",
    examples=("slipway apps:destroy -a hello --confirm hello",),
    aliases=("destroy",),
    needs_app=True,
)
def destroy(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /apps/{app} once the user has typed its name."""
    if args.target and args.app and args.target != args.app:
        raise CliError(f"Two different apps given: {args.target} and {args.app}.")
    app = args.target or ctx.app(args)
    confirmation: str | None = args.confirm
    if confirmation is None:
        if ctx.interactive:
            ctx.note(f" ▸    WARNING: This will permanently delete {APP_MARK} {app}.")
            ctx.note(f" ▸    To proceed, type {app} or re-run this command with --confirm {app}")
        confirmation = ctx.ask("> " if ctx.interactive else "").strip()
    if not confirmation:
        raise CliError(f"Confirmation required: type {app}, or pass --confirm {app}.")
    if confirmation != app:
        raise CliError(f"Confirmation {confirmation!r} did not match {app}. Aborted.")
    ctx.client().delete(app_path(app))
    ctx.note(f"Destroying {APP_MARK} {app}... done")
    for remote in git.remotes(ctx.cwd):
        if remote.name == git.DEFAULT_REMOTE and git.app_from_url(remote.url) == app:
            git.remove_remote(ctx.cwd, remote.name)
            ctx.note(f"Git remote {remote.name} removed")


@command("maintenance", "show whether maintenance mode is on", needs_app=True)
def maintenance(ctx: Context, args: argparse.Namespace) -> None:
    """Print `on` or `off`."""
    app = ctx.client().get(app_path(ctx.app(args)))
    ctx.out("on" if app.get("maintenance") else "off")


@command("maintenance:on", "put an app into maintenance mode", needs_app=True)
def maintenance_on(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /apps/{app} {maintenance: true}."""
    _set_maintenance(ctx, ctx.app(args), enabled=True)


@command("maintenance:off", "take an app out of maintenance mode", needs_app=True)
def maintenance_off(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /apps/{app} {maintenance: false}."""
    _set_maintenance(ctx, ctx.app(args), enabled=False)


def _set_maintenance(ctx: Context, app: str, *, enabled: bool) -> None:
    ctx.client().patch(app_path(app), {"maintenance": enabled})
    verb = "Enabling" if enabled else "Disabling"
    ctx.note(f"{verb} maintenance mode for {APP_MARK} {app}... done")
