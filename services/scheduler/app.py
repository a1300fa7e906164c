"""The scheduler as a service: its database, its loops, its events and its RPCs.

Desired state arrives as the gateway's events (stored once per event id, then the
app is reconciled) and, for every app at start and periodically, from
`gateway.DESIRED_GET`. Hosts are managed over RPC (admin only, through the gateway).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import structlog

from slipway.contracts import gateway as gw
from slipway.contracts import scheduler as sc
from slipway.contracts.oneoff import ONEOFF_RUN, OneOffStarted, RunOneOff
from slipway.contracts.registry import CREDENTIALS_ISSUE, IssueCredentials
from slipway.contracts.subjects import Service
from slipway.libs import diskwatch
from slipway.libs.bus import context
from slipway.libs.errors import SlipwayError, Unavailable
from slipway.libs.service import Key, ServiceApp
from slipway.services.scheduler import addons, containers, recovery, snapshot, verifydb
from slipway.services.scheduler.dynometrics import DynoCollector
from slipway.services.scheduler.errors import Conflict, NotFound
from slipway.services.scheduler.hosts import Engine, connect, probe
from slipway.services.scheduler.oneoff import OneOffs, OneOffSettings, Placement
from slipway.services.scheduler.reconcile import Scheduler
from slipway.services.scheduler.runtime import Tracked
from slipway.services.scheduler.settings import SchedulerSettings
from slipway.services.scheduler.store import SchedulerStore

log = structlog.get_logger("slipway.scheduler")

SCHEDULER = Key("scheduler", Scheduler)
ONE_OFFS = Key("oneoffs", OneOffs)
PURPOSE = "desired"  # the durable consumer of the gateway's events


def create_service(settings: SchedulerSettings) -> ServiceApp:
    """The scheduler as a runnable service."""
    service = ServiceApp(
        Service.SCHEDULER,
        settings=settings,
        description="Slipway's scheduler: dynos on Docker hosts, health, rolling deploys",
    )

    @service.cleanup_ctx
    async def scheduler(service: ServiceApp) -> AsyncIterator[None]:
        store = await SchedulerStore.open(settings.db_path())
        sched = Scheduler(settings, store, service.bus)
        service[SCHEDULER] = sched
        try:
            await sched.start()
            yield
        finally:
            await sched.stop()
            await store.close()

    _events(service)
    _dyno_rpcs(service)
    _host_rpcs(service)
    _oneoff_rpcs(service)
    runner = addons.install(service, lambda: service[SCHEDULER])
    recovery.install(service, runner, lambda: service[SCHEDULER])
    verifydb.install(service, lambda: service[SCHEDULER])
    service.snapshot_sources = snapshot.sources(settings)
    diskwatch.watch(service, diskwatch.state_folders(settings, "scheduler"), docker=True)
    if service.metrics.enabled:
        # The runtime exists once the `scheduler` resource is up; before, nothing to count.
        runtime = lambda: getattr(service.get(SCHEDULER), "rt", None)  # noqa: E731
        service.metrics.registry.register(DynoCollector(runtime))
        service.metrics.watch_docker_root(None)  # the local engine's; remote hosts: their own
    return service


def _oneoff_rpcs(service: ServiceApp) -> None:
    """`ONEOFF_RUN`, carried out by oneoff.py's runner on the up host with the most room."""

    @service.cleanup_ctx
    async def runner(service: ServiceApp) -> AsyncIterator[None]:
        settings = _sched(service).settings
        runs = OneOffs(
            service.bus,
            OneOffSettings(
                port=settings.port,
                tmp_size=settings.tmp_size,
                dyno_init=settings.init_path(),
                dyno_log_dir=str(settings.log_root()),
                scope=settings.scoped,
                app_network_pool=settings.app_network_pool,
                app_subnet_prefix=settings.app_subnet_prefix,
                stop_grace=settings.stop_grace,
            ),
            networks=_sched(service).rt.networks,
        )
        service[ONE_OFFS] = runs
        for engine in _sched(service).rt.engines.values():
            try:
                await runs.adopt(Placement(engine.docker, engine.id, engine.address))
            except Exception as exc:  # a silent host: the monitor deals with it
                log.warning("oneoff.adopt_failed", host=engine.id, error=repr(exc))
        try:
            yield
        finally:
            await runs.close()

    @service.rpc(ONEOFF_RUN)
    async def run(request: RunOneOff) -> OneOffStarted:
        context.require_caller(ONEOFF_RUN)
        sched = _sched(service)
        engine = sched.roomiest_host()
        if engine is None:
            raise Conflict("No host is up to run the one-off dyno on.")
        desired = gw.AppDesired(
            app_id=request.app_id,
            app_name=request.app_name,
            team_id=request.team_id,
            config_version=request.config_version,
        )
        env = {**await sched.rt.config_env(desired), **request.env}
        if request.tool == "psql":  # pg:psql: the add-on image has the client
            request = msgspec.structs.replace(request, image=addons.image())
        credentials = None
        if containers.has_registry_host(request.image):
            credentials = await service.bus.call(
                CREDENTIALS_ISSUE, IssueCredentials(app_id=request.app_id, access="pull")
            )
        await containers.ensure_image(engine.docker, request.image, credentials)
        where = Placement(engine.docker, engine.id, engine.address)
        dyno = await service[ONE_OFFS].run(request, where, env)
        return OneOffStarted(dyno=dyno)


