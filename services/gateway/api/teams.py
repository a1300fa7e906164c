"""Teams and their members; the team's key (rotation, crypto-shredding).

Every app belongs to a team and every user has a personal team, created with
the user, so `POST /apps {name}` works without naming one. A team always keeps
at least one owner. Break-glass access grants (`grants.py`) are asked for by a
platform admin and listed and revoked here by the team.
"""

from __future__ import annotations

import time

from aiohttp import web

from slipway.contracts import keyring
from slipway.contracts.gateway import TEAM_CREATED, TEAM_SHREDDED, TeamCreated, TeamShredded
from slipway.libs.errors import Conflict, Gone, NotFound
from slipway.services.gateway.api import grants
from slipway.services.gateway.core import store
from slipway.services.gateway.core.names import check_name, personal_team_base
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.core.store import new_uuid, timestamp
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import (
    Action,
    Role,
    actor,
    principal,
    require,
    require_admin,
    team_for,
)
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.schemas import ConfirmTeam, CreateTeam, MemberBody
from slipway.services.gateway.outbox.changes import Change, change

routes = Routes("teams")


# ---- domain -----------------------------------------------------------------------------


async def create_team(
    tx: Change, name: str, owner: store.User, *, personal: bool = False
) -> store.Team:
    """A new team with `owner` as its owner; 422 if the name is taken."""
    if await store.team_name_taken(tx.conn, name):
        raise InvalidParams("Name is already taken.")
    at = timestamp()
    team = store.Team(new_uuid(), name, personal, at, at, None)
    await store.insert_team(tx.conn, team)
    await store.upsert_member(tx.conn, new_uuid(), team.id, owner.id, Role.OWNER, at)
    tx.audit(team.id, "team.create", details={"name": name, "owner": owner.email})
    tx.emit(TEAM_CREATED, TeamCreated(team_id=team.id, name=name, actor=tx.actor.email))
    return team


async def personal_team_name(conn: store.Conn, email: str) -> str:
    """The first free name of the form <local-part>, <local-part>-2, ..."""
    base = personal_team_base(email)
    candidate, n = base, 1
    while await store.team_name_taken(conn, candidate):
        n += 1
        candidate = f"{base[:26]}-{n}"
    return candidate


def check_role_change(my_role: str, current: str | None, new: str | None) -> None:
    """Only owners grant or take away the owner role; roles must be known."""
    if new is not None and new not in set(Role):
        raise InvalidParams(f"Unknown role {new!r}: use one of owner, admin, member, viewer.")
    if Role.OWNER in (current, new):
        require(my_role, Action.DESTROY, "grant or remove the owner role")


async def ensure_an_owner_remains(conn: store.Conn, team_id: str, member: store.Member) -> None:
    if member.role == Role.OWNER and await store.count_owners(conn, team_id) <= 1:
        raise Conflict("A team needs at least one owner: make someone else owner first.")


def team_view(team: store.Team, role: str | None, default_team_id: str | None) -> views.Team:
    return views.Team(
        id=team.id,
        name=team.name,
        role=role,
        default=team.id == default_team_id,
        created_at=team.created_at,
        updated_at=team.updated_at,
        shredded_at=team.shredded_at,
    )


def member_view(member: store.Member) -> views.TeamMember:
    return views.TeamMember(
        id=member.id,
        email=member.email,
        role=member.role,
        created_at=member.created_at,
        updated_at=member.updated_at,
        user=views.MemberUser(id=member.user_id, email=member.email, name=member.name),
    )


# ---- teams ------------------------------------------------------------------------------


@routes.post("/teams", summary="Create a team", body=CreateTeam, response=views.Team, status=201)
async def create(request: web.Request) -> web.Response:
    body = await read_body(request, CreateTeam)
    user = principal(request).user
    check_name("team", body.name)
    async with change(request.app[GATEWAY], actor(request)) as tx:
        team = await create_team(tx, body.name, user)
    return reply(team_view(team, Role.OWNER, user.default_team_id), 201)


