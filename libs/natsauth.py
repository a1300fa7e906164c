"""The hardened NATS configuration: one user per service, each allowed only its own subjects.

What the permissions buy: a service can receive replies only on its own inbox
prefix (`_INBOX.<service>.>`), so the prefix of a request's reply subject proves
who sent it — the keyring's policy table relies on that. A service can receive
only the requests addressed to it (`slipway.rpc.<service>.>`); commands and
events reach it through JetStream pull consumers, which deliver to its inbox.
Live subjects carry customer data, so only their readers may listen: the gateway
(which streams to customers) and the log-shipper (which stores router, build and
platform lines).

Passwords are random, generated once, stored in `<nats data>/users.json` (0600);
each service reads its own through SLIPWAY_NATS_USER / SLIPWAY_NATS_PASSWORD.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

from slipway.contracts import subjects
from slipway.contracts.subjects import Service

# The operator's user: scripts, the health check, tests. Not given to any service.
OPERATOR = "operator"

# Publishing is open within Slipway's own subjects and JetStream's API: a publish
# cannot read anything. The limits that matter are on subscribing.
_PUBLISH = [f"{subjects.ROOT}.>", "$JS.API.>", "$JS.ACK.>", "_INBOX.>", "$SRV.>"]


def _subscribe(service: Service) -> list[str]:
    allowed = [
        f"{subjects.inbox_prefix(service)}.>",
        f"{subjects.ROOT}.rpc.{service}.>",
        f"{subjects.SRV_PREFIX}.>",
    ]
    allowed += _LIVE_LISTENERS.get(service, [])
    return allowed


_LIVE_LISTENERS: dict[Service, list[str]] = {
    Service.GATEWAY: [f"{subjects.ROOT}.live.>"],
    Service.LOG_SHIPPER: [
        subjects.live_filter("logs"),
        subjects.live_filter("router"),
        subjects.live_filter("build"),
    ],
    # One-off dynos: the keys a client types, relayed by the gateway (contracts/oneoff.py).
    Service.SCHEDULER: [subjects.live_filter("ttyin")],
}


def stored_password(data_dir: Path, user: str) -> str | None:
    """`user`'s password from a hardened server's table, if there is one."""
    path = data_dir / "users.json"
    if not path.exists():
        return None
    users: dict[str, str] = json.loads(path.read_text())
    return users.get(user)


def load_or_create_users(data_dir: Path) -> dict[str, str]:
    """The user → password table, created with random passwords on first use."""
    path = data_dir / "users.json"
    if path.exists():
        users: dict[str, str] = json.loads(path.read_text())
    else:
        users = {}
    wanted = [OPERATOR, *(str(s) for s in Service)]
    if any(name not in users for name in wanted):
        for name in wanted:
            users.setdefault(name, secrets.token_urlsafe(24))
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(users, out)
    return users


def authorization_block(users: dict[str, str]) -> str:
    """The nats-server `authorization { users = [...] }` block for `users`."""
    entries = []
    for name, password in sorted(users.items()):
        entry: dict[str, object] = {"user": name, "password": password}
        if name != OPERATOR:
            entry["permissions"] = {
                "publish": {"allow": _PUBLISH},
                "subscribe": {"allow": _subscribe(Service(name))},
            }
        entries.append(json.dumps(entry))
    return "authorization {\n  users = [\n    " + ",\n    ".join(entries) + "\n  ]\n}\n"
