"""The dynos the scheduler runs: tracking, starting, stopping, and telling everyone.

`Runtime` owns the in-memory picture (container id → `Tracked`), the engines, and
the only code that creates, starts, stops or removes a dyno container. Every state
change goes through `_set_state`, which stores the restart count and publishes
`DYNO_CHANGED`, so network-wirer and log-shipper see each transition once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiodocker
import msgspec
import structlog

from slipway.contracts import gateway as gw
from slipway.contracts.base import encode
from slipway.contracts.keyring import Purpose
from slipway.contracts.logs import LogLine, LogLines, lines_subject
from slipway.contracts.registry import CREDENTIALS_ISSUE, Credentials, IssueCredentials
from slipway.contracts.scheduler import DYNO_CHANGED, R15_TEXT, Dyno, DynoChanged, DynoState
from slipway.libs import appnet, healthpath
from slipway.libs.bus import Bus
from slipway.libs.crypto import Binding, envelope
from slipway.services.scheduler import containers, health, model, starts
from slipway.services.scheduler.containers import DynoSpec
from slipway.services.scheduler.hosts import Engine
from slipway.services.scheduler.settings import SchedulerSettings
from slipway.services.scheduler.store import SchedulerStore

log = structlog.get_logger("slipway.scheduler")

HEALTH_PATH_VAR = healthpath.HEALTH_PATH_VAR
# Said in the app's log (as `heroku[web.1]: ...`) when a stored health path is not a path;
# the value itself is config, so it is never repeated in a log line.
HEALTH_PATH_IGNORED = (
    f"Ignoring {HEALTH_PATH_VAR}: it is not an absolute path like /health, so only the"
    f" binding of $PORT is checked. Set it again: {healthpath.RULE}"
)


@dataclass
class Tracked:
    """One dyno container the scheduler knows about."""

    container_id: str
    spec: DynoSpec
    state: DynoState
    restart_count: int = 0
    port: int | None = None  # the published host port (web dynos)
    private_address: str | None = None  # on the app's network, for a router on the same host
    up_since: float | None = None
    next_restart: float | None = None
    busy: bool = False  # an operation is under way: the monitor leaves it alone
    health_path: str | None = None
    tracked_at: float = field(default_factory=time.monotonic)
    # When the state last changed (wall clock): the dyno's `updated_at`, so `ps` and the
    # dashboard can say since when a dyno is up, and log-shipper orders what it hears by it.
    changed_at: float = field(default_factory=time.time)

    def model(self) -> model.Dyno:
        s = self.spec
        return model.Dyno(
            app=s.app_id,
            release=s.release,
            process_type=s.process_type,
            index=s.index,
            size=s.dyno_size,
            host_id=s.host_id,
        )


class Runtime:
    """Engines, tracked dynos and the container operations."""

    def __init__(self, settings: SchedulerSettings, store: SchedulerStore, bus: Bus) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.engines: dict[str, Engine] = {}
        self.dynos: dict[str, Tracked] = {}
        self.creating: set[str] = set()  # container names being created right now
        self.one_offs: set[str] = set()  # release-phase containers running right now
        self.restarts = 0  # crashed dynos restarted since this process started (a metric)
        # Every app container this process creates is made inside `networks.held`, and
        # each removal releases the network: an app's network on a host lives exactly
        # while the app has containers there (libs/appnet.py).
        self.networks = appnet.AppNetworks(
            settings.scoped, settings.app_network_pool, settings.app_subnet_prefix
        )
        # State changes are stored and published in order by one worker, off the dynos'
        # critical path (a JetStream ack and an fsync each).
        # An entry without a dyno deletes the container's row.
        self._outbox: asyncio.Queue[tuple[Tracked, Dyno | None, DynoState | None, str]] = (
            asyncio.Queue()
        )
        self._writer: asyncio.Task[None] | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the worker that stores and publishes state changes, and the network sweep."""
        self._writer = asyncio.create_task(self._write_changes())
        self._sweeper = asyncio.create_task(self._sweep_networks(), name="scheduler:networks")

    async def close(self) -> None:
        """Write out the state changes still queued, then stop the workers."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._writer is not None:
            try:
                await asyncio.wait_for(self._outbox.join(), 5.0)
            except TimeoutError:
                log.warning("dyno.changes_unwritten", count=self._outbox.qsize())
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def _write_changes(self) -> None:
        while True:
            tracked, dyno, previous, reason = await self._outbox.get()
            try:
                await self._write_change(tracked, dyno, previous, reason)
            except Exception as exc:  # the picture is still answered by DYNOS_LIST
                log.warning("dyno.publish_failed", error=repr(exc))
            finally:
                self._outbox.task_done()

    async def _write_change(
        self, tracked: Tracked, dyno: Dyno | None, previous: DynoState | None, reason: str
    ) -> None:
        if dyno is None:
            await self.store.delete_dyno(tracked.container_id)
            return
        if dyno.state != "down":
            await self.store.put_dyno(
                tracked.container_id,
                host_id=dyno.host_id,
                app_id=dyno.app_id,
                name=dyno.name,
                release=dyno.release_version,
                state=dyno.state,
                restart_count=dyno.restart_count,
            )
        await self.bus.publish(
            DYNO_CHANGED,
            DynoChanged(dyno=dyno, previous_state=previous, reason=reason),
            retry_for=5.0,
        )

    # ---- reading -------------------------------------------------------------------------

    def of_app(self, app_id: str) -> list[Tracked]:
        return [t for t in self.dynos.values() if t.spec.app_id == app_id]

    def contract(self, tracked: Tracked) -> Dyno:
        """The dyno as the bus sees it."""
        s = tracked.spec
        engine = self.engines.get(s.host_id)
        web = tracked.port is not None
        return Dyno(
            app_id=s.app_id,
            app_name=s.app_name,
            team_id=s.team_id,
            name=s.name,
            process_type=s.process_type,
            release_version=s.release,
            state=tracked.state,
            host_id=s.host_id,
            container_id=tracked.container_id,
            address=engine.address if engine is not None and web else None,
            port=tracked.port,
            private_address=tracked.private_address if web else None,
            private_port=self.settings.port if web and tracked.private_address else None,
            size=s.size,
            command=s.command,
            restart_count=tracked.restart_count,
            updated_at=tracked.changed_at,
        )

    async def _set_state(self, tracked: Tracked, state: DynoState, reason: str = "") -> None:
        previous = tracked.state
        tracked.state = state
        tracked.changed_at = time.time()
        if state == "up":
            tracked.up_since = time.monotonic()
        elif previous == "up":
            tracked.up_since = None
        s = tracked.spec
        log.info("dyno.state", app=s.app_name, dyno=s.name, v=s.release, state=state, why=reason)
        self._outbox.put_nowait((tracked, self.contract(tracked), previous, reason))

    async def say(self, app_id: str, dyno: str, text: str) -> None:
        """A platform line in the app's log, as Heroku writes them: `heroku[<dyno>]: text`."""
        line = LogLine(app_id=app_id, timestamp=time.time(), source="heroku", dyno=dyno, text=text)
        try:
            await self.bus.live_publish(lines_subject(app_id), encode(LogLines(lines=[line])))
        except Exception as exc:  # the line is lost, never the operation that said it
            log.warning("platform_line.unsent", app=app_id, error=repr(exc))

    # ---- config and images ---------------------------------------------------------------

    async def config_env(self, app: gw.AppDesired) -> dict[str, str]:
        """The app's config values, decrypted here and handed only to the container."""
        if not app.config_version:
            return {}
        sealed = await self.bus.call(
            gw.CONFIG_SEALED_GET,
            gw.GetSealedConfig(app_id=app.app_id, config_version=app.config_version),
        )
        if not sealed.ciphertext:
            return {}
        binding = Binding(
            team=sealed.team_id,
            app=sealed.app_id,
            kind=sealed.binding_kind,
            record=sealed.binding_record,
        )
        plaintext = await envelope.decrypt(
            self.bus, sealed.team_id, Purpose.CONFIG, binding, sealed.ciphertext
        )
        return msgspec.json.decode(plaintext, type=dict[str, str])

    async def _pull(self, engine: Engine, spec: DynoSpec) -> None:
        credentials: Credentials | None = None
        if containers.has_registry_host(spec.image):
            try:
                await engine.docker.images.inspect(spec.image)
                return
            except aiodocker.DockerError:
                credentials = await self.bus.call(
                    CREDENTIALS_ISSUE, IssueCredentials(app_id=spec.app_id, access="pull")
                )
        await containers.ensure_image(engine.docker, spec.image, credentials)

    def network_held(
        self, engine: Engine, app_id: str
    ) -> contextlib.AbstractAsyncContextManager[str]:
        """The app's network on `engine`, kept while a container is created in this block."""
        return self.networks.held(engine.docker, engine.id, app_id)

    async def release_network(self, engine: Engine, app_id: str) -> None:
        """Remove the app's network on `engine` if no container of the app is left there."""
        try:
            await self.networks.release(engine.docker, engine.id, app_id)
        except Exception as exc:  # a silent engine: the sweep tries again
            log.warning("network.release_failed", app=app_id, host=engine.id, error=repr(exc))

    async def _sweep_networks(self) -> None:
        """Every reconcile interval, remove the app networks no container uses any more."""
        while True:
            await asyncio.sleep(self.settings.reconcile_interval)
            for engine in list(self.engines.values()):
                try:
                    await self.networks.sweep(engine.docker, engine.id)
                except Exception as exc:  # a silent engine: the next sweep tries again
                    log.warning("network.sweep_failed", host=engine.id, error=repr(exc))

    # ---- operations ----------------------------------------------------------------------

    async def container_config(
        self, spec: DynoSpec, engine: Engine, *, publish: bool
    ) -> dict[str, Any]:
        """The Docker create body of `spec` on `engine`, with this scheduler's limits."""
        image = await engine.docker.images.inspect(spec.image)
        return containers.container_config(
            spec,
            argv=containers.command_line(image, spec.command),
            port=self.settings.port,
            address=engine.address,
            publish=publish,
            tmp_size=self.settings.tmp_size,
            scope=self.settings.scoped,
            init=self.settings.init_path(),
            log_dir=self.settings.log_dir(engine.id),
            quota_mb=self.settings.dyno_memory_mb,
        )

    async def create(
        self, spec: DynoSpec, env: dict[str, str], *, one_off: bool = False
    ) -> Tracked:
        """Create and start one dyno container; it is tracked as `starting`."""
        engine = self.engines[spec.host_id]
        try:
            await self._pull(engine, spec)
        except Exception as exc:
            # Told apart from the create: the user learns which step failed (starts.py).
            detail = getattr(exc, "message", None) or repr(exc)
            raise starts.StartRefused(starts.PULL, detail) from exc
        web = spec.process_type == "web"
        name = containers.container_name(spec, self.settings.scoped)
        self.creating.add(name)
        try:
            async with self.network_held(engine, spec.app_id):
                config = await self.container_config(spec, engine, publish=web)
                container = await engine.docker.containers.create(config, name=name)
            tracked = Tracked(container_id=container.id, spec=spec, state="starting", busy=True)
            declared = env.get(HEALTH_PATH_VAR) if web else None
            tracked.health_path = declared if declared and healthpath.is_valid(declared) else None
            self.dynos[container.id] = tracked
        finally:
            self.creating.discard(name)
        await self._set_state(tracked, "starting", "Starting process")
        if declared and tracked.health_path is None:
            # Refused by the API since; a value stored before (or planted) is not requested.
            await self._set_state(tracked, "starting", HEALTH_PATH_IGNORED)
        try:
            await self._start_container(tracked, env)
        except aiodocker.DockerError as exc:
            # The container exists: it is a crashed dyno now, restarted with backoff.
            tracked.busy = False
            await self.crashed(tracked, f"Could not start: {exc.message}")
        return tracked

    async def env_of(self, spec: DynoSpec) -> dict[str, str]:
        """The config of a dyno's release, fetched again: every start delivers it anew."""
        row = await self.store.app(spec.app_id)
        if row is None:
            return {}
        releases = [a for a in (row.desired, row.serving) if a is not None]
        for app in releases:
            if app.release_version == spec.release:
                return await self.config_env(app)
        # A release no longer known: the next plan replaces the dyno; until then it
        # runs with the app's current config rather than none.
        return await self.config_env(row.desired)

    async def _start_container(self, tracked: Tracked, env: dict[str, str] | None = None) -> None:
        engine = self.engines[tracked.spec.host_id]
        container = engine.docker.containers.container(tracked.container_id)
        if containers.takes_env_frame(await container.show()):
            if env is None:
                env = await self.env_of(tracked.spec)
            frame = containers.env_frame(tracked.spec, env, self.settings.port)
            await containers.start_with_env(container, frame)
        else:
            await container.start()  # made before the init existed: adopted as it is
        if tracked.spec.process_type == "web":
            info = await container.show()
            tracked.port = containers.published_port(info, self.settings.port)
            tracked.private_address = containers.private_address(
                info, tracked.spec.app_id, self.settings.scoped
            )

    async def await_health(self, tracked: Tracked) -> health.Health:
        """Wait for the dyno to be up; mark it up or crashed (R10 kills it)."""
        engine = self.engines[tracked.spec.host_id]
        container = engine.docker.containers.container(tracked.container_id)
        web = tracked.port is not None
        try:
            result = await health.wait_healthy(
                container,
                address=engine.address if web else None,
                port=tracked.port,
                health_path=tracked.health_path,
                boot_timeout=self.settings.boot_timeout,
            )
        except aiodocker.DockerError as exc:
            result = health.Health(ok=False, reason=f"Container lost: {exc.message}")
        if result.ok:
            await self._set_state(tracked, "up", "Process running")
        else:
            reason = result.reason
            if result.exit_code is None:
                await self._kill(tracked)
            else:
                reason = await self.exit_reason(tracked, result.exit_code)
            await self.crashed(tracked, reason)
        tracked.busy = False
        return result

    async def exit_reason(self, tracked: Tracked, code: int | str) -> str:
        """Why the dyno's process exited, Heroku's way: R15 first when the kernel killed it
        over its hard memory limit (Docker's `State.OOMKilled`), then the exit status."""
        exited = f"Process exited with status {code}"
        engine = self.engines.get(tracked.spec.host_id)
        if engine is None:
            return exited
        try:
            info = await engine.docker.containers.container(tracked.container_id).show()
        except aiodocker.DockerError:  # removed meanwhile: the exit status is all there is
            return exited
        if not (info.get("State") or {}).get("OOMKilled"):
            return exited
        return "\n".join((R15_TEXT, "Stopping process with SIGKILL", exited))

    async def crashed(self, tracked: Tracked, reason: str) -> None:
        """Mark a dyno crashed and schedule its restart with backoff."""
        delay = health.backoff(
            tracked.restart_count, self.settings.backoff_base, self.settings.backoff_cap
        )
        tracked.next_restart = time.monotonic() + delay
        await self._set_state(tracked, "crashed", reason)

    async def restart_crashed(self, tracked: Tracked) -> None:
        """Start a crashed dyno's container again (its backoff is over)."""
        tracked.busy = True
        tracked.next_restart = None
        tracked.restart_count += 1
        self.restarts += 1
        try:
            await self._set_state(tracked, "starting", "Restarting")
            await self._start_container(tracked)
        except aiodocker.DockerError as exc:
            tracked.busy = False
            await self.crashed(tracked, f"Could not start: {exc.message}")
            return
        except Exception as exc:  # its config could not be read (keyring or gateway away)
            log.warning("dyno.env_unavailable", dyno=tracked.spec.name, error=repr(exc))
            tracked.busy = False
            await self.crashed(tracked, "Could not start: its config could not be read")
            return
        await self.await_health(tracked)

    async def restart(self, tracked: Tracked, env: dict[str, str] | None = None) -> health.Health:
        """`ps:restart`: SIGTERM (grace, SIGKILL) and start the same container again.

        `DYNOS_RESTART` reads and decrypts `env` before it stops anything, so a restart
        whose config cannot be read is refused with every dyno still serving (`app.py`);
        without it the config is fetched again here, after the stop.
        """
        tracked.busy = True
        engine = self.engines[tracked.spec.host_id]
        container = engine.docker.containers.container(tracked.container_id)
        await self._set_state(tracked, "starting", "Restarting")
        try:
            await container.stop(t=int(self.settings.stop_grace))
            await self._start_container(tracked, env)
        except Exception as exc:  # the engine refused (without `env`: or the config was unreadable)
            log.warning("dyno.restart_failed", dyno=tracked.spec.name, error=repr(exc))
            tracked.busy = False
            reason = f"Could not start again: {getattr(exc, 'message', None) or exc!r}"
            await self.crashed(tracked, reason)
            return health.Health(ok=False, reason=reason)
        return await self.await_health(tracked)

    async def _kill(self, tracked: Tracked) -> None:
        engine = self.engines.get(tracked.spec.host_id)
        if engine is None:
            return
        with contextlib.suppress(aiodocker.DockerError):  # already stopped
            await engine.docker.containers.container(tracked.container_id).kill()

    async def stop(self, tracked: Tracked, reason: str, *, drain: bool = True) -> None:
        """Drain and remove a dyno: `down` first (the router drops it), SIGTERM, grace, SIGKILL."""
        tracked.busy = True
        await self._set_state(tracked, "down", reason)
        engine = self.engines.get(tracked.spec.host_id)
        if drain and tracked.port is not None:
            await asyncio.sleep(self.settings.deregister_delay)
        try:
            if engine is not None:
                container = engine.docker.containers.container(tracked.container_id)
                await container.stop(t=int(self.settings.stop_grace))
                await container.delete(force=True)
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                log.warning("dyno.remove_failed", dyno=tracked.spec.name, error=exc.message)
        except Exception as exc:  # an engine that went silent: its return removes the rest
            log.warning("dyno.remove_failed", dyno=tracked.spec.name, error=repr(exc))
        finally:
            # Never left half-stopped: a `down` dyno nobody tracks would block its name.
            self.forget(tracked)
            self._outbox.put_nowait((tracked, None, None, ""))
        if engine is not None:
            await self.release_network(engine, tracked.spec.app_id)  # the app's last one here?

    def forget(self, tracked: Tracked) -> None:
        self.dynos.pop(tracked.container_id, None)

    async def lost(self, tracked: Tracked, reason: str) -> None:
        """A dyno on a host that went down: published down, forgotten (removed on return)."""
        self.forget(tracked)
        await self._set_state(tracked, "down", reason)
        self._outbox.put_nowait((tracked, None, None, ""))
