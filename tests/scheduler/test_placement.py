"""Placement, the scheduler's pure core: values in, a plan out, no servers."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable

import msgspec
import pytest

from slipway.contracts.gateway import DYNO_SIZES, DynoSize
from slipway.libs.errors import InvalidRequest
from slipway.services.scheduler.model import (
    ClusterState,
    DesiredFormation,
    Dyno,
    Host,
    HostState,
    Plan,
    ProcessSpec,
    StartReason,
    StopReason,
    UnplaceableReason,
)
from slipway.services.scheduler.placement import apply_plan, plan

SMALL = DYNO_SIZES["standard-1x"]  # 512 MB
DOUBLE = DYNO_SIZES["standard-2x"]  # 1024 MB
UP, DRAINING, DOWN = HostState.UP, HostState.DRAINING, HostState.DOWN


def host(
    host_id: str,
    memory_mb: int = 4096,
    state: HostState = UP,
    cpu_shares: int | None = None,
    max_dynos: int | None = None,
) -> Host:
    return Host(
        id=host_id, memory_mb=memory_mb, state=state, cpu_shares=cpu_shares, max_dynos=max_dynos
    )


def want(app: str, release: int = 1, size: DynoSize = SMALL, **quantities: int) -> DesiredFormation:
    processes = {name: ProcessSpec(quantity=q, size=size) for name, q in quantities.items()}
    return DesiredFormation(app=app, release=release, processes=processes)


def dyno(name: str, host_id: str, app: str = "a", release: int = 1, size: DynoSize = SMALL) -> Dyno:
    process_type, index = name.split(".")
    return Dyno(
        app=app,
        release=release,
        process_type=process_type,
        index=int(index),
        size=size,
        host_id=host_id,
    )


def where(dynos: Iterable[Dyno]) -> dict[str, str]:
    """Dyno name → host id, for one app."""
    return {d.name: d.host_id for d in dynos}


def started(result: Plan) -> dict[str, str]:
    return where(start.dyno for start in result.starts)


def per_host(dynos: Iterable[Dyno]) -> Counter[str]:
    return Counter(d.host_id for d in dynos)


def converge(state: ClusterState, desired: list[DesiredFormation]) -> ClusterState:
    return apply_plan(state, plan(state, desired))


def test_spread_puts_one_dyno_on_each_host_before_a_second_on_any() -> None:
    """Five dynos on three equal hosts land 2, 2, 1, and web.1-3 on three different hosts."""
    state = ClusterState(hosts=(host("h1"), host("h2"), host("h3")))
    result = plan(state, [want("a", web=5)])
    placed = started(result)
    assert sorted(per_host(s.dyno for s in result.starts).values()) == [1, 2, 2]
    assert len({placed["web.1"], placed["web.2"], placed["web.3"]}) == 3


def test_spread_is_per_process_type() -> None:
    """Two process types of one app each spread on their own: one web and one worker per host."""
    state = ClusterState(hosts=(host("h1"), host("h2")))
    result = plan(state, [want("a", web=2, worker=2)])
    for process_type in ("web", "worker"):
        hosts = [s.dyno.host_id for s in result.starts if s.dyno.process_type == process_type]
        assert sorted(hosts) == ["h1", "h2"]


def test_best_fit_picks_the_fullest_host_that_still_fits() -> None:
    """A 1 GB dyno skips the host with 512 MB free and the empty one for the one with 1 GB free."""
    busy = [dyno(f"web.{i}", "mid", app="other") for i in range(1, 7)]  # 3 GB of 4 used
    busy += [dyno(f"web.{i}", "tiny", app="other") for i in range(7, 14)]  # 3.5 GB used
    state = ClusterState(hosts=(host("big", 8192), host("mid"), host("tiny")), dynos=tuple(busy))
    keep_other = want("other", web=13)
    assert started(plan(state, [keep_other, want("a", size=DOUBLE, web=1)])) == {"web.1": "mid"}
    assert started(plan(state, [keep_other, want("a", web=1)])) == {"web.1": "tiny"}


def test_small_apps_fill_one_host_before_opening_the_next() -> None:
    """Eight one-dyno apps of 512 MB pack two 2 GB hosts full and leave the other two empty."""
    state = ClusterState(hosts=tuple(host(f"h{i}", 2048) for i in range(4)))
    result = plan(state, [want(f"app{i}", web=1) for i in range(8)])
    assert per_host(s.dyno for s in result.starts) == {"h0": 4, "h1": 4}


def test_larger_dynos_are_placed_first() -> None:
    """A 1 GB dyno still finds a host when 512 MB dynos of apps sorting first compete for it."""
    state = ClusterState(hosts=(host("h1", 1024), host("h2", 1024)))
    result = plan(state, [want("a", web=2), want("b", size=DOUBLE, web=1)])
    assert not result.unplaceable
    assert per_host(s.dyno for s in result.starts if s.dyno.app == "b") == {"h1": 1}


def test_scaling_up_in_steps_places_dynos_where_one_step_would() -> None:
    """Twenty dynos placed four at a time land on the same hosts as twenty at once."""
    hosts = tuple(host(f"h{i}", 1024 * (i % 4 + 2)) for i in range(7))
    load = tuple(dyno(f"web.{i}", f"h{i % 7}", app="other") for i in range(1, 12))
    others = want("other", web=11)
    at_once = plan(ClusterState(hosts=hosts, dynos=load), [others, want("a", web=20)])
    state = ClusterState(hosts=hosts, dynos=load)
    for quantity in range(4, 21, 4):
        state = converge(state, [others, want("a", web=quantity)])
    assert where(d for d in state.dynos if d.app == "a") == started(at_once)


def test_capacity_exhaustion_is_reported_not_raised() -> None:
    """Dynos beyond the cluster's room come back as unplaceable, with the reason in words."""
    state = ClusterState(hosts=(host("h1", 1024),))
    result = plan(state, [want("a", web=3)])
    assert started(result) == {"web.1": "h1", "web.2": "h1"}
    [missing] = result.unplaceable
    assert (missing.name, missing.reason) == ("web.3", UnplaceableReason.NO_CAPACITY)
    assert "512 MB" in missing.detail
    assert "0 MB" in missing.detail


