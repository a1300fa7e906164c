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
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import aiodocker
import structlog

from slipway.contracts import addons as ac
from slipway.contracts import gateway as gw
from slipway.contracts import scheduler as sc
from slipway.libs.bus import Bus
from slipway.libs.service import ServiceApp
from slipway.services.scheduler import containers
from slipway.services.scheduler.errors import Conflict, NotFound

if TYPE_CHECKING:
    from slipway.services.scheduler.hosts import Engine
    from slipway.services.scheduler.reconcile import Scheduler

log = structlog.get_logger("slipway.scheduler.addons")

PURPOSE = "addons"  # the durable consumer of add-on events (contracts/catalog.py)
DEFAULT_IMAGE = "slipway/addon-postgresql:bookworm"
DATA = "/var/lib/postgresql/data"
SOCKET_DIR = "/run/postgresql"
READY_ATTEMPTS = 240  # x 0.25 s: initdb and the first start take 2-5 s on this machine
# Names and verifiers are written into SQL: only these shapes are accepted.
IDENTIFIER = re.compile(r"^[a-z][a-z0-9]{1,62}\Z")
VERIFIER = re.compile(r"^SCRAM-SHA-256\$[0-9]+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+\Z")


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
    want: ac.AddonDesired, network: str, volume: str, found_labels: dict[str, str]
) -> dict[str, Any]:
    """The database's container: hardened, limited by its plan, on the app network only."""
    plan = ac.ADDON_PLANS[want.plan]
    memory = plan.memory_mb * 1024 * 1024
    uid = ac.POSTGRES_UID
    return {
        "Image": image(),
        "Cmd": [
            "-c",
            f"max_connections={plan.max_connections}",
            "-c",
            f"shared_buffers={plan.shared_buffers_mb}MB",
        ],
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
            "Mounts": [{"Type": "volume", "Source": volume, "Target": DATA}],
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
        "\\q\n"
    ).encode()


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

    async def provision(self, want: ac.AddonDesired) -> None:
        """Run the database (or find it running) and set its role; then say so to the gateway."""
        async with self._lock(want.addon_id):
            try:
                host_id = await self._provision(want)
            except Exception as exc:
                log.exception("addon.provision_failed", addon=want.addon_name, app=want.app_name)
                await self._publish(want, "failed", reason=str(exc) or type(exc).__name__)
                return
        await self._publish(want, "provisioned", host_id=host_id)
        log.info("addon.provisioned", addon=want.addon_name, app=want.app_name, host=host_id)

    async def _provision(self, want: ac.AddonDesired) -> str:
        sched = self._sched()
        scope = sched.settings.scoped
        found = await self._find(want.addon_id)
        if found:
            engine, raw = found[0]
            container = engine.docker.containers.container(raw["Id"])
            if raw.get("State") != "running":
                await container.start()
        else:
            chosen = sched.roomiest_host()
            if chosen is None:
                raise Conflict("No host is up to run the database on.")
            engine = chosen
            await containers.ensure_network(
                engine.docker, want.app_id, scope, sched.settings.app_network_pool
            )
            volume = volume_name(sched, want.addon_id)
            own = labels(sched, want)
            await engine.docker.volumes.create({"Name": volume, "Labels": own})  # type: ignore[no-untyped-call]
            config = container_config(want, scope.network(want.app_id), volume, own)
            name = scope.container(f"{want.app_name[:30]}-{want.addon_name}")
            container = await engine.docker.containers.create(config, name=name)
            await container.start()
        await self._await_ready(container)
        credentials = await self.bus.call(
            ac.ADDON_CREDENTIALS_GET,
            ac.GetAddonCredentials(addon_id=want.addon_id, app_id=want.app_id),
        )
        code, _ = await run_psql(
            container,
            ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", SOCKET_DIR, "-d", "postgres"],
            setup_sql(want, credentials),
        )
        if code != 0:
            # psql's message may quote the failing statement (a syntax error's LINE 1: ...),
            # verifier included: it is not passed on.
            raise RuntimeError(f"setting up the database failed (psql exited {code})")
        return engine.id

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
            await self._remove_volumes(f"{ac.LABEL_ADDON}={want.addon_id}")
        self._locks.pop(want.addon_id, None)
        await self._publish(want, "deprovisioned")
        log.info("addon.deprovisioned", addon=want.addon_name, app=want.app_name)

    async def app_destroyed(self, app_id: str) -> None:
        """An app's databases go with it (its records went with the app in the gateway)."""
        sched = self._sched()
        wanted = [sched.settings.scoped.managed_label, f"{sc.LABEL_APP}={app_id}", ac.LABEL_ADDON]
        for engine in sched.rt.engines.values():
            with contextlib.suppress(aiodocker.DockerError, OSError):
                for item in await engine.docker.containers.list(
                    all=True, filters={"label": wanted}
                ):
                    await _remove(engine, item._container)
                # The dynos' side may have found the network still in use by the database.
                await containers.remove_network(engine.docker, app_id, sched.settings.scoped)
        await self._remove_volumes(f"{sc.LABEL_APP}={app_id}")

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


def install(service: ServiceApp, sched: Callable[[], Scheduler]) -> None:
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
