"""ps, ps:restart, ps:stop: the app's dynos; ps:scale and ps:type: its formation."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from slipway.cli import output, specs
from slipway.cli.commands.apps import app_path
from slipway.cli.errors import ApiError, CliError, UsageError
from slipway.cli.registry import Context, arg, command

Formation = dict[str, Any]


def _formation_path(app: str) -> str:
    return f"{app_path(app)}/formation"


def size_of(formation: Formation) -> str:
    """A formation's dyno size, whether sent as `size` or Heroku's `dyno_size: {name}`."""
    return str(formation.get("size") or output.name_of(formation.get("dyno_size")) or "")


def describe(formation: Formation) -> str:
    """`web=2:standard-1x`, the form ps:scale takes."""
    size = size_of(formation)
    text = f"{formation.get('type')}={formation.get('quantity', 0)}"
    return f"{text}:{size}" if size else text


def build_updates(
    changes: Sequence[specs.ScaleChange], current: Sequence[Formation]
) -> list[dict[str, Any]]:
    """The `updates` of PATCH /apps/{app}/formation; relative changes use the current quantity."""
    quantities = {str(f.get("type")): int(f.get("quantity") or 0) for f in current}
    updates: list[dict[str, Any]] = []
    for change in changes:
        update: dict[str, Any] = {"type": change.type}
        quantity = change.resolve(quantities.get(change.type, 0))
        if quantity is not None:
            update["quantity"] = quantity
        if change.size:
            update["size"] = change.size
        updates.append(update)
    return updates


def _no_process_types(app: str) -> str:
    return f"{app} has no process types yet: deploy it first (git push slipway main)."


def _print_formation(ctx: Context, formations: Sequence[Formation]) -> None:
    rows = [
        {"type": str(f.get("type", "")), "size": size_of(f), "quantity": str(f.get("quantity", 0))}
        for f in sorted(formations, key=lambda f: str(f.get("type", "")))
    ]
    ctx.out(output.table(rows, [("type", "Type"), ("size", "Size"), ("quantity", "Qty")]))


@command(
    "ps:scale",
    "scale dyno quantity and size by process type",
    arg(
        "changes",
        metavar="TYPE=QTY[:SIZE]",
        nargs="*",
        help="web=3, worker=1:standard-2x, web+1, web-1 or web=SIZE; none shows the formation",
    ),
    examples=("slipway ps:scale web=3 worker=1", "slipway ps:scale web=2:standard-2x"),
    aliases=("scale",),
    needs_app=True,
    json=True,
)
def scale(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /apps/{app}/formation with one update per process type."""
    changes = specs.parse_scales(args.changes)  # before any request: bad input costs nothing
    app = ctx.app(args)
    client = ctx.client()
    if not changes:
        current = client.get_list(_formation_path(app))
        if args.json:
            ctx.emit_json(current)
        elif not current:
            ctx.out(_no_process_types(app))
        else:
            ctx.out(" ".join(describe(f) for f in sorted(current, key=lambda f: str(f["type"]))))
        return
    needs_current = any(change.delta for change in changes)
    current = client.get_list(_formation_path(app)) if needs_current else []
    result = client.patch(_formation_path(app), {"updates": build_updates(changes, current)})
    if args.json:
        ctx.emit_json(result)
        return
    asked = {change.type for change in changes}
    changed = [f for f in result if f.get("type") in asked] if isinstance(result, list) else []
    summary = ", ".join(f"{f['type']} at {describe(f).partition('=')[2]}" for f in changed)
    ctx.note(f"Scaling dynos... done, now running {summary or 'as requested'}")


@command(
    "ps:type",
    "show or change dyno sizes",
    arg(
        "sizes",
        metavar="TYPE=SIZE | SIZE",
        nargs="*",
        help="web=standard-2x for one type, or a bare size for every type",
    ),
    examples=("slipway ps:type", "slipway ps:type web=performance-m", "slipway ps:type basic"),
    needs_app=True,
    json=True,
)
def resize(ctx: Context, args: argparse.Namespace) -> None:
    """PATCH /apps/{app}/formation with sizes only, then show the formation."""
    app = ctx.app(args)
    client = ctx.client()
    current: list[Formation] = client.get_list(_formation_path(app))
    if args.sizes:
        updates = _size_updates(args.sizes, current)
        current = client.patch(_formation_path(app), {"updates": updates})
    if args.json:
        ctx.emit_json(current)
    elif not current:
        ctx.out(_no_process_types(app))
    else:
        _print_formation(ctx, current)


