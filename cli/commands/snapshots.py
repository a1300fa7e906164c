"""admin:snapshot*: platform snapshots — take one, list them, check one (platform admins only).

A snapshot holds every service's state sealed to the operator's offline recovery key
(README: Disaster recovery). Checking one needs no key: the manifest's signature and
every piece's size and SHA-256, on the server (`admin:snapshot:verify ID`) or on a copy
(`--path DIR`); with the recovery identity (`--identity FILE`) a copy is also restored
into a temporary folder and what it holds is counted against what was exported.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from slipway.cli import output
from slipway.cli.client import segment
from slipway.cli.errors import CliError, UsageError
from slipway.cli.registry import Context, arg, command

POLL = 1.0  # seconds between looks at a running snapshot


def size(count: object) -> str:
    """Bytes as `812 B`, `4.2 MB`, `1.3 GB` (powers of 1000, like `du --si`)."""
    value = float(count) if isinstance(count, int | float) else 0.0
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def took(snapshot: Mapping[str, Any]) -> str:
    """How long a snapshot took, from its start and end times; "" while it runs."""
    try:
        start = datetime.fromisoformat(str(snapshot.get("started_at")))
        end = datetime.fromisoformat(str(snapshot.get("finished_at")))
    except ValueError:
        return ""
    return f"{(end - start).total_seconds():.1f} s"


def _row(snapshot: Mapping[str, Any]) -> dict[str, str]:
    state = str(snapshot.get("state", ""))
    return {
        "id": str(snapshot.get("id", "")),
        "state": state,
        "kind": str(snapshot.get("kind", "")),
        "started": output.when(snapshot.get("started_at")),
        "took": took(snapshot),
        "size": size(snapshot.get("size", 0)) if state == "completed" else "",
        "parts": str(len(snapshot.get("parts") or [])) if state == "completed" else "",
        "note": str(snapshot.get("error") or snapshot.get("requested_by") or ""),
    }


_COLUMNS = [
    ("id", "Snapshot"),
    ("state", "State"),
    ("kind", "Kind"),
    ("started", "Started"),
    ("took", "Took"),
    ("size", "Size"),
    ("parts", "Parts"),
    ("note", "By / error"),
]


@command(
    "admin:snapshot",
    "take a platform snapshot now, sealed to the recovery key, and wait for it",
    examples=("slipway admin:snapshot",),
    json=True,
)
def take(ctx: Context, args: argparse.Namespace) -> None:
    """POST /admin/snapshots, then GET /admin/snapshots/{id} until it has finished."""
    client = ctx.client()
    snapshot = client.post("/admin/snapshots")
    ctx.note(f"Taking snapshot {snapshot['id']}... (Ctrl-C stops waiting, not the snapshot)")
    while snapshot.get("state") == "running":
        time.sleep(POLL)
        snapshot = client.get(f"/admin/snapshots/{segment(snapshot['id'])}")
    if args.json:
        ctx.emit_json(snapshot)
    if snapshot.get("state") != "completed":
        raise CliError(f"Snapshot {snapshot['id']} failed: {snapshot.get('error') or 'unknown'}")
    if args.json:
        return
    ctx.note(f"Snapshot {snapshot['id']} is stored and signed")
    ctx.out(
        output.key_values(
            [
                ("id", str(snapshot["id"])),
                ("size", size(snapshot.get("size", 0))),
                ("parts", str(len(snapshot.get("parts") or []))),
                ("time", took(snapshot)),
                ("signer", str(snapshot.get("signer", ""))),
                ("location", str(snapshot.get("location", ""))),
            ]
        )
    )


@command("admin:snapshots", "list platform snapshots, newest first", json=True)
def snapshots(ctx: Context, args: argparse.Namespace) -> None:
    """GET /admin/snapshots."""
    found = ctx.client().get_list("/admin/snapshots")
    if args.json:
        ctx.emit_json(found)
    elif not found:
        ctx.note("No snapshots yet: take one with `slipway admin:snapshot`.")
    else:
        ctx.out(output.table([_row(s) for s in found], _COLUMNS))


@command(
    "admin:snapshot:verify",
    "check a snapshot without its key (and with --identity, restore it on trial)",
    arg("id", nargs="?", help="a stored snapshot's id (checked by the backup service)"),
    arg("--path", help="a copy of a snapshot's folder, checked here instead"),
    arg(
        "--identity",
        action="append",
        default=[],
        help="the recovery identity file (with --path): restore into a temporary folder"
        " and compare what it holds with what was exported; repeatable",
    ),
    arg(
        "--signer",
        action="append",
        default=[],
        help="hex public key the manifest must be signed by",
    ),
    examples=(
        "slipway admin:snapshot:verify s20261203T101500Z-3f9a",
        "slipway admin:snapshot:verify --path /mnt/usb/s20261203T101500Z-3f9a"
        " --identity recovery.key",
    ),
    json=True,
)
def verify(ctx: Context, args: argparse.Namespace) -> None:
    """POST /admin/snapshots/{id}/verify, or the same checks on a local copy."""
    if args.path:
        _verify_copy(ctx, args)
        return
    if not args.id:
        raise UsageError("Name a snapshot (see `slipway admin:snapshots`) or give --path DIR.")
    if args.identity:
        raise UsageError("--identity opens a local copy: use it with --path DIR.")
    client = ctx.client()
    # Every stored piece is read back and hashed: allow for a large platform.
    client.timeout = max(client.timeout, 1800.0)
    check = client.post(f"/admin/snapshots/{segment(args.id)}/verify")
    if args.json:
        ctx.emit_json(check)
    _report(ctx, str(check["snapshot_id"]), check.get("problems") or [], args.json)
    if not args.json:
        ctx.out(
            f"{check['pieces_checked']} pieces, {size(check['bytes_checked'])}: signature,"
            " sizes and SHA-256 match the manifest"
        )


def _report(ctx: Context, snapshot_id: str, problems: list[str], quiet: bool) -> None:
    if problems:
        if not quiet:
            for line in problems:
                ctx.out(f"  {line}")
        raise CliError(
            f"Snapshot {snapshot_id} is damaged: {output.plural(len(problems), 'problem')}."
        )


def _verify_copy(ctx: Context, args: argparse.Namespace) -> None:
    from slipway.libs.snapshot import manifest as mf

    folder = Path(args.path)
    trusted = {key.lower() for key in args.signer} or None
    try:
        manifest, problems = mf.verify_layout(folder, trusted)
    except mf.SnapshotError as exc:
        raise CliError(str(exc)) from None
    pieces = sum(len(part.pieces) for part in manifest.parts)
    _report(ctx, manifest.id, problems, False)
    ctx.out(f"{manifest.id}: signature, {pieces} pieces' sizes and SHA-256 match the manifest")
    if trusted is None:
        ctx.note(
            "The signature is valid, but nothing says whose it is: pass --signer HEX (the"
            " keyring's key, shown by `slipway admin:snapshots --json` as `signer`)."
        )
    if args.identity:
        _dry_run(ctx, folder, [Path(p) for p in args.identity], trusted)


def _dry_run(ctx: Context, folder: Path, identities: list[Path], trusted: set[str] | None) -> None:
    # The restore code is only needed here: imported when asked for.
    from slipway.libs.snapshot.restore import dry_run

    try:
        report = dry_run(folder, identities, trusted)
    except Exception as exc:  # its errors are one clear line each, whatever their class
        raise CliError(f"The trial restore failed: {exc}") from None
    for line in report.lines():
        ctx.out(line)
    if not report.ok:
        raise CliError("The trial restore holds other counts than the snapshot recorded.")
