"""Log-shipper beside a bare socket reader, same dynos, same run: ingest rate and tail latency.

    .venv/bin/python bench/logs.py [--lines 200000] [--rounds 3] [--ticks 300] [--sender init]

Dynos print through the dyno init's socket protocol (contracts/dynoinit.py), as
in production: the real init (`scripts/build-init`, mounted at /.slipway/init,
env frame on stdin) or, with `--sender python` or when no init is built, the
Python stand-in tests/log_shipper/dynosender.py. Their Docker log driver is
`none`; their relay's ring is 32 MiB here so that no line is dropped.

Ingest: a dyno prints `--lines` lines (at most 200,000) as fast as it can; the
time from its process's start (Docker's StartedAt) until the last line is
sealed and committed in the log-shipper's database gives lines/s end to end.
The baseline is the same dyno with its socket folder served by a bare asyncio
reader that only counts records: the relay and the socket's own ceiling.
Rounds alternate; the best round of each side is reported. Every wait is
bounded (60 s).

Tail: a dyno prints a line every 20 ms; latency is the time a line reaches a
tail subscriber (the app's tail subject, what the gateway relays) minus the
time the init read it (the record's time). The baseline is a second such dyno
read by the bare reader at the same time. p50 and p99 of each are reported.

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
import socket
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

from slipway.contracts import dynoinit
from slipway.contracts.base import decoder
from slipway.contracts.log_shipper import TailBatch, tail_subject
from slipway.contracts.scheduler import (
    DYNO_CHANGED,
    LABEL_APP,
    LABEL_DYNO,
    LABEL_MANAGED,
    LABEL_TEAM,
    Dyno,
    DynoChanged,
)
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.libs.service.logging import configure_logging
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.settings import KeyringSettings
from slipway.services.scheduler.settings import built_init

IMAGE = "slipway/stack-run:bookworm"
ROOT = Path(__file__).resolve().parents[1]
SENDER = ROOT / "tests" / "log_shipper" / "dynosender.py"
LIB = "/.slipway/lib"
MAX_LINES = 200_000
# The relay's ring holds a whole flood (200,000 lines of 70 bytes), so the rates compare
# lines delivered, not lines dropped: production's 1 MiB ring drops and counts instead.
RING = 32 << 20
WAIT = 60.0
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


class BareReader:
    """The baseline: an asyncio unix server that only splits records and counts lines."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.lines = 0
        self.last_at = 0.0
        self.latencies: list[float] = []
        self.server: asyncio.Server | None = None
        self._dirfd = -1

    async def start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o755)  # noqa: S103 - the dyno (uid 10000) connects
        self._dirfd = os.open(self.folder, os.O_PATH | os.O_DIRECTORY)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dynoinit.LOG_SOCKET_NAME, dir_fd=self._dirfd)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(f"/proc/self/fd/{self._dirfd}/{dynoinit.LOG_SOCKET_NAME}")
        os.chmod(dynoinit.LOG_SOCKET_NAME, 0o666, dir_fd=self._dirfd)  # noqa: S103
        self.server = await asyncio.start_unix_server(self._serve, sock=sock)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # The least a receiver can do: walk the headers, count lines, note tick times.
        unpack = dynoinit.RECORD_WORDS.unpack_from
        header = dynoinit.RECORD_WORDS.size
        dropped = dynoinit.KIND_DROPPED << 24
        rest = b""
        try:
            hello = await reader.readexactly(len(dynoinit.LOG_MAGIC))
            assert hello == dynoinit.LOG_MAGIC
            while data := await reader.read(1 << 18):
                buf = rest + data if rest else data
                pos, end, now = 0, len(buf), time.time()
                while pos + header <= end:
                    word, length, at = unpack(buf, pos)
                    if pos + header + length > end:
                        break
                    if word != dropped:
                        self.lines += 1
                        if buf.startswith(b"tick ", pos + header):
                            self.latencies.append(now - at / 1e9)
                    pos += header + length
                rest = buf[pos:]
                self.last_at = now
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self._dirfd >= 0:
            os.close(self._dirfd)