def _size_updates(sizes: Sequence[str], current: Sequence[Formation]) -> list[dict[str, Any]]:
    if len(sizes) == 1 and "=" not in sizes[0] and ":" not in sizes[0]:
        if not current:
            raise CliError(_no_process_types("The app"))
        return [{"type": f["type"], "size": sizes[0]} for f in current]
    changes = specs.parse_scales([spec.replace(":", "=", 1) for spec in sizes])
    if any(change.quantity is not None or not change.size for change in changes):
        raise UsageError("ps:type takes TYPE=SIZE (e.g. web=standard-2x) or one SIZE for all.")
    return [{"type": change.type, "size": change.size} for change in changes]


# ---- dynos: ps, ps:restart, ps:stop (the scheduler's picture, through the gateway) ----------


def _dynos_path(app: str) -> str:
    return f"{app_path(app)}/dynos"


def _dyno_order(dyno: dict[str, Any]) -> tuple[str, int]:
    name = str(dyno.get("name", ""))
    kind, _, index = name.rpartition(".")
    return (kind, int(index) if index.isdigit() else 0)


@command(
    "ps",
    "list the app's dynos: state, release and restarts",
    arg("type", nargs="?", help="only this process type"),
    examples=("slipway ps", "slipway ps web"),
    needs_app=True,
    json=True,
)
def ps(ctx: Context, args: argparse.Namespace) -> None:
    """GET /apps/{app}/dynos, grouped by process type like `heroku ps`."""
    app = ctx.app(args)
    dynos = ctx.client().get_list(_dynos_path(app))
    if args.type:
        dynos = [d for d in dynos if d.get("type") == args.type]
    if args.json:
        ctx.emit_json(dynos)
        return
    if not dynos:
        ctx.out(f"No dynos on {app}")
        return
    samples = _samples(ctx, app)
    rows = [
        {
            "name": str(d.get("name", "")),
            "state": str(d.get("state", "")),
            "release": f"v{(d.get('release') or {}).get('version', '?')}",
            "restarts": str(d.get("restart_count", 0)),
            "size": str(d.get("size", "")),
            **usage(samples.get(str(d.get("name", "")))),
            "command": str(d.get("command", "")),
        }
        for d in sorted(dynos, key=_dyno_order)
    ]
    columns = [
        ("name", "Dyno"),
        ("state", "State"),
        ("release", "Release"),
        ("restarts", "Restarts"),
        ("size", "Size"),
        ("cpu", "CPU"),
        ("memory", "Memory"),
        ("command", "Command"),
    ]
    ctx.out(output.table(rows, columns))


def _samples(ctx: Context, app: str) -> dict[str, dict[str, Any]]:
    """The latest metrics sample per dyno name; none when the log-shipper cannot say."""
    try:
        found = ctx.client().get(f"{app_path(app)}/metrics")
    except ApiError:
        return {}
    return {str(s.get("dyno", "")): s for s in (found or {}).get("dynos", [])}


def usage(sample: dict[str, Any] | None) -> dict[str, str]:
    """`3.1%` and `21MB/512MB` from a metrics sample (blank when there is none yet)."""
    if not sample:
        return {"cpu": "", "memory": ""}
    memory = f"{sample.get('memory_total_mb', 0):.0f}MB/{sample.get('memory_quota_mb', 0):.0f}MB"
    return {"cpu": f"{sample.get('cpu_percent', 0):.1f}%", "memory": memory}


@command(
    "ps:restart",
    "restart every dyno, one process type, or one dyno",
    arg("target", nargs="?", metavar="TYPE|DYNO", help="web, or web.1; none restarts all"),
    examples=("slipway ps:restart", "slipway ps:restart web", "slipway ps:restart web.1"),
    needs_app=True,
)
def restart(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /apps/{app}/dynos[/{target}]."""
    app = ctx.app(args)
    path = _dynos_path(app) + (f"/{args.target}" if args.target else "")
    ctx.client().delete(path)
    ctx.note(f"Restarting {args.target or 'all'} dynos on {app}... done")


@command(
    "ps:stop",
    "stop one dyno or a process type (the formation starts it again)",
    arg("target", metavar="TYPE|DYNO", help="web.1, or web"),
    examples=("slipway ps:stop web.1",),
    needs_app=True,
)
def stop(ctx: Context, args: argparse.Namespace) -> None:
    """POST /apps/{app}/dynos/{target}/actions/stop."""
    app = ctx.app(args)
    ctx.client().post(f"{_dynos_path(app)}/{args.target}/actions/stop")
    ctx.note(f"Stopping {args.target} on {app}... done")
