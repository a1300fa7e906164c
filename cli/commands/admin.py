"""admin:*: the Docker hosts dynos run on, the keyring's master key (platform admins only)."""

from __future__ import annotations

import argparse
from typing import Any

from slipway.cli import output
from slipway.cli.registry import Context, arg, command


def _row(host: dict[str, Any]) -> dict[str, str]:
    return {
        "id": str(host.get("id", "")),
        "state": str(host.get("state", "")),
        "endpoint": str(host.get("endpoint", "")),
        "address": str(host.get("address", "")),
        "memory": f"{host.get('memory_mb', 0)} MB",
        "dynos": str(host.get("dynos", 0)),
    }


_COLUMNS = [
    ("id", "Host"),
    ("state", "State"),
    ("endpoint", "Endpoint"),
    ("address", "Address"),
    ("memory", "Memory"),
    ("dynos", "Dynos"),
]


@command("admin:hosts", "list the Docker hosts", aliases=("admin:hosts:list",), json=True)
def hosts(ctx: Context, args: argparse.Namespace) -> None:
    """GET /hosts."""
    found = ctx.client().get_list("/hosts")
    if args.json:
        ctx.emit_json(found)
    else:
        ctx.out(output.table([_row(h) for h in found], _COLUMNS))


@command(
    "admin:hosts:add",
    "register a Docker engine as a host",
    arg("id", help="the host's name, e.g. node-2"),
    arg("endpoint", help="unix:///var/run/docker.sock or tcp://10.0.0.5:2376"),
    arg("--address", default="127.0.0.1", help="private address ports are published on"),
    arg("--memory-mb", type=int, help="memory for dynos (default: what the engine reports)"),
    arg("--max-dynos", type=int, help="at most this many dynos"),
    arg("--tls-ca", help="CA file (tcp://)"),
    arg("--tls-cert", help="client certificate file (tcp://)"),
    arg("--tls-key", help="client key file (tcp://)"),
    examples=(
        "slipway admin:hosts:add node-2 tcp://10.0.0.5:2376 --address 10.0.0.5"
        " --tls-ca ca.pem --tls-cert cert.pem --tls-key key.pem",
    ),
    json=True,
)
def add(ctx: Context, args: argparse.Namespace) -> None:
    """POST /hosts."""
    body: dict[str, Any] = {"id": args.id, "endpoint": args.endpoint, "address": args.address}
    for field in ("memory_mb", "max_dynos", "tls_ca", "tls_cert", "tls_key"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    host = ctx.client().post("/hosts", body)
    if args.json:
        ctx.emit_json(host)
    else:
        ctx.note(f"Added host {host['id']} ({host['memory_mb']} MB), {host['state']}")


@command(
    "admin:hosts:drain",
    "move a host's dynos elsewhere; it takes no new ones",
    arg("id", help="the host"),
    json=True,
)
def drain(ctx: Context, args: argparse.Namespace) -> None:
    """POST /hosts/{id}/actions/drain."""
    host = ctx.client().post(f"/hosts/{args.id}/actions/drain")
    if args.json:
        ctx.emit_json(host)
    else:
        ctx.note(f"Draining host {args.id}... its dynos are moving")


@command(
    "admin:hosts:remove",
    "remove a drained host",
    arg("id", help="the host"),
    arg("--force", action="store_true", help="even with dynos on it (they are re-placed)"),
)
def remove(ctx: Context, args: argparse.Namespace) -> None:
    """DELETE /hosts/{id}."""
    ctx.client().delete(f"/hosts/{args.id}" + ("?force=1" if args.force else ""))
    ctx.note(f"Removed host {args.id}")


@command(
    "admin:rotate-master-key",
    "re-wrap every key under a new keyring master key and destroy the old one",
    examples=("slipway admin:rotate-master-key",),
    json=True,
)
def rotate_master_key(ctx: Context, args: argparse.Namespace) -> None:
    """POST /platform/master-key/actions/rotate."""
    client = ctx.client()
    # Every team's keys are re-wrapped before the answer: allow for a large platform.
    client.timeout = max(client.timeout, 300.0)
    done = client.post("/platform/master-key/actions/rotate")
    if args.json:
        ctx.emit_json(done)
        return
    how = "Finished the interrupted rotation" if done.get("resumed") else "Rotated"
    ctx.note(
        f"{how}: master key version {done['previous_version']} -> {done['version']},"
        f" {done['rewrapped']} keys re-wrapped; the old key is destroyed"
    )
    ctx.out(f"fingerprint: {done['fingerprint']}")
    if done.get("recovery_sealed"):
        ctx.out("sealed to the recovery recipients: master-key.recovery.age")
