"""Database add-ons: one hardened PostgreSQL container per add-on, on its app's network only.

The container (image `slipway/addon-postgresql`, scripts/build-addons) runs as the
`postgres` user with every capability dropped: the data folder on its named volume is
already that user's (a fresh volume copies its mount point's owner from the image), so
no CAP_CHOWN/CAP_SETUID is needed. Root is read-only; `/run/postgresql` (the socket) and
`/tmp` are tmpfs; memory and pids come from the plan; Docker keeps no log (LogConfig
none); no port is published: only the app's dynos reach it, by the add-on's name.

The password never reaches Docker: the container's first start makes the cluster with
peer authentication for `postgres` on the unix socket and scram-sha-256 for every TCP
connection, then this module asks the gateway for the customer role's SCRAM verifier
and sets it through `docker exec psql` with the SQL on the exec's stdin. The customer's
role owns its database and is not a superuser.

These containers carry `LABEL_ADDON`: the dyno loops (hosts.Engine.poll) leave them alone.

TLS (addontls.py): before the container, a key made here and a certificate for the add-on's
name from the router's CA (network-wirer signs a CSR), mounted read-only at
/etc/slipway/tls; the start script then turns ssl on and accepts TCP over TLS only.
`pg:credentials:rotate` reaches `apply_credentials`: the gateway's new verifier, set the
same way as at provision, and the role's old sessions ended.

The backup service's door (contracts/backup.py): each database gets its host run folder
(`<run root>/<host>/<addon>`, made here as root before the container: owner the backup
user, its group, mode 02770) mounted at /run/slipway, and that group as a supplementary
group, so `postgres` puts its second socket (0770) and its archived WAL there and only
the backup user's group reaches them from the host. The setup SQL makes the
`slipway_backup` role (replication, read-all), trusted on the sockets only (the start
script's pg_hba.conf).

A restored database (`AddonDesired.restore`) is staged by the backup service into
`restore/` (RESTORE_STAGE) before its container first starts; the start script unpacks
it and PostgreSQL replays the WAL, then promotes. This module waits for the end of
recovery, removes the recovery settings and `restore/`, gives the source's database and
role the new add-on's names, and then sets the role's password like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiodocker
import structlog

from slipway.contracts import addons as ac
from slipway.contracts import backup as bk
from slipway.contracts import gateway as gw
from slipway.contracts import scheduler as sc
from slipway.contracts.base import Ok
from slipway.libs.bus import Bus, context
from slipway.libs.errors import SlipwayError, Unavailable
from slipway.libs.service import ServiceApp
from slipway.services.scheduler import addontls
from slipway.services.scheduler.errors import Conflict, NotFound

if TYPE_CHECKING:
    from slipway.services.scheduler.hosts import Engine
    from slipway.services.scheduler.reconcile import Scheduler
    from slipway.services.scheduler.settings import SchedulerSettings

log = structlog.get_logger("slipway.scheduler.addons")

PURPOSE = "addons"  # the durable consumer of add-on events (contracts/catalog.py)
DEFAULT_IMAGE = "slipway/addon-postgresql:bookworm"
DATA = "/var/lib/postgresql/data"
SOCKET_DIR = "/run/postgresql"
READY_ATTEMPTS = 240  # x 0.25 s: initdb and the first start take 2-5 s on this machine
# Names and verifiers are written into SQL: only these shapes are accepted.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9]{1,62}\Z")
VERIFIER = re.compile(r"^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+\Z")
# Host and add-on ids become folder names.
PATH_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
RUN_MODE = 0o2770  # setgid: the socket and archived WAL take the backup user's group
ARCHIVE_DIR = f"{bk.MOUNT}/archive"
# WAL for the backup service: a physical slot streams it; archive_command is the fallback
# (a copy to the run folder, renamed into place so a half-copied file is never seen).
WAL_SETTINGS = (
    "wal_level=replica",
    "max_wal_senders=5",
    "max_replication_slots=5",
    "archive_mode=on",
    "archive_timeout=60",
    f"archive_command=test ! -f {ARCHIVE_DIR}/%f && cp %p {ARCHIVE_DIR}/%f.tmp"
    f" && mv {ARCHIVE_DIR}/%f.tmp {ARCHIVE_DIR}/%f",
)
RECOVERY_POLL = 0.5
PSQL_STDIN = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", SOCKET_DIR, "-d", "postgres"]
RESET_RECOVERY_SQL = (
    b"ALTER SYSTEM RESET restore_command;\n"
    b"ALTER SYSTEM RESET recovery_target_time;\n"
    b"ALTER SYSTEM RESET recovery_target_action;\n"
    b"ALTER SYSTEM RESET recovery_target_timeline;\n"
    b"SELECT pg_reload_conf();\n"
    b"\\q\n"
)


class RestoreFailed(Exception):
    """A restore could not be staged or replayed; the message is for the customer."""


class BackupsUnreachable(RestoreFailed):
    """No backup service answered the stage request: worth asking again later."""


def image() -> str:
    """The PostgreSQL image: SLIPWAY_ADDON_POSTGRESQL_IMAGE, or build-addons' newest build."""
    return os.environ.get("SLIPWAY_ADDON_POSTGRESQL_IMAGE", DEFAULT_IMAGE)


