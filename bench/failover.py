"""Leader failover of the leased services: gateway, keyring, scheduler, two instances each.

    .venv/bin/python bench/failover.py [--rounds 3] [--lease-ttl 5] [--cluster]

Each service runs as two real processes (`python -m slipway.services.<name>`) sharing one
state folder, on a hardened nats-server (`--cluster`: the 3-node cluster compose runs,
streams and the lease bucket replicated x3, each instance connected to a different node).
A round kills the leader with SIGKILL, as a crash or a lost machine would, and times
until the standby serves: it answers `$SRV.PING.<service>` (it has started; the gateway
also answers `GET /healthz` with 200). The killed instance is started again and becomes
the standby of the next round. Side by side, in the same run:

- graceful handover: the leader is stopped with SIGTERM (it releases its lease);
- (`--cluster`) the nats-server node the leader is connected to killed: how long until the
  service answers again, and whether that took a new leader;
- cold start: a single instance started from nothing, until it answers the same way,
  what a restart by a supervisor costs at best (the process start is included in both).

Failover after a crash is bounded by the lease ttl (the key outlives its last renewal by
at most that) plus the standby's poll and its own start-up; the figure to hold is <= 10 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from pathlib import Path

import aiohttp
import nats
from nats.aio.client import Client as NatsClient

from slipway.contracts import subjects
from slipway.contracts.subjects import OPERATOR, Service
from slipway.libs.natsserver import NatsCluster, NatsServer

ROOT = Path(__file__).resolve().parents[1]
SERVICES = (Service.KEYRING, Service.GATEWAY, Service.SCHEDULER)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Instance:
    """One process of a service, started and killed at will."""

    def __init__(self, service: Service, name: str, env: dict[str, str], log: Path) -> None:
        self.service = service
        self.name = name
        self.env = env
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None
        self.api_port = int(env.get("SLIPWAY_API_PORT", "0"))
        self.node = 0  # the node of a cluster it connects to first

    async def start(self) -> None:
        module = f"slipway.services.{self.service.replace('-', '_')}"
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

    async def end(self, signum: int) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signum)
        await asyncio.wait_for(self.proc.wait(), 60)


class Bench:
    def __init__(
        self,
        urls: list[str],
        users: dict[str, str],
        home: Path,
        scope: str,
        cluster: NatsCluster | None = None,
    ) -> None:
        self.urls = urls
        self.cluster = cluster
        self.users = users
        self.home = home
        self.scope = scope
        self.nc: NatsClient | None = None
        self.http: aiohttp.ClientSession | None = None
        self.running: list[Instance] = []
        self.leader_changes: dict[Service, int] = {}
        self.node_times: dict[Service, list[float]] = {}

    async def __aenter__(self) -> Bench:
        self.nc = await nats.connect(
            self.urls,
            user=OPERATOR,
            password=self.users[OPERATOR],
            inbox_prefix=subjects.inbox_prefix(OPERATOR),
        )
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.nc is not None
        assert self.http is not None
        for instance in reversed(self.running):
            await instance.end(signal.SIGTERM)
        await self.http.close()
        await self.nc.close()

    def instance(self, service: Service, name: str, node: int, home: Path) -> Instance:
        """An instance of `service` connected to node `node` (of a cluster) first."""
        env = {
            **os.environ,
            "SLIPWAY_HOME": str(home),
            "SLIPWAY_SCOPE": self.scope,
            "SLIPWAY_NATS_URL": self.urls[node % len(self.urls)],
            "SLIPWAY_NATS_USER": str(service),
            "SLIPWAY_NATS_PASSWORD": self.users[str(service)],
            "SLIPWAY_INSTANCE": name,
            "SLIPWAY_METRICS": "off",
            "SLIPWAY_LOG_FORMAT": "json",
            "SLIPWAY_SERVICE_USERS": "0",
        }
        if service == Service.GATEWAY:
            env["SLIPWAY_API_PORT"] = str(free_port())
        made = Instance(service, name, env, home / f"{name}.log")
        made.node = node % len(self.urls)
        return made

    async def answering(self, who: Instance) -> bool:
        """Whether `who` serves: its discovery answer (and the gateway's /healthz 200)."""
        assert self.nc is not None
        assert self.http is not None
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        try:
            named = subjects.srv_subjects("PING", str(who.service), "")[1]
            await self.nc.publish(named, b"", reply=inbox)
            deadline = time.monotonic() + 0.25
            seen = False
            while not seen and (left := deadline - time.monotonic()) > 0:
                try:
                    msg = await sub.next_msg(timeout=left)
                except nats.errors.TimeoutError:
                    break
                # An empty message is the server's "no responders": nobody serves yet.
                seen = bool(msg.data) and json.loads(msg.data).get("id") == who.name
        finally:
            await sub.unsubscribe()
        if not seen or who.service != Service.GATEWAY:
            return seen
        try:
            async with self.http.get(f"http://127.0.0.1:{who.api_port}/healthz") as answer:
                return answer.status == 200
        except aiohttp.ClientError:
            return False

    async def until(self, check: Callable[[], Awaitable[bool]], limit: float = 60.0) -> float:
        started = time.monotonic()
        while not await check():
            if time.monotonic() - started > limit:
                raise TimeoutError(f"nothing answered within {limit:g} s")
            await asyncio.sleep(0.02)
        return time.monotonic() - started

    async def leader_of(self, pair: list[Instance]) -> Instance:
        found: list[Instance] = []

        async def one() -> bool:
            found[:] = [i for i in pair if await self.answering(i)]
            return len(found) == 1

        await self.until(one)
        return found[0]

    async def measure(self, service: Service, rounds: int) -> dict[str, list[float]]:
        print(f"  measuring {service}", file=sys.stderr, flush=True)
        folder = self.home / str(service)
        folder.mkdir(parents=True, exist_ok=True)
        figures: dict[str, list[float]] = {"cold": [], "crash": [], "graceful": [], "node": []}
        # Cold start: one instance, nothing before it (a fresh folder each time).
        for n in range(rounds):
            cold_home = self.home / f"cold-{service}-{n}"
            cold = self.instance(service, f"{service}-cold{n}", n, cold_home)
            Path(cold.env["SLIPWAY_HOME"]).mkdir(parents=True)
            t0 = time.monotonic()
            await cold.start()
            await self.until(lambda c=cold: self.answering(c))  # type: ignore[misc]
            figures["cold"].append(time.monotonic() - t0)
            await cold.end(signal.SIGTERM)
        pair = [self.instance(service, f"{service}-{x}", i, folder) for i, x in enumerate("ab")]
        # Left running for the services measured next (the gateway calls the keyring).
        self.running += pair
        for instance in pair:
            await instance.start()
        for kind in ("crash", "graceful"):
            for _ in range(rounds):
                leader = await self.leader_of(pair)
                standby = next(i for i in pair if i is not leader)
                await asyncio.sleep(1.0)  # the standby settled, renewals under way
                t0 = time.monotonic()
                await leader.end(signal.SIGKILL if kind == "crash" else signal.SIGTERM)
                await self.until(lambda s=standby: self.answering(s))  # type: ignore[misc]
                figures[kind].append(time.monotonic() - t0)
                await leader.start()  # back, as the next round's standby
        if self.cluster is not None:
            figures["node"], self.leader_changes[service] = await self.lose_nodes(pair, rounds)
        return figures

    async def lose_nodes(self, pair: list[Instance], rounds: int) -> tuple[list[float], int]:
        """Kill the nats-server node the leader is connected to: how long until the service
        answers again, and how often that took a new leader (ideally never: the leader
        reconnects to another node well within the lease ttl)."""
        assert self.cluster is not None
        times: list[float] = []
        changes = 0
        for _ in range(rounds):
            leader = await self.leader_of(pair)
            await asyncio.sleep(1.0)
            node = self.cluster.nodes[leader.node]
            t0 = time.monotonic()
            node.kill()
            await asyncio.sleep(0.3)  # past the kill: an answer now comes through another node
            now_leading = await self.leader_of(pair)
            times.append(time.monotonic() - t0)
            changes += now_leading is not leader
            node.start()
            await asyncio.sleep(3.0)  # the node rejoins and catches up before the next round
        return times, changes


async def run(args: argparse.Namespace) -> None:
    os.environ["SLIPWAY_LEASE_TTL"] = str(args.lease_ttl)  # read by the provisioner
    with tempfile.TemporaryDirectory(prefix="slipway-failover-") as tmp:
        work = Path(tmp)
        async with AsyncExitStack() as stack:
            if args.cluster:
                cluster = NatsCluster(work / "nats")
                cluster.start()
                stack.callback(cluster.stop)
                urls, users, where = cluster.urls, cluster.users, "3-node cluster, R3"
                lost: NatsCluster | None = cluster
            else:
                server = NatsServer(work / "nats", hardened=True)
                server.start()
                stack.callback(server.stop)
                urls, users, where = [server.url], server.users, "one nats-server"
                lost = None
            scope = f"fo{os.getpid() % 100000}"
            bench = await stack.enter_async_context(Bench(urls, users, work / "home", scope, lost))
            print(f"leader failover, {where}, lease ttl {args.lease_ttl:g} s, {args.rounds} rounds")
            print(
                f"{'service':<10} {'cold start':>11} {'crash (SIGKILL)':>16} "
                f"{'graceful (SIGTERM)':>19} {'crash max':>10} {'crash/cold':>11}"
            )
            for service in SERVICES:
                try:
                    figures = await bench.measure(service, args.rounds)
                except TimeoutError:
                    for log in sorted((work / "home").rglob(f"{service}-*.log")):
                        tail = log.read_text(errors="replace").splitlines()[-15:]
                        print(f"--- {log.name}", *tail, sep="\n", file=sys.stderr)
                    raise
                bench.node_times[service] = figures["node"]
                cold, crash, graceful = (
                    statistics.median(figures[k]) for k in ("cold", "crash", "graceful")
                )
                print(
                    f"{service:<10} {cold:>10.2f}s {crash:>15.2f}s {graceful:>18.2f}s "
                    f"{max(figures['crash']):>9.2f}s {crash / cold:>10.2f}x",
                    flush=True,
                )
            print("(medians; crash max is the worst round; target: crash max <= 10 s)")
            if lost is not None:
                print("the nats-server node the leader is connected to, killed (SIGKILL):")
                for service in SERVICES:
                    worst = max(bench.node_times[service])
                    print(
                        f"{service:<10} answering again after {worst:.2f} s"
                        f" at worst; leader changed in {bench.leader_changes[service]}"
                        f" of {args.rounds} rounds"
                    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lease-ttl", type=float, default=5.0)
    parser.add_argument("--cluster", action="store_true", help="a 3-node cluster, as compose")
    args = parser.parse_args(argv)
    asyncio.run(run(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
