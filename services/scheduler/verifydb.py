"""Throwaway databases for backup verification (`DATABASE_VERIFY`, called by the backup service).

A verification restores a backup exactly as a restore does, into a database nobody uses:

1. a throwaway run folder `<run root>/<host>/verify-<addon>-<num>` (made here, as root,
   like every run folder), into which the backup service stages the backup
   (RESTORE_STAGE, as for a restore; it adds the server's `backup_manifest`);
2. a container of the add-on image made by `addons.container_config` on a scratch
   volume, with no network at all (`none`) and no restart policy. Before the usual start
   script it unpacks base.tar into the empty data folder and runs `pg_verifybackup`
   against the server's manifest (WAL included, through `-w`), writing the verdict into
   the run folder; then it empties the folder and the start script restores as usual;
3. once recovery ends (the database consistent and promoted) the rows of every table of
   the database are counted with psql inside the container;
4. container, volume and run folder are removed, whatever happened; the whole run is
   bounded by the request's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiodocker
import structlog

from slipway.contracts import addons as ac
from slipway.contracts import backup as bk
from slipway.libs.bus import context
from slipway.libs.errors import SlipwayError
from slipway.libs.service import ServiceApp
from slipway.services.scheduler import addons
from slipway.services.scheduler.errors import Conflict, NotFound

if TYPE_CHECKING:
    from slipway.services.scheduler.hosts import Engine
    from slipway.services.scheduler.reconcile import Scheduler

log = structlog.get_logger("slipway.scheduler.verifydb")

MAX_TIMEOUT = 6 * 3600.0
POLL = 0.5
OUTPUT_LIMIT = 16 * 1024  # bytes of pg_verifybackup's output passed on
VERDICT = "verifybackup.rc"
OUTPUT = "verifybackup.out"
# Runs as postgres before the add-on's start script, with the same arguments. pg_verifybackup
# reads the unpacked base backup (files and WAL) against the server's own manifest; the data
# folder is then emptied so that the start script restores from `restore/` as it always does.
WRAPPER = f"""set -u
R={bk.MOUNT}
if [ -f "$R/restore/READY" ] && [ -f "$R/restore/backup_manifest" ] \\
        && [ ! -e "$PGDATA/PG_VERSION" ] && [ ! -e "$R/{VERDICT}" ]; then
    rc=1
    if tar -x -f "$R/restore/base.tar" -C "$PGDATA" --no-same-owner --no-same-permissions \\
            >"$R/{OUTPUT}" 2>&1; then
        pg_verifybackup -m "$R/restore/backup_manifest" -w "$PGDATA/pg_wal" "$PGDATA" \\
            >"$R/{OUTPUT}" 2>&1 && rc=0
    fi
    echo "$rc" >"$R/{VERDICT}"
    find "$PGDATA" -mindepth 1 -delete
fi
exec /usr/local/bin/slipway-postgres "$@"
"""
# Every table's rows in one statement: the names are quoted by format(%I).
COUNT_SQL = (
    "SELECT schemaname || '.' || relname, (xpath('/row/c/text()', query_to_xml(format("
    "'SELECT count(*) AS c FROM %I.%I', schemaname, relname), false, true, '')))[1]::text"
    " FROM pg_stat_user_tables ORDER BY 1"
)
FIELD, RECORD = "\x1f", "\x1e"


class VerifyFailed(Exception):
    """The throwaway database did not start or recover; the message says why."""


def throwaway_config(
    want: ac.AddonDesired, volume: str, found_labels: dict[str, str], run_dir: Path, gid: int
) -> dict[str, Any]:
    """The add-on's own container, cut off: no network, no restart, pg_verifybackup first."""
    config = addons.container_config(
        want, "none", volume, found_labels, run_dir=run_dir, run_gid=gid
    )
    config["Entrypoint"] = ["/bin/sh", "-c", WRAPPER, "slipway-verify"]
    config["HostConfig"]["NetworkMode"] = "none"
    config["HostConfig"]["RestartPolicy"] = {"Name": "no"}
    config.pop("NetworkingConfig", None)
    return config


def parse_counts(output: str) -> dict[str, int]:
    """psql's unaligned COUNT_SQL answer (FIELD/RECORD separated) as {"schema.table": rows}."""
    counts: dict[str, int] = {}
    for record in output.split(RECORD):
        parts = record.strip("\n").split(FIELD)
        if len(parts) == 2 and parts[1].strip().isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def read_small(folder: Path, name: str, limit: int = OUTPUT_LIMIT) -> str | None:
    """A file the container wrote into the run folder: never through a link, at most `limit`."""
    try:
        fd = os.open(folder / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, OSError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit).decode(errors="replace")
    finally:
        os.close(fd)


def remove_folder(path: Path) -> None:
    """Remove a throwaway run folder (rmtree does not follow links)."""
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            path.unlink()


