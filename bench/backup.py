"""The backup service beside pg_basebackup | zstd, same database, same socket, same run.

    .venv/bin/python bench/backup.py [--size-gib 1.0] [--rounds 3] [--quick]

A PostgreSQL container is made by hand with the scheduler's own `container_config`
(its run folder mounted at /run/slipway, WAL archiving on; no network, no restart
policy: the bench kills it on purpose). Its database is filled inside the container
with INSERT ... SELECT generate_series (md5() and repeat() text: about as compressible
as real data) until it holds `--size-gib`. The backup service runs as its own process
(`python -m slipway.services.backup`, as in production) beside a real nats-server and
the real keyring; it learns of the database from the add-on events the gateway and the
scheduler would publish. `BENCH_BACKUP="-m cProfile -o out.prof -m slipway.services.backup"`
runs it under a profiler (or any wrapper script); `BENCH_BACKUP_LOG=FILE` keeps its log.

1. Base backup: BACKUP_CAPTURE (BASE_BACKUP over the run folder's socket, zstd -3, cut
   into parts, each sealed with age to the team's key and fsynced, a signed manifest,
   row counts) against `pg_basebackup -D - -Ft -X fetch -c fast | zstd -3 > file` on
   the same socket. `-c fast` because the service asks for a fast checkpoint too. The
   two alternate; the best of `--rounds` of each is reported (seconds, MB/s of the plain
   tar, ratio = baseline time / service time).
2. Restore: RESTORE_STAGE of the latest backup into a fresh run folder (fetch, check,
   unwrap the file keys through the keyring, decrypt, decompress, write base.tar and
   the WAL after it) against `zstd -d < file > base.tar`; best of `--rounds`. Then,
   once per side, a container started on each staged folder: the time until it has
   replayed, promoted and answers.
3. Recovery point after losing the host: a writer commits a numbered row every ~30 ms
   and notes when each commit is acknowledged; after `--load-seconds` the database
   container's init and the backup service are SIGKILLed back to back (the service's
   unsealed WAL dies with it) and the run folder is deleted (its `archive/` is on the
   lost host too). A new backup service stages the latest restore into a new container;
   lost = acknowledgement time of the last acknowledged commit - that of the last commit
   the restored database has (whose rows must run 1..n without a hole). Then the
   fallback: streaming broken on purpose (the backup role loses REPLICATION and its
   walsender is ended, so the service only sweeps what archive_command copies,
   archive_timeout 60 s) for `--fallback-seconds`. No setting of the service changes.

Every wait is bounded. Containers, volumes, processes and folders the bench made are
removed at the end, failed or not; the scope is the bench's own (`bench-<hex>`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiodocker

from slipway.contracts import addons as ac
from slipway.contracts import backup as bc
from slipway.contracts.scheduler import LABEL_MANAGED
from slipway.contracts.scope import Scope
from slipway.libs import pgwire
from slipway.libs.bus import Bus
from slipway.libs.errors import NotFound, SlipwayError
from slipway.libs.natsserver import NatsServer
from slipway.libs.service.logging import configure_logging
from slipway.services.backup.settings import BackupSettings
from slipway.services.keyring.app import create_service as create_keyring
from slipway.services.keyring.settings import KeyringSettings
from slipway.services.scheduler.addons import backup_role_sql, container_config

HOST = "bench"
DATABASE = "bench"
GIB = 1 << 30
MB = 1_000_000
WAIT = 120.0  # seconds any one wait may take (a start, a replay, a service coming up)
ROWS_PER_BATCH = 1_000_000
# ~250 bytes a row on disk with its index; 96 characters of it random hex (md5), the
# rest repeats across rows, so zstd -3 gets ~3x, like a database of orders and notes.
FILL = """
INSERT INTO orders
SELECT i,
       'acct-' || (i % 100000),
       (ARRAY['new', 'paid', 'shipped', 'returned'])[1 + i % 4],
       round((i % 100000) / 7.0, 2),
       timestamptz '2025-01-01' + i * interval '3 seconds',
       md5(i::text) || md5((i # 2654435761)::text) || md5((i::bigint * 40503)::text),
       'shipped to warehouse ' || (i % 97) || ': ' || md5((i % 500)::text)
FROM generate_series({first}, {last}) AS i;
"""
SCHEMA = """
CREATE TABLE orders (id bigint PRIMARY KEY, account text, status text, amount numeric,
                     created_at timestamptz, reference text, note text);
"""
# The writer of part 3 commits through the backup role's socket (trusted there): pgwire
# is what this bench has, and the role is otherwise read-only.
WRITES = f"""
CREATE TABLE writes (seq bigint PRIMARY KEY, sent double precision);
GRANT INSERT ON writes TO {bc.BACKUP_ROLE};
"""
WRITE_EVERY = 0.03
SERVICE_ARGS = os.environ.get("BENCH_BACKUP", "-m slipway.services.backup")


@dataclass
class Database:
    """One PostgreSQL container of the bench and its run folder."""

    want: ac.AddonDesired
    container: str
    volume: str
    run_dir: Path

    async def psql(self, sql: str, database: str = DATABASE) -> str:
        """`sql` as the superuser inside the container (peer on its own socket)."""
        user = str(ac.POSTGRES_UID)
        psql = ["psql", "-XAtq", "-v", "ON_ERROR_STOP=1", "-h", "/run/postgresql", "-d", database]
        args = ["docker", "exec", "-i", "-u", user, self.container, *psql]
        out, _ = await run(args, sql.encode())
        return out.decode().strip()

    async def query(self, sql: str, database: str = DATABASE) -> list[tuple[str | None, ...]]:
        """`sql` as the backup role through the run folder's socket."""
        conn = await pgwire.connect(self.run_dir, user=bc.BACKUP_ROLE, database=database)
        try:
            return await conn.query(sql)
        finally:
            await conn.close()


async def run(args: list[str], stdin: bytes | None = None) -> tuple[bytes, bytes]:
    """A command's output; RuntimeError with its stderr when it fails."""
    proc = await asyncio.create_subprocess_exec(
        *args,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), WAIT * 5)
    if proc.returncode != 0:
        raise RuntimeError(f"{args[0]} {args[1]} failed ({proc.returncode}): {err.decode()[-800:]}")
    return out, err


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = WAIT) -> Any:
    """`check()`'s first answer that does not raise, polled every 0.1 s, for `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except RuntimeError:
            raise
        except Exception as exc:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: still {exc!r} after {timeout:.0f} s") from exc
        await asyncio.sleep(0.1)


@dataclass
class Bench:
    """The bench's own installation: home, bus, keyring, backup service, containers."""

    tmp: Path
    nats: NatsServer
    scope: Scope
    docker: aiodocker.Docker
    gateway: Bus
    scheduler: Bus
    app_id: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:8]}")
    team_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    process: subprocess.Popen[bytes] | None = None
    containers: list[str] = field(default_factory=list)
    volumes: list[str] = field(default_factory=list)

    @property
    def home(self) -> Path:
        return self.tmp / "home"

    def run_dir(self, addon_id: str) -> Path:
        """A run folder as the scheduler makes it (root's, the backup user's default: 02770)."""
        path = bc.addon_run_dir(bc.addon_run_root("", self.home), HOST, addon_id)
        path.mkdir(parents=True)
        path.chmod(0o2770)
        return path

    # ---- the backup service process ----------------------------------------------------------

    def start_service(self) -> None:
        env = {
            **os.environ,
            "SLIPWAY_NATS_URL": self.nats.url,
            "SLIPWAY_HOME": str(self.home),
            "SLIPWAY_HOST_ID": HOST,
            "SLIPWAY_SCOPE": self.scope.name,
            "SLIPWAY_LOG_FORMAT": "json",
            "SLIPWAY_LOG_LEVEL": "info",
        }
        log_path = Path(os.environ.get("BENCH_BACKUP_LOG", self.tmp / "backup.out"))
        with log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, *SERVICE_ARGS.split()], env=env, stdout=out, stderr=out
            )

    async def service_up(self) -> None:
        async def answers() -> None:
            assert self.process is not None
            assert self.process.poll() is None, "it exited"
            with contextlib.suppress(NotFound):
                await bc.ask(
                    self.gateway,
                    bc.BACKUPS_LIST,
                    bc.ListBackups(addon_id="none", app_id="none"),
                    timeout=2,
                )

        await eventually(answers, f"the backup service (see {self.tmp}/backup.out)")

    def stop_service(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    # ---- databases ---------------------------------------------------------------------------

    async def database(self, name: str, run_dir: Path | None = None) -> Database:
        """A started container on a new volume; `run_dir` holding a staged restore, or new."""
        addon_id = f"{self.app_id}-{name}"
        want = ac.AddonDesired(
            addon_id=addon_id,
            addon_name=f"bench{name}",
            app_id=self.app_id,
            app_name="bench",
            team_id=self.team_id,
            plan="postgresql:mini",
            database=DATABASE,
            user="bench",
        )
        run_dir = run_dir or self.run_dir(addon_id)
        labels = {LABEL_MANAGED: self.scope.managed, ac.LABEL_ADDON: addon_id}
        volume = container_name = self.scope.container(addon_id)
        config = container_config(want, "none", volume, labels, run_dir=run_dir, run_gid=0)
        # Nothing here speaks TCP, and a killed database must stay dead: the host is "lost".
        config["HostConfig"]["RestartPolicy"] = {"Name": "no"}
        # Its log says why, should a restore not start.
        config["HostConfig"]["LogConfig"] = {"Type": "json-file", "Config": {}}
        config.pop("NetworkingConfig")
        await self.docker.volumes.create({"Name": volume, "Labels": labels})  # type: ignore[no-untyped-call]
        self.volumes.append(volume)
        container = await self.docker.containers.create(config, name=container_name)
        self.containers.append(container_name)
        await container.start()
        return Database(want=want, container=container_name, volume=volume, run_dir=run_dir)

    async def fresh(self, name: str) -> Database:
        """A new empty database with the backup role, as the scheduler sets one up."""
        db = await self.database(name)

        # Peer authentication refuses our `postgres` (we are root): 28000 once it answers.
        async def answering() -> None:
            try:
                conn = await pgwire.connect(db.run_dir, user="postgres", database="postgres")
            except pgwire.PgError as exc:
                if exc.code != "28000":
                    raise
                return
            await conn.close()

        await eventually(answering, f"{db.container} starting")
        await db.psql(f"CREATE DATABASE {DATABASE};\n{backup_role_sql(DATABASE)}", "postgres")
        return db

    async def promoted(self, db: Database) -> None:
        """Wait until a restored database has replayed its WAL, promoted and answers."""

        container = self.docker.containers.container(db.container)

        async def answers() -> None:
            if not (await container.show())["State"]["Running"]:
                logs = await container.log(stdout=True, stderr=True)
                raise RuntimeError(f"{db.container} stopped: {''.join(logs)[-2000:]}")
            rows = await db.query("SELECT pg_is_in_recovery()")
            assert rows == [("f",)], rows

        await eventually(answers, f"{db.container} replaying its restore", timeout=WAIT * 3)

    async def forget(self, db: Database) -> None:
        """The database is gone: the backup service stops its stream, the container goes."""
        event = ac.AddonChanged(
            addon_id=db.want.addon_id, app_id=self.app_id, state="deprovisioned"
        )
        await self.scheduler.publish(ac.ADDON_CHANGED, event)
        with contextlib.suppress(aiodocker.DockerError):
            await self.docker.containers.container(db.container).delete(force=True, v=True)
        with contextlib.suppress(aiodocker.DockerError):
            await aiodocker.volumes.DockerVolume(self.docker, db.volume).delete()  # type: ignore[no-untyped-call]

    # ---- what the gateway and the scheduler would ask ----------------------------------------

    async def wal(self, db: Database) -> bc.WalStatus:
        req = bc.ListBackups(addon_id=db.want.addon_id, app_id=self.app_id)
        return (await bc.ask(self.gateway, bc.BACKUPS_LIST, req, host=HOST)).wal

    async def register(self, db: Database) -> None:
        """The add-on events that make the backup service stream this database's WAL."""
        await self.gateway.publish(ac.ADDON_CREATED, ac.AddonCreated(addon=db.want, actor="bench"))
        await eventually(lambda: self.wal(db), "the backup service learning of the database")
        changed = ac.AddonChanged(
            addon_id=db.want.addon_id, app_id=self.app_id, state="provisioned", host_id=HOST
        )
        await self.scheduler.publish(ac.ADDON_CHANGED, changed)
        await self.streaming(db, True)

    async def streaming(self, db: Database, expected: bool) -> None:
        async def check() -> None:
            assert (await self.wal(db)).streaming is expected

        await eventually(check, f"WAL streaming to become {expected}")

    async def capture(self, db: Database) -> tuple[float, bc.BackupInfo]:
        req = bc.CaptureBackup(addon_id=db.want.addon_id, app_id=self.app_id)
        started = time.monotonic()
        found = await bc.ask(
            self.gateway, bc.BACKUP_CAPTURE, req, timeout=bc.CAPTURE_TIMEOUT, host=HOST
        )
        return time.monotonic() - started, found.backup

    async def stage(self, db: Database, run_dir: Path, num: int = 0) -> float:
        req = bc.StageRestore(
            source_addon_id=db.want.addon_id,
            app_id=self.app_id,
            target_addon_id=run_dir.name,
            host_id=HOST,
            num=num,
        )
        started = time.monotonic()
        await bc.ask(self.scheduler, bc.RESTORE_STAGE, req, timeout=bc.CAPTURE_TIMEOUT, host=HOST)
        return time.monotonic() - started

    async def close(self) -> None:
        self.stop_service()
        for name in self.containers:
            with contextlib.suppress(aiodocker.DockerError):
                await self.docker.containers.container(name).delete(force=True, v=True)
        for volume in self.volumes:
            with contextlib.suppress(aiodocker.DockerError):
                await aiodocker.volumes.DockerVolume(self.docker, volume).delete()  # type: ignore[no-untyped-call]


# ---- 1 and 2: base backup and restore -----------------------------------------------------------


async def fill(db: Database, size: int) -> int:
    """Rows until the database holds `size` bytes; its size in bytes."""
    await db.psql(SCHEMA)
    first, have = 1, 0
    while have < size:
        last = first + ROWS_PER_BATCH - 1
        await db.psql(FILL.format(first=first, last=last))
        first = last + 1
        have = int(await db.psql(f"SELECT pg_database_size('{DATABASE}')"))
    await db.psql("VACUUM ANALYZE orders; CHECKPOINT;")
    # What archive_command copied while filling is from before the service knew the
    # database (its slot starts at registration): it would only be swept as old news.
    for found in (db.run_dir / "archive").iterdir():
        found.unlink()
    return int(await db.psql(f"SELECT pg_database_size('{DATABASE}')"))


async def baseline_backup(db: Database, out: Path) -> tuple[float, float]:
    """Seconds of the pipeline, and of the fsync that makes its file durable after it."""
    command = (
        f"set -o pipefail; pg_basebackup -D - -Ft -X fetch -c fast -h {db.run_dir}"
        f" -U {bc.BACKUP_ROLE} | zstd -3 -q > {out}"
    )
    started = time.monotonic()
    await run(["bash", "-c", command])
    return time.monotonic() - started, await synced(out)


async def baseline_restore(compressed: Path, tar: Path) -> tuple[float, float]:
    started = time.monotonic()
    await run(["bash", "-c", f"zstd -d -q < {compressed} > {tar}"])
    return time.monotonic() - started, await synced(tar)


def cpu_of(pid: int) -> float:
    """CPU seconds a process (all its threads) has used: user + system."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """CPU seconds of this process's finished (waited-for) descendants: the pipelines."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


async def synced(path: Path) -> float:
    """Seconds to fsync `path`: the service fsyncs what it writes, the pipelines do not."""
    started = time.monotonic()
    await run(["sync", str(path)])
    return time.monotonic() - started


def line(label: str, seconds: float, plain: int) -> str:
    return f"  {label:<40} {seconds:7.2f} s  {plain / MB / seconds:7.1f} MB/s"


def ratio(label: str, floor: float, service: float) -> str:
    return f"  {label:<40} {floor / service:7.2f}x"


async def backups(bench: Bench, db: Database, rounds: int) -> bc.BackupInfo:
    """Part 1; the last completed backup."""
    out = bench.tmp / "baseline.tar.zst"
    service: list[float] = []
    floor: list[float] = []
    durable: list[float] = []
    cpu: list[tuple[float, float]] = []
    info: bc.BackupInfo | None = None
    assert bench.process is not None
    for _ in range(rounds):
        before = cpu_of(bench.process.pid), children_cpu()
        seconds, info = await bench.capture(db)
        service.append(seconds)
        middle = cpu_of(bench.process.pid), children_cpu()
        piped, fsync = await baseline_backup(db, out)
        floor.append(piped)
        durable.append(piped + fsync)
        cpu.append((middle[0] - before[0], children_cpu() - middle[1]))
    assert info is not None
    plain = info.size_bytes
    print(f"base backup (plain tar {plain / MB:,.0f} MB, best of {rounds}):")
    print(line("backup service (BACKUP_CAPTURE, sealed)", min(service), plain))
    print(line("pg_basebackup | zstd -3 (baseline)", min(floor), plain))
    print(
        ratio("ratio (baseline time / service time)", min(floor), min(service)) + "  target >= 0.8x"
    )
    print(line("baseline + fsync of its file", min(durable), plain))
    print(ratio("ratio against that", min(durable), min(service)))
    stored, compressed = info.stored_bytes, out.stat().st_size
    print(
        f"  stored: service {stored / MB:,.0f} MB ({plain / stored:.2f}x),"
        f" baseline {compressed / MB:,.0f} MB ({plain / compressed:.2f}x)"
    )
    print(f"  all rounds: service {fmt(service)} s, baseline {fmt(floor)} s")
    # Less noisy than seconds on a shared machine: what each side costs (postgres excluded).
    print(
        f"  CPU seconds per round: service {fmt([c[0] for c in cpu])},"
        f" pg_basebackup + zstd {fmt([c[1] for c in cpu])}"
    )
    return info


async def restores(bench: Bench, db: Database, info: bc.BackupInfo, rounds: int) -> None:
    """Part 2: staging against decompressing, each round into new folders; then a container
    on each side's last one."""
    service: list[float] = []
    floor: list[float] = []
    durable: list[float] = []
    staged = tar = Path()
    for n in range(rounds):
        if n:  # the previous round's copies go, outside the clocks
            await asyncio.to_thread(shutil.rmtree, staged)
            await asyncio.to_thread(shutil.rmtree, tar.parent.parent)
        staged = bench.run_dir(f"{bench.app_id}-restored{n}")
        tar = bench.run_dir(f"{bench.app_id}-floor{n}") / "restore" / "base.tar"
        tar.parent.mkdir()
        service.append(await bench.stage(db, staged, info.num))
        piped, fsync = await baseline_restore(bench.tmp / "baseline.tar.zst", tar)
        floor.append(piped)
        durable.append(piped + fsync)
    plain = info.size_bytes
    print(f"restore of b{info.num:03d} (best of {rounds}):")
    print(line("backup service (RESTORE_STAGE)", min(service), plain))
    print(line("zstd -d < file > base.tar (baseline)", min(floor), plain))
    print(ratio("ratio (baseline time / service time)", min(floor), min(service)))
    print(line("baseline + fsync of base.tar", min(durable), plain))
    print(ratio("ratio against that", min(durable), min(service)))
    print(f"  all rounds: service {fmt(service)} s, baseline {fmt(floor)} s")
    # The baseline's tar staged the way the start script reads one: WAL is in the tar.
    (tar.parent / "wal").mkdir()
    (tar.parent / "target").write_text("\n")
    (tar.parent / "READY").touch()
    for path in (tar.parent, *tar.parent.iterdir()):
        path.chmod(0o2750 if path.is_dir() else 0o640)
    answered = []
    for name, run_dir in (("restored", staged), ("floor", tar.parent.parent)):
        started = time.monotonic()
        restored = await bench.database(name, run_dir)
        await bench.promoted(restored)
        answered.append(time.monotonic() - started)
        await bench.forget(restored)
    print("  a container started on it, until it answers (once each):")
    print(f"    service's stage {answered[0]:7.2f} s    baseline's tar {answered[1]:7.2f} s")
    whole = min(service) + answered[0], min(floor) + answered[1]
    print(f"  stage + answer: service {whole[0]:.2f} s, baseline {whole[1]:.2f} s")
    print(ratio("ratio", whole[1], whole[0]))


def fmt(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


# ---- 3: the recovery point after losing the host -----------------------------------------------


class Writer:
    """Commits a numbered row every WRITE_EVERY s; notes when each commit was acknowledged."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.acked: dict[int, float] = {}
        self.started = 0.0
        self.killed = False  # set just before the host goes: the errors after it are expected

    async def run(self) -> None:
        conn = await pgwire.connect(self.db.run_dir, user=bc.BACKUP_ROLE, database=DATABASE)
        self.started = time.time()
        seq = 0
        try:
            while True:
                seq += 1
                await conn.query(f"INSERT INTO writes VALUES ({seq}, {time.time()})")  # noqa: S608
                self.acked[seq] = time.time()
                await asyncio.sleep(WRITE_EVERY)
        except Exception:
            if not self.killed:
                raise
        finally:
            with contextlib.suppress(Exception):
                await conn.close()


async def lose_host(bench: Bench, name: str, seconds: float, streaming: bool) -> None:
    """Part 3: writes for `seconds`, then the database and the backup service die at once."""
    db = await bench.fresh(name)
    await db.psql(WRITES)
    await bench.register(db)
    await bench.capture(db)
    if not streaming:
        # Streaming breaks the way a real outage would: the role can no longer replicate.
        await db.psql(
            f"ALTER ROLE {bc.BACKUP_ROLE} NOREPLICATION;"  # noqa: S608 - a constant
            " SELECT pg_terminate_backend(pid) FROM pg_stat_replication;"
        )
        await bench.streaming(db, False)
    writer = Writer(db)
    task = asyncio.create_task(writer.run())
    await asyncio.sleep(seconds)
    pid = (await bench.docker.containers.container(db.container).show())["State"]["Pid"]
    assert bench.process is not None
    writer.killed = True
    os.kill(pid, signal.SIGKILL)  # the container's init: the kernel ends all the rest
    bench.process.send_signal(signal.SIGKILL)
    lost_at = time.time()
    await asyncio.wait_for(task, WAIT)
    bench.process.wait()
    await asyncio.to_thread(shutil.rmtree, db.run_dir)  # archive/ was on that host too
    last = max(writer.acked)

    bench.start_service()
    await bench.service_up()
    run_dir = bench.run_dir(f"{db.want.addon_id}-back")
    staged = await bench.stage(db, run_dir)
    started = time.monotonic()
    restored = await bench.database(f"{name}-back", run_dir)
    await bench.promoted(restored)
    answered = time.monotonic() - started
    rows = await restored.query("SELECT count(*), coalesce(max(seq), 0) FROM writes")
    count, found = (int(v or 0) for v in rows[0])
    if count != found:
        raise RuntimeError(f"the restored rows have holes: {count} rows up to {found}")
    kept_at = writer.acked.get(found, writer.started)
    label = (
        f"streaming (wal_flush_seconds {BackupSettings().wal_flush_seconds:g}), target <= 5 s"
        if streaming
        else "archive_command only (fallback), expected up to ~60 s (archive_timeout)"
    )
    print(f"recovery point after losing the host, {label}:")
    print(
        f"  {seconds:.0f} s of writes, {last} commits acknowledged, the last"
        f" {lost_at - writer.acked[last]:.3f} s before the kill"
    )
    print(f"  restored: commit {found} of {last}; lost {last - found} commits")
    print(f"  lost = last acknowledged - last restored   {writer.acked[last] - kept_at:7.2f} s")
    print(f"  restore: staged in {staged:.2f} s, answering {answered:.2f} s later")
    await bench.forget(restored)
    await bench.forget(db)


# ---- the run ------------------------------------------------------------------------------------


async def main(args: argparse.Namespace) -> None:
    configure_logging("bench", fmt="json", level="error")
    with tempfile.TemporaryDirectory(prefix="slipway-bench-backup-") as name:
        tmp = Path(name)
        (tmp / "home").mkdir()
        nats = NatsServer(tmp / "nats")
        nats.start()
        keyring = create_keyring(KeyringSettings(nats_url=nats.url, home=str(tmp / "home")))
        keyring_task = asyncio.create_task(keyring.run(install_signals=False))
        bench: Bench | None = None
        try:
            await keyring.started.wait()
            bench = Bench(
                tmp=tmp,
                nats=nats,
                scope=Scope(f"bench-{uuid.uuid4().hex[:8]}"),
                docker=aiodocker.Docker(),
                gateway=await Bus.connect(nats.url, "gateway"),
                scheduler=await Bus.connect(nats.url, "scheduler"),
            )
            await run_all(bench, args)
        except SlipwayError as exc:
            raise SystemExit(f"bench failed: {exc} (service log: {tmp}/backup.out)") from exc
        finally:
            if bench is not None:
                await bench.close()
                await bench.gateway.close()
                await bench.scheduler.close()
                await bench.docker.close()
            keyring.stop()
            await keyring_task
            nats.stop()


async def run_all(bench: Bench, args: argparse.Namespace) -> None:
    started = time.monotonic()
    bench.start_service()
    await bench.service_up()
    big = await bench.fresh("big")
    filled = time.monotonic()
    size = await fill(big, int(args.size_gib * GIB))
    print(
        f"database: {size / GIB:.2f} GiB (pg_database_size), filled in"
        f" {time.monotonic() - filled:.0f} s; zstd {zstd_version()}, pg_basebackup 15 on the host"
    )
    await bench.register(big)
    info = await backups(bench, big, args.rounds)
    if "2" in args.parts:
        await restores(bench, big, info, args.rounds)
    await bench.forget(big)
    if "3" in args.parts:
        await lose_host(bench, "loss", args.load_seconds, streaming=True)
        await lose_host(bench, "fallback", args.fallback_seconds, streaming=False)
    print(f"total {time.monotonic() - started:.0f} s")


def zstd_version() -> str:
    found = subprocess.run(["zstd", "-V"], capture_output=True, text=True).stdout
    return match.group(0) if (match := re.search(r"v[0-9.]+", found)) else "?"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-gib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--load-seconds", type=float, default=20.0)
    parser.add_argument("--fallback-seconds", type=float, default=80.0)
    parser.add_argument("--parts", default="123", help="1: backup, 2: restore, 3: host loss")
    parser.add_argument("--quick", action="store_true", help="0.2 GiB, 2 rounds, short loads")
    parsed = parser.parse_args()
    if parsed.quick:
        parsed.size_gib, parsed.rounds = 0.2, 2
        parsed.load_seconds, parsed.fallback_seconds = 10.0, 30.0
    asyncio.run(main(parsed))