def volume_name(sched: Scheduler, addon_id: str) -> str:
    return sched.settings.scoped.container(f"addon-{addon_id}")


def labels(sched: Scheduler, want: ac.AddonDesired) -> dict[str, str]:
    """The scope's managed label and the app's, plus the add-on's own."""
    return {
        sc.LABEL_MANAGED: sched.settings.scoped.managed,
        sc.LABEL_APP: want.app_id,
        sc.LABEL_APP_NAME: want.app_name,
        sc.LABEL_TEAM: want.team_id,
        ac.LABEL_ADDON: want.addon_id,
        ac.LABEL_ADDON_NAME: want.addon_name,
        ac.LABEL_PLAN: want.plan,
    }


def container_config(
    want: ac.AddonDesired,
    network: str,
    volume: str,
    found_labels: dict[str, str],
    *,
    run_dir: str | Path | None = None,
    run_gid: int = 0,
    tls_dir: str | Path | None = None,
) -> dict[str, Any]:
    """The database's container: hardened, limited by its plan, on the app network only.

    `run_dir` (the host run folder, `make_run_dir`) is mounted at /run/slipway with WAL
    archiving into it, the container holding `run_gid` to write there; None: neither.
    `tls_dir` (addontls.py) is mounted read-only at /etc/slipway/tls: TLS on, TCP needs it."""
    plan = ac.ADDON_PLANS[want.plan]
    memory = plan.memory_mb * 1024 * 1024
    uid = ac.POSTGRES_UID
    settings = [
        f"max_connections={plan.max_connections}",
        f"shared_buffers={plan.shared_buffers_mb}MB",
    ]
    mounts: list[dict[str, Any]] = [{"Type": "volume", "Source": volume, "Target": DATA}]
    extra: dict[str, Any] = {}
    if run_dir is not None:
        settings.extend(WAL_SETTINGS)
        mounts.append({"Type": "bind", "Source": str(run_dir), "Target": bk.MOUNT})
        extra["GroupAdd"] = [str(run_gid)]
    if tls_dir is not None:
        mounts.append(
            {"Type": "bind", "Source": str(tls_dir), "Target": addontls.MOUNT, "ReadOnly": True}
        )
    return {
        "Image": image(),
        "Cmd": [part for setting in settings for part in ("-c", setting)],
        "User": f"{uid}:{uid}",
        "Hostname": want.addon_name,
        "Labels": found_labels,
        "HostConfig": {
            "NetworkMode": network,
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges:true"],
            "ReadonlyRootfs": True,
            "Tmpfs": {
                SOCKET_DIR: f"rw,noexec,nosuid,nodev,size=1m,uid={uid},gid={uid},mode=0700",
                "/tmp": "rw,noexec,nosuid,nodev,size=64m,mode=1777",  # noqa: S108 - the container's own
            },
            "Mounts": mounts,
            **extra,
            "Memory": memory,
            "MemorySwap": memory,
            "PidsLimit": plan.pids_limit,
            "LogConfig": {"Type": "none", "Config": {}},
            # A database comes back by itself after a crash or an engine restart.
            "RestartPolicy": {"Name": "unless-stopped"},
        },
        "NetworkingConfig": {"EndpointsConfig": {network: {"Aliases": [want.addon_name]}}},
    }