@routes.get("/teams", summary="List your teams", response=list[views.Team])
async def list_teams(request: web.Request) -> web.Response:
    user = principal(request).user
    teams = await store.teams_of(request.app[GATEWAY].reader, user.id)
    return reply([team_view(team, role, user.default_team_id) for team, role in teams])


@routes.get("/teams/{team}", summary="Info for a team", response=views.Team)
async def info(request: web.Request) -> web.Response:
    team, role = await team_for(request, request.match_info["team"], Action.READ, "read it")
    return reply(team_view(team, role, principal(request).user.default_team_id))


# ---- members ------------------------------------------------------------------------------


@routes.get("/teams/{team}/members", summary="List members", response=list[views.TeamMember])
async def list_members(request: web.Request) -> web.Response:
    team, _ = await team_for(request, request.match_info["team"], Action.READ, "read it")
    members = await store.list_members(request.app[GATEWAY].reader, team.id)
    return reply([member_view(m) for m in members])


async def _set_member(request: web.Request, *, create: bool, update: bool) -> web.Response:
    gw = request.app[GATEWAY]
    team, my_role = await team_for(
        request, request.match_info["team"], Action.MANAGE, "manage members"
    )
    body = await read_body(request, MemberBody)
    user = await store.get_user(gw.reader, body.email)
    if user is None:
        raise NotFound(f"Couldn't find a user with email {body.email!r}.")
    async with change(gw, actor(request)) as tx:
        current = await store.get_member(tx.conn, team.id, user.id)
        if current is not None and not update:
            raise Conflict(f"{user.email} is already a member of {team.name}.")
        if current is None and not create:
            raise NotFound(f"{user.email} is not a member of {team.name}.")
        check_role_change(my_role, current.role if current else None, body.role)
        if current is not None and body.role != Role.OWNER:
            await ensure_an_owner_remains(tx.conn, team.id, current)
        await store.upsert_member(tx.conn, new_uuid(), team.id, user.id, body.role, timestamp())
        action = "member.update" if current else "member.add"
        tx.audit(team.id, action, details={"email": user.email, "role": body.role})
        member = await store.get_member(tx.conn, team.id, user.id)
    assert member is not None
    # POST creates (201); PUT, Heroku's "create or update", answers 200 either way.
    return reply(member_view(member), 201 if not update else 200)


@routes.put(
    "/teams/{team}/members",
    summary="Add a member or change their role",
    body=MemberBody,
    response=views.TeamMember,
)
async def put_member(request: web.Request) -> web.Response:
    return await _set_member(request, create=True, update=True)


@routes.post(
    "/teams/{team}/members",
    summary="Add a member",
    body=MemberBody,
    response=views.TeamMember,
    status=201,
)
async def add_member(request: web.Request) -> web.Response:
    return await _set_member(request, create=True, update=False)


@routes.patch(
    "/teams/{team}/members",
    summary="Change a member's role",
    body=MemberBody,
    response=views.TeamMember,
)
async def update_member(request: web.Request) -> web.Response:
    return await _set_member(request, create=False, update=True)


