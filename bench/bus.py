"""libs/bus beside raw nats-py, on one nats-server beside a 3-node cluster, same run:
typed RPC and command throughput, and what the cluster costs.

    .venv/bin/python bench/bus.py [--requests 20000] [--commands 5000] [--concurrency 32]
                                  [--rounds 3] [--tls] [--single]

Both sides do the same work. RPC: the same bytes are sent and answered; the
answering side runs in a second process, as a service does (raw: a core
subscription that echoes the bytes back; typed: a ServiceApp-style endpoint
that decodes a Struct, calls a handler, encodes the reply and writes one
canonical JSON log line to a file). Commands are stored in the same JetStream
stream (sync_interval always) and acknowledged after handling, in this process
(raw: publish + pull fetch + ack; typed: bus.send + Consumer). Raw and typed
alternate in rounds; the best round of each is reported.

The same workload runs against three setups, all three in every round, each first in turn:
  single   one nats-server (streams stored once);
  cluster  three nats-servers on this machine (libs/natsserver.py `NatsCluster`), the
           streams replicated on all three, every connection on node n1;
  cross    the same cluster, the caller and the sender on n2, the answering process and
           the worker on n1: each request and each command crosses a route.
`--single` measures the first alone, as before the cluster existed.

Every server runs hardened, as in production: every connection, raw or typed, is the
service user it plays (gateway calling, keyring answering, builder consuming) with the
permissions generated from contracts/, on subjects those declarations grant. With
`--tls` clients connect as they do off loopback: TLS with a client certificate per user
(the cluster's routes stay plain text on loopback).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from slipway.contracts import keyring, subjects
from slipway.contracts.base import Command, CommandSpec, Message, Rpc, encode
from slipway.contracts.builder import BUILD_REQUEST
from slipway.contracts.subjects import PROVISIONER, Service
from slipway.libs.bus import Bus, route
from slipway.libs.bus.tls import Identity
from slipway.libs.natsauth import stored_password
from slipway.libs.natsserver import NatsCluster, NatsServer
from slipway.libs.service.logging import configure_logging


class Ping(Message, tag="bench.ping.v1", frozen=True, kw_only=True):
    app: str
    payload: str


class Pong(Message, tag="bench.pong.v1", frozen=True, kw_only=True):
    app: str
    payload: str


class Job(Command, tag="bench.job.v1", frozen=True, kw_only=True):
    n: int


# Subjects the gateway is declared to call and the keyring to answer, so the hardened
# server lets them through; the bench's own message types ride on them.
RPC = Rpc(Service.KEYRING, "bench", keyring.AUDIT_KEY.subject, Ping, Pong)
RAW_SUBJECT = keyring.AUDIT_SIGN.subject
PLAIN_SUBJECT = keyring.PUBKEY_GET.subject
# The gateway sends to the builder, which takes them from its provisioned durable.
JOB = CommandSpec(Service.BUILDER, "job", BUILD_REQUEST.subject, Job)
RAW_JOB_SUBJECT = BUILD_REQUEST.subject

# The three ways a caller answers are measured, in this order in every round.
RPC_KINDS = ("raw", "plain", "typed")
COMMAND_KINDS = ("raw", "typed")
# setup name -> kind -> calls (or commands) per second, one per round
Rates = dict[str, dict[str, list[float]]]


@dataclass(frozen=True)
class Credentials:
    """Where a hardened bus keeps its users' passwords (users.json) and, with TLS, their
    certificates: every node of a cluster has the same."""

    nats_data: Path
    tls_dir: Path | None = None

    def of(self, service: str) -> dict[str, Any]:
        """nats.connect arguments for `service`'s user and inbox."""
        found: dict[str, Any] = {
            "user": service,
            "password": stored_password(self.nats_data, service),
            "inbox_prefix": subjects.inbox_prefix(service),
        }
        if self.tls_dir is not None:
            folder = self.tls_dir
            identity = Identity(
                folder / "ca.pem", folder / f"{service}.pem", folder / f"{service}.key"
            )
            found["tls"] = identity.client_context()
        return found

    async def bus(self, url: str, service: str) -> Bus:
        creds = self.of(service)
        return await Bus.connect(
            url, service, user=service, password=creds["password"], tls=creds.get("tls")
        )