def test_no_up_host_is_reported() -> None:
    """With every host draining or down, nothing starts and each dyno says there is no up host."""
    state = ClusterState(hosts=(host("h1", state=DRAINING), host("h2", state=DOWN)))
    result = plan(state, [want("a", web=2)])
    assert not result.starts
    assert [u.reason for u in result.unplaceable] == [UnplaceableReason.NO_UP_HOSTS] * 2


def test_draining_and_down_hosts_receive_nothing() -> None:
    """All new dynos go to the one up host, even though the others are emptier."""
    hosts = (host("a", 65536, state=DRAINING), host("b", state=DOWN), host("c"))
    result = plan(ClusterState(hosts=hosts), [want("x", web=3)])
    assert set(started(result).values()) == {"c"}


def test_draining_host_is_emptied_after_replacements_start() -> None:
    """A dyno on a draining host gets a same-named replacement; its stop waits for that."""
    old = dyno("web.1", "h1")
    state = ClusterState(hosts=(host("h1", state=DRAINING), host("h2")), dynos=(old,))
    result = plan(state, [want("a", web=1)])
    [start], [stop] = result.starts, result.stops
    assert (start.dyno.name, start.dyno.host_id, start.reason) == (
        "web.1",
        "h2",
        StartReason.HOST_DRAINING,
    )
    assert start.replaces == (old,)
    assert (stop.dyno, stop.reason, stop.replacement) == (old, StopReason.HOST_DRAINING, start.dyno)


