"""audit and audit --verify: the team's tamper-evident log, checked offline.

`--verify` fetches the entries, the signed checkpoints and the platform's public
keys, and recomputes the hash chain here with `slipway.libs.auditchain.verify`:
trusting the server's own verdict would defeat the point.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from slipway.cli import output
from slipway.cli.client import segment
from slipway.cli.commands.apps import app_path
from slipway.cli.errors import CliError, UsageError
from slipway.cli.registry import Context, arg, command

if TYPE_CHECKING:
    from slipway.libs.auditchain import Verdict

Raw = Mapping[str, Any]


def split_body(body: Any) -> tuple[list[Raw], list[Raw]]:
    """(entries in sequence order, checkpoints) from an audit log answer."""
    if not isinstance(body, Mapping) or not isinstance(body.get("entries"), list):
        raise CliError("The audit answer has no list of entries.")
    entries: list[Raw] = sorted(body["entries"], key=lambda e: int(e.get("seq") or 0))
    return entries, list(body.get("checkpoints") or [])


def parse_keys(body: Any) -> dict[str, bytes]:
    """The Ed25519 public keys by key id, from GET /audit/keys ([{key_id, public_key hex}])."""
    if not isinstance(body, list):
        raise CliError("GET /audit/keys did not answer with a list of keys.")
    keys: dict[str, bytes] = {}
    for item in body:
        key_id = str(item.get("key_id"))
        try:
            keys[key_id] = bytes.fromhex(str(item.get("public_key")))
        except ValueError:
            raise CliError(f"Audit key {key_id} is not hex.") from None
    return keys


def within_chain(verdict: Verdict, subset: Sequence[Raw], chain: Sequence[Raw]) -> Verdict:
    """`verdict` on the team chain, failed at the first `subset` entry not identically in it.

    An app's log is a subset of its team's chain; the server could show the app
    entries that differ from the chain it lets you verify.
    """
    if not verdict.ok:
        return verdict
    import msgspec

    by_seq = {entry.get("seq"): entry for entry in chain}
    for entry in subset:
        if by_seq.get(entry.get("seq")) != entry:
            return msgspec.structs.replace(
                verdict,
                ok=False,
                broken_at=int(entry.get("seq") or 0),
                reason="this entry of the app's log differs from the team's chain",
            )
    return verdict


def verify_chain(
    entries: Sequence[Raw], checkpoints: Sequence[Raw], keys: dict[str, bytes]
) -> Verdict:
    """Recompute the chain from the raw JSON; an unreadable entry breaks it there."""
    import msgspec

    from slipway.libs import auditchain

    chain: list[tuple[auditchain.AuditEntry, str]] = []
    for raw in entries:
        fields = {key: value for key, value in raw.items() if key != "hash"}
        try:
            chain.append((msgspec.convert(fields, auditchain.AuditEntry), str(raw.get("hash"))))
        except msgspec.ValidationError as exc:
            return auditchain.Verdict(
                ok=False,
                entries=len(entries),
                checkpoints=len(checkpoints),
                broken_at=int(raw.get("seq") or 0),
                reason=f"entry cannot be read ({exc})",
            )
    try:
        signed = [msgspec.convert(dict(cp), auditchain.Checkpoint) for cp in checkpoints]
    except msgspec.ValidationError as exc:
        raise CliError(f"A checkpoint cannot be read: {exc}.") from None
    return auditchain.verify(chain, signed, keys)


def verdict_line(
    verdict: Verdict, entries: Sequence[Raw], checkpoints: Sequence[Raw], scope: str
) -> str:
    """What the user reads: OK with counts, or the exact entry where the chain breaks."""
    if not verdict.ok:
        where = f"entry {verdict.broken_at}"
        found = [e for e in entries if e.get("seq") == verdict.broken_at]
        if found:
            where += f" ({found[0].get('action')} at {found[0].get('at')})"
        return f"Audit chain of {scope} is BROKEN at {where}: {verdict.reason}."
    line = (
        f"OK: audit chain of {scope} verified: {output.plural(verdict.entries, 'entry')}, "
        f"{output.plural(verdict.checkpoints, 'signed checkpoint')}"
    )
    signed_up_to = max((int(cp.get("seq") or 0) for cp in checkpoints), default=0)
    if signed_up_to < verdict.entries:
        line += (
            f"; entries after {signed_up_to} are hash-linked but not yet covered "
            "by a signed checkpoint"
        )
    return line + "."


def _log_path(ctx: Context, args: argparse.Namespace) -> str:
    """The API path of the log to read: a team's, or an app's entries."""
    if args.team and (args.app or args.remote):
        raise UsageError("Give either an app (-a/--app) or a team (--team), not both.")
    if args.team:
        return f"/teams/{segment(args.team)}/audit"
    return f"{app_path(ctx.app(args))}/audit"


@command(
    "audit",
    "show, or verify, the tamper-evident audit log",
    arg("-t", "--team", metavar="TEAM", help="the whole team's log instead of one app's"),
    arg(
        "--verify",
        action="store_true",
        help="recompute the hash chain and check the signed checkpoints offline",
    ),
    arg("-n", "--num", type=int, default=0, metavar="N", help="show only the last N entries"),
    description=(
        "An app's entries live in its team's chain: --verify checks the whole team chain\n"
        "and that the app's entries are part of it. On tampering it exits with status 1\n"
        "and names the first entry that does not match (its seq, action and time)."
    ),
    examples=("slipway audit -a hello", "slipway audit --team acme --verify"),
    needs_app=True,
    json=True,
)
def audit(ctx: Context, args: argparse.Namespace) -> None:
    """GET the log; with --verify, check it against the chain and the signatures."""
    path = _log_path(ctx, args)  # usage errors first, before any request
    log = ctx.client().get(path)
    entries, _ = split_body(log)
    if args.verify:
        _verify(ctx, args, log)
        return
    shown = entries[-args.num :] if args.num > 0 else entries
    if args.json:
        ctx.emit_json(shown)
        return
    app = output.name_of(log.get("app"))
    scope = f"app {app}" if app else f"team {output.name_of(log.get('team'))}"
    ctx.out(output.header(f"Audit log of {scope}"))
    ctx.out(output.table([_row(e) for e in shown], _COLUMNS))


def _verify(ctx: Context, args: argparse.Namespace, log: Raw) -> None:
    """Verify the team chain `log` belongs to; for an app's log, also that it is in that chain."""
    client = ctx.client()
    team = output.name_of(log.get("team"))
    chain_log = log if log.get("complete") else client.get(f"/teams/{segment(team)}/audit")
    entries, checkpoints = split_body(chain_log)
    verdict = verify_chain(entries, checkpoints, parse_keys(client.get("/audit/keys")))
    own, _ = split_body(log)
    verdict = within_chain(verdict, own, entries)
    line = verdict_line(verdict, [*own, *entries], checkpoints, f"team {team}")
    app = output.name_of(log.get("app"))
    if verdict.ok and app:
        line = line.removesuffix(".") + f"; it holds app {app}'s {len(own)} entries."
    if args.json:
        ctx.emit_json(
            {
                "ok": verdict.ok,
                "team": team,
                "entries": verdict.entries,
                "checkpoints": verdict.checkpoints,
                "broken_at": verdict.broken_at,
                "reason": verdict.reason,
            }
        )
    if not verdict.ok:
        raise CliError(line)
    if not args.json:
        ctx.out(line)


_COLUMNS = [
    ("seq", "Seq"),
    ("at", "At"),
    ("actor", "Actor"),
    ("action", "Action"),
    ("app", "App"),
    ("details", "Details"),
]


def _row(entry: Raw) -> dict[str, str]:
    details = entry.get("details") or {}
    return {
        "seq": str(entry.get("seq", "")),
        "at": output.when(entry.get("at")),
        "actor": str(entry.get("actor") or ""),
        "action": str(entry.get("action") or ""),
        "app": str(entry.get("app") or ""),
        "details": ", ".join(f"{k}={v}" for k, v in sorted(details.items())),
    }
