"""Carrying out one app's plan: stops, fresh starts, rolling replacements, the release phase.

- Stops that replace nothing (scale down, removed types) drain at once.
- Fresh dynos (scale up, lost hosts) all start together: each is up when healthy,
  and a crash afterwards is the monitor's to restart with backoff.
- Replacements (a new release, a resize, a draining host) roll one at a time per
  process type: start the new dyno, wait until it is healthy (published `up`, so
  the router adds it), then drain its predecessor. A new release's dyno that never
  gets healthy fails the deploy: it is removed, the rest of the roll stops, and the
  old dynos keep serving.
- The release phase (process type `release`) runs as a one-off before any dyno of
  its release starts; a non-zero exit fails the deploy before anything changed. It
  starts through the dyno init like any dyno (env frame on stdin, no Docker log):
  its output reaches the app's logs through the log-shipper, as a dyno's does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

import aiodocker
import msgspec
import structlog

from slipway.contracts.gateway import AppDesired
from slipway.services.scheduler import containers, model
from slipway.services.scheduler.containers import DynoSpec
from slipway.services.scheduler.runtime import Runtime, Tracked
from slipway.services.scheduler.starts import START, StartRefused, StartWatch

log = structlog.get_logger("slipway.scheduler.deploy")

RELEASE_TYPE = "release"

_STOP_WORDS = {
    model.StopReason.SCALE_DOWN: "Scaled down",
    model.StopReason.NEW_RELEASE: "Replaced by a new release",
    model.StopReason.RESIZE: "Resized",
    model.StopReason.HOST_DRAINING: "Host draining",
    model.StopReason.HOST_DOWN: "Host lost",
    model.StopReason.DUPLICATE: "Duplicate dyno",
    model.StopReason.PROCESS_TYPE_REMOVED: "Process type removed",
    model.StopReason.APP_REMOVED: "App removed",
}


class Outcome(msgspec.Struct, kw_only=True):
    """What happened: `failed` names why a new release did not reach its dynos."""

    failed: str | None = None
    started: int = 0
    stopped: int = 0
    # A replacement its host refused is planned again elsewhere: the deploy goes on in
    # a later pass, so it is neither done nor failed yet.
    pending: bool = False


def spec_for(app: AppDesired, dyno: model.Dyno, image: str) -> DynoSpec:
    """The container spec of a planned dyno of `app`'s release."""
    command = app.process_types.get(dyno.process_type)
    if command is None:
        formation = {f.type: f.command for f in app.formation}
        command = formation.get(dyno.process_type, "")
    return DynoSpec(
        app_id=app.app_id,
        app_name=app.app_name,
        team_id=app.team_id,
        release=dyno.release,
        process_type=dyno.process_type,
        index=dyno.index,
        size=dyno.size.name,
        image=image,
        command=command,
        host_id=dyno.host_id,
    )


