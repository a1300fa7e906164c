"""Logs through the gateway: log sessions (history then live tail), log drains, dyno metrics.

    POST   /apps/{app}/log-sessions      {dyno, source, lines, tail} → {logplex_url, ...}
    GET    /log-sessions/{token}         text/plain lines: history first, then live if tail;
                                         `Accept: text/event-stream` gets one `data:` event
                                         per line and keep-alive comments while idle
    GET    /apps/{app}/log-drains        and POST / GET {drain} / DELETE {drain}
    GET    /apps/{app}/metrics           the latest sample of each dyno
    GET    /apps/{app}/log-archive       batches sealed to the team's own key, for its owner

A log session is created only by a user whose role on the app allows reading
it; its URL carries a random token (only its hash is stored) that works for
`SESSION_TTL` seconds, and is checked again against the user's role when
opened. The stream is served here: the gateway subscribes to the app's tail
subject first, then pages history from log-shipper (the only service that can
decrypt it) and then writes live lines, dropping those history already had
(lines are numbered per log-shipper host), so the output is in order with no
gap and no repeat. Every log-shipper (one per Docker host) answers for its own
lines and the pages are merged by time (services/gateway/logs/shippers.py); a host
whose log-shipper stays silent is named in a notice line instead of failing the read.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import secrets
import time
from typing import Any

import msgspec
from aiohttp import web
from nats.aio.msg import Msg

from slipway.contracts.base import decoder
from slipway.contracts.log_shipper import (
    DRAIN_ADD,
    DRAIN_REMOVE,
    DRAINS_LIST,
    AddDrain,
    DrainInfo,
    DynoSample,
    ExportHistory,
    ListDrains,
    LogEntry,
    ReadHistory,
    RemoveDrain,
    SealedBatch,
    TailBatch,
    tail_subject,
)
from slipway.contracts.logs import LogSource
from slipway.libs import egress
from slipway.libs.errors import NotFound, disk_full
from slipway.services.gateway.core import store
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.core.store import new_uuid, timestamp
from slipway.services.gateway.git.passthrough import raw
from slipway.services.gateway.http import diskpressure
from slipway.services.gateway.http.auth import Action, actor, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, read_body, reply
from slipway.services.gateway.http.urlguard import customer_url_policy
from slipway.services.gateway.http.views import View
from slipway.services.gateway.logs import shippers
from slipway.services.gateway.logs.backlog import Backlog, dropped_marker
from slipway.services.gateway.outbox.changes import change

routes = Routes("logs")

SESSION_TTL = 300.0  # seconds a logplex_url may be opened after it was made
MAX_LINES = 1500  # Heroku's bound for `heroku logs -n`
SOURCES = ("app", "heroku", "api", "router")
_TAIL = decoder(TailBatch)
_IDLE_CHECK = 2.0  # seconds between checks that a silent tail's client is still there


class LogSessionCreate(msgspec.Struct, frozen=True, kw_only=True):
    dyno: str | None = None
    source: str | None = None
    lines: int | None = None
    tail: bool = False


class LogSession(View, frozen=True, kw_only=True):
    id: str
    logplex_url: str
    created_at: str
    updated_at: str


class AppRef(View, frozen=True, kw_only=True):
    id: str
    name: str


class LogDrain(View, frozen=True, kw_only=True):
    addon: None = None
    app: AppRef
    created_at: str
    id: str
    token: str
    updated_at: str
    url: str
    # Slipway's addition: "ok", "pending", "refused: <why>" (the egress guard refused the
    # address the drain's host resolves to now) or "failing: <why>".
    status: str = ""


class LogDrainCreate(msgspec.Struct, frozen=True, kw_only=True):
    url: str


class DynoMetrics(View, frozen=True, kw_only=True):
    dynos: list[DynoSample]


# ---- log sessions ------------------------------------------------------------------------

_SESSIONS_SQL = (
    "SELECT s.*, a.team_id FROM log_sessions s JOIN apps a ON a.id = s.app_id"
    " WHERE s.token_hash = ?"
)


def text_line(entry: LogEntry) -> str:
    """`2026-11-27T21:00:00.123456+00:00 app[web.1]: text`, as `heroku logs` prints."""
    at = datetime.datetime.fromtimestamp(entry.timestamp, datetime.UTC)
    return f"{at.isoformat(timespec='microseconds')} {entry.source}[{entry.dyno}]: {entry.text}"


def notice_line(text: str) -> str:
    """A line from the platform about the stream itself (a host's history missing, ...)."""
    at = datetime.datetime.now(datetime.UTC)
    return f"{at.isoformat(timespec='microseconds')} slipway[logs]: {text}"


def _entry_size(entry: LogEntry) -> int:
    return len(entry.text) + 64  # the text and, roughly, the fields around it


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check(body: LogSessionCreate) -> None:
    if body.source is not None and body.source not in SOURCES:
        raise InvalidParams(f"source must be one of {', '.join(SOURCES)}, not {body.source!r}.")
    if body.lines is not None and not 0 <= body.lines <= MAX_LINES:
        raise InvalidParams(f"lines must be between 0 and {MAX_LINES}, not {body.lines}.")
    if body.dyno is not None and not body.dyno.replace(".", "").replace("-", "").isalnum():
        raise InvalidParams(f"{body.dyno[:40]!r} is not a dyno name (web.1) or process type.")


@routes.post(
    "/apps/{app}/log-sessions",
    summary="Create a log session (a short-lived URL streaming the app's logs)",
    body=LogSessionCreate,
    response=LogSession,
    status=201,
)
async def create_session(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read its logs")
    body = await read_body(request, LogSessionCreate)
    _check(body)
    gw = request.app[GATEWAY]
    token = secrets.token_urlsafe(32)
    session_id, at, now = new_uuid(), timestamp(), time.time()
    user = actor(request)
    row: dict[str, Any] = {
        "id": session_id,
        "token_hash": _hash(token),
        "app_id": app.id,
        "user_id": user.user_id,
        "dyno": body.dyno,
        "source": body.source,
        "lines": 100 if body.lines is None else body.lines,
        "tail": int(body.tail),
        "created_at": at,
        "expires_at": now + SESSION_TTL,
    }
    details = {
        "tail": str(body.tail).lower(),
        "dyno": body.dyno or "",
        "source": body.source or "",
    }

    async def record(late: bool = False) -> None:
        async with change(gw, user) as tx:
            await tx.conn.execute("DELETE FROM log_sessions WHERE expires_at < ?", (time.time(),))
            await tx.conn.execute(
                "INSERT INTO log_sessions (id, token_hash, app_id, user_id, dyno, source, lines,"
                " tail, created_at, expires_at) VALUES (:id, :token_hash, :app_id, :user_id,"
                " :dyno, :source, :lines, :tail, :created_at, :expires_at)",
                row,
            )
            # Written late (the disk was full): the entry says when it really happened.
            extra = {"requested_at": at} if late else {}
            tx.audit(
                app.team_id,
                "logs.session",
                app_name=app.name,
                app_id=app.id,
                details={**details, **extra},
            )

    try:
        await record()
    except Exception as exc:
        deferred = diskpressure.deferred_writes(request)
        if deferred is None or not disk_full(exc):
            raise
        # Reading logs must work at 100 % disk: the session lives in memory, and its row
        # and audit entry are written when space returns (never dropped: past the bound
        # the session is refused instead).
        deferred.defer(
            lambda: record(late=True), session=(row["token_hash"], {**row, "team_id": app.team_id})
        )
    url = f"{gw.api_url}/log-sessions/{token}"
    return reply(LogSession(id=session_id, logplex_url=url, created_at=at, updated_at=at), 201)


@routes.get(
    "/log-sessions/{token}",
    summary="Stream a log session's lines (the logplex_url; the token is the credential)",
    response=str,
    public=True,
    extension=True,
)
@raw  # answers text, and event streams to clients that ask (`Accept` is not the API's)
async def stream_session(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    key = _hash(request.match_info["token"])
    row = await store._one(gw.reader, _SESSIONS_SQL, (key,))
    deferred = diskpressure.deferred_writes(request)
    if row is None and deferred is not None:
        row = deferred.sessions.get(key)  # made while the disk was full, not written yet
    if row is None:
        raise NotFound("Unknown log session: create one with `slipway logs`.")
    if row["expires_at"] < time.time():
        raise NotFound(
            f"This log session expired (a logplex_url works for {int(SESSION_TTL)} seconds):"
            " create a new one with `slipway logs`."
        )
    if await store.app_for_user(gw.reader, row["app_id"], row["user_id"]) is None:
        raise NotFound("Couldn't find that app.")
    events = wants_events(request.headers.get("Accept", ""))
    kind = "text/event-stream" if events else "text/plain; charset=utf-8"
    response = web.StreamResponse(headers={"Content-Type": kind, "Cache-Control": "no-cache"})
    await response.prepare(request)
    streamer = _Streamer(gw, row["app_id"], row["team_id"], row["dyno"], row["source"])
    streamer.events = events
    await streamer.run(request, response, int(row["lines"]), bool(row["tail"]))
    return response


def wants_events(accept: str) -> bool:
    """Whether the client asked for server-sent events (Heroku's `logplex_url` speaks both)."""
    return any(
        part.split(";", 1)[0].strip().lower() == "text/event-stream" for part in accept.split(",")
    )


def encode_lines(lines: list[str], *, events: bool) -> bytes:
    """Lines as plain text, or as one server-sent event each (a `data:` field per line of it)."""
    if not events:
        return "".join(line + "\n" for line in lines).encode()
    return "".join(
        "".join(f"data: {piece}\n" for piece in line.splitlines() or [""]) + "\n" for line in lines
    ).encode()


class _Streamer:
    """History first, then live lines, in order, without repeats, until the client leaves."""

    def __init__(
        self,
        gw: Gateway,
        app_id: str,
        team_id: str,
        dyno: str | None,
        source: str | None,
    ) -> None:
        self.gw, self.bus, self.app_id, self.team_id = gw, gw.bus, app_id, team_id
        self.dyno, self.source = dyno, source
        self.seen: dict[str, int] = {}  # host -> highest seq written
        self.events = False  # server-sent events instead of plain lines

    def wanted(self, entry: LogEntry) -> bool:
        if entry.seq <= self.seen.get(entry.host, 0):
            return False
        if self.source is not None and entry.source != self.source:
            return False
        if self.dyno is None:
            return True
        if "." in self.dyno:
            return entry.dyno == self.dyno
        return entry.dyno.split(".", 1)[0] == self.dyno

    async def write(self, response: web.StreamResponse, entries: list[LogEntry]) -> None:
        chosen = [e for e in entries if self.wanted(e)]
        for entry in chosen:
            self.seen[entry.host] = max(entry.seq, self.seen.get(entry.host, 0))
        if chosen:
            await response.write(encode_lines([text_line(e) for e in chosen], events=self.events))

    async def run(
        self, request: web.Request, response: web.StreamResponse, lines: int, tail: bool
    ) -> None:
        settings = self.gw.settings
        backlog: Backlog[LogEntry] = Backlog(
            settings.live_backlog_lines, settings.live_backlog_bytes, _entry_size
        )

        async def on_batch(msg: Msg) -> None:
            # Decoded and queued at NATS's pace; written at the client's (bounded between).
            backlog.put(_TAIL.decode(msg.data).lines)

        # Subscribed before history is read: no line falls between the two.
        sub = await self.bus.nc.subscribe(tail_subject(self.app_id), cb=on_batch) if tail else None
        try:
            if sub is not None:
                await self.bus.nc.flush()
            source: LogSource | None = self.source  # type: ignore[assignment]
            ask = ReadHistory(
                app_id=self.app_id, team_id=self.team_id, lines=lines, dyno=self.dyno, source=source
            )
            expect = await self.gw.shipper_hosts.expected()
            past = await shippers.read_history(self.bus, ask, expect=expect)
            if past.notices:
                notices = [notice_line(n) for n in past.notices]
                await response.write(encode_lines(notices, events=self.events))
            await self.write(response, past.lines)
            while sub is not None:
                dropped, entries = await backlog.take(_IDLE_CHECK)
                if not entries:
                    if request.transport is None or request.transport.is_closing():
                        return
                    if self.events:  # a comment keeps proxies and EventSource from timing out
                        await response.write(b": keep-alive\n\n")
                    continue
                if dropped:
                    marker = [notice_line(dropped_marker(dropped))]
                    await response.write(encode_lines(marker, events=self.events))
                await self.write(response, entries)
        except (ConnectionResetError, asyncio.CancelledError):
            return
        finally:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()


# ---- the sealed archive of a team with its own key ------------------------------------------


class LogArchive(View, frozen=True, kw_only=True):
    """Batches sealed to the team's key: open each with the private key (`slipway logs:export`).

    `after` is the cursor of the next page (`?after=` it while `more`); `notices` name
    hosts whose log-shipper did not answer (their batches come in a later export).
    """

    batches: list[SealedBatch]
    more: bool
    after: str
    notices: list[str]


def parse_cursor(text: str) -> dict[str, int]:
    """`host-1:120,host-2:7` → {"host-1": 120, "host-2": 7}: the last seq exported per host."""
    cursor: dict[str, int] = {}
    for part in filter(None, text.split(",")):
        host, sep, seq = part.rpartition(":")
        if not sep or not host or not seq.isdigit():
            raise InvalidParams(f"after must look like host-1:120,host-2:7, not {text[:80]!r}.")
        cursor[host] = int(seq)
    return cursor


def format_cursor(cursor: dict[str, int]) -> str:
    return ",".join(f"{host}:{seq}" for host, seq in sorted(cursor.items()))


@routes.get(
    "/apps/{app}/log-archive",
    summary="Stored log batches sealed to the team's own key (?after=<cursor> pages on)",
    response=LogArchive,
    extension=True,
)
async def log_archive(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read its logs")
    after = parse_cursor(request.query.get("after", ""))
    gw = request.app[GATEWAY]
    export = ExportHistory(app_id=app.id, team_id=app.team_id, after=after)
    archive = await shippers.export(gw.bus, export, expect=await gw.shipper_hosts.expected())
    async with change(gw, actor(request)) as tx:
        details = {"after": format_cursor(after), "batches": str(len(archive.batches))}
        tx.audit(app.team_id, "logs.export", app_name=app.name, app_id=app.id, details=details)
    return reply(
        LogArchive(
            batches=archive.batches,
            more=archive.more,
            after=format_cursor(archive.after),
            notices=archive.notices,
        )
    )


# ---- drains --------------------------------------------------------------------------------


def _iso(at: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(at))


def _drain_view(app: store.App, drain: DrainInfo) -> LogDrain:
    return LogDrain(
        app=AppRef(id=app.id, name=app.name),
        created_at=_iso(drain.created_at),
        id=drain.id,
        token=drain.token,
        updated_at=_iso(drain.updated_at),
        url=drain.url,
        status=drain.status,
    )


@routes.get("/apps/{app}/log-drains", summary="List log drains", response=list[LogDrain])
async def list_drains(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read its log drains")
    found = await request.app[GATEWAY].bus.call(
        DRAINS_LIST, ListDrains(app_id=app.id, team_id=app.team_id)
    )
    return reply([_drain_view(app, d) for d in found.drains])


@routes.get("/apps/{app}/log-drains/{drain}", summary="Info for a log drain", response=LogDrain)
async def drain_info(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read its log drains")
    found = await request.app[GATEWAY].bus.call(
        DRAINS_LIST, ListDrains(app_id=app.id, team_id=app.team_id)
    )
    ident = request.match_info["drain"]
    for drain in found.drains:
        if ident in (drain.id, drain.token, drain.url):
            return reply(_drain_view(app, drain))
    raise NotFound("Couldn't find that log drain.")


@routes.post(
    "/apps/{app}/log-drains",
    summary="Add a log drain (syslog+tls:// or https://)",
    body=LogDrainCreate,
    response=LogDrain,
    status=201,
)
async def add_drain(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "add log drains")
    body = await read_body(request, LogDrainCreate)
    gw = request.app[GATEWAY]
    await _check_drain_url(gw, body.url)
    added = await gw.bus.call(
        DRAIN_ADD, AddDrain(app_id=app.id, team_id=app.team_id, url=body.url), timeout=10.0
    )
    await _audit(request, app, "drain.add", added.drain)
    return reply(_drain_view(app, added.drain), 201)


@routes.delete("/apps/{app}/log-drains/{drain}", summary="Remove a log drain", response=LogDrain)
async def remove_drain(request: web.Request) -> web.Response:
    app = await app_for(request, Action.DEPLOY, "remove log drains")
    gw = request.app[GATEWAY]
    request_ = RemoveDrain(app_id=app.id, team_id=app.team_id, ident=request.match_info["drain"])
    removed = await gw.bus.call(DRAIN_REMOVE, request_, timeout=10.0)
    await _audit(request, app, "drain.remove", removed.drain)
    return reply(_drain_view(app, removed.drain))


async def _check_drain_url(gw: Gateway, url: str) -> None:
    """422 for a drain URL the egress guard refuses now (log-shipper checks every connection).

    A name that does not resolve yet is accepted: its drain's status will say so.
    """
    try:
        await egress.resolve_checked(
            url.strip(),
            customer_url_policy(gw),
            schemes=("syslog+tls", "https"),
            allow_userinfo=True,  # https://user:password@host/ is how HTTPS drains authenticate
        )
    except egress.EgressRefused as exc:
        raise InvalidParams(f"The drain URL is refused: {exc.message}") from None
    except egress.FetchFailed:
        return


async def _audit(request: web.Request, app: store.App, action: str, drain: DrainInfo) -> None:
    # The URL may hold credentials: the chain records the drain's id and token only.
    async with change(request.app[GATEWAY], actor(request)) as tx:
        details = {"drain_id": drain.id, "token": drain.token}
        tx.audit(app.team_id, action, app_name=app.name, app_id=app.id, details=details)


# ---- metrics ---------------------------------------------------------------------------------


@routes.get(
    "/apps/{app}/metrics",
    summary="The latest CPU, memory and restart sample of each dyno",
    response=DynoMetrics,
    extension=True,
)
async def metrics(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read its metrics")
    gw = request.app[GATEWAY]
    found = await shippers.metrics(gw.bus, app.id, expect=await gw.shipper_hosts.expected())
    return reply(DynoMetrics(dynos=found))
