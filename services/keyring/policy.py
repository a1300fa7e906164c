"""Who may ask the keyring for what: one table, checked on every call.

The caller is the service whose reply inbox a request came from
(`libs.bus.context.current().caller`); in the hardened NATS configuration a
service can only receive replies under its own inbox prefix, so it cannot
borrow another's name. A call the table does not grant raises Forbidden (and is
audited like any other).

Data-key operations are granted per purpose; the others carry no purpose. The
table refines, never widens, the callers each RPC declares in contracts/keyring.py
(from which nats-server's permissions are generated): a grant to an undeclared
caller is void, and `disagreements()` (tested) lists any such drift.
`operator` is the platform operator's NATS user (scripts, the health check): it
may rotate, retire and shred, and read public information, but never holds a
data key.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple

from slipway.contracts import keyring, snapshot
from slipway.contracts.base import Rpc
from slipway.contracts.keyring import Purpose
from slipway.contracts.subjects import Service
from slipway.libs.errors import Forbidden
from slipway.libs.natsauth import OPERATOR


class Operation(StrEnum):
    """The keyring's operations, named like its RPCs."""

    GENERATE = keyring.DATAKEY_GENERATE.name
    DECRYPT = keyring.DATAKEY_DECRYPT.name
    REWRAP = keyring.DATAKEY_REWRAP.name
    RENEW = keyring.DATAKEY_RENEW.name
    ROTATE = keyring.KEK_ROTATE.name
    RETIRE = keyring.KEK_RETIRE.name
    SHRED = keyring.TEAM_SHRED.name
    PUBKEY_REGISTER = keyring.PUBKEY_REGISTER.name
    PUBKEY_GET = keyring.PUBKEY_GET.name
    AUDIT_SIGN = keyring.AUDIT_SIGN.name
    AUDIT_KEY = keyring.AUDIT_KEY.name
    BACKUP_RECIPIENTS_GET = keyring.BACKUP_RECIPIENTS_GET.name
    BACKUP_KEY_ADD = keyring.BACKUP_KEY_ADD.name
    BACKUP_KEY_REMOVE = keyring.BACKUP_KEY_REMOVE.name
    BACKUP_PLATFORM_KEY_SET = keyring.BACKUP_PLATFORM_KEY_SET.name
    BACKUP_OPERATOR_KEY_SET = keyring.BACKUP_OPERATOR_KEY_SET.name
    BACKUP_FILEKEYS_UNWRAP = keyring.BACKUP_FILEKEYS_UNWRAP.name
    BACKUP_MANIFEST_SIGN = keyring.BACKUP_MANIFEST_SIGN.name
    MASTERKEY_ROTATE = keyring.MASTERKEY_ROTATE.name
    SNAPSHOT_MANIFEST_SIGN = snapshot.SNAPSHOT_MANIFEST_SIGN.name


class Grant(NamedTuple):
    caller: str
    operation: Operation
    purpose: Purpose | None = None


G, Op, P = Grant, Operation, Purpose
GATEWAY, SCHEDULER, BUILDER = Service.GATEWAY, Service.SCHEDULER, Service.BUILDER
LOG_SHIPPER, BACKUP = Service.LOG_SHIPPER, Service.BACKUP
MONITOR = Service.MONITOR

