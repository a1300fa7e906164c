"""The hardened NATS configuration: one user per service, allowed only what contracts/ declares.

Every permission below is generated from `contracts.catalog` (no subject is written
by hand here), so the bus refuses exactly what the declarations do not grant:

- publish a request to an RPC only if declared among its `callers`; a command only
  if among its `senders`; an event only if among its `publishers`; a live subject
  only if among its `writers`;
- subscribe only to its own inbox (`_INBOX.<service>.>`), the RPCs it serves, the
  live subjects it reads and its own `$SRV` discovery subjects;
- answer requests only into the inboxes of the callers declared for what it serves
  (and the operator's, for discovery) — so a request whose reply subject points
  anywhere else is never answered there;
- JetStream: no `$JS.API.>`. A service may only fetch from, ack and look up its own
  durable consumers and dead-letter into its own DLQ subjects. Streams and consumers
  are created by the `provisioner` user (libs/bus/provision.py), which may only
  create and look up the declared ones: never delete or purge. One read-only exception,
  declared in `SNAPSHOT_READS`: the backup service reads the CMD and EVT streams' messages
  and consumer positions for a platform snapshot (libs/snapshot/streams.py).

Why the reply inbox proves the caller: NATS cannot check the reply subject a client
puts on a request, but each user may subscribe only under its own inbox prefix, so
a forged `_INBOX.gateway.…` reply goes to the gateway, never back to the forger.

Passwords are random, generated once, stored in `<nats data>/users.json` (0600);
each service reads its own through SLIPWAY_NATS_USER / SLIPWAY_NATS_PASSWORD.

    python -m slipway.libs.natsauth --table     # every user's permissions, as markdown
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from slipway.contracts import subjects
from slipway.contracts.catalog import DEFAULT_INSTANCES, Catalog, catalog
from slipway.contracts.leases import LEASED
from slipway.contracts.subjects import OPERATOR, PROVISIONER, Service

__all__ = [
    "MONITOR",
    "OPERATOR",
    "PROVISIONER",
    "SNAPSHOT_READER",
    "Permissions",
    "authorization_block",
    "load_or_create_users",
    "permissions",
    "stored_password",
]

# The JetStream API subjects a service may use, for one of its own consumers.
_JS_API = "$JS.API"
_JS_ACK = "$JS.ACK"
STREAMS = (subjects.STREAM_CMD, subjects.STREAM_EVT, subjects.STREAM_DLQ)

# A platform snapshot carries the commands and events some consumer has not acknowledged
# yet, so that a restored platform still does them (libs/snapshot/streams.py). The backup
# service takes snapshots, so it alone may read those streams' state, their consumers'
# positions and single messages by sequence: direct reads that create no consumer and ack
# nothing. Never create, update, delete or purge, nor create or delete a consumer: a
# snapshot must not be able to change what it copies.
SNAPSHOT_READER = Service.BACKUP
SNAPSHOT_STREAMS = (subjects.STREAM_CMD, subjects.STREAM_EVT)
SNAPSHOT_READS = ("STREAM.INFO", "CONSUMER.LIST", "STREAM.MSG.GET")

# The monitor watches everyone and changes nothing: it asks every instance the discovery
# questions (whose answers come back into its own inbox) and reads each stream's and each
# declared consumer's position (lag). Nothing that creates, deletes, fetches or acks.
MONITOR = Service.MONITOR
MONITOR_DISCOVERY = ("PING", "STATS")

Instances = Mapping[str, Iterable[str | None]]


@dataclass
class Permissions:
    """One NATS user's publish and subscribe allow-lists."""

    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)

    def add(self, publish: Iterable[str] = (), subscribe: Iterable[str] = ()) -> None:
        for subject in publish:
            if subject not in self.publish:
                self.publish.append(subject)
        for subject in subscribe:
            if subject not in self.subscribe:
                self.subscribe.append(subject)