def test_draining_host_keeps_its_dyno_when_no_other_host_has_room() -> None:
    """Without room elsewhere the draining host's dyno keeps serving and the plan says so."""
    old = dyno("web.1", "h1")
    full = dyno("web.1", "h2", app="other", size=DOUBLE)
    state = ClusterState(hosts=(host("h1", state=DRAINING), host("h2", 1024)), dynos=(old, full))
    result = plan(state, [want("a", web=1), want("other", size=DOUBLE, web=1)])
    assert not result.has_changes
    [missing] = result.unplaceable
    assert missing.kept == (old,)


def test_down_host_dynos_are_rescheduled_elsewhere() -> None:
    """A down host's dyno starts again, same name, on an up host; its stop does not wait."""
    lost, alive = dyno("web.1", "h1"), dyno("web.2", "h2")
    state = ClusterState(
        hosts=(host("h1", state=DOWN), host("h2"), host("h3")), dynos=(lost, alive)
    )
    result = plan(state, [want("a", web=2)])
    [start], [stop] = result.starts, result.stops
    assert (start.dyno.name, start.dyno.host_id, start.reason) == (
        "web.1",
        "h3",
        StartReason.HOST_DOWN,
    )
    assert (stop.dyno, stop.reason, stop.replacement) == (lost, StopReason.HOST_DOWN, None)


def test_dyno_on_an_unknown_host_counts_as_lost() -> None:
    """A dyno whose host the state no longer lists is replaced like one on a down host."""
    lost = dyno("web.1", "gone")
    result = plan(ClusterState(hosts=(host("h1"),), dynos=(lost,)), [want("a", web=1)])
    assert [s.reason for s in result.starts] == [StartReason.HOST_DOWN]
    assert [(s.dyno, s.reason) for s in result.stops] == [(lost, StopReason.HOST_DOWN)]


def test_scale_down_removes_the_highest_numbered_dynos_first() -> None:
    """From web.1-4 on four hosts, scaling to 2 stops web.4 and web.3."""
    dynos = tuple(dyno(f"web.{i}", f"h{i}") for i in range(1, 5))
    state = ClusterState(hosts=tuple(host(f"h{i}") for i in range(1, 5)), dynos=dynos)
    result = plan(state, [want("a", web=2)])
    assert not result.starts
    assert [(s.dyno.name, s.reason) for s in result.stops] == [
        ("web.3", StopReason.SCALE_DOWN),
        ("web.4", StopReason.SCALE_DOWN),
    ]


def test_scale_down_takes_from_the_most_loaded_hosts_to_keep_the_spread() -> None:
    """Hosts with two of the type lose one each before a host with one loses its only copy."""
    layout = {"web.1": "h1", "web.2": "h1", "web.3": "h2", "web.4": "h3", "web.5": "h3"}
    dynos = tuple(dyno(name, host_id) for name, host_id in layout.items())
    state = ClusterState(hosts=(host("h1"), host("h2"), host("h3")), dynos=dynos)
    result = plan(state, [want("a", web=3)])
    assert sorted(s.dyno.name for s in result.stops) == ["web.2", "web.5"]
    assert sorted(per_host(apply_plan(state, result).dynos).values()) == [1, 1, 1]


def test_removed_process_types_and_apps_are_stopped() -> None:
    """A type the formation dropped and an app desired with no types are stopped, saying why."""
    dynos = (dyno("web.1", "h1"), dyno("worker.1", "h1"), dyno("web.1", "h1", app="gone"))
    state = ClusterState(hosts=(host("h1"),), dynos=dynos)
    result = plan(state, [want("a", web=1), want("gone")])
    assert {(s.dyno.app, s.dyno.name): s.reason for s in result.stops} == {
        ("a", "worker.1"): StopReason.PROCESS_TYPE_REMOVED,
        ("gone", "web.1"): StopReason.APP_REMOVED,
    }


def test_a_partial_desired_list_plans_only_the_apps_it_names() -> None:
    """One app's formation leaves every other app's dynos alone, but counts their room."""
    others = tuple(dyno(f"web.{i}", "h1", app="other") for i in range(1, 8))  # 3584 of 4096 MB
    state = ClusterState(hosts=(host("h1"), host("h2")), dynos=others)
    result = plan(state, [want("a", web=2)])
    assert not result.stops
    # h1 has room for one more 512 MB dyno at most: spread and room both send web.1/2 apart.
    assert sorted(started(result).values()) == ["h1", "h2"]
    crowded = plan(state, [want("a", size=DOUBLE, web=2)])
    assert set(started(crowded).values()) == {"h2"}


