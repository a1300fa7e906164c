"""The scheduler's placement function on a simulated cluster: placements per second.

    .venv/bin/python bench/placement.py [--dynos 100000] [--hosts 1000] [--rounds 3] [--seed 7]

A seeded random cluster (hosts of 64 to 256 GB) and several hundred apps whose
process types use Heroku's sizes, mostly small, sum to `--dynos`. Four scenarios,
each timed `--rounds` times, best round reported:

- place:   everything from an empty cluster (one start per dyno);
- release: every app gets a new release (a start and a paired stop per dyno);
- failure: 1% of the hosts go down (their dynos move);
- steady:  the converged state planned again (the cost of a reconcile tick).

Only `plan` is timed; building inputs and checking results are not. The target is
10,000 placements/s (issue 5). Nomad's C1M placed 3,750 containers/s across a whole
cluster, scheduling and starting included: a scale for context, not a like-for-like race.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable

import msgspec

from slipway.contracts.gateway import DYNO_SIZES, DynoSize
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
