"""The loops that keep real containers equal to the desired formations.

- The monitor lists every engine each `poll_interval`: a dyno whose process exited
  crashed (restart after backoff), a crashed dyno whose backoff is over starts again,
  a dyno up for `healthy_reset` gets its restart count back to 0, an engine silent
  for `host_down_grace` is down (its dynos are re-placed), a down engine that answers
  again has its stale containers removed before it takes new dynos, and a managed
  container nobody tracks is adopted (after the scheduler's own restart).
- Per app, `reconcile_app` plans (placement.plan, for that app only) and carries the
  plan out (deploy.execute). Events and RPCs `kick` an app; a periodic pass kicks
  every app and refreshes the desired state from the gateway.
- Adopted containers enter the plan like any other: duplicates and containers of
  unknown releases or apps are stopped by it, so a restart leaves no orphans.
- A destroyed app, once none of its dynos is left, loses its network and its images
  on every host (`libs.appimages`: its own repositories and label, exact names); the
  scheduler forgets it only when every host is clean, so a silent host or an image a
  one-off still uses is retried on the next full pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time

import aiodocker
import msgspec
import structlog

from slipway.contracts import gateway as gw
from slipway.contracts import scheduler as sc
from slipway.contracts.gateway import DYNO_SIZES, AppDesired
from slipway.libs import appimages
from slipway.libs.bus import Bus
from slipway.libs.errors import SlipwayError, Unavailable
from slipway.services.scheduler import containers, deploy, model, starts
from slipway.services.scheduler.errors import EngineUnavailable
from slipway.services.scheduler.hosts import Container, Engine, connect, probe
from slipway.services.scheduler.placement import plan
from slipway.services.scheduler.runtime import Runtime, Tracked
from slipway.services.scheduler.settings import SchedulerSettings
from slipway.services.scheduler.starts import StartTrouble, StartWatch
from slipway.services.scheduler.store import AppRow, HostRow, SchedulerStore

log = structlog.get_logger("slipway.scheduler")

_EXITED = re.compile(r"Exited \((-?\d+)\)")
_NOT_DYNOS = {deploy.RELEASE_TYPE}
ONE_OFF_TYPE = "run"


class Scheduler:
    """The scheduler's moving parts: runtime, monitor, reconcile passes."""

    def __init__(self, settings: SchedulerSettings, store: SchedulerStore, bus: Bus) -> None:
        self.settings = settings
        self.store = store
        self.bus = bus
        self.rt = Runtime(settings, store, bus)
        # Dynos hosts refused to start: moved after a few tries, listed meanwhile.
        self.starts = StartTrouble(
            move_after=settings.move_after_start_failures,
            cooloff=settings.refused_host_cooloff,
            backoff_base=settings.backoff_base,
            backoff_cap=settings.backoff_cap,
        )
        self.watch = StartWatch(self.starts, bus, self.rt.say, self._elsewhere, self.kick)
        self.synced = False  # the desired state of every app is known (gateway answered)
        self._locks: dict[str, asyncio.Lock] = {}
        self._dirty: set[str] = set()
        self._running: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._started = time.monotonic()
        self._picture = asyncio.Lock()
        self._polled_at = 0.0

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Connect the engines, adopt what runs, then start the loops."""
        self._started = time.monotonic()
        init = self.settings.init_path()
        if not await asyncio.to_thread(os.path.exists, init):
            # Every dyno create would fail; on a remote host the same path must exist too.
            log.error("dyno_init.missing", path=init, fix="run scripts/build-init")
        self.rt.start()
        rows = await self.store.hosts()
        if not rows and self.settings.local_engine:
            rows = [await self._register_local()]
        for row in rows:
            self.rt.engines[row.info.id] = Engine(row, connect(row, self.settings.engine_timeout))
        await self.poll_all()
        await self._forget_vanished()
        await self.sync_desired()
        self._loops = [
            asyncio.create_task(self._every(self.settings.poll_interval, self.poll_all)),
            asyncio.create_task(self._every(self.settings.reconcile_interval, self.full_pass)),
        ]
        await self.full_pass(sync=False)

    async def _forget_vanished(self) -> None:
        """Forget the stored dynos whose containers no answering engine has (a restored
        database on a fresh engine): the plan starts the formation again, once."""
        answered = {e.id for e in self.rt.engines.values() if e.answered}
        gone = await self.store.forget_vanished_dynos(answered, set(self.rt.dynos))
        if gone:
            log.info("dynos.vanished", count=gone, hosts=sorted(answered))

    async def _register_local(self) -> HostRow:
        request = sc.AddHost(
            id=self.settings.local_host_id,
            endpoint=self.settings.local_engine,
            address=self.settings.local_address,
        )
        row = await probe(request, self.settings.engine_timeout)
        await self.store.put_host(row)
        return row

    async def stop(self) -> None:
        for task in [*self._loops, *self._running.values(), *self._tasks]:
            task.cancel()
        for task in [*self._loops, *self._running.values(), *self._tasks]:
            with contextlib.suppress(BaseException):
                await task
        await self.rt.close()
        for engine in self.rt.engines.values():
            await engine.close()

    async def _every(self, interval: float, fn: object) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await fn()  # type: ignore[operator]
            except Exception as exc:  # a loop must outlive one bad pass
                log.exception("scheduler.loop_failed", error=repr(exc))

    def spawn(self, coro: object) -> None:
        """Run a background operation, kept until done (and cancelled on stop)."""
        task = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- desired state -------------------------------------------------------------------

    async def sync_desired(self) -> None:
        """Refresh every app's desired state from the gateway (if it answers)."""
        try:
            state = await self.bus.call(gw.DESIRED_GET, gw.GetDesired(), timeout=5.0)
        except Exception as exc:  # the gateway may be restarting: keep what we stored
            log.info("scheduler.desired_unavailable", error=repr(exc))
            return
        known = await self.store.apps()
        listed = {app.app_id for app in state.apps}
        for app in state.apps:
            row = known.get(app.app_id)
            if row is None or row.desired != app:
                await self.store.put_desired(app)
        for app_id, row in known.items():
            if app_id not in listed and not row.destroyed:
                await self.store.put_desired(row.desired, destroyed=True)
        self.synced = True

    async def full_pass(self, *, sync: bool = True) -> None:
        """Refresh the desired state and kick every app known or running."""
        if sync:
            await self.sync_desired()
        apps = set((await self.store.apps()).keys())
        apps |= {t.spec.app_id for t in self.rt.dynos.values()}
        for app_id in apps:
            self.kick(app_id)

    def kick(self, app_id: str) -> None:
        """Reconcile `app_id` soon; kicks during a pass make one more pass."""
        self._dirty.add(app_id)
        if app_id not in self._running:
            self._running[app_id] = asyncio.create_task(self._drain(app_id))

    async def _drain(self, app_id: str) -> None:
        try:
            while app_id in self._dirty:
                self._dirty.discard(app_id)
                try:
                    await self.reconcile_app(app_id)
                except Exception as exc:
                    log.exception("scheduler.reconcile_failed", app=app_id, error=repr(exc))
        finally:
            self._running.pop(app_id, None)

    def idle(self) -> bool:
        """No reconcile pass is running or pending (for tests and the bench)."""
        return not self._running and not self._dirty

    # ---- one app ---------------------------------------------------------------------------

    async def reconcile_app(self, app_id: str) -> deploy.Outcome | None:
        """Plan the app alone and carry the plan out."""
        waiting = time.monotonic() - self._started < self.settings.host_down_grace
        if waiting and not all(e.answered for e in self.rt.engines.values()):
            # Just started: a host that has not answered yet may run this app's dynos.
            # Planning without them would start duplicates; wait for it or its grace.
            asyncio.get_running_loop().call_later(0.5, self.kick, app_id)
            return None
        row = await self.store.app(app_id)
        if row is None and not self.synced:
            return None  # unknown until the gateway says: never remove on a guess
        target = None if row is None or row.destroyed else await self._target(row)
        if target is None:
            formation = model.DesiredFormation(app=app_id, release=0, processes={})
        else:
            formation = _formation(target)
        now = time.monotonic()
        await self._forget_unstarted(formation)
        formation = msgspec.structs.replace(formation, avoid=self.starts.avoided(app_id, now))
        # Never plan from a half-read listing (a poll adopting containers host by host).
        async with self._picture:
            hosts = tuple(self._host_model(engine) for engine in self.rt.engines.values())
            dynos = tuple(t.model() for t in self.rt.dynos.values() if not _leaving(t))
            planned = plan(model.ClusterState(hosts=hosts, dynos=dynos), [formation])
        for item in planned.unplaceable:
            log.warning("dyno.unplaceable", app=app_id, dyno=item.name, detail=item.detail)
        planned = self._hold_back(app_id, planned, now)
        env: dict[str, str] = {}
        if target is not None and planned.starts:
            try:
                env = await self.rt.config_env(target)
            except Exception as exc:
                return await self._config_unreadable(row, target, exc)
        outcome = await deploy.execute(self.rt, target, planned, env, self.watch)
        await self._settle(app_id, row, target, outcome)
        return outcome

    async def _forget_unstarted(self, formation: model.DesiredFormation) -> None:
        """Drop the records of dynos that never started and are no longer wanted (scaled
        down, app gone: published `down`) or that run now (adopted: nothing to say)."""
        wanted = starts.names(formation)
        running = {t.spec.name for t in self.rt.of_app(formation.app)}
        dropped = self.starts.keep(formation.app, wanted - running)
        await self.watch.dropped([r for r in dropped if r.spec.name not in wanted])
        if not wanted:
            self.starts.forget_app(formation.app)

    def _hold_back(self, app_id: str, planned: model.Plan, now: float) -> model.Plan:
        """The plan without the starts still in their backoff; reconciled again when due."""
        planned, due = starts.hold_back(self.starts, app_id, planned, now)
        if due is not None:
            asyncio.get_running_loop().call_later(due, self.kick, app_id)
        return planned

    def _elsewhere(self, spec: containers.DynoSpec) -> bool:
        """Whether an up host other than the dyno's, and not avoided for its app, exists."""
        avoided = self.starts.avoided(spec.app_id, time.monotonic())
        return any(
            e.id != spec.host_id and e.id not in avoided and self.is_up(e)
            for e in self.rt.engines.values()
        )

    async def _config_unreadable(
        self, row: AppRow | None, target: AppDesired, exc: Exception
    ) -> deploy.Outcome | None:
        """No dyno can start without its config: a new release whose config cannot be
        decrypted fails (the old one keeps serving); a keyring or gateway away is waited
        for (the next full pass tries again); nothing running is stopped either way."""
        log.warning("deploy.config_unreadable", app=target.app_name, error=repr(exc))
        new = (
            row is not None
            and target == row.desired
            and (row.serving is None or row.serving.release_version != target.release_version)
        )
        if isinstance(exc, Unavailable) or not new:
            return None
        detail = exc.message if isinstance(exc, SlipwayError) else type(exc).__name__
        outcome = deploy.Outcome(failed=f"its config cannot be decrypted ({detail})")
        await self._settle(target.app_id, row, target, outcome)
        return outcome

    async def _target(self, row: AppRow) -> AppDesired | None:
        """The release to run: the desired one, unless it failed (then the last good one)."""
        desired = row.desired
        if not desired.image_ref or desired.release_version is None:
            return None
        if row.failed_release == desired.release_version:
            if row.serving is None:
                return None
            # The old release keeps serving, in the formation asked for now.
            return msgspec.structs.replace(row.serving, formation=desired.formation)
        if (
            deploy.RELEASE_TYPE in desired.process_types
            and row.release_phase_done != desired.release_version
            and (row.serving is None or row.serving.release_version != desired.release_version)
        ):
            failure = await self._release_phase(desired)
            if failure is not None:
                await self._fail(desired, failure, phase="release")
                return await self._target(await self._reload(desired.app_id))
            await self.store.set_release_phase_done(desired.app_id, desired.release_version)
        return desired

    async def _reload(self, app_id: str) -> AppRow:
        row = await self.store.app(app_id)
        assert row is not None
        return row

    async def _release_phase(self, app: AppDesired) -> str | None:
        up = [
            e for e in self.rt.engines.values() if self._host_model(e).state is model.HostState.UP
        ]
        if not up:
            return "no host is up to run the release phase"
        env = await self.rt.config_env(app)
        try:
            return await deploy.release_phase(
                self.rt, app, up[0].id, env, self.settings.release_phase_timeout
            )
        except aiodocker.DockerError as exc:
            return f"the release phase could not run: {exc.message}"

    async def _fail(self, app: AppDesired, reason: str, *, phase: str) -> None:
        log.warning("deploy.failed", app=app.app_name, v=app.release_version, why=reason)
        await self.store.set_failed(app.app_id, app.release_version)
        await self._publish_deploy(app, "failed", phase, reason)
        row = await self.store.app(app.app_id)
        serving = row.serving.release_version if row and row.serving else None
        kept = f"v{serving} keeps serving" if serving else "no earlier release was running"
        await self.rt.say(
            app.app_id, "api", f"Release v{app.release_version} failed: {reason}; {kept}"
        )

    async def _publish_deploy(self, app: AppDesired, status: str, phase: str, reason: str) -> None:
        event = sc.DeployFinished(
            app_id=app.app_id,
            app_name=app.app_name,
            team_id=app.team_id,
            release_version=app.release_version or 0,
            status=status,  # type: ignore[arg-type]
            phase=phase,  # type: ignore[arg-type]
            reason=reason,
        )
        try:
            await self.bus.publish(sc.DEPLOY_FINISHED, event, retry_for=5.0)
        except Exception as exc:
            log.warning("deploy.publish_failed", error=repr(exc))

    async def _settle(
        self,
        app_id: str,
        row: AppRow | None,
        target: AppDesired | None,
        outcome: deploy.Outcome,
    ) -> None:
        """After a pass: a failed release, a release now serving, or a removed app's cleanup."""
        if target is not None and outcome.failed is not None:
            await self._fail(target, outcome.failed, phase="boot")
            self.kick(app_id)  # bring back any old dyno the roll had stopped first
            return
        if outcome.pending:
            return  # a replacement goes to another host in the next pass: not done yet
        if row is not None and target is not None and target.release_version is not None:
            serving = row.serving.release_version if row.serving else None
            if target == row.desired and serving != target.release_version:
                await self.store.set_serving(app_id, target)
                await self._publish_deploy(target, "succeeded", "done", "")
            elif target == row.desired and row.serving != target:
                await self.store.set_serving(app_id, target)  # a formation change
        if (row is None or row.destroyed) and not self.rt.of_app(app_id):
            for engine in self.rt.engines.values():
                await self.rt.release_network(engine, app_id)
            # Only a destroyed app's images: an app merely unknown here may be new.
            if row is not None and not await self._remove_images(app_id):
                return  # kept: the next full pass tries again
            await self.store.forget_app(app_id)

    async def _remove_images(self, app_id: str) -> bool:
        """Remove a destroyed app's images from every host; False if some had to stay."""
        done = True
        for engine in self.rt.engines.values():
            try:
                removal = await appimages.remove_app_images(engine.docker, app_id)
            except Exception as exc:  # a silent host: its images go on a later pass
                log.warning("app.images_not_removed", app=app_id, host=engine.id, error=repr(exc))
                done = False
                continue
            # In use: a one-off dyno of the app still runs there.
            done = done and not removal.in_use
        return done

    def roomiest_host(self) -> Engine | None:
        """The up host with the most memory left (for one-offs, which placement does not plan)."""
        up = [
            e for e in self.rt.engines.values() if self._host_model(e).state is model.HostState.UP
        ]
        used: dict[str, int] = {}
        for tracked in self.rt.dynos.values():
            used[tracked.spec.host_id] = (
                used.get(tracked.spec.host_id, 0) + tracked.spec.dyno_size.memory_mb
            )
        return max(up, key=lambda e: (e.row.info.memory_mb - used.get(e.id, 0), e.id), default=None)

    def is_up(self, engine: Engine) -> bool:
        """Whether the engine answers (and is neither drained nor down)."""
        return self._host_model(engine).state is model.HostState.UP

    def _host_model(self, engine: Engine) -> model.Host:
        host = engine.model()
        silent = time.monotonic() - engine.last_ok > self.settings.host_down_grace
        if not engine.answered or silent:
            return model.Host(id=host.id, memory_mb=host.memory_mb, state=model.HostState.DOWN)
        return host

    # ---- the monitor -----------------------------------------------------------------------

    async def poll_all(self) -> None:
        """List every engine once and react to what changed."""
        engines = list(self.rt.engines.values())
        self._polled_at = time.monotonic()
        results = await asyncio.gather(
            *(e.poll(self.settings.engine_timeout, self.settings.scoped) for e in engines),
            return_exceptions=True,
        )
        async with self._picture:
            for engine, result in zip(engines, results, strict=True):
                if isinstance(result, EngineUnavailable):
                    await self._silent(engine)
                elif isinstance(result, BaseException):
                    log.warning("host.poll_failed", host=engine.id, error=repr(result))
                else:
                    await self._answered(engine, result)

    async def _silent(self, engine: Engine) -> None:
        if engine.state == "down":
            return
        if time.monotonic() - engine.last_ok < self.settings.host_down_grace:
            return
        log.warning("host.down", host=engine.id)
        await self.set_host_state(engine, "down")
        lost = [t for t in self.rt.dynos.values() if t.spec.host_id == engine.id]
        for tracked in lost:
            await self.rt.lost(tracked, "Host lost")
        for app_id in {t.spec.app_id for t in lost}:
            self.kick(app_id)

    async def set_host_state(self, engine: Engine, state: sc.HostState) -> None:
        """Record a host's state (up, draining, down) in memory and in the database."""
        info = msgspec.structs.replace(engine.row.info, state=state)
        engine.row = msgspec.structs.replace(engine.row, info=info)
        await self.store.set_host_state(engine.id, state)

    async def _answered(self, engine: Engine, listing: dict[str, Container]) -> None:
        if engine.state == "down":
            # Everything it ran was re-placed while it was gone: stale, remove it first.
            for container in listing.values():
                with contextlib.suppress(aiodocker.DockerError):
                    await engine.docker.containers.container(container.id).delete(force=True)
            await self.set_host_state(engine, "up")
            log.info("host.back", host=engine.id, removed=len(listing))
            return
        now = time.monotonic()
        for tracked in [t for t in self.rt.dynos.values() if t.spec.host_id == engine.id]:
            await self._check(tracked, listing.get(tracked.container_id), now)
        for container in listing.values():
            if container.id not in self.rt.dynos:
                await self._adopt(engine, container)

    async def _check(self, tracked: Tracked, found: Container | None, now: float) -> None:
        if tracked.busy:
            return
        if found is None and tracked.tracked_at < self._polled_at:
            self.rt.forget(tracked)
            await self.rt.lost(tracked, "Container removed outside the scheduler")
            self.kick(tracked.spec.app_id)
            return
        if found is None:
            return  # created after the listing was asked for
        if tracked.state in ("up", "starting") and found.state != "running":
            match = _EXITED.search(found.status)
            code = match.group(1) if match else "unknown"
            await self.rt.crashed(tracked, await self.rt.exit_reason(tracked, code))
        elif tracked.state == "crashed" and (tracked.next_restart or 0) <= now:
            tracked.busy = True
            self.spawn(self.rt.restart_crashed(tracked))
        elif (
            tracked.state == "up"
            and tracked.restart_count
            and tracked.up_since is not None
            and now - tracked.up_since > self.settings.healthy_reset
        ):
            tracked.restart_count = 0  # a healthy period: the next crash backs off from 1

    async def _command_of(self, spec: containers.DynoSpec) -> str:
        """An adopted dyno's command: its labels do not carry it, its release does."""
        row = await self.store.app(spec.app_id)
        if row is None:
            return ""
        for app in (row.serving, row.desired):
            if app is not None and app.release_version == spec.release:
                return _command(app, spec.process_type)
        return ""

    async def _adopt(self, engine: Engine, container: Container) -> None:
        """Track a managed container this process did not start (it ran before a restart)."""
        if container.name in self.rt.creating or container.id in self.rt.one_offs:
            return
        spec = containers.spec_from_labels(container.labels, container.image)
        if spec is not None and spec.process_type == ONE_OFF_TYPE:
            return  # one-offs are the one-off runner's (oneoff.py), with their own deadline
        docker_container = engine.docker.containers.container(container.id)
        if (
            spec is None
            or spec.process_type in _NOT_DYNOS
            or spec.size not in DYNO_SIZES
            or container.state == "created"
        ):
            # Not a dyno we can run, or a create interrupted by our own restart: ours in
            # flight are in `creating` (or tracked once created), so this one is stale.
            with contextlib.suppress(aiodocker.DockerError):
                await docker_container.delete(force=True)
            return
        spec = msgspec.structs.replace(
            spec, host_id=engine.id, command=await self._command_of(spec)
        )
        stored = (await self.store.restart_counts()).get(container.id, ("starting", 0))
        tracked = Tracked(
            container_id=container.id, spec=spec, state="starting", restart_count=stored[1]
        )
        self.rt.dynos[container.id] = tracked
        log.info("dyno.adopted", app=spec.app_name, dyno=spec.name, v=spec.release)
        if container.state == "running":
            info = await docker_container.show()
            if spec.process_type == "web":
                tracked.port = containers.published_port(info, self.settings.port)
                tracked.private_address = containers.private_address(
                    info, spec.app_id, self.settings.scoped
                )
            if stored[0] == "up":
                tracked.state = "up"
                tracked.up_since = time.monotonic()
            else:
                tracked.busy = True
                self.spawn(self.rt.await_health(tracked))
        else:
            await self.rt.crashed(tracked, "Found stopped after a scheduler restart")
        self.kick(spec.app_id)


def _command(app: AppDesired, process_type: str) -> str:
    return app.process_types.get(process_type) or next(
        (f.command for f in app.formation if f.type == process_type), ""
    )


def _leaving(tracked: Tracked) -> bool:
    return tracked.busy and tracked.state == "down"


def _formation(app: AppDesired) -> model.DesiredFormation:
    processes = {
        f.type: model.ProcessSpec(
            quantity=f.quantity, size=DYNO_SIZES.get(f.size, DYNO_SIZES[gw.DEFAULT_DYNO_SIZE])
        )
        for f in app.formation
        if f.type != deploy.RELEASE_TYPE
    }
    return model.DesiredFormation(
        app=app.app_id, release=app.release_version or 0, processes=processes
    )