def test_a_replacement_fits_beside_its_predecessor_when_it_can() -> None:
    """Rolling deploys run old and new at once: room for both is taken if any host has it."""
    state = ClusterState(hosts=(host("h1", 1024), host("h2", 1024)), dynos=(dyno("web.1", "h1"),))
    result = plan(state, [want("a", release=2, web=1)])
    (start,) = result.starts
    assert not start.stop_first
    full = ClusterState(hosts=(host("h1", 512),), dynos=(dyno("web.1", "h1"),))
    (squeezed,) = plan(full, [want("a", release=2, web=1)]).starts
    assert squeezed.stop_first and squeezed.dyno.host_id == "h1"


def test_new_release_replaces_each_dyno_by_name_start_first() -> None:
    """Each v1 dyno gets a same-named v2 replacement, and its stop names that replacement."""
    dynos = (dyno("web.1", "h1"), dyno("web.2", "h2"))
    state = ClusterState(hosts=(host("h1"), host("h2")), dynos=dynos)
    result = plan(state, [want("a", release=2, web=2)])
    assert sorted(s.dyno.name for s in result.starts) == ["web.1", "web.2"]
    assert {s.dyno.release for s in result.starts} == {2}
    assert {s.reason for s in result.starts} == {StartReason.NEW_RELEASE}
    new_by_name = {s.dyno.name: s.dyno for s in result.starts}
    for stop in result.stops:
        assert stop.reason is StopReason.NEW_RELEASE
        assert stop.replacement == new_by_name[stop.dyno.name]
    assert {s.dyno for s in result.stops} == set(dynos)


def test_full_cluster_can_still_roll_a_release() -> None:
    """With every host full, a new release of same-sized dynos takes the old dynos' room."""
    dynos = tuple(dyno(f"web.{i}", f"h{i % 2}") for i in range(1, 5))
    state = ClusterState(hosts=(host("h0", 1024), host("h1", 1024)), dynos=dynos)
    result = plan(state, [want("a", release=2, web=4)])
    assert not result.unplaceable
    assert len(result.starts) == len(result.stops) == 4


def test_resize_replaces_dynos_of_the_old_size() -> None:
    """A new size for a type replaces its dynos, same names, with the resize reason."""
    state = ClusterState(hosts=(host("h1"),), dynos=(dyno("web.1", "h1"),))
    result = plan(state, [want("a", size=DOUBLE, web=1)])
    assert [(s.dyno.size, s.reason) for s in result.starts] == [(DOUBLE, StartReason.RESIZE)]
    assert [s.reason for s in result.stops] == [StopReason.RESIZE]


def test_duplicate_dyno_names_are_reduced_to_one() -> None:
    """Two dynos with one name, release and size: one stays, the other is stopped."""
    state = ClusterState(
        hosts=(host("h1"), host("h2")), dynos=(dyno("web.1", "h2"), dyno("web.1", "h1"))
    )
    result = plan(state, [want("a", web=1)])
    assert [(s.dyno.host_id, s.reason) for s in result.stops] == [("h2", StopReason.DUPLICATE)]


def test_cpu_and_dyno_count_limits_are_respected() -> None:
    """A host stops taking dynos at its CPU shares or its dyno count, whatever memory is left."""
    hosts = (host("cpu", 65536, cpu_shares=2048), host("count", 65536, max_dynos=1))
    result = plan(ClusterState(hosts=hosts), [want("a", web=4)])
    assert per_host(s.dyno for s in result.starts) == {"cpu": 2, "count": 1}
    assert len(result.unplaceable) == 1


