"""The scheduler: its placement function on a simulated cluster, and scale-to-healthy on Docker.

    .venv/bin/python bench/scheduler.py [--dynos 100000] [--hosts 1000] [--rounds 3] [--seed 7]
                                        [--scale 1,10] [--scale-rounds 3] [--no-docker]
                                        [--timeout 120]

Placement: a seeded random cluster (hosts of 64 to 256 GB) and several hundred apps
whose process types use Heroku's sizes, mostly small, sum to `--dynos`. Four
scenarios, each timed `--rounds` times, best round reported:

- place:   everything from an empty cluster (one start per dyno);
- release: every app gets a new release (a start and a paired stop per dyno);
- failure: 1% of the hosts go down (their dynos move);
- steady:  the converged state planned again (the cost of a reconcile tick).

Only `plan` is timed; building inputs and checking results are not. The target is
10,000 placements/s (issue 5). Nomad's C1M placed 3,750 containers/s across a whole
cluster, scheduling and starting included: a scale for context, not a like-for-like race.

Scale to healthy (needs the local Docker engine and slipway/stack-run:bookworm): a real
nats-server and the scheduler service in this process; `ps:scale web=N` (a
FORMATION_CHANGED event) until N web dynos are `up`, beside N plain `docker run -d -p
127.0.0.1::5000` of the same image waiting for the same port to accept (the same
probe the scheduler uses, which sees through docker-proxy), alternately,
`--scale-rounds` times each, medians reported. Target: at most 1.5x plain docker.
Every wait has a deadline (`--timeout`): past it the bench says which dynos were in
which state, cleans up and exits 1 instead of waiting forever.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiodocker
import msgspec

from slipway.contracts.gateway import DYNO_SIZES, DynoSize
from slipway.libs.bus import Bus
from slipway.services.scheduler.health import port_accepts
from slipway.services.scheduler.model import (
    ClusterState,
    DesiredFormation,
    Host,
    HostState,
    Plan,
    ProcessSpec,
)
from slipway.services.scheduler.placement import apply_plan, plan

TARGET_PER_S = 10_000
NOMAD_C1M_PER_S = 3_750
HOST_MEMORY_MB = (65_536, 131_072, 196_608, 262_144)
# Most dynos are small, as on any PaaS; a few are large enough to make packing matter.
SIZE_WEIGHTS = {
    "standard-1x": 55,
    "basic": 10,
    "standard-2x": 25,
    "performance-m": 8,
    "performance-l": 2,
}
PROCESS_TYPES = ("web", "worker", "clock", "urgent")


def cluster(hosts: int, rng: random.Random) -> tuple[Host, ...]:
    return tuple(
        Host(id=f"host-{i:04d}", memory_mb=rng.choice(HOST_MEMORY_MB), max_dynos=400)
        for i in range(hosts)
    )


def formations(dynos: int, rng: random.Random) -> list[DesiredFormation]:
    """Apps with one to four process types of 1-100 dynos each, `dynos` in all."""
    sizes: list[DynoSize] = [DYNO_SIZES[name] for name in SIZE_WEIGHTS]
    weights = list(SIZE_WEIGHTS.values())
    result: list[DesiredFormation] = []
    left = dynos
    while left > 0:
        processes: dict[str, ProcessSpec] = {}
        for process_type in PROCESS_TYPES[: rng.randint(1, len(PROCESS_TYPES))]:
            quantity = min(left, rng.randint(1, 100))
            left -= quantity
            size = rng.choices(sizes, weights)[0]
            processes[process_type] = ProcessSpec(quantity=quantity, size=size)
            if left == 0:
                break
        result.append(
            DesiredFormation(app=f"app-{len(result):04d}", release=1, processes=processes)
        )
    return result


def timed(rounds: int, run: Callable[[], Plan]) -> tuple[float, Plan]:
    best, result = float("inf"), Plan()
    for _ in range(rounds):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def report(name: str, seconds: float, result: Plan, *, rate: bool) -> None:
    """One line per scenario; a rate only where placing is the work being timed."""
    line = (
        f"{name:<8} {seconds * 1000:8.1f} ms  starts {len(result.starts):>7}"
        f"  stops {len(result.stops):>7}  unplaceable {len(result.unplaceable):>5}"
    )
    if rate:
        per_s = len(result.starts) / seconds
        line += (
            f"  {per_s:>9,.0f} placements/s = {per_s / TARGET_PER_S:.1f}x target,"
            f" {per_s / NOMAD_C1M_PER_S:.1f}x Nomad C1M"
        )
    print(line)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--dynos", type=int, default=100_000)
    parser.add_argument("--hosts", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--scale", default="1,10", help="web dyno counts to scale to")
    parser.add_argument("--scale-rounds", type=int, default=3)
    parser.add_argument("--no-docker", action="store_true", help="placement only")
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds any one wait may take (then exit 1)"
    )
    args = parser.parse_args()

    rng = random.Random(args.seed)
    empty = ClusterState(hosts=cluster(args.hosts, rng))
    desired = formations(args.dynos, rng)
    demand = sum(s.quantity * s.size.memory_mb for d in desired for s in d.processes.values())
    supply = sum(host.memory_mb for host in empty.hosts)
    print(
        f"{args.dynos} dynos of {len(desired)} apps on {args.hosts} hosts; memory asked "
        f"{demand / supply:.0%} of the cluster; Python {sys.version.split()[0]}"
    )
    print(f"target {TARGET_PER_S:,} placements/s; Nomad C1M {NOMAD_C1M_PER_S:,}/s (whole cluster)")

    seconds, placed = timed(args.rounds, lambda: plan(empty, desired))
    report("place", seconds, placed, rate=True)
    steady = apply_plan(empty, placed)

    released = [msgspec.structs.replace(d, release=2) for d in desired]
    seconds, result = timed(args.rounds, lambda: plan(steady, released))
    report("release", seconds, result, rate=True)

    down = {host.id for host in rng.sample(steady.hosts, max(1, args.hosts // 100))}
    failed = msgspec.structs.replace(
        steady,
        hosts=tuple(
            msgspec.structs.replace(h, state=HostState.DOWN) if h.id in down else h
            for h in steady.hosts
        ),
    )
    seconds, result = timed(args.rounds, lambda: plan(failed, desired))
    # The whole cluster is planned again to move a few hundred dynos: time, not rate.
    report("failure", seconds, result, rate=False)

    seconds, result = timed(args.rounds, lambda: plan(steady, desired))
    report("steady", seconds, result, rate=False)
    if result.has_changes:
        print("error: the converged state planned again should change nothing", file=sys.stderr)
        return 1
    if not args.no_docker:
        counts = [int(n) for n in args.scale.split(",")]
        return asyncio.run(scale_bench(counts, args.scale_rounds, args.timeout))
    return 0


# ---- scale to healthy on the local engine ----------------------------------------------------

BENCH_APP = (
    "import http.server, os\n"
    "http.server.ThreadingHTTPServer(('', int(os.environ['PORT'])),"
    " http.server.SimpleHTTPRequestHandler).serve_forever()\n"
)


def build_bench_image(tag: str) -> None:
    """A tiny web app FROM the run stack, with a launcher like the builder's."""
    with tempfile.TemporaryDirectory() as root:
        folder = Path(root)
        (folder / "app.py").write_text(BENCH_APP)
        (folder / "launch").write_text('#!/bin/bash\nexec bash -c "$1"\n')
        (folder / "launch").chmod(0o755)
        (folder / "Dockerfile").write_text(
            "FROM slipway/stack-run:bookworm\nCOPY app.py /srv/app.py\n"
            "COPY launch /usr/local/bin/slipway-launch\n"
            'ENTRYPOINT ["/usr/local/bin/slipway-launch"]\n'
        )
        subprocess.run(["docker", "build", "-q", "-t", tag, root], check=True, capture_output=True)