class Bench:
    def __init__(self, home: Path, managed: str, use_init: bool, baseline: BareReader) -> None:
        self.home = home
        self.managed = managed
        self.use_init = use_init
        self.baseline = baseline
        self.team = uuid.uuid4().hex
        self.docker = aiodocker.Docker()
        self.containers: list[str] = []
        self.db = home / "log-shipper" / "log-shipper-bench.db"
        self.shipper_folder = dynoinit.host_log_dir("", home, "bench")
        self.scheduler: Bus | None = None  # announces the log-shipper's dynos, as the scheduler

    async def announce(self, app_id: str, container_id: str) -> None:
        """The log-shipper takes only dynos the scheduler announced on its host."""
        assert self.scheduler is not None
        dyno = Dyno(
            app_id=app_id,
            app_name="bench",
            team_id=self.team,
            name="web.1",
            process_type="web",
            release_version=1,
            state="starting",
            host_id="bench",
            container_id=container_id,
            updated_at=time.time(),
        )
        await self.scheduler.publish(DYNO_CHANGED, DynoChanged(dyno=dyno))

    async def dyno(self, app_id: str, script: str, folder: Path) -> str:
        """A dyno-like container printing through the init's protocol into `folder`'s socket."""
        command = ["python3", "-c", script]
        ring = ["--buffer", str(RING)]
        binds = [f"{folder}:{dynoinit.LOG_DIR}:ro"]
        config: dict[str, Any] = {
            "Image": IMAGE,
            "User": "10000:10000",
            "Labels": {
                LABEL_MANAGED: self.managed,
                LABEL_APP: app_id,
                LABEL_TEAM: self.team,
                LABEL_DYNO: "web.1",
            },
        }
        if self.use_init:
            binds.append(f"{built_init()}:{dynoinit.INIT_PATH}:ro")
            config |= {
                "Entrypoint": [dynoinit.INIT_PATH, *ring, "--"],
                "Cmd": command,
                "OpenStdin": True,
                "StdinOnce": True,
                "AttachStdin": True,
            }
        else:
            binds += [
                f"{SENDER}:{LIB}/dynosender.py:ro",
                f"{Path(dynoinit.__file__)}:{LIB}/dynoinit.py:ro",
            ]
            config["Cmd"] = ["python3", f"{LIB}/dynosender.py", *ring, "--", *command]
        config["HostConfig"] = {
            "NetworkMode": "none",
            "LogConfig": {"Type": "none"},
            "Binds": binds,
        }
        container = await self.docker.containers.create(config, name=f"slw-bench-{app_id[:10]}")
        self.containers.append(container.id)
        if folder == self.shipper_folder:
            await self.announce(app_id, container.id)
        if self.use_init:
            async with container.attach(stdin=True) as stream:
                await container.start()
                await stream.write_in(dynoinit.encode_env({}))
        else:
            await container.start()
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

    async def started_at(self, container: str) -> float:
        info = await self.docker.containers.container(container).show()
        return _docker_time(info["State"]["StartedAt"])

    async def shipper_round(self, lines: int) -> float:
        """Lines/s from the dyno's start to the last line stored by the log-shipper."""
        app_id = uuid.uuid4().hex
        container = await self.dyno(app_id, FLOOD.format(n=lines), self.shipper_folder)
        deadline = time.monotonic() + WAIT
        while self.stored(app_id) < lines:  # another process writes it
            if time.monotonic() > deadline:
                raise TimeoutError(f"log-shipper stored {self.stored(app_id)} of {lines} lines")
            await asyncio.sleep(0.01)
        finished = time.time()
        return lines / (finished - await self.started_at(container))

    async def baseline_round(self, lines: int) -> float:
        """Lines/s from the dyno's start to the last line read by the bare reader."""
        self.baseline.lines = 0
        container = await self.dyno(uuid.uuid4().hex, FLOOD.format(n=lines), self.baseline.folder)
        deadline = time.monotonic() + WAIT
        while self.baseline.lines < lines:  # counted by the reader's task
            if time.monotonic() > deadline:
                raise TimeoutError(f"baseline read {self.baseline.lines} of {lines} lines")
            await asyncio.sleep(0.01)
        return lines / (self.baseline.last_at - await self.started_at(container))

    async def tail(self, bus: Bus, ticks: int) -> tuple[list[float], list[float]]:
        """Latencies (s) of the log-shipper tail and of the bare reader, two dynos at once."""
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
        self.baseline.latencies.clear()
        mine = await self.dyno(app_id, TICKS.format(n=ticks), self.shipper_folder)
        theirs = await self.dyno(uuid.uuid4().hex, TICKS.format(n=ticks), self.baseline.folder)
        for container in (mine, theirs):
            await asyncio.wait_for(self.docker.containers.container(container).wait(), WAIT)
        deadline = time.monotonic() + WAIT
        while len(shipper) < ticks and time.monotonic() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await sub.unsubscribe()
        return shipper, list(self.baseline.latencies)

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
    lines = min(args.lines, MAX_LINES)
    use_init = args.sender == "init" and built_init().exists()
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
        baseline = BareReader(Path(tmp) / "baseline")
        await baseline.start()
        bench = Bench(home, managed, use_init, baseline)
        bus = await Bus.connect(nats.url, "gateway")
        bench.scheduler = await Bus.connect(nats.url, "scheduler")
        try:
            sock = bench.shipper_folder / dynoinit.LOG_SOCKET_NAME
            deadline = time.monotonic() + WAIT
            while not sock.is_socket():  # the log-shipper starts up
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError(f"the log-shipper did not start: see {home}/log-shipper.out")
                await asyncio.sleep(0.05)
            sender = f"the dyno init {built_init()}" if use_init else "the Python stand-in"
            print(f"dynos print through {sender}")
            rounds = []
            for _ in range(args.rounds):
                rounds.append((await bench.shipper_round(lines), await bench.baseline_round(lines)))
            shipper_rate = max(r[0] for r in rounds)
            floor_rate = max(r[1] for r in rounds)
            print(f"ingest ({lines} lines, best of {args.rounds}):")
            print(f"  log-shipper to encrypted history  {shipper_rate:>10,.0f} lines/s")
            print(f"  bare socket reader (baseline)     {floor_rate:>10,.0f} lines/s")
            print(f"  ratio                             {shipper_rate / floor_rate:>10.2f}x")
            shipper, floor = await bench.tail(bus, args.ticks)
            print(f"tail latency ({len(shipper)} / {len(floor)} lines):")
            for label, values in (("log-shipper tail", shipper), ("bare reader     ", floor)):
                p50, p99 = pct(values, 0.5), pct(values, 0.99)
                print(f"  {label}  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
            print(f"  mean ratio        {statistics.mean(shipper) / statistics.mean(floor):.2f}x")
        finally:
            await bus.close()
            if bench.scheduler is not None:
                await bench.scheduler.close()
            await bench.close()
            await baseline.close()
            process.terminate()
            process.wait(timeout=30)
            keyring.stop()
            await keyring_task
            nats.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=MAX_LINES)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=300)
    parser.add_argument("--sender", choices=("init", "python"), default="init")
    asyncio.run(main(parser.parse_args()))