# fmt: off
TABLE: tuple[Grant, ...] = (
    # caller        operation            purpose
    # Config vars: the gateway writes and reads them; the scheduler injects them into dynos.
    G(GATEWAY,      Op.GENERATE,         P.CONFIG),
    G(GATEWAY,      Op.DECRYPT,          P.CONFIG),
    G(GATEWAY,      Op.REWRAP,           P.CONFIG),
    # A config change: the current version's key opened and the next one's issued at once.
    G(GATEWAY,      Op.RENEW,            P.CONFIG),
    G(SCHEDULER,    Op.DECRYPT,          P.CONFIG),
    # The buildpack contract hands config vars to bin/compile in ENV_DIR.
    G(BUILDER,      Op.DECRYPT,          P.CONFIG),
    # Stored log batches and archives.
    G(LOG_SHIPPER,  Op.GENERATE,         P.LOGS),
    G(LOG_SHIPPER,  Op.DECRYPT,          P.LOGS),
    G(LOG_SHIPPER,  Op.REWRAP,           P.LOGS),
    # Webhook URLs, secrets and Authorization values, sealed by the monitor like drain URLs.
    G(MONITOR,      Op.GENERATE,         P.LOGS),
    G(MONITOR,      Op.DECRYPT,          P.LOGS),
    # Backups of add-ons and of the platform.
    G(BACKUP,       Op.GENERATE,         P.BACKUP),
    G(BACKUP,       Op.DECRYPT,          P.BACKUP),
    G(BACKUP,       Op.REWRAP,           P.BACKUP),
    # Build sources and the per-app build cache.
    G(BUILDER,      Op.GENERATE,         P.BUILD_SOURCE),
    G(BUILDER,      Op.DECRYPT,          P.BUILD_SOURCE),
    G(BUILDER,      Op.REWRAP,           P.BUILD_SOURCE),
    G(BUILDER,      Op.GENERATE,         P.BUILD_CACHE),
    G(BUILDER,      Op.DECRYPT,          P.BUILD_CACHE),
    G(BUILDER,      Op.REWRAP,           P.BUILD_CACHE),
    # The gateway keeps pushed and uploaded sources until a builder has fetched them.
    G(GATEWAY,      Op.GENERATE,         P.BUILD_SOURCE),
    G(GATEWAY,      Op.DECRYPT,          P.BUILD_SOURCE),
    # The team's key lifecycle: customers act through the gateway, the operator directly.
    G(GATEWAY,      Op.ROTATE),
    G(GATEWAY,      Op.RETIRE),
    G(GATEWAY,      Op.SHRED),
    G(OPERATOR,     Op.ROTATE),
    G(OPERATOR,     Op.RETIRE),
    G(OPERATOR,     Op.SHRED),
    # Customer-held keys: registered through the gateway, read by whoever seals to them.
    G(GATEWAY,      Op.PUBKEY_REGISTER),
    G(GATEWAY,      Op.PUBKEY_GET),
    G(LOG_SHIPPER,  Op.PUBKEY_GET),
    G(BACKUP,       Op.PUBKEY_GET),
    G(OPERATOR,     Op.PUBKEY_GET),
    # Audit checkpoints: the gateway keeps the chains; the public key is for anyone verifying.
    G(GATEWAY,      Op.AUDIT_SIGN),
    G(GATEWAY,      Op.AUDIT_KEY),
    G(OPERATOR,     Op.AUDIT_KEY),
    G(BACKUP,       Op.AUDIT_KEY),
    # Backups: sealed by the backup service to the team's recipients, which customers manage
    # through the gateway; only the backup service gets file keys back (for restores) and
    # manifest signatures.
    G(GATEWAY,      Op.BACKUP_RECIPIENTS_GET),
    G(BACKUP,       Op.BACKUP_RECIPIENTS_GET),
    G(GATEWAY,      Op.BACKUP_KEY_ADD),
    G(GATEWAY,      Op.BACKUP_KEY_REMOVE),
    G(GATEWAY,      Op.BACKUP_PLATFORM_KEY_SET),
    G(GATEWAY,      Op.BACKUP_OPERATOR_KEY_SET),
    G(BACKUP,       Op.BACKUP_FILEKEYS_UNWRAP),
    G(BACKUP,       Op.BACKUP_MANIFEST_SIGN),
    # The master key: rotated on a platform admin's request, which only the gateway checks.
    G(GATEWAY,      Op.MASTERKEY_ROTATE),
    # Platform snapshots: the backup service that took one has its manifest signed.
    G(BACKUP,       Op.SNAPSHOT_MANIFEST_SIGN),
)
# fmt: on

_ALLOWED = frozenset(TABLE)

# Each operation's RPC, whose declared callers bound the table.
RPCS: dict[Operation, Rpc[Any, Any]] = {
    Operation(rpc.name): rpc
    for rpc in (
        keyring.DATAKEY_GENERATE,
        keyring.DATAKEY_DECRYPT,
        keyring.DATAKEY_REWRAP,
        keyring.DATAKEY_RENEW,
        keyring.KEK_ROTATE,
        keyring.KEK_RETIRE,
        keyring.TEAM_SHRED,
        keyring.PUBKEY_REGISTER,
        keyring.PUBKEY_GET,
        keyring.AUDIT_SIGN,
        keyring.AUDIT_KEY,
        keyring.BACKUP_RECIPIENTS_GET,
        keyring.BACKUP_KEY_ADD,
        keyring.BACKUP_KEY_REMOVE,
        keyring.BACKUP_PLATFORM_KEY_SET,
        keyring.BACKUP_OPERATOR_KEY_SET,
        keyring.BACKUP_FILEKEYS_UNWRAP,
        keyring.BACKUP_MANIFEST_SIGN,
        keyring.MASTERKEY_ROTATE,
        snapshot.SNAPSHOT_MANIFEST_SIGN,
    )
}


def disagreements() -> list[str]:
    """Where the table and the declared callers differ (nothing, when they agree)."""
    found = []
    for operation, rpc in RPCS.items():
        granted = {g.caller for g in TABLE if g.operation == operation}
        for caller in sorted(granted - rpc.callers):
            found.append(f"{caller} is granted {operation} but not declared to call it")
        for caller in sorted(rpc.callers - granted):
            found.append(f"{caller} is declared to call {operation} but granted nothing")
    return found


def allowed(caller: str | None, operation: Operation, purpose: Purpose | None = None) -> bool:
    """Whether `caller` is declared for `operation` and the table grants it (for `purpose`)."""
    return (
        caller is not None
        and caller in RPCS[operation].callers
        and Grant(caller, operation, purpose) in _ALLOWED
    )


def check(caller: str | None, operation: Operation, purpose: Purpose | None = None) -> None:
    """Raise Forbidden unless the table grants the call."""
    if allowed(caller, operation, purpose):
        return
    who = caller or "a caller without a Slipway inbox"
    what = f"{operation} for purpose {purpose}" if purpose is not None else str(operation)
    raise Forbidden(f"{who} may not {what}: the keyring's policy does not allow it.")
