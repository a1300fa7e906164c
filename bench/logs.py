"""Log-shipper beside `docker logs`, same containers, same run: ingest rate and tail latency.

    .venv/bin/python bench/logs.py [--lines 200000] [--rounds 3] [--ticks 300]

Ingest: a dyno container prints `--lines` lines as fast as it can; the time
from its process's start (Docker's StartedAt) until the last line is sealed
and committed in the log-shipper's database (encrypted, cursors saved) gives
lines/s end to end. The floor is
`docker logs -t` reading the same container's json-file log afterwards, to
/dev/null. Rounds alternate; the best round of each side is reported.

Tail: a dyno prints a line every 20 ms; latency is the time a line reaches a
tail subscriber (the app's tail subject, what the gateway relays) minus the
timestamp Docker gave it. The floor is `docker logs -f -t` on the same
container, read at the same time. p50 and p99 of each are reported.

The log-shipper runs as its own process (`python -m slipway.services.log_shipper`)
with its default batching; the keyring and nats-server are real.
`BENCH_SHIPPER="/path/to/wrapper.py"` runs a wrapper script instead (a profiler).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiodocker

from slipway.contracts.base import decoder
from slipway.contracts.log_shipper import TailBatch, tail_subject
from slipway.contracts.scheduler import LABEL_APP, LABEL_DYNO, LABEL_MANAGED, LABEL_TEAM
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service.logging import configure_logging
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.settings import KeyringSettings

IMAGE = "slipway/stack-run:bookworm"
FLOOD = """
import sys
n = {n}
w = sys.stdout.write
for start in range(0, n, 10000):
    w("".join(f"bench line {{i:07d}} lorem ipsum dolor sit amet consectetur\\n"
              for i in range(start, min(start + 10000, n))))
sys.stdout.flush()
"""
TICKS = """
import time
for i in range({n}):
    print(f"tick {{i}}", flush=True)
    time.sleep(0.02)