def test_replanning_the_result_of_a_plan_changes_nothing() -> None:
    """After drains, a lost host, a release, scaling and a removed app, a second plan is empty."""
    hosts = (host("h1"), host("h2"), host("h3"), host("h4"))
    first = [want("a", web=3, worker=2), want("b", web=2), want("c", web=1)]
    state = converge(ClusterState(hosts=hosts), first)
    changed_hosts = (host("h1", state=DRAINING), host("h2", state=DOWN), host("h3"), host("h4"))
    state = msgspec.structs.replace(state, hosts=changed_hosts)
    second = [want("a", release=2, web=1, worker=3), want("b", size=DOUBLE, web=2)]
    result = plan(state, second)
    assert result.has_changes and not result.unplaceable
    after = plan(apply_plan(state, result), second)
    assert after == Plan()


def test_the_same_input_in_any_order_gives_the_same_plan() -> None:
    """Shuffling hosts, dynos and formations does not change a single decision."""
    rng = random.Random(5)
    hosts = [
        host(f"h{i}", rng.choice([2048, 4096]), rng.choice([UP, UP, DRAINING])) for i in range(8)
    ]
    desired = [want(f"app{i}", web=rng.randint(0, 6), worker=rng.randint(0, 3)) for i in range(6)]
    state = converge(ClusterState(hosts=tuple(hosts)), desired)
    desired = [want(f"app{i}", release=2, web=rng.randint(0, 6)) for i in range(5)]
    expected = plan(state, desired)
    for _ in range(5):
        rng.shuffle(hosts)
        rng.shuffle(desired)
        dynos = list(state.dynos)
        rng.shuffle(dynos)
        assert plan(ClusterState(hosts=tuple(hosts), dynos=tuple(dynos)), desired) == expected


@pytest.mark.parametrize(
    ("hosts", "desired"),
    [
        ((host("h1"), host("h1")), [want("a", web=1)]),
        ((host("h1"),), [want("a", web=1), want("a", worker=1)]),
        ((host("h1"),), [want("a", web=-1)]),
    ],
    ids=["duplicate host id", "two formations for one app", "negative quantity"],
)
def test_inconsistent_input_is_refused(
    hosts: tuple[Host, ...], desired: list[DesiredFormation]
) -> None:
    """Input that cannot describe a cluster raises InvalidRequest rather than planning nonsense."""
    with pytest.raises(InvalidRequest):
        plan(ClusterState(hosts=hosts), desired)


# ---- invariants over random clusters ---------------------------------------------------------


def random_hosts(rng: random.Random) -> list[Host]:
    return [
        Host(
            id=f"h{i}",
            memory_mb=rng.choice([2048, 4096, 8192, 16384]),
            cpu_shares=rng.choice([None, None, 8192, 16384]),
            max_dynos=rng.choice([None, None, 4, 12]),
            state=rng.choice([UP, UP, UP, UP, DRAINING, DOWN]),
        )
        for i in range(rng.randint(1, 10))
    ]


def random_quantity(rng: random.Random) -> int:
    # Mostly small groups; some large enough to take the placer's path for big groups.
    return rng.randint(0, 5) if rng.random() < 0.85 else rng.randint(9, 24)


def random_formations(rng: random.Random, release: int) -> list[DesiredFormation]:
    sizes = [DYNO_SIZES[name] for name in ("eco", "standard-1x", "standard-2x", "performance-m")]
    return [
        DesiredFormation(
            app=f"app{i}",
            release=release,
            # One app in ten is removed: desired with no process types.
            processes={
                process_type: ProcessSpec(quantity=random_quantity(rng), size=rng.choice(sizes))
                for process_type in rng.sample(["web", "worker", "clock"], rng.randint(1, 3))
            }
            if rng.random() < 0.9
            else {},
        )
        for i in range(6)
    ]


def fits(host: Host, dynos: list[Dyno], size: DynoSize) -> bool:
    """Whether `host`, running `dynos`, has room for one more dyno of `size`."""
    memory = sum(d.size.memory_mb for d in dynos) + size.memory_mb
    cpu = sum(d.size.cpu_shares for d in dynos) + size.cpu_shares
    return (
        memory <= host.memory_mb
        and (host.cpu_shares is None or cpu <= host.cpu_shares)
        and (host.max_dynos is None or len(dynos) + 1 <= host.max_dynos)
    )