def setup_sql(want: ac.AddonDesired, credentials: ac.AddonCredentials) -> bytes:
    """The SQL that makes the role (with its verifier) and its database; psql reads it on stdin."""
    user, database, verifier = credentials.user, want.database, credentials.verifier
    if not (IDENTIFIER.match(user) and IDENTIFIER.match(database) and VERIFIER.match(verifier)):
        raise ValueError("refusing a role, database or verifier of an unexpected shape")
    if user != want.user:
        raise ValueError("the gateway answered for another role")
    # Every value was matched against IDENTIFIER / VERIFIER above: nothing to quote.
    return (
        f"SELECT 'CREATE ROLE \"{user}\" LOGIN' WHERE NOT EXISTS"  # noqa: S608
        f" (SELECT FROM pg_roles WHERE rolname = '{user}')\\gexec\n"
        f"ALTER ROLE \"{user}\" WITH LOGIN NOSUPERUSER NOCREATEROLE PASSWORD '{verifier}';\n"
        f'SELECT \'CREATE DATABASE "{database}" OWNER "{user}"\' WHERE NOT EXISTS'
        f" (SELECT FROM pg_database WHERE datname = '{database}')\\gexec\n"
        f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC;\n'
        f"{backup_role_sql(database)}"
        "\\q\n"
    ).encode()


def password_sql(user: str, verifier: str) -> bytes:
    """psql lines setting the role's new verifier and ending the sessions that logged in
    with the old password (`pg:credentials:rotate`, as Heroku's ends them)."""
    if not (IDENTIFIER.match(user) and VERIFIER.match(verifier)):
        raise ValueError("refusing a role or verifier of an unexpected shape")
    # Matched against IDENTIFIER / VERIFIER above: nothing to quote.
    return (
        f"ALTER ROLE \"{user}\" WITH PASSWORD '{verifier}';\n"
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        f" WHERE usename = '{user}';\n"
        "\\q\n"
    ).encode()


def backup_role_sql(database: str) -> str:
    """psql lines making the backup service's role: WAL and base backups over the replication
    protocol, row counts for its manifests; no password (trusted on the sockets only)."""
    if not IDENTIFIER.match(database):
        raise ValueError("refusing a database of an unexpected shape")
    role = bk.BACKUP_ROLE  # a constant; the database matched IDENTIFIER: nothing to quote
    return (
        f"SELECT 'CREATE ROLE {role}' WHERE NOT EXISTS"  # noqa: S608
        f" (SELECT FROM pg_roles WHERE rolname = '{role}')\\gexec\n"
        f"ALTER ROLE {role} WITH LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE"
        " PASSWORD NULL;\n"
        f"GRANT pg_read_all_data, pg_read_all_stats TO {role};\n"
        f'GRANT CONNECT ON DATABASE "{database}" TO {role};\n'
    )