@dataclass(frozen=True)
class Setup:
    """Where the connections go: the caller and the sender on `near`, the answering
    process and the worker on `far` (the same server, or another node of the cluster)."""

    name: str
    near: str
    far: str
    creds: Credentials


def rotated(setups: list[Setup], turn: int) -> list[Setup]:
    """The setups in the order of round `turn`: each goes first in turn, so none always
    runs on the machine as the round began (other work, caches, the disk's queue)."""
    first = turn % len(setups)
    return setups[first:] + setups[:first]


async def drive(total: int, concurrency: int, one: Callable[[], Awaitable[object]]) -> float:
    """Run `total` calls with `concurrency` in flight; return calls per second."""
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await one()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - started)


async def serve(url: str, creds: Credentials, log_path: str) -> None:
    """The answering process: the typed endpoint and the raw echo, until stdin closes."""
    with open(log_path, "ab") as log:
        configure_logging("keyring", fmt="json", file=log)
        server = await creds.bus(url, Service.KEYRING)
        raw_server = await nats.connect(url, **creds.of(Service.KEYRING))

        async def handle(req: Ping) -> Pong:
            return Pong(app=req.app, payload=req.payload)

        async def echo(msg: Msg) -> None:
            await msg.respond(msg.data)

        async def plain(msg: Msg) -> None:
            # What a hand-written nats-py service does: parse the JSON, answer JSON.
            body = json.loads(msg.data)
            reply = {"type": "bench.pong.v1", "app": body["app"], "payload": body["payload"]}
            await msg.respond(json.dumps(reply).encode())

        await server.serve(RPC, handle)
        await raw_server.subscribe(RAW_SUBJECT, queue="keyring", cb=echo)
        await raw_server.subscribe(PLAIN_SUBJECT, queue="keyring", cb=plain)
        await raw_server.flush()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        await server.close()
        await raw_server.close()


async def answering(url: str, creds: Credentials, log_path: str) -> asyncio.subprocess.Process:
    """A second process answering on `url` (`serve`), once it is subscribed."""
    args = ["--serve", url, "--log", log_path, "--nats-data", str(creds.nats_data)]
    if creds.tls_dir is not None:
        args += ["--tls-dir", str(creds.tls_dir)]
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert await process.stdout.readline() == b"ready\n"
    return process


class Caller:
    """One setup's calling connections, as the gateway, and the three ways to call."""

    def __init__(self, client: Bus, raw_client: NatsClient) -> None:
        self.client = client
        self.raw_client = raw_client
        self.request = Ping(app="hello", payload="x" * 200)
        self.payload = encode(self.request)

    @classmethod
    async def connect(cls, setup: Setup) -> Caller:
        client = await setup.creds.bus(setup.near, Service.GATEWAY)
        return cls(client, await nats.connect(setup.near, **setup.creds.of(Service.GATEWAY)))

    async def typed(self) -> object:
        return await self.client.call(RPC, self.request)

    async def raw(self) -> object:
        return await self.raw_client.request(RAW_SUBJECT, self.payload, timeout=5)

    async def plain(self) -> object:
        msg = await self.raw_client.request(PLAIN_SUBJECT, self.payload, timeout=5)
        return json.loads(msg.data)

    def kinds(self) -> dict[str, Callable[[], Awaitable[object]]]:
        found = {"raw": self.raw, "plain": self.plain, "typed": self.typed}
        return {kind: found[kind] for kind in RPC_KINDS}

    async def close(self) -> None:
        await self.client.close()
        await self.raw_client.close()


async def rpc_rounds(
    setups: list[Setup], total: int, concurrency: int, rounds: int, log_dir: Path
) -> Rates:
    # One answering process per server it listens on: a cluster's setups share the one
    # on n1 (the caller on n2 reaches it through a route, having no answerer of its own).
    processes: dict[str, asyncio.subprocess.Process] = {}
    for setup in setups:
        if setup.far not in processes:
            log = log_dir / f"answering-{len(processes)}.log"
            processes[setup.far] = await answering(setup.far, setup.creds, str(log))
    callers = {setup.name: await Caller.connect(setup) for setup in setups}
    for caller in callers.values():
        for one in caller.kinds().values():
            await drive(500, concurrency, one)  # warm-up
    rates: Rates = {setup.name: {kind: [] for kind in RPC_KINDS} for setup in setups}
    for turn in range(rounds):
        for setup in rotated(setups, turn):
            for kind, one in callers[setup.name].kinds().items():
                rates[setup.name][kind].append(await drive(total, concurrency, one))
    for caller in callers.values():
        await caller.close()
    for process in processes.values():
        assert process.stdin is not None
        process.stdin.close()
        await process.wait()
    return rates