@routes.delete(
    "/teams/{team}/members/{member}", summary="Remove a member", response=views.TeamMember
)
async def remove_member(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    team, my_role = await team_for(
        request, request.match_info["team"], Action.MANAGE, "manage members"
    )
    async with change(gw, actor(request)) as tx:
        member = await store.get_member(tx.conn, team.id, request.match_info["member"])
        if member is None:
            raise NotFound("Couldn't find that member.")
        check_role_change(my_role, member.role, None)
        await ensure_an_owner_remains(tx.conn, team.id, member)
        await store.delete_member(tx.conn, team.id, member.user_id)
        tx.audit(team.id, "member.remove", details={"email": member.email})
    return reply(member_view(member))


# ---- the team's key -------------------------------------------------------------------------


@routes.post(
    "/teams/{team}/actions/rotate-key",
    summary="Rotate the team's key-encryption key",
    response=views.KeyRotation,
    extension=True,
)
async def rotate_key(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    team, _ = await team_for(
        request, request.match_info["team"], Action.MANAGE, "rotate the team's key"
    )
    if team.shredded_at:
        raise Gone(f"The key of team {team.name} was destroyed on {team.shredded_at}.")
    rotated = await gw.bus.call(keyring.KEK_ROTATE, keyring.RotateKek(team_id=team.id))
    async with change(gw, actor(request)) as tx:
        tx.audit(team.id, "team.key.rotate", details={"kek_version": str(rotated.version)})
    return reply(
        views.KeyRotation(
            team=views.NamedRef(id=team.id, name=team.name), kek_version=rotated.version
        )
    )


@routes.post(
    "/teams/{team}/actions/shred",
    body=ConfirmTeam,
    response=views.Team,
    extension=True,
    summary="Destroy the team's key: its encrypted data becomes unreadable, for good",
)
async def shred(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    team, role = await team_for(
        request, request.match_info["team"], Action.DESTROY, "destroy the team's key"
    )
    body = await read_body(request, ConfirmTeam)
    if body.confirm != team.name:
        raise InvalidParams(f'This cannot be undone: confirm with {{"confirm": "{team.name}"}}.')
    if team.shredded_at:
        raise Gone(f"The key of team {team.name} was already destroyed on {team.shredded_at}.")
    who = actor(request)
    await gw.bus.call(
        keyring.TEAM_SHRED, keyring.ShredTeam(team_id=team.id, reason=f"requested by {who.email}")
    )
    async with change(gw, who) as tx:
        await store.mark_team_shredded(tx.conn, team.id, timestamp())
        tx.audit(team.id, "team.shred")
        tx.emit(TEAM_SHREDDED, TeamShredded(team_id=team.id, name=team.name, actor=who.email))
        shredded = await store.get_team(tx.conn, team.id)
    assert shredded is not None
    return reply(team_view(shredded, role, principal(request).user.default_team_id))


# ---- break-glass access grants ----------------------------------------------------------------


@routes.post(
    "/teams/{team}/access-grants",
    summary="Break-glass: a platform admin's time-boxed access to a team (reason required)",
    body=grants.CreateGrant,
    response=grants.AccessGrant,
    status=201,
    extension=True,
)
async def create_grant(request: web.Request) -> web.Response:
    require_admin(request)
    gw = request.app[GATEWAY]
    body = await read_body(request, grants.CreateGrant)
    team = await store.get_team(gw.reader, request.match_info["team"])
    if team is None:
        raise NotFound("Couldn't find that team.")
    async with change(gw, actor(request)) as tx:
        grant = await grants.create(tx, team, principal(request).user, body)
    return reply(grants.view(grant, team, time.time()), 201)


@routes.get(
    "/teams/{team}/access-grants",
    summary="Break-glass access grants made on the team, newest first",
    response=list[grants.AccessGrant],
    extension=True,
)
async def list_grants(request: web.Request) -> web.Response:
    team, _ = await team_for(request, request.match_info["team"], Action.READ, "read it")
    now = time.time()
    found = await grants.of_team(request.app[GATEWAY].reader, team.id)
    return reply([grants.view(grant, team, now) for grant in found])


@routes.delete(
    "/teams/{team}/access-grants/{grant}",
    summary="Revoke a break-glass access grant at once",
    response=grants.AccessGrant,
    extension=True,
)
async def revoke_grant(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    team, _ = await team_for(
        request, request.match_info["team"], Action.MANAGE, "revoke access grants"
    )
    async with change(gw, actor(request)) as tx:
        grant = await grants.get(tx.conn, team.id, request.match_info["grant"])
        if grant is None:
            raise NotFound("Couldn't find that access grant.")
        grant = await grants.revoke(tx, grant)
    return reply(grants.view(grant, team, time.time()))