def adopt_sql(want: ac.AddonDesired) -> bytes:
    """After a restore: the source's one database and its owner take this add-on's names."""
    user, database = want.user, want.database
    if not (IDENTIFIER.match(user) and IDENTIFIER.match(database)):
        raise ValueError("refusing a role or database of an unexpected shape")
    # Matched against IDENTIFIER above: nothing to quote.
    return (
        "SELECT format('ALTER DATABASE %I RENAME TO %I', datname, "  # noqa: S608
        f"'{database}') FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres'"
        f" AND datname <> '{database}' AND (SELECT count(*) FROM pg_database"
        " WHERE NOT datistemplate AND datname <> 'postgres') = 1\\gexec\n"
        f"SELECT format('ALTER ROLE %I RENAME TO %I', r.rolname, '{user}') FROM pg_database d"
        f" JOIN pg_roles r ON r.oid = d.datdba WHERE d.datname = '{database}'"
        f" AND NOT r.rolsuper AND r.rolname NOT IN ('{user}', '{bk.BACKUP_ROLE}')"
        f" AND NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{user}')\\gexec\n"
        "\\q\n"
    ).encode()


def run_dir_of(settings: SchedulerSettings, host_id: str, addon_id: str) -> Path:
    """The host folder mounted at /run/slipway in the add-on's container."""
    if not (PATH_PART.match(host_id) and PATH_PART.match(addon_id)):
        raise ValueError("refusing a host or add-on id that is no plain folder name")
    return bk.addon_run_dir(settings.run_root(), host_id, addon_id)


def make_run_dir(settings: SchedulerSettings, host_id: str, addon_id: str) -> Path:
    """Make (or fix) the add-on's run folder: the backup user's, its group, mode 02770.

    Its parents are root's: the container, which writes inside the folder, can never
    replace the folder itself with a link."""
    path = run_dir_of(settings, host_id, addon_id)
    uid, gid = settings.run_owner()
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=0o700)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise RuntimeError(f"{path} is not a folder")
    os.chown(path, uid, gid, follow_symlinks=False)
    os.chmod(path, RUN_MODE, follow_symlinks=False)
    return path


def remove_run_dirs(settings: SchedulerSettings, addon_id: str) -> None:
    """Remove the add-on's run folder on every host (rmtree does not follow links)."""
    root = settings.run_root()
    if not PATH_PART.match(addon_id) or not root.is_dir():
        return
    for host in root.iterdir():
        path = host / addon_id
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(os.lstat(path).st_mode):
                shutil.rmtree(path)


def remove_restore_dir(run_dir: Path) -> None:
    """Remove `restore/` from a run folder (a link there is removed, never followed)."""
    path = run_dir / "restore"
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISDIR(os.lstat(path).st_mode):
            shutil.rmtree(path)
        else:
            path.unlink()


INFO_SQL = (
    "SELECT current_setting('server_version'), pg_database_size(current_database()),"
    " (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()),"
    " current_setting('max_connections'),"
    " (SELECT count(*) FROM pg_stat_user_tables)"
)


async def run_psql(
    container: aiodocker.containers.DockerContainer,
    args: list[str],
    stdin: bytes | None = None,
) -> tuple[int, str]:
    """Run a command as `postgres` in the container; (exit code, output). `stdin` is written
    to the exec's input, so it is in no exec or container config."""
    execution = await container.exec(
        args, stdin=stdin is not None, stdout=True, stderr=True, user=str(ac.POSTGRES_UID)
    )
    output: list[bytes] = []
    async with execution.start(detach=False) as stream:
        if stdin is not None:
            await stream.write_in(stdin)
        while (message := await stream.read_out()) is not None:
            output.append(message.data)
    inspected = await execution.inspect()
    return int(inspected.get("ExitCode") or 0), b"".join(output).decode(errors="replace")


