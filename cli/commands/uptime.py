"""apps:uptime: the app's availability from the router's probes, and its incidents."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from slipway.cli import output
from slipway.cli.client import segment
from slipway.cli.errors import CliError
from slipway.cli.registry import Context, arg, command

MAX_INCIDENTS = 100  # what the API lists at most


def _incidents(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_INCIDENTS:
        raise CliError(f"--incidents takes a number from 1 to {MAX_INCIDENTS}, not {text!r}.")
    return int(text)


def percent(value: object) -> str:
    """99.95 → `99.950%`; no probe in the window → `no probes`."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:.3f}%"
    return "no probes"


def render(body: Mapping[str, Any]) -> str:
    """The three windows, then the incidents table (or a line saying there were none)."""
    app = output.name_of(body.get("app"))
    lines = [output.header(f"{app} uptime")]
    windows = [
        {
            "period": str(w.get("period", "")),
            "availability": percent(w.get("availability")),
            "probes": str(w.get("probes", 0)),
            "down": str(int(w.get("probes", 0)) - int(w.get("up", 0))),
            "errors": str(w.get("dyno_errors", 0)),
        }
        for w in body.get("windows", [])
    ]
    columns = [
        ("period", "Period"),
        ("availability", "Availability"),
        ("probes", "Probes"),
        ("down", "Down"),
        ("errors", "Dyno 5xx"),
    ]
    lines.append(output.table(windows, columns))
    interval = body.get("probe_interval") or 0
    if not interval:
        lines.append("Probes are off on this platform.")
    else:
        last = output.when(body.get("last_probe_at")) or "not yet"
        lines.append(f"One probe every {interval:g} s through the router; last round {last}.")
    lines.append("")
    incidents = body.get("incidents", [])
    if not incidents:
        lines.append("No incidents in the last 30 days.")
        return "\n".join(lines)
    lines.append(output.header("Incidents (newest first)"))
    rows = [
        {
            "started": output.when(i.get("started_at")),
            "ended": output.when(i.get("ended_at")) or "ongoing",
            "duration": output.duration(int(i.get("duration", 0))),
            "codes": ", ".join(str(c) for c in i.get("codes", [])),
        }
        for i in incidents
    ]
    columns = [
        ("started", "Started"),
        ("ended", "Ended"),
        ("duration", "Duration"),
        ("codes", "Codes"),
    ]
    lines.append(output.table(rows, columns))
    return "\n".join(lines)


@command(
    "apps:uptime",
    "availability over 24 h / 7 d / 30 d and incidents, from the router's probes",
    arg(
        "--incidents",
        metavar="N",
        default="20",
        help=f"how many of the newest incidents to list (1 to {MAX_INCIDENTS}, default 20)",
    ),
    needs_app=True,
    aliases=("uptime",),
    json=True,
    examples=("slipway apps:uptime -a hello",),
)
def uptime(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/uptime."""
    count = _incidents(args.incidents)
    body = ctx.client().get(f"/apps/{segment(ctx.app(args))}/uptime?incidents={count}")
    if args.json:
        ctx.emit_json(body)
        return
    ctx.out(render(body))