async def typed_commands(setup: Setup, total: int) -> float:
    sender = await setup.creds.bus(setup.near, Service.GATEWAY)
    worker = await setup.creds.bus(setup.far, Service.BUILDER)
    done = asyncio.Event()
    handled = 0

    async def handle(job: Job) -> None:
        nonlocal handled
        handled += 1
        if handled == total:
            done.set()

    started = time.perf_counter()
    await worker.consume_commands([route(JOB, handle)], concurrency=64)
    await drive(total, 32, lambda: sender.send(JOB, Job(n=1)))
    await asyncio.wait_for(done.wait(), 120)
    rate = total / (time.perf_counter() - started)
    await sender.close()
    await worker.close()
    return rate


async def raw_commands(setup: Setup, total: int) -> float:
    # The same provisioned durable the typed worker binds to, as the same user.
    nc = await nats.connect(setup.far, **setup.creds.of(Service.BUILDER))
    sender = await nats.connect(setup.near, **setup.creds.of(Service.GATEWAY))
    js, sending = nc.jetstream(), sender.jetstream()
    durable = subjects.durable(Service.BUILDER, "cmd")
    sub = await js.pull_subscribe_bind(durable, stream=subjects.STREAM_CMD)
    payload = encode(Job(n=1))
    counter = 0

    async def publish() -> object:
        nonlocal counter
        counter += 1
        return await sending.publish(
            RAW_JOB_SUBJECT, payload, headers={"Nats-Msg-Id": f"raw-{counter}-{time.time_ns()}"}
        )

    async def consume() -> None:
        handled = 0
        while handled < total:
            try:
                msgs = await sub.fetch(64, timeout=1)
            except nats.errors.TimeoutError:
                continue
            for msg in msgs:
                await msg.ack()
                handled += 1

    started = time.perf_counter()
    consumer = asyncio.create_task(consume())
    await drive(total, 32, publish)
    await asyncio.wait_for(consumer, 120)
    rate = total / (time.perf_counter() - started)
    await nc.close()
    await sender.close()
    return rate


async def command_rounds(setups: list[Setup], total: int, rounds: int) -> Rates:
    measure = {"raw": raw_commands, "typed": typed_commands}
    rates: Rates = {setup.name: {kind: [] for kind in COMMAND_KINDS} for setup in setups}
    for turn in range(rounds):
        for setup in rotated(setups, turn):
            for kind in COMMAND_KINDS:
                rates[setup.name][kind].append(await measure[kind](setup, total))
    return rates


async def leaders(cluster: NatsCluster) -> str:
    """Which nodes lead the CMD stream and the builder's durable (where a command's write
    and its delivery start), as the provisioner may look them up."""
    nc = await nats.connect(
        cluster.urls[0],
        user=PROVISIONER,
        password=cluster.users[PROVISIONER],
        inbox_prefix=subjects.inbox_prefix(PROVISIONER),
        tls=cluster.nodes[0].client_tls(PROVISIONER),
    )
    try:
        js = nc.jetstream()
        stream = await js.stream_info(subjects.STREAM_CMD)
        durable = subjects.durable(Service.BUILDER, "cmd")
        consumer = await js.consumer_info(subjects.STREAM_CMD, durable)
    finally:
        await nc.close()
    stream_leader = stream.cluster.leader if stream.cluster else None
    consumer_leader = consumer.cluster.leader if consumer.cluster else None
    return f"CMD stream led by {stream_leader}, the builder's durable by {consumer_leader}"