async def execute(
    rt: Runtime,
    app: AppDesired | None,
    plan: model.Plan,
    env: dict[str, str],
    watch: StartWatch | None = None,
) -> Outcome:
    """Carry out `plan` for one app (None: the app is gone, only stops remain).

    `watch` hears of every fresh start's fate, so a dyno a host cannot start moves on
    (starts.py); without it a failed fresh start is only logged.
    """
    index: dict[model.Dyno, list[Tracked]] = defaultdict(list)
    for tracked in list(rt.dynos.values()):
        if not (tracked.busy and tracked.state == "down"):
            index[tracked.model()].append(tracked)

    def take(dyno: model.Dyno) -> Tracked | None:
        found = index.get(dyno)
        return found.pop() if found else None

    outcome = Outcome()
    plain = [(take(s.dyno), s.reason) for s in plan.stops if s.replacement is None]
    await asyncio.gather(
        *(rt.stop(t, _STOP_WORDS[why]) for t, why in plain if t is not None and not t.busy)
    )
    outcome.stopped += sum(1 for t, _ in plain if t is not None)
    if app is None or not app.image_ref:
        return outcome
    image = app.image_ref
    fresh = [s for s in plan.starts if not s.replaces or s.reason is model.StartReason.HOST_DOWN]
    rolls: dict[str, list[model.Start]] = defaultdict(list)
    for start in plan.starts:
        if start not in fresh:
            rolls[start.dyno.process_type].append(start)

    async def start_fresh(start: model.Start) -> None:
        spec = spec_for(app, start.dyno, image)
        if watch is not None:
            await watch.starting(spec)
        try:
            tracked = await rt.create(spec, env)
        except Exception as exc:  # pull, network or create refused on this host
            if watch is None:
                log.warning("dyno.create_failed", dyno=start.dyno.name, error=repr(exc))
            else:
                await watch.failed(spec, exc)
            return
        if watch is not None:
            if tracked.state == "crashed" and tracked.container_id in rt.dynos:
                # The engine made the container but would not start it: a fault of the
                # host as much as a refused pull, so it counts the same and is removed.
                await rt.stop(tracked, "Could not start", drain=False)
                await watch.failed(spec, StartRefused(START, "start refused"))
                return
            watch.started(spec)
        outcome.started += 1
        if tracked.state == "starting":
            await rt.await_health(tracked)

    async def roll(starts: list[model.Start]) -> None:
        for start in starts:
            if outcome.failed is not None:
                return
            olds = [t for t in (take(d) for d in start.replaces) if t is not None]
            if start.stop_first:
                await asyncio.gather(*(rt.stop(t, "Making room for its replacement") for t in olds))
            spec = spec_for(app, start.dyno, image)
            reason, refused = await _replace(rt, spec, env)
            if reason is not None:
                if refused is not None and watch is not None and await watch.moved(spec, refused):
                    outcome.pending = True
                    return  # planned again without that host; the old dynos keep serving
                if start.reason is model.StartReason.NEW_RELEASE:
                    outcome.failed = f"{start.dyno.name}: {reason}"
                continue
            outcome.started += 1
            if not start.stop_first:
                words = _STOP_WORDS[model.StopReason(start.reason.value)]
                await asyncio.gather(*(rt.stop(t, words) for t in olds))
                outcome.stopped += len(olds)

    await asyncio.gather(*(start_fresh(s) for s in fresh), *(roll(s) for s in rolls.values()))
    return outcome


async def _replace(
    rt: Runtime, spec: DynoSpec, env: dict[str, str]
) -> tuple[str | None, BaseException | None]:
    """Start one replacement and wait until healthy: (None, None) when up, else why not
    (removed), and what its host refused when it never ran (pull, create, start)."""
    try:
        tracked = await rt.create(spec, env)
    except aiodocker.DockerError as exc:
        return f"could not create its container: {exc.message}", exc
    except Exception as exc:  # e.g. no pull credential for its image: fails this release
        detail = getattr(exc, "message", None) or repr(exc)
        return f"could not create its container: {detail}", exc
    if tracked.state != "starting":
        await rt.stop(tracked, "Deploy failed", drain=False)
        return "its container could not start", StartRefused(START, "start refused")
    result = await rt.await_health(tracked)
    if result.ok:
        return None, None
    # No await between the health verdict and `stop`: the monitor cannot restart it first.
    await rt.stop(tracked, "Deploy failed", drain=False)
    return result.reason, None


async def release_phase(
    rt: Runtime, app: AppDesired, host_id: str, env: dict[str, str], timeout: float
) -> str | None:
    """Run the release's `release` command to its end; None on exit 0, else why it failed."""
    spec = DynoSpec(
        app_id=app.app_id,
        app_name=app.app_name,
        team_id=app.team_id,
        release=app.release_version or 0,
        process_type=RELEASE_TYPE,
        index=1,
        size="standard-1x",
        image=app.image_ref or "",
        command=app.process_types[RELEASE_TYPE],
        host_id=host_id,
    )
    engine = rt.engines[host_id]
    frame = containers.env_frame(spec, env, rt.settings.port)
    name = containers.container_name(spec, rt.settings.scoped)
    rt.creating.add(name)
    try:
        async with rt.network_held(engine, app.app_id):
            config = await rt.container_config(spec, engine, publish=False)
            container = await engine.docker.containers.create(config, name=name)
        rt.one_offs.add(container.id)
    finally:
        rt.creating.discard(name)
    try:
        await containers.start_with_env(container, frame)
        try:
            status = await asyncio.wait_for(container.wait(), timeout)
        except TimeoutError:
            await container.kill()
            return f"the release command ran longer than {timeout:.0f} s"
        code = int(status.get("StatusCode", -1))
        return None if code == 0 else f"the release command exited with status {code}"
    finally:
        with contextlib.suppress(aiodocker.DockerError):
            await container.delete(force=True)
        rt.one_offs.discard(container.id)
        await rt.release_network(engine, app.app_id)  # a first release: no dyno there yet
