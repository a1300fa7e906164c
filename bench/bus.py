"""libs/bus beside raw nats-py, same server, same run: typed RPC and command throughput.

    .venv/bin/python bench/bus.py [--requests 20000] [--commands 5000] [--concurrency 32] [--tls]

Both sides do the same work. RPC: the same bytes are sent and answered; the
answering side runs in a second process, as a service does (raw: a core
subscription that echoes the bytes back; typed: a ServiceApp-style endpoint
that decodes a Struct, calls a handler, encodes the reply and writes one
canonical JSON log line to a file). Commands are stored in the same JetStream
stream (sync_interval always) and acknowledged after handling, in this process
(raw: publish + pull fetch + ack; typed: bus.send + Consumer). Raw and typed
alternate in rounds; the best round of each is reported.

The server runs hardened, as in production: every connection, raw or typed, is the
service user it plays (gateway calling, keyring answering, builder consuming) with the
permissions generated from contracts/, on subjects those declarations grant. With
`--tls` the bus runs as it does off loopback: TLS with a client certificate per user.
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
from pathlib import Path

import nats
from nats.aio.msg import Msg

from slipway.contracts import keyring, subjects
from slipway.contracts.base import Command, CommandSpec, Message, Rpc, encode
from slipway.contracts.builder import BUILD_REQUEST
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus, route
from slipway.libs.bus.tls import TLS_DIR_ENV, identity_from_env
from slipway.libs.natsauth import stored_password
from slipway.libs.natsserver import NatsServer
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

# The hardened server's data folder, whose users.json holds every user's password.
_NATS_DATA: Path | None = None


def _as(service: str) -> dict[str, object]:
    """nats.connect arguments for `service`'s user and inbox."""
    assert _NATS_DATA is not None
    password = stored_password(_NATS_DATA, service)
    found: dict[str, object] = {
        "user": service,
        "password": password,
        "inbox_prefix": subjects.inbox_prefix(service),
    }
    identity = identity_from_env(service)  # set by main() when --tls
    if identity is not None:
        found["tls"] = identity.client_context()
    return found


async def _bus(url: str, service: str) -> Bus:
    creds = _as(service)
    return await Bus.connect(url, service, user=str(creds["user"]), password=str(creds["password"]))


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


async def serve(url: str, log_path: str) -> None:
    """The answering process: the typed endpoint and the raw echo, until stdin closes."""
    with open(log_path, "ab") as log:
        configure_logging("keyring", fmt="json", file=log)
        server = await _bus(url, Service.KEYRING)
        raw_server = await nats.connect(url, **_as(Service.KEYRING))

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


async def rpc_rounds(
    url: str, total: int, concurrency: int, rounds: int, log_path: str
) -> tuple[float, float, float]:
    assert _NATS_DATA is not None
    answering = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        url,
        "--log",
        log_path,
        "--nats-data",
        str(_NATS_DATA),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert answering.stdout is not None
    assert answering.stdin is not None
    assert await answering.stdout.readline() == b"ready\n"
    client = await _bus(url, Service.GATEWAY)
    raw_client = await nats.connect(url, **_as(Service.GATEWAY))
    request = Ping(app="hello", payload="x" * 200)
    raw_payload = encode(request)

    async def typed() -> object:
        return await client.call(RPC, request)

    async def raw() -> object:
        return await raw_client.request(RAW_SUBJECT, raw_payload, timeout=5)

    async def plain() -> object:
        msg = await raw_client.request(PLAIN_SUBJECT, raw_payload, timeout=5)
        return json.loads(msg.data)

    typed_rates, raw_rates, plain_rates = [], [], []
    for one in (typed, raw, plain):
        await drive(500, concurrency, one)  # warm-up
    for _ in range(rounds):
        raw_rates.append(await drive(total, concurrency, raw))
        plain_rates.append(await drive(total, concurrency, plain))
        typed_rates.append(await drive(total, concurrency, typed))
    await client.close()
    await raw_client.close()
    answering.stdin.close()
    await answering.wait()
    return max(typed_rates), max(plain_rates), max(raw_rates)


async def typed_commands(url: str, total: int) -> float:
    sender = await _bus(url, Service.GATEWAY)
    worker = await _bus(url, Service.BUILDER)
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


async def raw_commands(url: str, total: int) -> float:
    # The same provisioned durable the typed worker binds to, as the same user.
    nc = await nats.connect(url, **_as(Service.BUILDER))
    sender = await nats.connect(url, **_as(Service.GATEWAY))
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


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tls", action="store_true", help="TLS with client certificates")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--log", help=argparse.SUPPRESS)
    parser.add_argument("--nats-data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    global _NATS_DATA
    if args.serve:
        _NATS_DATA = Path(args.nats_data)
        if os.environ.get("SLIPWAY_BENCH_PROFILE"):
            import cProfile

            profiler = cProfile.Profile()
            profiler.enable()
            await serve(args.serve, args.log)
            profiler.disable()
            profiler.dump_stats(os.environ["SLIPWAY_BENCH_PROFILE"])
        else:
            await serve(args.serve, args.log)
        return
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "bus.log"
        configure_logging("bench", fmt="json", file=log_path.open("ab"))
        _NATS_DATA = Path(tmp) / "nats"
        # Hardened: provisions the streams and consumers, and every user gets its permissions.
        server = NatsServer(_NATS_DATA, hardened=True, tls=args.tls)
        url = server.start()
        if args.tls:  # Bus.connect, and the answering process, find their certificates here
            os.environ[TLS_DIR_ENV] = str(server.tls_dir)
        try:
            typed_rpc, plain_rpc, raw_rpc = await rpc_rounds(
                url, args.requests, args.concurrency, args.rounds, str(log_path)
            )
            typed_cmd_rates, raw_cmd_rates = [], []
            for _ in range(args.rounds):
                raw_cmd_rates.append(await raw_commands(url, args.commands))
                typed_cmd_rates.append(await typed_commands(url, args.commands))
        finally:
            server.stop()
    typed_cmd, raw_cmd = max(typed_cmd_rates), max(raw_cmd_rates)
    transport = "TLS, client certificates" if args.tls else "plain text on loopback"
    print(f"bus: hardened nats-server (per-service users), {transport}")
    print(
        f"RPC round trips/s   typed {typed_rpc:9.0f}   plain nats-py service {plain_rpc:9.0f}   "
        f"ratio {typed_rpc / plain_rpc:.2f}   (plain: the handler parses and answers JSON)"
    )
    print(
        f"                    typed {typed_rpc:9.0f}   raw nats-py echo      {raw_rpc:9.0f}   "
        f"ratio {typed_rpc / raw_rpc:.2f}   (echo: the bytes sent straight back, the floor)"
    )
    print(
        f"                    concurrency {args.concurrency}, answered by a second process, "
        f"best of {args.rounds} rounds"
    )
    print(
        f"commands/s          typed {typed_cmd:9.0f}   raw nats-py {raw_cmd:9.0f}   "
        f"ratio {typed_cmd / raw_cmd:.2f}   (publish + handle + ack, sync_interval always; "
        f"median typed {statistics.median(typed_cmd_rates):.0f}, "
        f"raw {statistics.median(raw_cmd_rates):.0f})"
    )


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
