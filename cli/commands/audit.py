"""audit and audit --verify: the team's tamper-evident log, checked offline.

`--verify` fetches the entries, the signed checkpoints and the platform's public
keys, and recomputes the hash chain here with `slipway.libs.auditchain.verify`:
trusting the server's own verdict would defeat the point. The keys and the
newest verified checkpoint are pinned on first use (`slipway.cli.auditpins`);
`audit:checkpoint` saves a checkpoint the customer keeps, and `--against FILE`
proves the chain still extends it.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slipway.cli import output
from slipway.cli.auditpins import Pins
from slipway.cli.client import Client, segment
from slipway.cli.commands.apps import app_path
from slipway.cli.errors import CliError, UsageError
from slipway.cli.registry import Context, arg, command

if TYPE_CHECKING:
    from slipway.libs.auditchain import Verdict

Raw = Mapping[str, Any]
SIGN_WAIT = 5.0  # seconds an unsigned newest entry may wait for its checkpoint


def seq_of(raw: Raw) -> int:
    """An entry's sequence number, or 0 when the server sent none that reads as one.

    An answer is checked, not trusted: a malformed `seq` must make the verdict "broken",
    never crash the verifier before it can say so.
    """
    try:
        return int(raw.get("seq") or 0)
    except (TypeError, ValueError):
        return 0


def split_body(body: Any) -> tuple[list[Raw], list[Raw]]:
    """(entries in sequence order, checkpoints) from an audit log answer."""
    if not isinstance(body, Mapping) or not isinstance(body.get("entries"), list):
        raise CliError("The audit answer has no list of entries.")
    entries: list[Raw] = sorted(body["entries"], key=seq_of)
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
                broken_at=seq_of(entry),
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
                broken_at=seq_of(raw),
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
    arg(
        "--against",
        metavar="FILE",
        help="with --verify: also prove the chain extends a checkpoint saved by audit:checkpoint",
    ),
    arg("-n", "--num", type=int, default=0, metavar="N", help="show only the last N entries"),
    description=(
        "An app's entries live in its team's chain: --verify checks the whole team chain\n"
        "and that the app's entries are part of it. On tampering it exits with status 1\n"
        "and names the first entry that does not match (its seq, action and time).\n"
        "The newest entry must be covered by a signed checkpoint (a cut chain is not).\n"
        "The audit keys and the newest checkpoint verified are pinned on first use\n"
        "(audit-pins.json in the config dir): a key that disappears or changes fails."
    ),
    examples=(
        "slipway audit -a hello",
        "slipway audit --team acme --verify",
        "slipway audit --team acme --verify --against acme-audit.json",
    ),
    needs_app=True,
    json=True,
)
def audit(ctx: Context, args: argparse.Namespace) -> None:
    """GET the log; with --verify, check it against the chain and the signatures."""
    path = _log_path(ctx, args)  # usage errors first, before any request
    if args.against and not args.verify:
        raise UsageError("--against FILE goes with --verify.")
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
    team = output.name_of(log.get("team"))
    chain_log = log if log.get("complete") else None
    checked = verified_team_chain(ctx, team, chain_log, against=args.against)
    own, _ = split_body(log)
    verdict = within_chain(checked.verdict, own, checked.entries)
    line = verdict_line(verdict, [*own, *checked.entries], checked.checkpoints, f"team {team}")
    app = output.name_of(log.get("app"))
    if verdict.ok and app:
        line = line.removesuffix(".") + f"; it holds app {app}'s {len(own)} entries."
    if verdict.ok and args.against:
        line = line.removesuffix(".") + f"; it extends the checkpoint saved in {args.against}."
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
    checked.remember()
    for key_id in checked.new_keys:
        ctx.note(f"Pinned audit key {key_id} (first use): a later change to it will fail.")
    if not args.json:
        ctx.out(line)


@dataclass
class Checked:
    """A team chain as fetched, its verdict, and the pins to save if it verified."""

    log: Raw
    entries: list[Raw]
    checkpoints: list[Raw]
    verdict: Verdict
    pins: Pins
    new_keys: list[str]

    def remember(self) -> None:
        """Pin the keys and the newest checkpoint of a chain that verified."""
        team_id = str((self.log.get("team") or {}).get("id"))
        if self.checkpoints:
            newest: Raw = max(self.checkpoints, key=_seq)
            self.pins.heads[team_id] = dict(newest)
        self.pins.save()


def _seq(item: Raw) -> int:
    return seq_of(item)


def verified_team_chain(
    ctx: Context, team: str, log: Raw | None, *, against: str | None = None
) -> Checked:
    """The team's chain checked here: hashes, signatures with pinned keys, a signed head,
    the checkpoint saved in `against`, and the newest checkpoint an earlier run verified."""
    client = ctx.client()
    path = f"/teams/{segment(team)}/audit"
    log = _with_signed_head(client, path, log or client.get(path), ctx.env)
    entries, checkpoints = split_body(log)
    pins = Pins.load(ctx.env, ctx.credentials().api_url)
    served = client.get("/audit/keys")
    parse_keys(served)  # a malformed answer is an error before any pinning
    new_keys = pins.check_keys(served)
    keys = pins.public_keys()
    verdict = verify_chain(entries, checkpoints, keys)
    team_id = str((log.get("team") or {}).get("id"))
    if verdict.ok and against:
        saved = load_saved(against, team_id)
        verdict = _saved_verdict(check_saved(entries, saved, keys), f"saved in {against}")
    pinned = pins.heads.get(team_id)
    if verdict.ok and pinned:
        seen = _saved_verdict(check_saved(entries, [pinned], keys), "this CLI verified before")
        verdict = seen if not seen.ok else verdict
    return Checked(log, entries, checkpoints, verdict, pins, new_keys)


def _with_signed_head(client: Client, path: str, log: Raw, env: Mapping[str, str]) -> Raw:
    """`log`, fetched again for a few seconds while its newest entry awaits its checkpoint.

    The gateway signs each head just after the change that wrote it: an unsigned
    head that stays unsigned is what a cut chain looks like.
    """
    deadline = time.monotonic() + float(env.get("SLIPWAY_AUDIT_SIGN_WAIT") or SIGN_WAIT)
    while True:
        entries, checkpoints = split_body(log)
        newest = max(map(_seq, entries), default=0)
        if newest <= max(map(_seq, checkpoints), default=0) or time.monotonic() >= deadline:
            return log
        time.sleep(0.5)
        log = client.get(path)


def _saved_verdict(verdict: Verdict, source: str) -> Verdict:
    """`verdict` of `auditchain.extends`, its reason naming where the checkpoint came from."""
    if verdict.ok:
        return verdict
    import msgspec

    return msgspec.structs.replace(verdict, reason=f"{verdict.reason} ({source})")


def check_saved(entries: Sequence[Raw], saved: Sequence[Raw], keys: dict[str, bytes]) -> Verdict:
    """Whether the verified chain `entries` still extends each checkpoint in `saved`."""
    import msgspec

    from slipway.libs import auditchain

    chain = [
        (
            msgspec.convert({k: v for k, v in raw.items() if k != "hash"}, auditchain.AuditEntry),
            str(raw.get("hash")),
        )
        for raw in entries
    ]
    try:
        held = [msgspec.convert(dict(cp), auditchain.Checkpoint) for cp in saved]
    except msgspec.ValidationError as exc:
        raise CliError(f"A saved checkpoint cannot be read: {exc}.") from None
    return auditchain.extends(chain, held, keys)


def load_saved(path: str, team_id: str) -> list[Raw]:
    """The checkpoints of a file `audit:checkpoint` wrote, for the team `team_id`."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"Cannot read saved checkpoints from {path} ({exc}).") from None
    if not isinstance(saved, Mapping) or not isinstance(saved.get("checkpoints"), list):
        raise CliError(f"{path} is not a file written by `slipway audit:checkpoint`.")
    saved_team = (saved.get("team") or {}).get("id")
    if saved_team != team_id:
        raise CliError(f"{path} holds checkpoints of another team ({saved_team}).")
    return list(saved["checkpoints"])


