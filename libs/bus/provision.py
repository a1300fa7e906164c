"""Creating the platform's streams and durable consumers, before any service starts.

Services hold no JetStream admin rights under the hardened configuration: they
only bind to consumers that exist. The streams and every consumer declared in
`contracts.catalog` are created here, by the `provisioner` user (or the operator),
idempotently: `NatsServer.start()` runs it whenever it starts a hardened server.

    python -m slipway.libs.bus.provision --url nats://127.0.0.1:4222 --user provisioner

In an open development server (no users), a service provisions its own consumer
when it starts (`Bus.provisions_itself`), as there is nobody else to do it.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import ssl
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import nats
import nats.js.errors
from nats.js import JetStreamContext, api

from slipway.contracts import subjects
from slipway.contracts.catalog import DEFAULT_INSTANCES, catalog
from slipway.contracts.leases import DEFAULT_LEASE_TTL
from slipway.contracts.subjects import PROVISIONER, Service
from slipway.libs.bus.tls import identity_from_env as tls_identity_from_env

# How long a handler may hold a message before the server redelivers it; the consumer's
# keep-alive (`in_progress`) runs at a third of it.
ACK_WAIT = 30.0


def stream_configs(evt_max_age: float = 30 * 86400, *, replicas: int = 1) -> list[api.StreamConfig]:
    """The CMD (work queue), EVT and DLQ streams, stored on disk on `replicas` servers.

    More than one replica needs a clustered nats-server (compose/ runs three): a stream
    then survives the loss of a minority of its servers.
    """
    if replicas < 1:
        raise ValueError(f"a stream needs at least one replica, not {replicas}")
    configs = [
        api.StreamConfig(
            name=subjects.STREAM_CMD,
            subjects=[subjects.CMD_ALL],
            retention=api.RetentionPolicy.WORK_QUEUE,
            storage=api.StorageType.FILE,
            duplicate_window=120.0,
        ),
        api.StreamConfig(
            name=subjects.STREAM_EVT,
            subjects=[subjects.EVT_ALL],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            max_age=evt_max_age,
            duplicate_window=120.0,
        ),
        api.StreamConfig(
            name=subjects.STREAM_DLQ,
            subjects=[subjects.DLQ_ALL],
            retention=api.RetentionPolicy.LIMITS,
            storage=api.StorageType.FILE,
            max_age=30 * 86400.0,
            duplicate_window=120.0,
        ),
    ]
    if replicas == 1:
        return configs  # as before replicas were a setting: the server's default of one
    return [dataclasses.replace(config, num_replicas=replicas) for config in configs]


def consumer_config(
    durable: str, filters: list[str], *, ack_wait: float = ACK_WAIT, max_ack_pending: int = 256
) -> api.ConsumerConfig:
    """A durable pull consumer with explicit acks whose redeliveries we bound ourselves."""
    config = api.ConsumerConfig(
        durable_name=durable,
        ack_policy=api.AckPolicy.EXPLICIT,
        deliver_policy=api.DeliverPolicy.ALL,
        ack_wait=ack_wait,
        # Redelivery is bounded by the consumer, not the server, so the last failure
        # can be moved to the dead-letter stream instead of lingering.
        max_deliver=-1,
        max_ack_pending=max_ack_pending,
    )
    if len(filters) == 1:
        config.filter_subject = filters[0]
    else:
        config.filter_subjects = filters
    return config


def lease_ttl_from_env(environ: Mapping[str, str] | None = None) -> float:
    """The lease ttl the operator chose ($SLIPWAY_LEASE_TTL, seconds), or the default."""
    env = os.environ if environ is None else environ
    raw = env.get("SLIPWAY_LEASE_TTL", "").strip()
    return float(raw) if raw else DEFAULT_LEASE_TTL


def lease_bucket_config(ttl: float = DEFAULT_LEASE_TTL, *, replicas: int = 1) -> api.StreamConfig:
    """The stream behind the `KV_LEASES` bucket (libs/lease.py): one value per key, expiring.

    Its max age is the lease ttl, which services read back from it. Held in memory, not on
    disk: a lease is worth nothing after its ttl, a renewal every second per leased service
    would be an fsync each (`sync_interval: always`), and a write meeting a full disk
    would break JetStream and depose every leader at the moment the platform most needs
    its readers. A server restart empties it; a leader then writes its key again
    (libs/lease.py `renew`).
    """
    if ttl <= 1.0:
        raise ValueError(f"a lease ttl must exceed one second, not {ttl}")
    config = api.StreamConfig(
        name=subjects.STREAM_LEASES,
        subjects=[f"$KV.{subjects.KV_LEASES}.>"],
        # What nats-py's KV layer expects of a bucket (create/update/delete by revision).
        max_msgs_per_subject=1,
        max_age=ttl,
        discard=api.DiscardPolicy.NEW,
        allow_rollup_hdrs=True,
        deny_delete=True,
        allow_direct=True,
        duplicate_window=min(ttl, 120.0),
        storage=api.StorageType.MEMORY,
    )
    return config if replicas == 1 else dataclasses.replace(config, num_replicas=replicas)


async def ensure_streams(
    js: JetStreamContext,
    *,
    evt_max_age: float = 30 * 86400,
    replicas: int = 1,
    lease_ttl: float | None = None,
) -> None:
    """Create the CMD, EVT, DLQ and lease streams, or update them to this config.

    `lease_ttl` None: $SLIPWAY_LEASE_TTL, or the default.
    """
    ttl = lease_ttl_from_env() if lease_ttl is None else lease_ttl
    configs = stream_configs(evt_max_age, replicas=replicas)
    for config in [*configs, lease_bucket_config(ttl, replicas=replicas)]:
        assert config.name is not None
        try:
            found = await js.stream_info(config.name)
        except nats.js.errors.NotFoundError:
            try:
                await js.add_stream(config)
            except nats.js.errors.BadRequestError:
                # Another instance created it between our look and our add.
                await js.update_stream(config)
        else:
            if found.config.storage != config.storage:
                # The server never changes a stream's storage, and the provisioner may not
                # delete one: a lease bucket made on disk by an earlier version stays on
                # disk (the operator may delete KV_slipway_leases to have it in memory).
                config = dataclasses.replace(config, storage=found.config.storage)
            await js.update_stream(config)


def declared_consumers(
    instances: Mapping[str, Iterable[str | None]] | None = None,
) -> list[tuple[str, api.ConsumerConfig]]:
    """(stream, config) of every consumer the catalog declares."""
    cat = catalog()
    instances = DEFAULT_INSTANCES if instances is None else instances
    found: list[tuple[str, api.ConsumerConfig]] = []
    for service in sorted({c.service for c in cat.commands}):
        durable = subjects.durable(Service(service), "cmd")
        found.append(
            (subjects.STREAM_CMD, consumer_config(durable, [subjects.cmd_filter(Service(service))]))
        )
    for spec in cat.consumers:
        names = instances.get(spec.service, (None,)) if spec.per_instance else (None,)
        filters = [event.subject for event in spec.events]
        for instance in names:
            durable = subjects.durable(Service(spec.service), spec.durable_purpose(instance))
            found.append((subjects.STREAM_EVT, consumer_config(durable, filters)))
    return found


async def provision(
    js: JetStreamContext,
    instances: Mapping[str, Iterable[str | None]] | None = None,
    *,
    replicas: int = 1,
    lease_ttl: float | None = None,
) -> None:
    """Create the streams and every declared consumer; safe to run at every start.

    Consumers take their stream's replica count (the server's default for a durable).
    """
    await ensure_streams(js, replicas=replicas, lease_ttl=lease_ttl)
    for stream, config in declared_consumers(instances):
        await js.add_consumer(stream, await keeping_position(js, stream, config))


def undeclared(
    found: Iterable[tuple[str, str]],
    instances: Mapping[str, Iterable[str | None]] | None = None,
) -> list[tuple[str, str]]:
    """Of the (stream, durable) `found` on the CMD and EVT streams, the platform's own that
    the catalog no longer declares (pure).

    A consumer renamed or dropped by an upgrade is left behind by the server: nobody reads
    it, its lag only grows, and the monitor would report it as a consumer left behind.
    Kept: every declared name; every name a per-instance consumer could take (another
    host's, whether or not `instances` knows it); any name not of a service's (someone
    else's tool on the same server).
    """
    declared = {(stream, c.durable_name) for stream, c in declared_consumers(instances)}
    per_instance = tuple(
        subjects.durable(Service(spec.service), spec.purpose) + "-"
        for spec in catalog().consumers
        if spec.per_instance
    )
    ours = tuple(f"{service}-" for service in Service)
    return [
        (stream, name)
        for stream, name in found
        if stream in (subjects.STREAM_CMD, subjects.STREAM_EVT)
        and (stream, name) not in declared
        and not name.startswith(per_instance)
        and name.startswith(ours)
    ]


async def prune_undeclared(
    js: JetStreamContext, instances: Mapping[str, Iterable[str | None]] | None = None
) -> list[tuple[str, str]]:
    """Delete the platform's durable consumers the catalog no longer declares (`undeclared`);
    the (stream, durable) deleted. Needs the operator: the provisioner may not delete."""
    found: list[tuple[str, str]] = []
    for stream in (subjects.STREAM_CMD, subjects.STREAM_EVT):
        try:
            infos = await js.consumers_info(stream)
        except nats.js.errors.NotFoundError:
            continue
        found += [(stream, i.config.durable_name) for i in infos if i.config.durable_name]
    gone = undeclared(found, instances)
    for stream, name in gone:
        await js.delete_consumer(stream, name)
    return gone


async def keeping_position(
    js: JetStreamContext, stream: str, config: api.ConsumerConfig
) -> api.ConsumerConfig:
    """`config`, but starting where an existing consumer of that name already starts.

    A consumer replayed from a snapshot (libs/snapshot/streams.py) starts after the
    messages it had acknowledged; the server refuses to move a start position, and
    provisioning must not try to: with the position kept, an unchanged consumer is left
    alone and a changed one (new filters) is updated in place.
    """
    assert config.durable_name is not None
    try:
        existing = (await js.consumer_info(stream, config.durable_name)).config
    except nats.js.errors.NotFoundError:
        return config
    return dataclasses.replace(
        config,
        deliver_policy=existing.deliver_policy,
        opt_start_seq=existing.opt_start_seq,
        opt_start_time=existing.opt_start_time,
    )


async def provision_at(
    url: str,
    *,
    user: str | None,
    password: str | None,
    instances: Mapping[str, Iterable[str | None]] | None = None,
    tls: ssl.SSLContext | None = None,
    before: Callable[[], Awaitable[None]] | None = None,
    replicas: int = 1,
    lease_ttl: float | None = None,
) -> None:
    """Connect as `user` (the provisioner), provision, disconnect; `before` runs first.

    `lease_ttl` None: $SLIPWAY_LEASE_TTL, or the default.
    """
    if lease_ttl is None:
        lease_ttl = lease_ttl_from_env()
    if before is not None:
        await before()
    extra: dict[str, Any] = {"tls": tls} if tls is not None else {}
    nc = await nats.connect(
        url,
        **extra,
        user=user,
        password=password,
        inbox_prefix=subjects.inbox_prefix(user or PROVISIONER),
        allow_reconnect=False,
        max_reconnect_attempts=1,
    )
    try:
        await provision(
            nc.jetstream(timeout=10.0), instances, replicas=replicas, lease_ttl=lease_ttl
        )
    finally:
        await nc.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Create Slipway's streams and consumers.")
    parser.add_argument(
        "--url", default=os.environ.get("SLIPWAY_NATS_URL", "nats://127.0.0.1:4222")
    )
    parser.add_argument("--user", default=os.environ.get("SLIPWAY_NATS_USER", PROVISIONER))
    parser.add_argument("--password", default=os.environ.get("SLIPWAY_NATS_PASSWORD"))
    parser.add_argument(
        "--replicas",
        type=int,
        default=os.environ.get("SLIPWAY_STREAM_REPLICAS", "1"),  # a string: parsed as given
        help="servers each stream is stored on: 3 in a 3-node cluster ($SLIPWAY_STREAM_REPLICAS)",
    )
    parser.add_argument(
        "--lease-ttl",
        type=float,
        default=lease_ttl_from_env(),
        help="seconds a dead leader's lease lasts before a standby takes over ($SLIPWAY_LEASE_TTL)",
    )
    args = parser.parse_args(argv)
    if args.lease_ttl <= 1.0:
        parser.error(f"--lease-ttl must exceed one second, not {args.lease_ttl}")
    if args.replicas < 1:
        parser.error(f"--replicas must be at least 1, not {args.replicas}")
    # Over TLS when $SLIPWAY_NATS_TLS_DIR holds this user's certificate, as services connect.
    identity = tls_identity_from_env(args.user)
    asyncio.run(
        provision_at(
            args.url,
            user=args.user,
            password=args.password,
            tls=identity.client_context() if identity is not None else None,
            replicas=args.replicas,
            lease_ttl=args.lease_ttl,
        )
    )
    print("streams and consumers provisioned", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