"""


class Bench:
    def __init__(self, home: Path, nats: NatsServer, managed: str) -> None:
        self.home = home
        self.nats = nats
        self.managed = managed
        self.team = uuid.uuid4().hex
        self.docker = aiodocker.Docker()
        self.containers: list[str] = []
        self.db = home / "log-shipper" / "log-shipper-bench.db"

    async def dyno(self, app_id: str, script: str) -> str:
        config: dict[str, Any] = {
            "Image": IMAGE,
            "Cmd": ["python3", "-c", script],
            "Labels": {
                LABEL_MANAGED: self.managed,
                LABEL_APP: app_id,
                LABEL_TEAM: self.team,
                LABEL_DYNO: "web.1",
            },
            "HostConfig": {"NetworkMode": "none", "LogConfig": {"Type": "json-file"}},
        }
        container = await self.docker.containers.run(config, name=f"slw-bench-{app_id[:10]}")
        self.containers.append(container.id)
        return str(container.id)

    def stored(self, app_id: str) -> int:
        if not self.db.exists():
            return 0
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=5)
        try:
            row = conn.execute(
                "SELECT sum(lines) FROM batches WHERE app_id = ?", (app_id,)
            ).fetchone()
            return int(row[0] or 0)
        finally:
            conn.close()

    async def when_stored(self, app_id: str, lines: int) -> float:
        """The time at which the database first holds `lines` lines of the app."""
        while self.stored(app_id) < lines:  # noqa: ASYNC110 - another process writes it
            await asyncio.sleep(0.01)
        return time.time()

    async def ingest_round(self, lines: int) -> tuple[float, float]:
        """(shipper lines/s, docker logs lines/s) for one fresh container."""
        app_id = uuid.uuid4().hex
        container = await self.dyno(app_id, FLOOD.format(n=lines))
        finished = await self.when_stored(app_id, lines)
        await self.docker.containers.container(container).wait()
        info = await self.docker.containers.container(container).show()
        # From the moment the dyno's process started, as Docker recorded it.
        shipper = lines / (finished - _docker_time(info["State"]["StartedAt"]))
        begun = time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run,
            ["docker", "logs", "-t", container],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=True,
        )
        assert done.returncode == 0
        floor = lines / (time.perf_counter() - begun)
        return shipper, floor

    async def tail(self, bus: Bus, ticks: int) -> tuple[list[float], list[float]]:
        """Latencies (s) of the log-shipper tail and of `docker logs -f -t`, same lines."""
        app_id = uuid.uuid4().hex
        shipper: list[float] = []
        tail_decoder = decoder(TailBatch)

        async def on_batch(msg: Any) -> None:
            now = time.time()
            for entry in tail_decoder.decode(msg.data).lines:
                if entry.text.startswith("tick "):
                    shipper.append(now - entry.timestamp)

        sub = await bus.nc.subscribe(tail_subject(app_id), cb=on_batch)
        await bus.nc.flush()
        container = await self.dyno(app_id, TICKS.format(n=ticks))
        follower = await asyncio.create_subprocess_exec(
            "docker", "logs", "-f", "-t", container, stdout=asyncio.subprocess.PIPE
        )
        floor: list[float] = []
        assert follower.stdout is not None
        async for raw in follower.stdout:
            now = time.time()
            stamp = raw.decode().split(" ", 1)[0]
            floor.append(now - _docker_time(stamp))
        await follower.wait()
        await asyncio.sleep(0.5)
        await sub.unsubscribe()
        return shipper, floor

    async def close(self) -> None:
        for container in self.containers:
            with contextlib.suppress(aiodocker.DockerError):
                await self.docker.containers.container(container).delete(force=True)
        await self.docker.close()


def _docker_time(stamp: str) -> float:
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    fraction = fraction[:6]
    at = datetime.datetime.fromisoformat(whole).replace(tzinfo=datetime.UTC)
    return at.timestamp() + float(f"0.{fraction or '0'}")


SHIPPER_ARGS = os.environ.get("BENCH_SHIPPER", "-m slipway.services.log_shipper")


def start_shipper(nats: NatsServer, home: Path, managed: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SLIPWAY_NATS_URL": nats.url,
        "SLIPWAY_HOME": str(home),
        "SLIPWAY_HOST_ID": "bench",
        "SLIPWAY_MANAGED_VALUE": managed,
        "SLIPWAY_METRICS_INTERVAL": "0",
        "SLIPWAY_LOG_FORMAT": "json",
        "SLIPWAY_LOG_LEVEL": "warning",
    }
    with (home / "log-shipper.out").open("wb") as out:
        return subprocess.Popen(
            [sys.executable, *SHIPPER_ARGS.split()], env=env, stdout=out, stderr=out
        )


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def main(args: argparse.Namespace) -> None:
    configure_logging("bench", fmt="json", level="warning")
    with tempfile.TemporaryDirectory(prefix="slipway-bench-logs-") as tmp:
        home = Path(tmp) / "home"
        home.mkdir()
        nats = NatsServer(Path(tmp) / "nats")
        nats.start()
        keyring = create_keyring(KeyringSettings(nats_url=nats.url, home=str(home)))
        keyring_task = asyncio.create_task(keyring.run(install_signals=False))
        await keyring.started.wait()
        managed = f"bench-{uuid.uuid4().hex[:8]}"
        process = start_shipper(nats, home, managed)
        bench = Bench(home, nats, managed)
        bus = await Bus.connect(nats.url, "gateway")
        try:
            await asyncio.sleep(2.0)  # the log-shipper process starts up
            rounds = [await bench.ingest_round(args.lines) for _ in range(args.rounds)]
            shipper_rate = max(r[0] for r in rounds)
            floor_rate = max(r[1] for r in rounds)
            print(f"ingest ({args.lines} lines, best of {args.rounds}):")
            print(f"  log-shipper to encrypted history  {shipper_rate:>10,.0f} lines/s")
            print(f"  docker logs -t (json-file floor)  {floor_rate:>10,.0f} lines/s")
            print(f"  ratio                             {shipper_rate / floor_rate:>10.2f}x")
            shipper, floor = await bench.tail(bus, args.ticks)
            print(f"tail latency ({len(shipper)} / {len(floor)} lines):")
            for label, values in (("log-shipper tail", shipper), ("docker logs -f  ", floor)):
                p50, p99 = pct(values, 0.5), pct(values, 0.99)
                print(f"  {label}  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
            print(f"  mean ratio        {statistics.mean(shipper) / statistics.mean(floor):.2f}x")
        finally:
            await bus.close()
            await bench.close()
            process.terminate()
            process.wait(timeout=30)
            keyring.stop()
            await keyring_task
            nats.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=300)
    asyncio.run(main(parser.parse_args()))