def durables(service: str, cat: Catalog, instances: Instances) -> list[tuple[str, str]]:
    """(stream, durable) of every consumer provisioned for `service`."""
    owned: list[tuple[str, str]] = []
    if any(c.service == service for c in cat.commands):
        owned.append((subjects.STREAM_CMD, subjects.durable(Service(service), "cmd")))
    for spec in cat.consumers:
        if spec.service != service:
            continue
        names = instances.get(service, (None,)) if spec.per_instance else (None,)
        for instance in names:
            purpose = spec.durable_purpose(instance)
            owned.append((subjects.STREAM_EVT, subjects.durable(Service(service), purpose)))
    return owned


def permissions(
    service: str, cat: Catalog | None = None, instances: Instances | None = None
) -> Permissions:
    """`service`'s NATS permissions, generated from the declarations in contracts/."""
    cat = cat or catalog()
    instances = DEFAULT_INSTANCES if instances is None else instances
    perms = Permissions()
    _rpc_permissions(perms, service, cat)
    perms.add(
        publish=[c.subject for c in cat.commands if service in c.senders]
        + [e.subject for e in cat.events if service in e.publishers]
        + [live.filter for live in cat.lives if service in live.writers],
        subscribe=[live.filter for live in cat.lives if service in live.readers],
    )
    _jetstream_permissions(perms, service, cat, instances)
    if service in LEASED:
        perms.add(publish=lease_subjects(Service(service)))
    if service == SNAPSHOT_READER:
        perms.add(publish=snapshot_read_subjects())
    if service == MONITOR:
        perms.add(publish=monitor_read_subjects())
    _discovery_permissions(perms, service)
    return perms


def lease_subjects(service: Service) -> list[str]:
    """What a leased service may do with the lease bucket: its own key only.

    Write it (create, renew, release), read it back (direct get of its last value, which
    is how a candidate tells a released key from a held one) and look up the bucket (its
    ttl). Another service's key is out of reach: a broken-into keyring cannot depose the
    scheduler's leader by overwriting its lease, nor stand in for it.
    """
    own = subjects.lease_subject(service)
    return [
        own,
        f"{_JS_API}.DIRECT.GET.{subjects.STREAM_LEASES}.{own}",
        f"{_JS_API}.STREAM.INFO.{subjects.STREAM_LEASES}",
    ]


def snapshot_read_subjects() -> list[str]:
    """The read-only JetStream API calls of SNAPSHOT_READER (see SNAPSHOT_READS)."""
    return [f"{_JS_API}.{verb}.{stream}" for stream in SNAPSHOT_STREAMS for verb in SNAPSHOT_READS]


def monitor_read_subjects() -> list[str]:
    """What the monitor may ask: discovery of every service, stream and consumer positions.

    Every consumer of the platform's streams, not only the declared durables: per-instance
    consumers are named for hosts and routers the monitor learns at run time, and a
    consumer left behind (a removed host's) is exactly the lag worth seeing. Read-only
    calls: their answers are positions and counts, never a message.
    """
    reads = [subjects.srv_subjects(verb, "x", "x")[0] for verb in MONITOR_DISCOVERY]
    for stream in STREAMS:
        reads += [
            f"{_JS_API}.STREAM.INFO.{stream}",
            f"{_JS_API}.CONSUMER.NAMES.{stream}",
            f"{_JS_API}.CONSUMER.INFO.{stream}.*",
        ]
    return reads


def _rpc_permissions(perms: Permissions, service: str, cat: Catalog) -> None:
    served = [rpc for rpc in cat.rpcs if rpc.service == service]
    answered = sorted({caller for rpc in served for caller in rpc.callers})
    perms.add(
        publish=[rpc.subject for rpc in cat.rpcs if service in rpc.callers]
        + [f"{subjects.inbox_prefix(caller)}.>" for caller in answered],
        subscribe=[f"{subjects.inbox_prefix(service)}.>"] + [rpc.subject for rpc in served],
    )


