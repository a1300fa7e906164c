"""The platform's own lines, made from events: pure functions from a fact to log lines.

    heroku[web.1]: Process exited with status 1
    heroku[web.1]: State changed from up to crashed
    heroku[worker.1]: Error R15 (Memory quota vastly exceeded)   (a reason of several lines)
    app[api]: Release v5 created by user alice@example.com
    app[api]: Scaled to web@2:standard-1x worker@1:standard-1x by user alice@example.com
    heroku[alert]: WARNING 12.5 % of requests answered 5xx over the last 5 min (threshold 5 %)

Build output is not copied into the app's log: like Heroku, it is read through
the build (`slipway builds:output`); the builder may send its own summary lines
(`app[build]`) on `lines_subject`, which log-shipper stores like any other.
"""

from __future__ import annotations

from slipway.contracts.gateway import FormationChanged, ReleaseCreated
from slipway.contracts.logs import LogLine
from slipway.contracts.monitor import AlertChanged
from slipway.contracts.scheduler import DynoChanged
from slipway.services.log_shipper.history import RawLine


def dyno_lines(event: DynoChanged) -> list[RawLine]:
    """`heroku[web.1]` lines for a dyno's state change (the reason first, as Heroku does)."""
    dyno = event.dyno
    at = event.occurred_at
    lines: list[RawLine] = []
    # A reason of several lines (R15, then SIGKILL, then the exit status) is several lines.
    for said in event.reason.splitlines():
        if said:
            lines.append((at, "heroku", dyno.name, said, False))
    if event.previous_state is None and dyno.state == "starting":
        command = f" with command `{dyno.command}`" if dyno.command else ""
        lines.append((at, "heroku", dyno.name, f"Starting process{command}", False))
    elif event.previous_state is not None and event.previous_state != dyno.state:
        text = f"State changed from {event.previous_state} to {dyno.state}"
        lines.append((at, "heroku", dyno.name, text, False))
    return lines


def alert_lines(event: AlertChanged) -> list[RawLine]:
    """`heroku[alert]: WARNING p95 response time 812 ms over the last 5 min (threshold 500 ms)`."""
    alert = event.alert
    if alert.state == "firing":
        text = f"{alert.severity.upper()} {alert.summary}"
    else:
        text = f"RESOLVED {alert.summary}"
    return [(event.occurred_at, "heroku", "alert", text, False)]


def release_lines(event: ReleaseCreated) -> list[RawLine]:
    """`app[api]: Release v5 created by user x` (with the description before it, if any)."""
    lines: list[RawLine] = []
    at = event.occurred_at
    if event.description:
        lines.append((at, "app", "api", f"{event.description} by user {event.actor}", False))
    text = f"Release v{event.version} created by user {event.actor}"
    lines.append((at, "app", "api", text, False))
    return lines


def formation_lines(event: FormationChanged) -> list[RawLine]:
    """`app[api]: Scaled to web@2:standard-1x by user x`."""
    scaled = " ".join(f"{p.type}@{p.quantity}:{p.size}" for p in event.formation)
    text = f"Scaled to {scaled} by user {event.actor}"
    return [(event.occurred_at, "app", "api", text, False)]


def from_log_line(line: LogLine) -> RawLine:
    """A line another service sent (router, builder, platform) as history takes it."""
    return (line.timestamp, line.source, line.dyno, line.text, False)
