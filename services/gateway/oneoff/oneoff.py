"""One-off dynos: `POST /apps/{app}/dynos` and the websocket that bridges their TTY.

The gateway asks the scheduler to start the one-off from the current release
(`contracts.oneoff`). With `attach`, the answer carries an `attach_url` holding a
secret that works once and only for `ATTACH_WINDOW` seconds, through either door:

- `rendezvous://host:port/SECRET`, as Heroku answers it (rendezvous.py): TLS, the
  secret line, then raw bytes both ways; the door Heroku's own clients open.
- the websocket `/dynos/attach/SECRET` on the API (the `slipway` CLI's, and the answer
  when the rendezvous listener is off): binary frames are the dyno's bytes both ways;
  text frames are JSON control messages: the client sends `{"resize": [cols, rows]}`
  and, without a TTY, `{"eof": true}` when its input ends; the gateway ends with
  `{"exit": <status>}` (or `{"error": "..."}`) and closes.

`force_no_tty` with `attach` is an attached run without a terminal (raw bytes, the
client's end of input closes the dyno's stdin, stdout and stderr merged), as
`heroku run --no-tty`. The secret never travels on the bus: the live subjects are
named by a separate session id.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
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
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.http import views
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.outbox.changes import change

log = structlog.get_logger("slipway.gateway.oneoff")
routes = Routes("dyno")

ATTACH_WINDOW = 60.0  # seconds a client has to open its attach_url
MAX_TIME_TO_LIVE = 24 * 3600
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}\Z")
_frame = msgspec.json.Decoder(TtyFrame)
_control = msgspec.json.Decoder(dict[str, object])


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
    session: str  # names the live subjects; not the secret
    tty: bool
    expires_at: float


def _key(secret: str) -> bytes:
    # The table is keyed by the secret's SHA-256: a lookup's timing can only tell an
    # attacker about digests, which says nothing usable about any secret.
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def _pending(gw: Gateway) -> dict[bytes, PendingAttach]:
    # One table per gateway process: an attach_url is opened on the gateway that made it.
    table: dict[bytes, PendingAttach] = gw.attach_sessions
    now = time.time()
    for key in [k for k, p in table.items() if p.expires_at < now]:
        del table[key]
    return table


def offer(gw: Gateway, app_id: str, dyno: str, session: str, *, tty: bool = True) -> str:
    """A new attach secret (256 bits) for the one-off relayed on `session`."""
    secret = secrets.token_urlsafe(32)
    expires_at = time.time() + ATTACH_WINDOW
    _pending(gw)[_key(secret)] = PendingAttach(app_id, dyno, session, tty, expires_at)
    return secret


def websocket_url(gw: Gateway, secret: str) -> str:
    """The websocket door for `secret` on this gateway's API."""
    return f"{gw.api_url.replace('http', 'ws', 1)}/dynos/attach/{secret}"


def claim(gw: Gateway, secret: str) -> PendingAttach | None:
    """The attach `secret` opens, removed as it is taken: a secret attaches once.

    The check and the removal are one step with no await between them, so two
    connections racing with one secret cannot both win.
    """
    return _pending(gw).pop(_key(secret), None)


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
    attach = body.attach
    tty = not body.force_no_tty
    session = secrets.token_hex(16) if attach else ""
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
            tty=tty,
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
        secret = offer(gw, app.id, started.dyno.name, session, tty=tty)
        # Heroku's form when the rendezvous door is open; its clients know no other.
        if gw.rendezvous_url:
            attach_url = f"{gw.rendezvous_url}/{secret}"
        else:
            attach_url = websocket_url(gw, secret)
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
    pending = claim(gw, request.match_info["session"])
    if pending is None:
        raise NotFound("This attach URL is unknown, used or expired: run the command again.")
    session = pending.session
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
            if (frame := control_frame(message.data)) is not None:
                await gw.bus.live_publish(subject, encode(frame))
        else:  # closed, closing or an error: the client is gone
            return
        receiving = asyncio.ensure_future(ws.receive())


def control_frame(text: str) -> TtyFrame | None:
    """The frame a client's JSON control message asks for; None for anything else."""
    try:
        control = _control.decode(text)
    except msgspec.DecodeError:
        return None
    if control.get("eof") is True:
        return TtyFrame(kind="eof")
    match control.get("resize"):
        case [int() as cols, int() as rows] if 0 < cols <= 10000 and 0 < rows <= 10000:
            return TtyFrame(kind="resize", cols=cols, rows=rows)
    return None


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