def report(setups: list[Setup], rpc: Rates, cmd: Rates) -> list[str]:
    """The table: best round per setup, then each setup against the single node."""
    names = [setup.name for setup in setups]
    label_width = 34
    lines = [
        " " * label_width
        + "".join(f"{name:>10}" for name in names)
        + "".join(f"{name + '/single':>16}" for name in names[1:])
    ]
    rows = [
        ("RPC round trips/s  typed", rpc, "typed"),
        ("                   plain nats-py", rpc, "plain"),
        ("                   raw nats-py echo", rpc, "raw"),
        ("commands/s         typed", cmd, "typed"),
        ("                   raw nats-py", cmd, "raw"),
    ]
    for label, rates, kind in rows:
        best = [max(rates[name][kind]) for name in names]
        lines.append(
            f"{label:{label_width}}"
            + "".join(f"{rate:10.0f}" for rate in best)
            + "".join(f"{rate / best[0]:16.2f}" for rate in best[1:])
        )
    ratios = [
        ("typed/plain        RPC", rpc, "typed", "plain"),
        ("typed/raw          RPC", rpc, "typed", "raw"),
        ("                   commands", cmd, "typed", "raw"),
    ]
    for label, rates, top, bottom in ratios:
        lines.append(
            f"{label:{label_width}}"
            + "".join(f"{max(rates[n][top]) / max(rates[n][bottom]):10.2f}" for n in names)
        )
    medians = ", ".join(
        f"{n} typed {statistics.median(cmd[n]['typed']):.0f} "
        f"raw {statistics.median(cmd[n]['raw']):.0f}"
        for n in names
    )
    lines.append(f"commands/s, median round: {medians}")
    return lines


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tls", action="store_true", help="TLS with client certificates")
    parser.add_argument("--single", action="store_true", help="one nats-server only, no cluster")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    parser.add_argument("--nats-data", help=argparse.SUPPRESS)
    parser.add_argument("--tls-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        creds = Credentials(Path(args.nats_data), Path(args.tls_dir) if args.tls_dir else None)
        if os.environ.get("SLIPWAY_BENCH_PROFILE"):
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
            await serve(args.serve, creds, args.log)
            profiler.disable()
            profiler.dump_stats(os.environ["SLIPWAY_BENCH_PROFILE"])
        else:
            await serve(args.serve, creds, args.log)
        return
    with tempfile.TemporaryDirectory() as tmp:
        log_dir = Path(tmp)
        configure_logging("bench", fmt="json", file=(log_dir / "bus.log").open("ab"))
        # Hardened: provisions the streams and consumers, and every user gets its permissions.
        server = NatsServer(log_dir / "nats", hardened=True, tls=args.tls)
        cluster = NatsCluster(log_dir / "cluster", tls=args.tls)
        try:
            url = server.start()
            setups = [
                Setup("single", url, url, Credentials(server.data_dir, _tls(server, args.tls)))
            ]
            placement = ""
            if not args.single:
                first, second, _ = cluster.start()
                creds = Credentials(cluster.data_dir, cluster.tls_dir if args.tls else None)
                setups += [
                    Setup("cluster", first, first, creds),
                    Setup("cross", second, first, creds),
                ]
                placement = await leaders(cluster)
            rpc = await rpc_rounds(setups, args.requests, args.concurrency, args.rounds, log_dir)
            cmd = await command_rounds(setups, args.commands, args.rounds)
        finally:
            cluster.stop()
            server.stop()
    transport = "TLS, client certificates" if args.tls else "plain text on loopback"
    print(f"bus: hardened nats-server (per-service users), {transport}")
    print(
        f"best of {args.rounds} rounds, the setups taking turns in each; RPC concurrency "
        f"{args.concurrency}, answered by a second process; commands: publish + handle + ack, "
        "sync_interval always"
    )
    print("  single   one nats-server, streams stored once")
    if not args.single:
        print(f"  cluster  3 nodes, streams x3, every connection on n1 ({placement})")
        print("  cross    the same cluster: caller and sender on n2, answerer and worker on n1")
    print("  plain: the handler parses and answers JSON; echo: the bytes sent straight back")
    print()
    for line in report(setups, rpc, cmd):
        print(line)


def _tls(server: NatsServer, on: bool) -> Path | None:
    return server.tls_dir if on else None


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