@command(
    "audit:checkpoint",
    "save the team's newest signed checkpoint, to prove later the log still extends it",
    arg("-t", "--team", metavar="TEAM", required=True, help="the team whose chain to save"),
    arg("-o", "--output", metavar="FILE", help="write here instead of standard output"),
    description=(
        "Verifies the team chain first (as audit --verify does), then saves its newest\n"
        "signed checkpoint. Keep the file away from the platform: `slipway audit --team\n"
        "TEAM --verify --against FILE` fails if the log no longer extends it, even if\n"
        "whoever runs the platform re-signed a rewritten history."
    ),
    examples=("slipway audit:checkpoint --team acme -o acme-audit.json",),
)
def checkpoint(ctx: Context, args: argparse.Namespace) -> None:
    """Verify the team chain, then write its newest checkpoint as JSON."""
    checked = verified_team_chain(ctx, args.team, None)
    team = output.name_of(checked.log.get("team"))
    if not checked.verdict.ok:
        raise CliError(
            verdict_line(checked.verdict, checked.entries, checked.checkpoints, f"team {team}")
        )
    if not checked.checkpoints:
        raise CliError(f"Team {team} has no signed checkpoint yet: try again in a few seconds.")
    newest: Raw = max(checked.checkpoints, key=_seq)
    saved = {
        "api_url": ctx.credentials().api_url,
        "team": checked.log.get("team"),
        "checkpoints": [dict(newest)],
    }
    checked.remember()
    text = json.dumps(saved, indent=2, sort_keys=True) + "\n"
    if not args.output:
        ctx.stdout.write(text)
        return
    Path(args.output).write_text(text)
    ctx.note(
        f"Saved team {team}'s checkpoint at entry {newest['seq']} to {args.output}:"
        f" verify later with `slipway audit --team {team} --verify --against {args.output}`."
    )


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