class Verifications:
    """Runs throwaway databases on the scheduler's engines."""

    def __init__(self, sched: Callable[[], Scheduler], service: ServiceApp) -> None:
        self._sched = sched
        self._service = service
        self._running: set[str] = set()

    async def verify(self, req: bk.VerifyDatabase) -> bk.DatabaseChecked:
        """Stage, start, wait for recovery, count; always clean up."""
        sched = self._sched()
        name = f"verify-{req.source_addon_id}-{req.num}"
        if req.plan not in ac.ADDON_PLANS or not addons.IDENTIFIER.match(req.database):
            raise NotFound("no such plan or database")
        engine = sched.rt.engines.get(req.host_id)
        if engine is None:
            raise NotFound(f"no host {req.host_id!r} to run the throwaway database on")
        if name in self._running:
            raise Conflict(f"backup b{req.num:03d} of {req.source_addon_id} is being verified")
        self._running.add(name)
        # make_run_dir checks both ids as folder names.
        try:
            run_dir = await asyncio.to_thread(addons.make_run_dir, sched.settings, engine.id, name)
        except BaseException:
            self._running.discard(name)
            raise
        want = ac.AddonDesired(
            addon_id=name,
            addon_name=name,
            app_id=req.app_id,
            app_name="verify",
            team_id=req.team_id,
            plan=req.plan,
            database=req.database,
            user=req.database,
        )
        volume = addons.volume_name(sched, name)
        container_name = sched.settings.scoped.container(name)
        container: aiodocker.containers.DockerContainer | None = None
        try:
            # What a crash of an earlier run left would block this one by its name.
            stale = engine.docker.containers.container(container_name)
            await self._clean(engine, stale, volume, run_dir / "restore")
            for leftover in (VERDICT, OUTPUT):
                await asyncio.to_thread(remove_folder, run_dir / leftover)
            stage = bk.StageRestore(
                source_addon_id=req.source_addon_id,
                app_id=req.app_id,
                target_addon_id=name,
                host_id=engine.id,
                num=req.num,
            )
            try:
                await bk.ask(self._service.bus, bk.RESTORE_STAGE, stage, timeout=bk.CAPTURE_TIMEOUT)
            except SlipwayError as exc:
                raise VerifyFailed(f"staging the backup failed: {exc.message}") from exc
            own = addons.labels(sched, want)
            await engine.docker.volumes.create({"Name": volume, "Labels": own})  # type: ignore[no-untyped-call]
            _, gid = sched.settings.run_owner()
            config = throwaway_config(want, volume, own, run_dir, gid)
            container = await engine.docker.containers.create(config, name=container_name)
            await container.start()
            timeout = max(1.0, min(req.timeout, MAX_TIMEOUT))
            try:
                await asyncio.wait_for(self._recovered(container), timeout)
            except TimeoutError:
                raise VerifyFailed(f"it did not finish recovery in {timeout:.0f} s") from None
            tables = await self._count(container, req.database)
            return self._found(run_dir, started=True, tables=tables)
        except VerifyFailed as exc:
            return self._found(run_dir, started=False, error=str(exc))
        finally:
            await self._clean(engine, container, volume, run_dir)
            self._running.discard(name)

    def _found(
        self, run_dir: Path, *, started: bool, error: str = "", tables: dict[str, int] | None = None
    ) -> bk.DatabaseChecked:
        verdict = (read_small(run_dir, VERDICT, 16) or "").strip()
        output = read_small(run_dir, OUTPUT) or ""
        status: bk.CheckStatus = {"0": "passed", "1": "failed"}.get(verdict, "skipped")  # type: ignore[assignment]
        return bk.DatabaseChecked(
            started=started,
            error=error,
            tables=tables or {},
            verifybackup=status,
            verifybackup_output=output,
        )

    async def _recovered(self, container: aiodocker.containers.DockerContainer) -> None:
        while True:
            state = (await container.show())["State"]
            if not state.get("Running"):
                raise VerifyFailed(
                    f"the database stopped while recovering (exit code {state.get('ExitCode')})"
                )
            code, output = await addons.run_psql(
                container,
                ["psql", "-XAtq", "-h", addons.SOCKET_DIR, "-d", "postgres", "-c",
                 "SELECT pg_is_in_recovery()"],
            )  # fmt: skip
            if code == 0 and output.strip() == "f":
                return
            await asyncio.sleep(POLL)

    async def _count(
        self, container: aiodocker.containers.DockerContainer, database: str
    ) -> dict[str, int]:
        code, output = await addons.run_psql(
            container,
            ["psql", "-XAtq", "-F", FIELD, "-R", RECORD, "-h", addons.SOCKET_DIR,
             "-d", database, "-c", COUNT_SQL],
        )  # fmt: skip
        if code != 0:
            raise VerifyFailed(f"counting the rows failed (psql exited {code}): {output[:200]}")
        return parse_counts(output)

    async def _clean(
        self,
        engine: Engine,
        container: aiodocker.containers.DockerContainer | None,
        volume: str,
        run_dir: Path,
    ) -> None:
        if container is not None:
            with contextlib.suppress(aiodocker.DockerError):
                await container.delete(force=True, v=True)
        with contextlib.suppress(aiodocker.DockerError):
            await aiodocker.volumes.DockerVolume(engine.docker, volume).delete()  # type: ignore[no-untyped-call]
        await asyncio.to_thread(remove_folder, run_dir)


def install(service: ServiceApp, sched: Callable[[], Scheduler]) -> None:
    """Serve `DATABASE_VERIFY` from the scheduler's service."""
    runs = Verifications(sched, service)

    @service.rpc(bk.DATABASE_VERIFY)
    async def verify(request: bk.VerifyDatabase) -> bk.DatabaseChecked:
        context.require_caller(bk.DATABASE_VERIFY)
        return await runs.verify(request)
