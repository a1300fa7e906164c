"""An app's availability as the router's probes saw it: GET /apps/{app}/uptime (Slipway's own).

network-wirer probes every app through its router every 30 s (its uptime.py) and keeps
hourly counters and incidents for 30 days; the gateway checks the caller may read the
app (any role, viewers included) and asks for them.

    GET /apps/{app}/uptime?incidents=20     the newest incidents, 1 to 100 (default 20)

    {"app": {"id", "name"}, "probe_interval": 30.0, "last_probe_at": "…Z" | null,
     "windows": [{"period": "24h", "seconds": 86400, "availability": 99.95 | null,
                  "probes": 2880, "up": 2879, "dyno_errors": 0}, 7d, 30d],
     "incidents": [{"started_at": "…Z", "ended_at": "…Z" | null, "duration": 61,
                    "codes": ["H10"]}]}

`availability` is the percentage of probes a dyno answered (any status: a dyno's 5xx is
counted in `dyno_errors`, the app's own error); null when nothing was probed in the window
(no web dyno, maintenance, a new app). Windows are counted by the hour.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

from aiohttp import web

from slipway.contracts.router import UPTIME_GET, GetUptime, Uptime
from slipway.services.gateway.core.state import GATEWAY
from slipway.services.gateway.http.auth import Action, app_for
from slipway.services.gateway.http.errors import InvalidParams
from slipway.services.gateway.http.routing import Routes, reply
from slipway.services.gateway.http.views import NamedRef, View

routes = Routes("uptime")

DEFAULT_INCIDENTS = 20
MAX_INCIDENTS = 100


class UptimeWindowView(View, frozen=True, kw_only=True):
    period: str  # "24h", "7d", "30d"
    seconds: int
    availability: float | None  # percent of probes a dyno answered; null: none counted
    probes: int
    up: int
    dyno_errors: int  # answered by a dyno with a 5xx (counted as up)


class UptimeIncidentView(View, frozen=True, kw_only=True):
    started_at: str
    ended_at: str | None  # null: still down
    duration: int  # seconds, to now while still down
    codes: list[str]  # the router's error codes seen, first first


class UptimeView(View, frozen=True, kw_only=True):
    """Slipway: an app's availability over 24 h, 7 d and 30 d, and its incidents."""

    app: NamedRef
    probe_interval: float  # seconds between two probes (0: the probes are off)
    last_probe_at: str | None
    windows: list[UptimeWindowView]
    incidents: list[UptimeIncidentView]  # newest first


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def incidents_param(request: web.Request) -> int:
    """`?incidents=N`, 1 to 100; a bad value is the caller's error, said plainly."""
    text = request.query.get("incidents", str(DEFAULT_INCIDENTS))
    if not text.isdigit() or not 1 <= int(text) <= MAX_INCIDENTS:
        raise InvalidParams(
            f"incidents must be a whole number from 1 to {MAX_INCIDENTS}, not {text[:20]!r}."
        )
    return int(text)


def view(app_id: str, app_name: str, answer: Uptime, now: float) -> UptimeView:
    """The API's shape of network-wirer's answer."""
    return UptimeView(
        app=NamedRef(id=app_id, name=app_name),
        probe_interval=answer.probe_interval,
        last_probe_at=None if answer.last_probe_at is None else _iso(answer.last_probe_at),
        windows=[
            UptimeWindowView(
                period=w.name,
                seconds=w.seconds,
                availability=w.availability,
                probes=w.probes,
                up=w.up,
                dyno_errors=w.dyno_errors,
            )
            for w in answer.windows
        ],
        incidents=[
            UptimeIncidentView(
                started_at=_iso(i.started_at),
                ended_at=None if i.ended_at is None else _iso(i.ended_at),
                duration=max(0, round((i.ended_at or now) - i.started_at)),
                codes=i.codes,
            )
            for i in answer.incidents
        ],
    )


@routes.get(
    "/apps/{app}/uptime",
    summary="The app's availability over 24 h, 7 d and 30 d from the router's probes, and"
    " its incidents (start, end, the router's error codes), newest first",
    response=UptimeView,
    extension=True,
)
async def uptime(request: web.Request) -> web.Response:
    app = await app_for(request, Action.READ, "read its uptime")
    count = incidents_param(request)
    gw = request.app[GATEWAY]
    answer = await gw.bus.call(UPTIME_GET, GetUptime(app_id=app.id, incidents=count), timeout=10)
    return reply(view(app.id, app.name, answer, time.time()))