def _jetstream_permissions(
    perms: Permissions, service: str, cat: Catalog, instances: Instances
) -> None:
    owned = durables(service, cat, instances)
    for stream, durable in owned:
        perms.add(
            publish=[
                f"{_JS_API}.CONSUMER.MSG.NEXT.{stream}.{durable}",
                f"{_JS_API}.CONSUMER.INFO.{stream}.{durable}",
                f"{_JS_ACK}.{stream}.{durable}.>",
            ]
        )
    if owned:
        # A message no handler could take is moved to the service's own dead letters.
        perms.add(publish=[subjects.dead_letter_filter(Service(service))])


def _discovery_permissions(perms: Permissions, service: str) -> None:
    # Only its own discovery subjects: another user listening on `$SRV.PING.keyring`
    # would pass for the keyring in `nats micro ls` and the health check.
    srv: list[str] = []
    for verb in subjects.SRV_VERBS:
        every, named, _ = subjects.srv_subjects(verb, service, "x")
        srv += [every, named, f"{named}.*"]
    # Answers go to the operator (health checks, `nats micro ls`) and the monitor.
    answer_to = [f"{subjects.inbox_prefix(who)}.>" for who in (OPERATOR, MONITOR)]
    perms.add(publish=answer_to, subscribe=srv)


def provisioner_permissions(
    cat: Catalog | None = None, instances: Instances | None = None
) -> Permissions:
    """The provisioner may create and look up the streams and declared consumers, nothing else."""
    cat = cat or catalog()
    instances = DEFAULT_INSTANCES if instances is None else instances
    perms = Permissions(subscribe=[f"{subjects.inbox_prefix(PROVISIONER)}.>"])
    for stream in (*STREAMS, subjects.STREAM_LEASES):
        perms.add(publish=[f"{_JS_API}.STREAM.{verb}.{stream}" for verb in ("INFO", "CREATE")])
        perms.add(publish=[f"{_JS_API}.STREAM.UPDATE.{stream}"])
    for service in Service:
        for stream, durable in durables(service, cat, instances):
            perms.add(
                publish=[
                    f"{_JS_API}.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
                    f"{_JS_API}.CONSUMER.INFO.{stream}.{durable}",
                ]
            )
    return perms


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
    wanted = [OPERATOR, PROVISIONER, *(str(s) for s in Service)]
    if any(name not in users for name in wanted):
        for name in wanted:
            users.setdefault(name, secrets.token_urlsafe(24))
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(users, out)
    return users


def user_permissions(name: str, instances: Instances | None = None) -> Permissions | None:
    """The permissions of user `name`; None for the operator, who holds them all."""
    if name == OPERATOR:
        return None
    if name == PROVISIONER:
        return provisioner_permissions(instances=instances)
    return permissions(name, instances=instances)


def authorization_block(users: dict[str, str], instances: Instances | None = None) -> str:
    """The nats-server `authorization { users = [...] }` block for `users`."""
    entries = []
    for name, password in sorted(users.items()):
        entry: dict[str, object] = {"user": name, "password": password}
        perms = user_permissions(name, instances)
        if perms is not None:
            entry["permissions"] = {
                "publish": {"allow": perms.publish},
                "subscribe": {"allow": perms.subscribe},
            }
        entries.append(json.dumps(entry))
    return "authorization {\n  users = [\n    " + ",\n    ".join(entries) + "\n  ]\n}\n"


def table(instances: Instances | None = None) -> str:
    """Every user's permissions as a markdown table (for notes and reviews)."""
    rows = ["| user | may publish | may subscribe |", "| --- | --- | --- |"]
    for name in [PROVISIONER, *(str(s) for s in Service)]:
        perms = user_permissions(name, instances)
        assert perms is not None
        pub = "<br>".join(f"`{s}`" for s in perms.publish) or "(nothing)"
        sub = "<br>".join(f"`{s}`" for s in perms.subscribe) or "(nothing)"
        rows.append(f"| {name} | {pub} | {sub} |")
    rows.append(f"| {OPERATOR} | everything | everything |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Slipway's generated NATS permissions.")
    parser.add_argument("--table", action="store_true", help="print them as a markdown table")
    args = parser.parse_args(argv)
    if args.table:
        sys.stdout.write(table())
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    sys.exit(main())