def _sched(service: ServiceApp) -> Scheduler:
    return service[SCHEDULER]


def _events(service: ServiceApp) -> None:
    @service.event(PURPOSE, gw.RELEASE_CREATED)
    async def release_created(event: gw.ReleaseCreated) -> None:
        sched = _sched(service)
        current = await sched.store.app(event.app_id)
        if current is not None and (current.desired.release_version or 0) > event.version:
            return  # an older release's event, seen late
        desired = gw.AppDesired(
            app_id=event.app_id,
            app_name=event.app_name,
            team_id=event.team_id,
            release_version=event.version,
            image_ref=event.image_ref,
            image_digest=event.image_digest,
            config_version=event.config_version,
            process_types=event.process_types,
            formation=event.formation,
        )
        if await sched.store.put_desired(desired, event_id=event.event_id):
            sched.kick(event.app_id)

    @service.event(PURPOSE, gw.FORMATION_CHANGED)
    async def formation_changed(event: gw.FormationChanged) -> None:
        sched = _sched(service)
        current = await sched.store.app(event.app_id)
        if current is None:
            await sched.sync_desired()  # no release seen yet: ask the gateway for all of it
            sched.kick(event.app_id)
            return
        desired = msgspec.structs.replace(current.desired, formation=event.formation)
        if await sched.store.put_desired(desired, event_id=event.event_id):
            sched.kick(event.app_id)

    @service.event(PURPOSE, gw.APP_DESTROYED)
    async def app_destroyed(event: gw.AppDestroyed) -> None:
        sched = _sched(service)
        current = await sched.store.app(event.app_id)
        desired = (
            current.desired
            if current is not None
            else gw.AppDesired(app_id=event.app_id, app_name=event.name, team_id=event.team_id)
        )
        if await sched.store.put_desired(desired, event_id=event.event_id, destroyed=True):
            sched.kick(event.app_id)


def _matches(tracked: Tracked, target: str | None) -> bool:
    """`None`: every dyno; "web": a process type; "web.1": one dyno."""
    if target is None:
        return True
    return target in (tracked.spec.name, tracked.spec.process_type)


def _dyno_rpcs(service: ServiceApp) -> None:
    @service.rpc(sc.DYNOS_LIST)
    async def dynos_list(request: sc.ListDynos) -> sc.DynoList:
        rt = _sched(service).rt
        found = [
            rt.contract(t)
            for t in rt.dynos.values()
            if (request.app_id is None or t.spec.app_id == request.app_id)
            and (not request.web_only or t.spec.process_type == "web")
        ]
        # Dynos no host would start (starts.py): listed `crashed`, without a container.
        named = {(d.app_id, d.name) for d in found}
        found += [
            record.contract()
            for record in _sched(service).starts.unstarted(request.app_id)
            if (record.spec.app_id, record.spec.name) not in named
            and (not request.web_only or record.spec.process_type == "web")
        ]
        found.sort(key=lambda d: (d.app_name, d.process_type, int(d.name.rsplit(".", 1)[1])))
        return sc.DynoList(dynos=found)

    @service.rpc(sc.DYNOS_RESTART)
    async def dynos_restart(request: sc.RestartDynos) -> sc.DynoList:
        sched = _sched(service)
        chosen = [
            t for t in sched.rt.of_app(request.app_id) if _matches(t, request.target) and not t.busy
        ]
        if request.target is not None and not chosen:
            raise NotFound(f"No dyno or process type {request.target!r} is running.")
        # Every start needs the release's config: read it before anything stops, so a
        # restart that could not start the dynos again refuses and leaves them serving.
        envs = await _restart_envs(sched, request, chosen)
        by_type: dict[str, list[Tracked]] = {}
        for tracked in sorted(chosen, key=lambda t: t.spec.index):
            tracked.busy = True
            by_type.setdefault(tracked.spec.process_type, []).append(tracked)
        for dynos in by_type.values():
            sched.spawn(_restart_in_turn(sched, request.app_id, dynos, envs))
        return sc.DynoList(dynos=[sched.rt.contract(t) for t in chosen])

    @service.rpc(sc.DYNOS_STOP)
    async def dynos_stop(request: sc.StopDyno) -> sc.DynoList:
        sched = _sched(service)
        chosen = [
            t for t in sched.rt.of_app(request.app_id) if _matches(t, request.target) and not t.busy
        ]
        if not chosen:
            raise NotFound(f"No dyno or process type {request.target!r} is running.")
        answer = sc.DynoList(dynos=[sched.rt.contract(t) for t in chosen])

        async def stop_then_reconcile() -> None:
            for tracked in chosen:
                await sched.rt.stop(tracked, "Stopped by ps:stop")
            sched.kick(request.app_id)  # the formation brings stopped dynos back

        for tracked in chosen:
            tracked.busy = True
        sched.spawn(stop_then_reconcile())
        return answer


