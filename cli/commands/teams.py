"""teams, teams:create, members, members:add, members:set, members:remove."""

from __future__ import annotations

import argparse

from slipway.cli import output
from slipway.cli.client import segment
from slipway.cli.errors import UsageError
from slipway.cli.registry import Context, arg, command

ROLES = ("owner", "admin", "member", "viewer")
_TEAM = arg("-t", "--team", metavar="TEAM", help="the team (default: $SLIPWAY_TEAM)")


def _team(ctx: Context, args: argparse.Namespace) -> str:
    team: str | None = args.team or ctx.env.get("SLIPWAY_TEAM")
    if not team:
        raise UsageError("No team specified: use -t/--team TEAM or set SLIPWAY_TEAM.")
    return team


def _members_path(team: str) -> str:
    return f"/teams/{segment(team)}/members"


@command("teams", "list the teams you belong to", aliases=("teams:list",), json=True)
def list_teams(ctx: Context, args: argparse.Namespace) -> None:
    """GET /teams."""
    teams = ctx.client().get_list("/teams")
    if args.json:
        ctx.emit_json(teams)
        return
    if not teams:
        ctx.out("You are not a member of any team.")
        return
    rows = [{"name": str(t.get("name", "")), "role": str(t.get("role") or "")} for t in teams]
    rows.sort(key=lambda r: r["name"])
    ctx.out(output.table(rows, [("name", "Team"), ("role", "Role")]))


@command(
    "teams:create", "create a team; you become its owner", arg("name", metavar="NAME"), json=True
)
def create_team(ctx: Context, args: argparse.Namespace) -> None:
    """POST /teams {name}."""
    team = ctx.client().post("/teams", {"name": args.name})
    if args.json:
        ctx.emit_json(team)
        return
    ctx.note(f"Creating team {team.get('name', args.name)}... done")


@command("members", "list a team's members", _TEAM, json=True)
def list_members(ctx: Context, args: argparse.Namespace) -> None:
    """GET /teams/{team}/members."""
    team = _team(ctx, args)
    members = ctx.client().get_list(_members_path(team))
    if args.json:
        ctx.emit_json(members)
        return
    rows = [{"email": _email(m), "role": str(m.get("role") or "")} for m in members]
    ctx.out(output.header(f"{team} Members"))
    ctx.out(
        output.table(sorted(rows, key=lambda r: r["email"]), [("email", "Email"), ("role", "Role")])
    )


def _email(member: dict[str, object]) -> str:
    return str(member.get("email") or output.name_of(member.get("user"), "email"))


@command(
    "members:add",
    "add a user to a team",
    arg("email", metavar="EMAIL"),
    _TEAM,
    arg("--role", choices=ROLES, default="member", help="the member's role (default member)"),
    examples=("slipway members:add dev@example.com --role admin --team acme",),
)
def add_member(ctx: Context, args: argparse.Namespace) -> None:
    """POST /teams/{team}/members {email, role}."""
    team = _team(ctx, args)
    ctx.client().post(_members_path(team), {"email": args.email, "role": args.role})
    ctx.note(f"Adding {args.email} to {team} as {args.role}... done")


@command(
    "members:set",
    "change a member's role",
    arg("email", metavar="EMAIL"),
    _TEAM,
    arg("--role", choices=ROLES, required=True, help="the new role"),
)
def set_member(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /teams/{team}/members {email, role}."""
    team = _team(ctx, args)
    ctx.client().patch(_members_path(team), {"email": args.email, "role": args.role})
    ctx.note(f"Setting {args.email} to {args.role} in {team}... done")


@command("members:remove", "remove a user from a team", arg("email", metavar="EMAIL"), _TEAM)
def remove_member(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /teams/{team}/members/{email}."""
    team = _team(ctx, args)
    ctx.client().delete(f"{_members_path(team)}/{segment(args.email)}")
    ctx.note(f"Removing {args.email} from {team}... done")
