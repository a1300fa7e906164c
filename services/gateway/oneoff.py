"""One-off dynos: `POST /apps/{app}/dynos` and the websocket that bridges their TTY.

The gateway asks the scheduler to start the one-off from the current release
(`contracts.oneoff`). With `attach`, the answer carries an `attach_url`: a
websocket on this gateway, named by an unguessable session id that works once
and only for a short while (Heroku's rendezvous URL plays the same part). On the
socket, binary frames are the terminal's bytes both ways; text frames are JSON
control messages: the client sends `{"resize": [cols, rows]}`, the gateway
ends with `{"exit": <status>}` (or `{"error": "..."}`) and closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import msgspec
import structlog
from aiohttp import WSMsgType, web

from slipway.contracts import oneoff
from slipway.contracts.base import encode
from slipway.contracts.gateway import DEFAULT_DYNO_SIZE, DYNO_SIZES
from slipway.contracts.oneoff import ONEOFF_RUN, RunOneOff, TtyFrame
from slipway.libs.errors import NotFound
from slipway.services.gateway import store, views
from slipway.services.gateway.auth import Action, actor, app_for
from slipway.services.gateway.changes import change
from slipway.services.gateway.errors import InvalidParams
from slipway.services.gateway.routing import Routes, read_body, reply
from slipway.services.gateway.state import GATEWAY, Gateway

log = structlog.get_logger("slipway.gateway.oneoff")
routes = Routes("dyno")

ATTACH_WINDOW = 60.0  # seconds a client has to open its attach_url
MAX_TIME_TO_LIVE = 24 * 3600
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}\Z")
_frame = msgspec.json.Decoder(TtyFrame)
_control = msgspec.json.Decoder(dict[str, list[int]])


class CreateDyno(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Heroku's dyno-create body."""

    command: str
    attach: bool = False
    env: dict[str, str] = {}
    size: str | None = None
    type: str = "run"
    time_to_live: int = 3600
    force_no_tty: bool = False


class OneOffDyno(views.View, frozen=True, kw_only=True):
    """Heroku's dyno shape for a one-off just started."""

    id: str
    name: str
    type: str
    command: str
    size: str
    state: str
    attach_url: str | None
    app: views.AppRef
    release: views.ReleaseRef
    created_at: str
    updated_at: str


@dataclass
class PendingAttach:
    app_id: str
    dyno: str
    expires_at: float


def _pending(gw: Gateway) -> dict[str, PendingAttach]:
    # One table per gateway process: an attach_url is opened on the gateway that made it.
    table: dict[str, PendingAttach] = gw.attach_sessions
    now = time.time()
    for session in [s for s, p in table.items() if p.expires_at < now]:
        del table[session]
    return table


def check_request(body: CreateDyno) -> str:
    """The dyno size asked for; 422 for anything a dyno cannot be started with."""
    if not body.command.strip():
        raise InvalidParams("`command` is empty: say what to run, e.g. `bash`.")
    if len(body.command) > 8192:
        raise InvalidParams("`command` is longer than 8192 characters.")
    if not 1 <= body.time_to_live <= MAX_TIME_TO_LIVE:
        raise InvalidParams(f"`time_to_live` must be between 1 and {MAX_TIME_TO_LIVE} seconds.")
    for name in body.env:
        if not ENV_NAME.match(name):
            raise InvalidParams(f"{name[:40]!r} is not a valid environment variable name.")
    size = (body.size or DEFAULT_DYNO_SIZE).lower()
    if size not in DYNO_SIZES:
        raise InvalidParams(f"Unknown dyno size {body.size!r}: use one of {', '.join(DYNO_SIZES)}.")
    return size