class Addons:
    """Runs, inspects and removes add-on databases on the scheduler's engines."""

    def __init__(self, sched: Callable[[], Scheduler], service: ServiceApp) -> None:
        self._sched = sched
        self._service = service  # its bus connects when the service starts
        self._locks: dict[str, asyncio.Lock] = {}

    @property
    def bus(self) -> Bus:
        return self._service.bus

    def _lock(self, addon_id: str) -> asyncio.Lock:
        return self._locks.setdefault(addon_id, asyncio.Lock())

    async def _find(self, addon_id: str) -> list[tuple[Engine, dict[str, Any]]]:
        """The add-on's containers on every engine that answers."""
        sched = self._sched()
        wanted = [sched.settings.scoped.managed_label, f"{ac.LABEL_ADDON}={addon_id}"]
        found: list[tuple[Engine, dict[str, Any]]] = []
        for engine in sched.rt.engines.values():
            try:
                listed = await engine.docker.containers.list(all=True, filters={"label": wanted})
            except (aiodocker.DockerError, OSError) as exc:
                log.warning("addon.engine_silent", host=engine.id, error=repr(exc))
                continue
            found.extend((engine, item._container) for item in listed)
        return found

    async def containers_of(self, addon_id: str) -> list[tuple[Engine, dict[str, Any]]]:
        """The add-on's containers on every engine that answers."""
        return await self._find(addon_id)

    async def volume_host(self, addon_id: str) -> Engine | None:
        """The engine holding the add-on's volume (its data), if one that answers does."""
        sched = self._sched()
        wanted = [sched.settings.scoped.managed_label, f"{ac.LABEL_ADDON}={addon_id}"]
        for engine in sched.rt.engines.values():
            try:
                listed = await engine.docker.volumes.list(filters={"label": wanted})  # type: ignore[no-untyped-call]
            except (aiodocker.DockerError, OSError) as exc:
                log.warning("addon.engine_silent", host=engine.id, error=repr(exc))
                continue
            if listed.get("Volumes"):
                return engine
        return None

    async def provision(
        self, want: ac.AddonDesired, *, on: Engine | None = None, recovering: bool = False
    ) -> bool:
        """Run the database (or find it running) and set its role; then say so to the gateway.

        `on`: the engine a new container goes to (where its volume is), else the roomiest.
        `recovering` (a database that was on no host, recovery.py): a backup service that
        does not answer is no failure yet; False then, for the caller to try again."""
        async with self._lock(want.addon_id):
            try:
                host_id = await self._provision(want, on)
            except (BackupsUnreachable, Unavailable) as exc:
                if recovering:
                    log.warning("addon.recovery_waits", addon=want.addon_name, error=str(exc))
                    return False
                log.exception("addon.provision_failed", addon=want.addon_name, app=want.app_name)
                await self._publish(want, "failed", reason=str(exc) or type(exc).__name__)
                return True
            except Exception as exc:
                log.exception("addon.provision_failed", addon=want.addon_name, app=want.app_name)
                reason = str(exc) or type(exc).__name__
                if recovering:
                    reason = (
                        "its database was on no host after the platform was restored, and it"
                        f" could not come back from its own backups. {reason}"
                    )
                await self._publish(want, "failed", reason=reason)
                return True
        await self._publish(want, "provisioned", host_id=host_id)
        log.info("addon.provisioned", addon=want.addon_name, app=want.app_name, host=host_id)
        return True

    async def _provision(self, want: ac.AddonDesired, on: Engine | None = None) -> str:
        sched = self._sched()
        settings = sched.settings
        scope = settings.scoped
        found = await self._find(want.addon_id)
        if found:
            engine, raw = found[0]
            container = engine.docker.containers.container(raw["Id"])
            # The bind mount's source must exist before any start.
            run_dir = await asyncio.to_thread(make_run_dir, settings, engine.id, want.addon_id)
            renewed = await addontls.ensure(self.bus, settings, want, engine.id)
            # A restore interrupted after its container started: finish it.
            restoring = want.restore is not None and (run_dir / "restore").exists()
            if raw.get("State") != "running":
                await container.start()
                renewed = False
        else:
            chosen = on or sched.roomiest_host()
            if chosen is None:
                raise Conflict("No host is up to run the database on.")
            engine = chosen
            run_dir = await asyncio.to_thread(make_run_dir, settings, engine.id, want.addon_id)
            await addontls.ensure(self.bus, settings, want, engine.id)
            renewed = False
            restoring = want.restore is not None
            if want.restore is not None:
                await self._stage(want, want.restore, engine.id, run_dir)
            volume = volume_name(sched, want.addon_id)
            own = labels(sched, want)
            await engine.docker.volumes.create({"Name": volume, "Labels": own})  # type: ignore[no-untyped-call]
            _, gid = settings.run_owner()
            name = scope.container(f"{want.app_name[:30]}-{want.addon_name}")
            async with sched.rt.network_held(engine, want.app_id) as network:
                config = container_config(
                    want,
                    network,
                    volume,
                    own,
                    run_dir=run_dir,
                    run_gid=gid,
                    tls_dir=addontls.tls_dir_of(settings, engine.id, want.addon_id),
                )
                container = await engine.docker.containers.create(config, name=name)
            await container.start()
        if restoring:
            await self._recover(container, want, run_dir)
        else:
            await self._await_ready(container)
        credentials = await self.bus.call(
            ac.ADDON_CREDENTIALS_GET,
            ac.GetAddonCredentials(addon_id=want.addon_id, app_id=want.app_id),
        )
        code, _ = await run_psql(container, PSQL_STDIN, setup_sql(want, credentials))
        if code != 0:
            # psql's message may quote the failing statement (a syntax error's LINE 1: ...),
            # verifier included: it is not passed on.
            raise RuntimeError(f"setting up the database failed (psql exited {code})")
        if renewed:  # PostgreSQL reads its certificate files again on a reload
            await run_psql(container, PSQL_STDIN, b"SELECT pg_reload_conf();\n\\q\n")
        return engine.id

    async def _stage(
        self, want: ac.AddonDesired, source: ac.RestoreFrom, host_id: str, run_dir: Path
    ) -> None:
        """Have the backup service write the restore into `run_dir/restore/`."""
        # A stage left half-written by an earlier attempt is no restore.
        await asyncio.to_thread(remove_restore_dir, run_dir)
        request = bk.StageRestore(
            source_addon_id=source.source_addon_id,
            app_id=want.app_id,
            target_addon_id=want.addon_id,
            host_id=host_id,
            num=source.num,
            to_time=source.to_time,
        )
        try:
            staged = await bk.ask(self.bus, bk.RESTORE_STAGE, request, timeout=bk.CAPTURE_TIMEOUT)
        except Unavailable as exc:
            raise BackupsUnreachable(f"Restoring the backup failed: {exc.message}") from exc
        except SlipwayError as exc:
            raise RestoreFailed(f"Restoring the backup failed: {exc.message}") from exc
        if not (run_dir / "restore" / "READY").is_file():
            raise RestoreFailed("Restoring the backup failed: the backup service staged nothing.")
        log.info(
            "addon.restore_staged",
            addon=want.addon_name,
            source=source.source_addon_id,
            backup=staged.backup_num,
            end_lsn=staged.end_lsn,
        )

    async def _recover(
        self, container: aiodocker.containers.DockerContainer, want: ac.AddonDesired, run_dir: Path
    ) -> None:
        """Wait for the restored database to replay its WAL and promote, then make it a
        plain database again: recovery settings gone, `restore/` gone, this add-on's names."""
        settings = self._sched().settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.restore_timeout
        while True:
            shown = await container.show()
            state = shown["State"]
            if not state.get("Running") or state.get("Restarting") or shown.get("RestartCount"):
                # Left running, it would replay and fail again forever.
                with contextlib.suppress(aiodocker.DockerError):
                    await container.stop(t=5)
                raise RestoreFailed(
                    "Restoring the backup failed: the database stopped while replaying its"
                    f" WAL (exit code {state.get('ExitCode')}). The backup may not reach the"
                    " requested time, or its WAL is incomplete."
                )
            code, output = await run_psql(
                container,
                ["psql", "-XAtq", "-h", SOCKET_DIR, "-d", "postgres", "-c",
                 "SELECT pg_is_in_recovery()"],
            )  # fmt: skip
            if code == 0 and output.strip() == "f":
                break
            if loop.time() > deadline:
                raise RestoreFailed(
                    "Restoring the backup failed: replaying its WAL took longer than"
                    f" {settings.restore_timeout:.0f} s."
                )
            await asyncio.sleep(RECOVERY_POLL)
        for sql in (RESET_RECOVERY_SQL, adopt_sql(want)):
            code, _ = await run_psql(container, PSQL_STDIN, sql)
            if code != 0:
                raise RuntimeError(f"finishing the restore failed (psql exited {code})")
        await asyncio.to_thread(remove_restore_dir, run_dir)
        log.info("addon.restored", addon=want.addon_name, app=want.app_name)

    async def _await_ready(self, container: aiodocker.containers.DockerContainer) -> None:
        for _ in range(READY_ATTEMPTS):
            state = (await container.show())["State"]
            if not state.get("Running"):
                raise RuntimeError(f"the database stopped (exit code {state.get('ExitCode')})")
            code, _ = await run_psql(container, ["pg_isready", "-q", "-h", SOCKET_DIR])
            if code == 0:
                return
            await asyncio.sleep(0.25)
        raise RuntimeError("the database did not start in time")

    async def deprovision(self, want: ac.AddonDesired) -> None:
        """Remove the database's container and volume (its data goes with them)."""
        async with self._lock(want.addon_id):
            for engine, raw in await self._find(want.addon_id):
                await _remove(engine, raw)
                await self._sched().rt.release_network(engine, want.app_id)
            await self._remove_volumes(f"{ac.LABEL_ADDON}={want.addon_id}")
            await asyncio.to_thread(remove_run_dirs, self._sched().settings, want.addon_id)
            await asyncio.to_thread(addontls.remove_tls_dirs, self._sched().settings, want.addon_id)
        self._locks.pop(want.addon_id, None)
        await self._publish(want, "deprovisioned")
        log.info("addon.deprovisioned", addon=want.addon_name, app=want.app_name)

    async def app_destroyed(self, app_id: str) -> None:
        """An app's databases go with it (its records went with the app in the gateway)."""
        sched = self._sched()
        wanted = [sched.settings.scoped.managed_label, f"{sc.LABEL_APP}={app_id}", ac.LABEL_ADDON]
        addon_ids: set[str] = set()
        for engine in sched.rt.engines.values():
            with contextlib.suppress(aiodocker.DockerError, OSError):
                for item in await engine.docker.containers.list(
                    all=True, filters={"label": wanted}
                ):
                    addon_ids.add((item._container.get("Labels") or {}).get(ac.LABEL_ADDON, ""))
                    await _remove(engine, item._container)
                # The dynos' side may have found the network still in use by the database.
                await sched.rt.release_network(engine, app_id)
        await self._remove_volumes(f"{sc.LABEL_APP}={app_id}")
        for addon_id in addon_ids - {""}:
            await asyncio.to_thread(remove_run_dirs, sched.settings, addon_id)
            await asyncio.to_thread(addontls.remove_tls_dirs, sched.settings, addon_id)

    async def _remove_volumes(self, label: str) -> None:
        sched = self._sched()
        wanted = [sched.settings.scoped.managed_label, label, ac.LABEL_ADDON]
        for engine in sched.rt.engines.values():
            with contextlib.suppress(aiodocker.DockerError, OSError):
                listed = await engine.docker.volumes.list(filters={"label": wanted})  # type: ignore[no-untyped-call]
                for volume in listed.get("Volumes") or []:
                    found = aiodocker.volumes.DockerVolume(engine.docker, volume["Name"])  # type: ignore[no-untyped-call]
                    await found.delete()  # type: ignore[no-untyped-call]

    async def info(self, request: ac.GetDatabaseInfo) -> ac.DatabaseInfo:
        """What `pg:info` shows, from one query in the database's container."""
        found = [
            (e, raw)
            for e, raw in await self._find(request.addon_id)
            if (raw.get("Labels") or {}).get(sc.LABEL_APP) == request.app_id
        ]
        if not found:
            raise NotFound(f"No database for add-on {request.addon_id}.")
        engine, raw = found[0]
        if raw.get("State") != "running":
            return ac.DatabaseInfo(running=False, host_id=engine.id)
        if not IDENTIFIER.match(request.database):
            raise NotFound(f"No database {request.database[:60]!r}.")
        container = engine.docker.containers.container(raw["Id"])
        code, output = await run_psql(
            container,
            ["psql", "-X", "-A", "-t", "-F", "|", "-h", SOCKET_DIR, "-d", request.database,
             "-c", INFO_SQL],
        )  # fmt: skip
        parts = output.strip().split("|")
        if code != 0 or len(parts) != 5:
            return ac.DatabaseInfo(running=True, host_id=engine.id)
        version, size, connections, max_connections, tables = parts
        return ac.DatabaseInfo(
            running=True,
            host_id=engine.id,
            version=version,
            size_bytes=int(size),
            connections=int(connections),
            max_connections=int(max_connections),
            tables=int(tables),
        )

    async def apply_credentials(self, request: ac.ApplyAddonCredentials) -> None:
        """Set the gateway's current password (its verifier) in the running database."""
        found = [
            (e, raw)
            for e, raw in await self._find(request.addon_id)
            if (raw.get("Labels") or {}).get(sc.LABEL_APP) == request.app_id
        ]
        if not found:
            raise NotFound(f"No database for add-on {request.addon_id}.")
        engine, raw = found[0]
        if raw.get("State") != "running":
            raise Conflict("The database is not running: start it before rotating its password.")
        async with self._lock(request.addon_id):
            credentials = await self.bus.call(
                ac.ADDON_CREDENTIALS_GET,
                ac.GetAddonCredentials(addon_id=request.addon_id, app_id=request.app_id),
            )
            if credentials.user != request.user:
                raise Conflict("The gateway answered for another role.")
            container = engine.docker.containers.container(raw["Id"])
            sql = password_sql(credentials.user, credentials.verifier)
            code, _ = await run_psql(container, PSQL_STDIN, sql)
        if code != 0:
            # psql may quote the statement, verifier included: its output is not passed on.
            raise RuntimeError(f"setting the new password failed (psql exited {code})")
        log.info("addon.credentials_applied", addon=request.addon_id, app=request.app_id)

    async def _publish(
        self, want: ac.AddonDesired, state: ac.AddonOutcome, *, host_id: str = "", reason: str = ""
    ) -> None:
        event = ac.AddonChanged(
            addon_id=want.addon_id,
            app_id=want.app_id,
            state=state,
            host_id=host_id,
            reason=reason[:500],
        )
        await self.bus.publish(ac.ADDON_CHANGED, event, retry_for=5.0)