async def _restart_envs(
    sched: Scheduler, request: sc.RestartDynos, chosen: list[Tracked]
) -> dict[int, dict[str, str]]:
    """Each chosen release's config, decrypted; refused (nothing stopped) when one fails."""
    envs: dict[int, dict[str, str]] = {}
    for tracked in chosen:
        if tracked.spec.release in envs:
            continue
        try:
            envs[tracked.spec.release] = await sched.rt.env_of(tracked.spec)
        except Exception as exc:
            what = request.target or "the dynos"
            away = isinstance(exc, Unavailable)
            why = "its config cannot be " + ("read right now" if away else "decrypted")
            detail = exc.message if isinstance(exc, SlipwayError) else type(exc).__name__
            log.warning("dynos.restart_refused", app=request.app_id, error=repr(exc))
            await sched.rt.say(
                request.app_id, "api", f"Restart of {what} failed: {why}; nothing was restarted"
            )
            message = (
                f"Cannot restart {what}: {why} ({detail}). The running dynos were left as they are."
            )
            raise (Unavailable if away else Conflict)(message) from None
    return envs


async def _restart_in_turn(
    sched: Scheduler, app_id: str, dynos: list[Tracked], envs: dict[int, dict[str, str]]
) -> None:
    """Restart one process type's dynos one after another; stop at the first that fails,
    so the others keep serving as they were."""
    for at, tracked in enumerate(dynos):
        result = await sched.rt.restart(tracked, envs[tracked.spec.release])
        if result.ok:
            continue
        rest = dynos[at + 1 :]
        for other in rest:
            other.busy = False
        kept = f"; not restarted: {', '.join(t.spec.name for t in rest)}" if rest else ""
        text = f"Restart failed: {tracked.spec.name} did not come back up ({result.reason}){kept}"
        await sched.rt.say(app_id, "api", text)
        return


def _host_info(sched: Scheduler, engine: Engine) -> sc.HostInfo:
    count = sum(1 for t in sched.rt.dynos.values() if t.spec.host_id == engine.id)
    return msgspec.structs.replace(engine.row.info, dynos=count)


def _host_rpcs(service: ServiceApp) -> None:
    @service.rpc(sc.HOSTS_ADD)
    async def hosts_add(request: sc.AddHost) -> sc.HostAnswer:
        context.require_caller(sc.HOSTS_ADD)
        sched = _sched(service)
        if request.id in sched.rt.engines:
            raise Conflict(f"Host {request.id!r} is already registered.")
        row = await probe(request, sched.settings.engine_timeout)
        await sched.store.put_host(row)
        engine = Engine(row, connect(row, sched.settings.engine_timeout))
        sched.rt.engines[row.info.id] = engine
        await sched.poll_all()
        log.info("host.added", host=row.info.id, endpoint=row.info.endpoint)
        return sc.HostAnswer(host=_host_info(sched, engine))

    @service.rpc(sc.HOSTS_LIST)
    async def hosts_list(request: sc.ListHosts) -> sc.HostList:
        sched = _sched(service)
        return sc.HostList(hosts=[_host_info(sched, e) for e in sched.rt.engines.values()])

    @service.rpc(sc.HOSTS_DRAIN)
    async def hosts_drain(request: sc.HostRef) -> sc.HostAnswer:
        sched = _sched(service)
        engine = _engine(sched, request.id)
        await sched.set_host_state(engine, "draining")
        await sched.full_pass(sync=False)  # every app on it rolls its dynos elsewhere
        return sc.HostAnswer(host=_host_info(sched, engine))

    @service.rpc(sc.HOSTS_REMOVE)
    async def hosts_remove(request: sc.HostRef) -> sc.HostAnswer:
        sched = _sched(service)
        engine = _engine(sched, request.id)
        info = _host_info(sched, engine)
        if info.dynos and not request.force:
            raise Conflict(
                f"Host {request.id!r} still runs {info.dynos} dynos: drain it first, or force."
            )
        for tracked in [t for t in sched.rt.dynos.values() if t.spec.host_id == engine.id]:
            await sched.rt.lost(tracked, "Host removed")
        del sched.rt.engines[engine.id]
        await sched.store.delete_host(engine.id)
        await engine.close()
        await sched.full_pass(sync=False)
        return sc.HostAnswer(host=info)


def _engine(sched: Scheduler, host_id: str) -> Engine:
    engine = sched.rt.engines.get(host_id)
    if engine is None:
        raise NotFound(f"No host {host_id!r}.")
    return engine