@routes.post(
    "/apps/{app}/dynos",
    summary="Run a one-off dyno",
    body=CreateDyno,
    response=OneOffDyno,
    status=201,
)
async def create(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    app = await app_for(request, Action.DEPLOY, "run commands in it")
    body = await read_body(request, CreateDyno)
    size = check_request(body)
    release = await store.current_release(gw.reader, app.id)
    if release is None or not release.image_ref:
        raise InvalidParams(
            f"{app.name} has no release with an image yet: push code first (git push)."
        )
    attach = body.attach and not body.force_no_tty
    session = secrets.token_urlsafe(32) if attach else ""
    started = await gw.bus.call(
        ONEOFF_RUN,
        RunOneOff(
            app_id=app.id,
            app_name=app.name,
            team_id=app.team_id,
            release_version=release.version,
            image=release.image_ref,
            config_version=release.config_version_id,
            command=body.command,
            env=body.env,
            size=size,
            time_to_live=body.time_to_live,
            attach=attach,
            session=session,
        ),
        timeout=120.0,  # a first run on a host pulls the image
    )
    async with change(gw, actor(request)) as tx:
        tx.audit(
            app.team_id,
            "dyno.run",
            app_name=app.name,
            app_id=app.id,
            details={"dyno": started.dyno.name, "command": body.command[:200], "size": size},
        )
    attach_url = None
    if attach:
        _pending(gw)[session] = PendingAttach(
            app.id, started.dyno.name, time.time() + ATTACH_WINDOW
        )
        attach_url = f"{gw.api_url.replace('http', 'ws', 1)}/dynos/attach/{session}"
    at = store.timestamp()
    return reply(
        OneOffDyno(
            id=started.dyno.container_id or started.dyno.name,
            name=started.dyno.name,
            type="run",
            command=body.command,
            size=size,
            state=started.dyno.state,
            attach_url=attach_url,
            app=views.AppRef(id=app.id, name=app.name),
            release=views.ReleaseRef(id=release.id, version=release.version),
            created_at=at,
            updated_at=at,
        ),
        status=201,
    )


@routes.get(
    "/dynos/attach/{session}",
    summary="The websocket of an attached one-off (its URL is the credential)",
    response=str,  # binary frames: terminal bytes; text frames: JSON control messages
    status=101,
    public=True,
    extension=True,
)
async def attach(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    session = request.match_info["session"]
    pending = _pending(gw).pop(session, None)  # works once
    if pending is None:
        raise NotFound("This attach URL is unknown, used or expired: run the command again.")
    ws = web.WebSocketResponse(heartbeat=30.0, max_msg_size=1 << 20)
    await ws.prepare(request)
    frames = await gw.bus.live_subscribe(oneoff.tty_out(session))
    await gw.bus.live_publish(oneoff.tty_in(session), encode(TtyFrame(kind="ready")))
    outbound = asyncio.create_task(_to_client(ws, frames))
    try:
        await _from_client(ws, gw, session, outbound)
    finally:
        if not outbound.done():
            await gw.bus.live_publish(oneoff.tty_in(session), encode(TtyFrame(kind="close")))
            outbound.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await outbound
        await ws.close()
    log.info("oneoff.detached", dyno=pending.dyno)
    return ws


async def _from_client(
    ws: web.WebSocketResponse, gw: Gateway, session: str, outbound: asyncio.Task[None]
) -> None:
    subject = oneoff.tty_in(session)
    receiving = asyncio.ensure_future(ws.receive())
    while True:
        done, _ = await asyncio.wait({receiving, outbound}, return_when=asyncio.FIRST_COMPLETED)
        if outbound in done:
            receiving.cancel()
            return
        message = receiving.result()
        if message.type == WSMsgType.BINARY:
            await gw.bus.live_publish(subject, encode(TtyFrame(kind="data", data=message.data)))
        elif message.type == WSMsgType.TEXT:
            with contextlib.suppress(msgspec.DecodeError, ValueError):
                cols, rows = _control.decode(message.data)["resize"]
                resize = TtyFrame(kind="resize", cols=cols, rows=rows)
                await gw.bus.live_publish(subject, encode(resize))
        else:  # closed, closing or an error: the client is gone
            return
        receiving = asyncio.ensure_future(ws.receive())


async def _to_client(ws: web.WebSocketResponse, frames: AsyncIterator[bytes]) -> None:
    async for raw in frames:
        frame = _frame.decode(raw)
        if frame.kind == "data":
            await ws.send_bytes(frame.data)
        elif frame.kind == "exit":
            await ws.send_json({"exit": frame.exit_code})
            return
        elif frame.kind == "error":
            await ws.send_json({"error": frame.message})
            return