async def _remove(engine: Engine, raw: dict[str, Any]) -> None:
    with contextlib.suppress(aiodocker.DockerError):
        await engine.docker.containers.container(raw["Id"]).delete(force=True, v=False)


def install(service: ServiceApp, sched: Callable[[], Scheduler]) -> Addons:
    """Add the add-on event handlers and the `pg:info` RPC to the scheduler's service."""
    runner = Addons(sched, service)

    @service.event(PURPOSE, ac.ADDON_CREATED)
    async def created(event: ac.AddonCreated) -> None:
        await runner.provision(event.addon)

    @service.event(PURPOSE, ac.ADDON_DESTROYED)
    async def destroyed(event: ac.AddonDestroyed) -> None:
        await runner.deprovision(event.addon)

    @service.event(PURPOSE, gw.APP_DESTROYED)
    async def app_destroyed(event: gw.AppDestroyed) -> None:
        await runner.app_destroyed(event.app_id)

    @service.rpc(ac.ADDON_INFO_GET)
    async def info(request: ac.GetDatabaseInfo) -> ac.DatabaseInfo:
        return await runner.info(request)

    @service.rpc(ac.ADDON_CREDENTIALS_APPLY)
    async def apply_credentials(request: ac.ApplyAddonCredentials) -> Ok:
        context.require_caller(ac.ADDON_CREDENTIALS_APPLY)
        await runner.apply_credentials(request)
        return Ok()

    return runner