def check_plan(state: ClusterState, desired: list[DesiredFormation], result: Plan) -> ClusterState:
    """The invariants every plan keeps, from any state; returns the state it leads to."""
    hosts = {h.id: h for h in state.hosts}
    after = apply_plan(state, result)
    on: dict[str, list[Dyno]] = {h: [] for h in hosts}
    for d in after.dynos:
        on[d.host_id].append(d)
    for start in result.starts:
        assert hosts[start.dyno.host_id].state is UP, "started on a host that is not up"
    for host_id, dynos in on.items():
        limits = hosts[host_id]
        assert sum(d.size.memory_mb for d in dynos) <= limits.memory_mb, "memory over capacity"
        if limits.cpu_shares is not None:
            assert sum(d.size.cpu_shares for d in dynos) <= limits.cpu_shares, "CPU over capacity"
        if limits.max_dynos is not None:
            assert len(dynos) <= limits.max_dynos, "too many dynos"
        if limits.state is DOWN:
            assert not dynos, "a dyno was left on a down host"
    kept = {d for u in result.unplaceable for d in u.kept}
    for d in after.dynos:
        if hosts[d.host_id].state is DRAINING:
            assert d in kept, "a draining host kept a dyno that had somewhere to go"
    started_now = {s.dyno for s in result.starts}
    for stop in result.stops:
        assert stop.replacement is None or stop.replacement in started_now
    if not result.unplaceable:
        expected = Counter(
            (f.app, name, f.release, spec.size)
            for f in desired
            for name, spec in f.processes.items()
            for _ in range(spec.quantity)
        )
        assert Counter((d.app, d.process_type, d.release, d.size) for d in after.dynos) == expected
        assert plan(after, desired) == Plan(), "planning the result again changed something"
    return after


def check_spread(state: ClusterState, result: Plan) -> None:
    """From an empty cluster: a host trails the busiest by two only if it had no room left."""
    after = apply_plan(state, result)
    on: dict[str, list[Dyno]] = {h.id: [] for h in state.hosts}
    for d in after.dynos:
        on[d.host_id].append(d)
    groups = {(d.app, d.process_type): d.size for d in after.dynos}
    for (app, process_type), size in groups.items():
        count = {
            h.id: sum(1 for d in on[h.id] if (d.app, d.process_type) == (app, process_type))
            for h in state.hosts
            if h.state is UP
        }
        most = max(count.values())
        for h in state.hosts:
            if h.state is UP and count[h.id] <= most - 2:
                assert not fits(h, on[h.id], size), f"{app} {process_type} not spread to {h.id}"
    for missing in result.unplaceable:
        for h in state.hosts:
            if h.state is UP:
                assert not fits(h, on[h.id], missing.size), f"{missing.name} fit on {h.id}"


def test_random_clusters_keep_the_invariants() -> None:
    """Over 300 random clusters and changes: capacity, eligibility, spread and convergence hold."""
    for seed in range(300):
        rng = random.Random(seed)
        hosts = random_hosts(rng)
        empty = ClusterState(hosts=tuple(hosts))
        desired = random_formations(rng, release=1)
        first = plan(empty, desired)
        try:
            check_spread(empty, first)
            state = check_plan(empty, desired, first)
            # Then the world moves: hosts change state, apps release, rescale or go away.
            # A host coming back up stays empty: running dynos are not moved to rebalance.
            hosts = [
                msgspec.structs.replace(h, state=rng.choice([UP, UP, DRAINING, DOWN]))
                for h in hosts
            ]
            state = msgspec.structs.replace(state, hosts=tuple(hosts))
            desired = random_formations(rng, release=rng.choice([1, 2]))
            check_plan(state, desired, plan(state, desired))
        except AssertionError as error:
            raise AssertionError(f"seed {seed}: {error}") from error