class BenchTimeout(Exception):
    """A wait passed its deadline: the message says what was still missing."""


async def until(deadline: float, what: Callable[[], str], check: Callable[[], Any]) -> None:
    """Poll `check` (an awaitable's factory) until it is true; BenchTimeout after `deadline`."""
    while not await check():
        if time.monotonic() > deadline:
            raise BenchTimeout(what())
        await asyncio.sleep(0.05)


async def plain_docker(
    docker: aiodocker.Docker, image: str, count: int, label: str, timeout: float
) -> float:
    """N `docker run -d -p 127.0.0.1::5000` at once, until every port accepts: seconds."""
    started = time.perf_counter()
    deadline = time.monotonic() + timeout

    async def one(index: int) -> None:
        container = await docker.containers.run(
            {
                "Image": image,
                "Cmd": ["python3 /srv/app.py"],
                "Env": ["PORT=5000"],
                "Labels": {"bench": label},
                "ExposedPorts": {"5000/tcp": {}},
                "HostConfig": {"PortBindings": {"5000/tcp": [{"HostIp": "127.0.0.1"}]}},
            },
            name=f"bench-{label}-{index}",
        )
        info = await container.show()
        port = int(info["NetworkSettings"]["Ports"]["5000/tcp"][0]["HostPort"])
        await until(
            deadline,
            lambda: f"plain docker: container {index} never accepted on port {port}",
            lambda: port_accepts("127.0.0.1", port),
        )

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
        return time.perf_counter() - started
    finally:
        for container in await docker.containers.list(
            all=True, filters={"label": [f"bench={label}"]}
        ):
            await container.delete(force=True)


