"""alerts*: an app's alert rules and alerts; admin:status and admin:alerts for the operator."""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from slipway.cli import output
from slipway.cli.client import segment
from slipway.cli.errors import CliError
from slipway.cli.registry import Context, arg, command

METRICS = ("p95_ms", "error_rate", "crashed_dynos")
_UNITS = {"p95_ms": " ms", "error_rate": " %", "crashed_dynos": ""}


class Red(CliError):
    """admin:status found something red: exit 1 after printing the screen (for cron)."""

    def __init__(self) -> None:
        super().__init__("")


def _alert_rows(alerts: list[Mapping[str, Any]]) -> list[dict[str, str]]:
    return [
        {
            "state": str(a.get("state", "")).upper(),
            "severity": str(a.get("severity", "")),
            "summary": str(a.get("summary", "")),
            "started": output.when(a.get("started_at")),
            "resolved": output.when(a.get("resolved_at")) or "-",
        }
        for a in alerts
    ]


_ALERT_COLUMNS = [
    ("state", "State"),
    ("severity", "Severity"),
    ("summary", "What"),
    ("started", "Started"),
    ("resolved", "Resolved"),
]


@command(
    "alerts",
    "the app's alert rules, and its alerts (firing first)",
    needs_app=True,
    json=True,
    examples=("slipway alerts -a hello",),
)
def alerts(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/alert-rules and /apps/{app}/alerts."""
    app = segment(ctx.app(args))
    client = ctx.client()
    rules = client.get_list(f"/apps/{app}/alert-rules")
    found = client.get_list(f"/apps/{app}/alerts")
    if args.json:
        ctx.emit_json({"rules": rules, "alerts": found})
        return
    lines = [output.header(f"{ctx.app(args)} alert rules")]
    if rules:
        rows = [
            {
                "id": str(r.get("id", "")),
                "when": f"{r.get('metric')} > {r.get('threshold'):g}"
                f"{_UNITS.get(str(r.get('metric')), '')}",
                "window": f"{r.get('window_minutes')} min",
            }
            for r in rules
        ]
        lines.append(output.table(rows, [("id", "ID"), ("when", "Fires when"), ("window", "Over")]))
    else:
        lines.append("No rules: add one with `slipway alerts:add p95_ms 500 -a APP`.")
    lines += ["", output.header("Alerts")]
    lines.append(output.table(_alert_rows(found), _ALERT_COLUMNS) if found else "No alerts.")
    ctx.out("\n".join(lines))


def _threshold(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise CliError(f"the threshold must be a number, not {text!r}.") from None
    if value != value or value < 0:
        raise CliError("the threshold must be a number, zero or more.")
    return value


@command(
    "alerts:add",
    "alert when a metric stays above a threshold (p95_ms, error_rate %, crashed_dynos)",
    arg("metric", choices=METRICS, help="what to watch"),
    arg("threshold", help="fire above this (ms, percent or dynos)"),
    arg("--window", type=int, default=5, help="minutes the metric is measured over (1-60)"),
    needs_app=True,
    json=True,
    examples=(
        "slipway alerts:add p95_ms 800 -a hello",
        "slipway alerts:add error_rate 5 --window 10 -a hello",
        "slipway alerts:add crashed_dynos 0 -a hello",
    ),
)
def add(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/alert-rules."""
    body = {
        "metric": args.metric,
        "threshold": _threshold(args.threshold),
        "window_minutes": args.window,
    }
    rule = ctx.client().post(f"/apps/{segment(ctx.app(args))}/alert-rules", body)
    if args.json:
        ctx.emit_json(rule)
        return
    ctx.out(
        f"Added alert rule {rule.get('id')}: {rule.get('metric')} above"
        f" {rule.get('threshold'):g}{_UNITS.get(str(rule.get('metric')), '')}"
        f" over {rule.get('window_minutes')} min."
    )


@command(
    "alerts:remove",
    "remove an alert rule",
    arg("rule", help="the rule's id (see `slipway alerts`)"),
    needs_app=True,
    examples=("slipway alerts:remove 0b1c… -a hello",),
)
def remove(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /apps/{app}/alert-rules/{rule}."""
    ctx.client().delete(f"/apps/{segment(ctx.app(args))}/alert-rules/{segment(args.rule)}")
    ctx.out(f"Removed alert rule {args.rule}.")


@command("admin:alerts", "the platform's alerts (platform admins)", json=True)
def platform_alerts(ctx: Context, args: argparse.Namespace) -> None:
    """GET /admin/alerts."""
    found = ctx.client().get_list("/admin/alerts")
    if args.json:
        ctx.emit_json(found)
        return
    ctx.out(output.table(_alert_rows(found), _ALERT_COLUMNS) if found else "No alerts.")


def _mark(health: object) -> str:
    return {"green": "ok", "yellow": "WARN", "red": "RED"}.get(str(health), str(health))


def render_status(body: Mapping[str, Any]) -> str:
    """The operator's screen: one section per part, the worst health first in the title."""
    lines = [output.header(f"Slipway status: {_mark(body.get('health'))}")]
    for problem in body.get("problems", []):
        lines.append(f"  ! {problem}")
    instances = [
        {
            "health": _mark(i.get("health")),
            "service": str(i.get("service", "")),
            "instance": str(i.get("instance", "")),
            "version": str(i.get("version", "")),
            "uptime": output.duration(int(i.get("uptime_s", 0))),
            "errors": f"{i.get('errors', 0)}/{i.get('requests', 0)}",
            "last": str(i.get("last_error", ""))[:60],
        }
        for i in body.get("instances", [])
    ]
    instances += [
        {
            "health": "RED",
            "service": s,
            "instance": "-",
            "version": "-",
            "uptime": "down",
            "errors": "-",
            "last": "no instance answering",
        }
        for s in body.get("missing", [])
    ]
    lines += ["", output.header("Services")]
    lines.append(
        output.table(
            instances,
            [
                ("health", ""),
                ("service", "Service"),
                ("instance", "Instance"),
                ("version", "Version"),
                ("uptime", "Up"),
                ("errors", "Errors/requests"),
                ("last", "Last error"),
            ],
        )
    )
    hosts = [
        {
            "health": _mark(h.get("health")),
            "id": str(h.get("id", "")),
            "state": str(h.get("state", "")),
            "dynos": f"{h.get('dynos', 0)}/{h.get('max_dynos') or '-'}",
            "memory": f"{h.get('memory_mb', 0)} MB",
        }
        for h in body.get("hosts", [])
    ]
    lines += ["", output.header("Hosts")]
    lines.append(
        output.table(
            hosts,
            [
                ("health", ""),
                ("id", "Host"),
                ("state", "State"),
                ("dynos", "Dynos/max"),
                ("memory", "Memory"),
            ],
        )
        if hosts
        else "No host answer."
    )
    consumers = [
        {
            "health": _mark(c.get("health")),
            "name": f"{c.get('stream')}/{c.get('consumer')}",
            "pending": str(c.get("pending", 0)),
            "unacked": str(c.get("ack_pending", 0)),
        }
        for c in body.get("consumers", [])
    ]
    lines += ["", output.header("Streams (consumer lag)")]
    lines.append(
        output.table(
            consumers,
            [("health", ""), ("name", "Consumer"), ("pending", "Pending"), ("unacked", "Unacked")],
        )
    )
    backups = [
        {
            "health": _mark(b.get("health")),
            "addon": str(b.get("addon_name", "")),
            "age": output.duration(int(b["age_s"])) if b.get("age_s") is not None else "never",
            "overdue": "overdue" if b.get("overdue") else "",
            "verified": str(b.get("last_verification") or "-"),
        }
        for b in body.get("backups", [])
    ]
    lines += ["", output.header("Backups")]
    lines.append(
        output.table(
            backups,
            [
                ("health", ""),
                ("addon", "Database"),
                ("age", "Last backup"),
                ("overdue", ""),
                ("verified", "Verification"),
            ],
        )
        if backups
        else "No databases."
    )
    disks = [
        {
            "health": _mark(d.get("health")),
            "path": str(d.get("path", "")),
            "what": f"{d.get('label')} ({d.get('service')})",
            "used": f"{d.get('used_percent', 0):.1f}%",
            "free": f"{int(d.get('free_bytes', 0)) // (1024 * 1024)} MB",
        }
        for d in body.get("disks", [])
    ]
    lines += ["", output.header("Disks")]
    lines.append(
        output.table(
            disks,
            [
                ("health", ""),
                ("path", "Path"),
                ("what", "What"),
                ("used", "Used"),
                ("free", "Free"),
            ],
        )
        if disks
        else "No readings yet."
    )
    lines += ["", output.header("Certificates")]
    lines.append(_certificates(body.get("certificates", [])))
    return "\n".join(lines)


CERTIFICATES_SHOWN = 10  # the soonest to end; a router may serve thousands


def _certificates(found: list[Mapping[str, Any]]) -> str:
    """The routers' certificates the soonest to end first (the monitor sends them so)."""
    if not found:
        return "No router reported certificates."
    rows = []
    for c in found[:CERTIFICATES_SHOWN]:
        left = float(c.get("days_left", 0))
        names = [str(n) for n in c.get("hostnames", [])]
        rows.append(
            {
                "health": _mark(c.get("health")),
                "host": names[0] + (f" (+{len(names) - 1})" if len(names) > 1 else "")
                if names
                else "-",
                "app": str(c.get("app_name") or "(default)"),
                "issuer": str(c.get("issuer", "")),
                "ends": "expired" if left < 0 else f"in {output.duration(int(left * 86400))}",
                "router": str(c.get("router_id", "")),
            }
        )
    table = output.table(
        rows,
        [
            ("health", ""),
            ("host", "Hostname"),
            ("app", "App"),
            ("issuer", "Issuer"),
            ("ends", "Expires"),
            ("router", "Router"),
        ],
    )
    more = len(found) - CERTIFICATES_SHOWN
    return table + (f"\n{more} more, all ending later." if more > 0 else "")


@command(
    "admin:status",
    "the platform at a glance (platform admins); exits 1 when anything is red",
    json=True,
    examples=("slipway admin:status", "slipway admin:status || mail -s 'slipway red' ops"),
)
def status(ctx: Context, args: argparse.Namespace) -> None:
    """GET /admin/status."""
    body = ctx.client().get("/admin/status")
    if args.json:
        ctx.emit_json(body)
    else:
        ctx.out(render_status(body))
    if body.get("health") == "red":
        raise Red()