async def through_scheduler(bus: Bus, desired: list[Any], count: int, timeout: float) -> float:
    """`ps:scale web=N` from 0 until N web dynos are up: seconds (then back to 0).

    `desired` holds the one app the stand-in gateway answers `desired.get` with: each
    scale is recorded there before its event goes out, as the real gateway commits the
    formation before publishing. (It used to answer the formation of no scale at all,
    so the scheduler's periodic sync, every 15 s, removed the dynos of a longer round:
    the "web=10 never finishes" of issue 17.)
    """
    from slipway.contracts import gateway as gw
    from slipway.contracts import scheduler as sc

    app_id = desired[0].app_id

    def formation(quantity: int) -> gw.FormationChanged:
        processes = [gw.ProcessFormation(type="web", quantity=quantity, size="standard-1x")]
        desired[0] = msgspec.structs.replace(desired[0], formation=processes)
        return gw.FormationChanged(
            app_id=app_id,
            app_name="bench",
            team_id="bench",
            release_version=1,
            formation=processes,
            actor="bench",
        )

    seen: list[sc.Dyno] = []

    async def dynos() -> list[sc.Dyno]:
        seen[:] = (await bus.call(sc.DYNOS_LIST, sc.ListDynos(app_id=app_id))).dynos
        return seen

    def states(goal: str) -> str:
        # What a timeout reports: each dyno's last state, so a stuck one names itself.
        listed = ", ".join(f"{d.name} {d.state}" for d in seen) or "no dynos"
        return f"scheduler web={count}: {goal} not reached in {timeout:.0f} s ({listed})"

    async def all_up() -> bool:
        return sum(1 for d in await dynos() if d.state == "up") >= count

    async def none_left() -> bool:
        return not await dynos()

    started = time.perf_counter()
    await bus.publish(gw.FORMATION_CHANGED, formation(count))
    await until(time.monotonic() + timeout, lambda: states(f"{count} up"), all_up)
    elapsed = time.perf_counter() - started
    await bus.publish(gw.FORMATION_CHANGED, formation(0))
    await until(time.monotonic() + timeout, lambda: states("scaled to 0"), none_left)
    return elapsed


async def scale_bench(counts: list[int], rounds: int, timeout: float) -> int:
    """Both ways, alternately, for each N; medians and the ratio."""
    from slipway.contracts import gateway as gw
    from slipway.contracts.subjects import Service
    from slipway.libs.natsserver import NatsServer
    from slipway.libs.service.logging import configure_logging
    from slipway.services.scheduler.app import create_service
    from slipway.services.scheduler.settings import SchedulerSettings

    configure_logging(
        Service.SCHEDULER, fmt="console", level=os.environ.get("BENCH_LOG", "warning")
    )
    token = uuid.uuid4().hex[:8]
    image = f"slipway-bench/web:{token}"
    build_bench_image(image)
    with tempfile.TemporaryDirectory() as home:
        nats = NatsServer(Path(home) / "nats")
        nats.start()
        settings = SchedulerSettings(
            nats_url=nats.url,
            home=home,
            scope=f"bench-{token}",
            poll_interval=0.25,
            deregister_delay=0.0,
            stop_grace=2.0,
            log_level="warning",
        )
        service = create_service(settings)
        task = asyncio.create_task(service.run(install_signals=False))
        docker = aiodocker.Docker()
        app_id = f"bench{token}"
        try:
            await service.started.wait()
            bus = await Bus.connect(nats.url, "gateway")
            app = gw.AppDesired(
                app_id=app_id,
                app_name="bench",
                team_id="bench",
                release_version=1,
                image_ref=image,
                process_types={"web": "python3 /srv/app.py"},
            )
            desired = [app]  # what the stand-in gateway answers: kept current by each scale
            await bus.serve(gw.DESIRED_GET, lambda _: _desired(desired[0]))
            await bus.publish(
                gw.RELEASE_CREATED,
                gw.ReleaseCreated(
                    app_id=app_id,
                    app_name="bench",
                    team_id="bench",
                    release_id=token,
                    version=1,
                    description="bench",
                    image_ref=image,
                    process_types=app.process_types,
                    actor="bench",
                ),
            )
            for count in counts:
                ours, plain = [], []
                for r in range(rounds):
                    label = f"{token}-{count}-{r}"
                    plain.append(await plain_docker(docker, image, count, label, timeout))
                    ours.append(await through_scheduler(bus, desired, count, timeout))
                mine, base = statistics.median(ours), statistics.median(plain)
                print(
                    f"scale web={count:<3} scheduler {mine * 1000:7.0f} ms   plain docker run"
                    f" {base * 1000:7.0f} ms   ratio {mine / base:.2f}x (target <= 1.5x)"
                )
            await bus.close()
            return 0
        except BenchTimeout as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        finally:
            service.stop()
            try:
                await asyncio.wait_for(task, timeout)
            except TimeoutError:
                print(f"error: the scheduler did not stop in {timeout:.0f} s", file=sys.stderr)
            await docker.close()
            nats.stop()
            for args in (["rmi", "-f", image], ["network", "rm", settings.scoped.network(app_id)]):
                await asyncio.to_thread(subprocess.run, ["docker", *args], capture_output=True)


async def _desired(app: Any) -> Any:
    from slipway.contracts import gateway as gw

    return gw.DesiredState(apps=[app])


if __name__ == "__main__":
    sys.exit(main())
