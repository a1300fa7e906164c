"""Placement, the scheduler's pure core: cluster state + desired formations → plan.

No I/O and no state between calls, as in Nomad's scheduler: the service gathers hosts
and dynos, calls `plan`, and carries the plan out; tests call it with plain values.

The rules, strongest first:

- Only up hosts receive dynos. A host holds what fits its memory (and its CPU shares
  and dyno count where those are limited), counted in the plan's end state.
- Avoided hosts (a formation's `avoid`: they refused to start the app's dynos lately)
  take none of its new dynos while another host has room; when none has, a dyno goes
  back to one of them rather than nowhere (the executor then retries with backoff).
- Spread: a dyno goes to an eligible host with the fewest dynos of its app and process
  type, so one host's loss takes as few copies as possible.
- Best fit: among those, the host with the least free memory that still fits (ties:
  host id), which fills hosts and keeps large holes for large dynos. Groups (app,
  process type) are placed largest size first, as first-fit-decreasing packing does.
- A replacement keeps the name of the dyno it replaces (new release, new size, draining
  or down host). A running predecessor is stopped only once its replacement has found
  a host; if none has room, the predecessor keeps running and the plan says why.
- Scaling down keeps the spread: it removes from the hosts carrying the most dynos of
  that app and type, highest-numbered dyno first.
- Planning is per app: only the apps named in the desired formations are planned, so a
  partial list (one app's event) never stops anything else. Other apps' dynos only
  take room. A named app's process type missing from its formation is stopped; an
  app desired with no process types at all is removed.
- Capacity holds at every moment of a rolling deploy, not only at its end: a
  replacement goes where it fits beside its running predecessor; only when no host
  has that room does it take the predecessor's, marked `stop_first` (the executor
  stops the old dyno before starting the new one).

The same input (in any order) gives the same plan.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, insort
from collections import Counter
from collections.abc import Iterable, Sequence

import msgspec

from slipway.contracts.gateway import DynoSize
from slipway.libs.errors import InvalidRequest
from slipway.services.scheduler.model import (
    ClusterState,
    DesiredFormation,
    Dyno,
    Host,
    HostState,
    Plan,
    ProcessSpec,
    Start,
    StartReason,
    Stop,
    StopReason,
    Unplaceable,
    UnplaceableReason,
)

_UNLIMITED = 1 << 62  # stands for "no limit" so hot loops compare ints, never None

# Above this many dynos to place, a group's hosts leave the index for the duration
# (see `_fill`): on the bench's 1,000 hosts walking past them wins for a handful of
# dynos, hiding them wins twofold for dozens.
_HIDE_AFTER = 8

GroupKey = tuple[str, str]  # (app, process type)


def plan(state: ClusterState, desired: Iterable[DesiredFormation]) -> Plan:
    """The starts and stops that turn `state` into `desired`, and the dynos that fit nowhere."""
    capacity = _Capacity(state.hosts, state.dynos)
    desired = list(desired)
    wanted, apps = _wanted(desired)
    avoid = {
        f.app: frozenset(capacity.rank[h] for h in f.avoid if h in capacity.rank)
        for f in desired
        if f.avoid
    }
    placed: dict[GroupKey, list[Dyno]] = {}
    for dyno in state.dynos:
        if dyno.app in apps:
            placed.setdefault((dyno.app, dyno.process_type), []).append(dyno)

    out = _Builder()
    groups: list[_Group] = []
    # Every stop that needs no replacement is decided (and its room freed) before any
    # placement, so the freed room is there for every group.
    for key in sorted(placed.keys() | wanted.keys()):
        if key in wanted:
            release, spec = wanted[key]
            groups.append(_settle(key, release, spec, placed.get(key, []), capacity, out))
        else:
            reason = StopReason.PROCESS_TYPE_REMOVED if apps[key[0]] else StopReason.APP_REMOVED
            for dyno in placed[key]:
                out.stop(dyno, reason)
                capacity.give_back(dyno)
    groups.sort(key=lambda g: (-g.spec.size.memory_mb, g.key))
    for group in groups:
        _fill(group, capacity, out, avoid.get(group.key[0], frozenset()))
    return out.plan()


def apply_plan(state: ClusterState, planned: Plan) -> ClusterState:
    """The state the plan leads to once carried out: stops removed, starts added."""
    stopped = Counter(stop.dyno for stop in planned.stops)
    dynos: list[Dyno] = []
    for dyno in state.dynos:
        if stopped[dyno]:
            stopped[dyno] -= 1
        else:
            dynos.append(dyno)
    dynos.extend(start.dyno for start in planned.starts)
    return ClusterState(hosts=state.hosts, dynos=tuple(dynos))


def _wanted(
    desired: Iterable[DesiredFormation],
) -> tuple[dict[GroupKey, tuple[int, ProcessSpec]], dict[str, bool]]:
    """(release, spec) per group, and each app planned → whether it has any process type."""
    wanted: dict[GroupKey, tuple[int, ProcessSpec]] = {}
    seen: dict[str, bool] = {}
    for formation in desired:
        if formation.app in seen:
            raise InvalidRequest(f"App {formation.app!r} has two desired formations; send one.")
        seen[formation.app] = bool(formation.processes)
        for process_type, spec in formation.processes.items():
            if spec.quantity < 0:
                raise InvalidRequest(
                    f"{formation.app} {process_type}: quantity {spec.quantity} is negative."
                )
            wanted[formation.app, process_type] = (formation.release, spec)
    return wanted, seen


class _Capacity:
    """Free room per host, with the up hosts indexed by free memory for best-fit queries.

    Hosts are numbered in id order (their rank). `_index` holds `free_mb * n + rank`
    for every up host with a free dyno slot, sorted: one bisect finds the fullest host
    that fits, equal free memory falls back to id order (deterministic plans), and
    plain ints keep the comparisons in C. While a group is being placed, the hosts
    already running it leave the index (`exclude`), so the first host that fits is
    also the one the spread rule prefers, with no walk past the group's own hosts.
    """

    def __init__(self, hosts: Sequence[Host], dynos: Iterable[Dyno]) -> None:
        ordered = sorted(hosts, key=lambda host: host.id)
        self.ids = [host.id for host in ordered]
        self.rank = {host_id: rank for rank, host_id in enumerate(self.ids)}
        if len(self.rank) != len(self.ids):
            raise InvalidRequest("Two hosts share an id; host ids must be unique.")
        self.state = [host.state for host in ordered]
        self.up = [host.state is HostState.UP for host in ordered]
        self.any_up = any(self.up)
        self.free_mem = [host.memory_mb for host in ordered]
        self.free_cpu = [_UNLIMITED if h.cpu_shares is None else h.cpu_shares for h in ordered]
        self.free_slots = [_UNLIMITED if h.max_dynos is None else h.max_dynos for h in ordered]
        for dyno in dynos:
            rank = self.rank.get(dyno.host_id)
            if rank is not None:
                self.free_mem[rank] -= dyno.size.memory_mb
                self.free_cpu[rank] -= dyno.size.cpu_shares
                self.free_slots[rank] -= 1
        self._n = max(len(ordered), 1)
        self._excluded: set[int] = set()
        self._index = sorted(self._key(rank) for rank in range(len(ordered)) if self._indexed(rank))

    def host_state(self, host_id: str) -> HostState:
        """A host the state does not list is as good as down: nothing there is reachable."""
        rank = self.rank.get(host_id)
        return HostState.DOWN if rank is None else self.state[rank]

    def is_up(self, host_id: str) -> bool:
        rank = self.rank.get(host_id)
        return rank is not None and self.up[rank]

    def give_back(self, dyno: Dyno) -> None:
        """The room of a dyno that stops (or lends its room to its replacement)."""
        rank = self.rank.get(dyno.host_id)
        if rank is not None:
            self._change(rank, dyno.size, 1)

    def take_back(self, dyno: Dyno) -> None:
        """Undo `give_back`: the dyno stays after all."""
        rank = self.rank.get(dyno.host_id)
        if rank is not None:
            self._change(rank, dyno.size, -1)

    def take(self, rank: int, size: DynoSize) -> None:
        self._change(rank, size, -1)

    def _change(self, rank: int, size: DynoSize, sign: int) -> None:
        # The hottest path of a plan: `_indexed` and `_key` are spelled out inline.
        index, free_mem = self._index, self.free_mem
        if self.up[rank] and self.free_slots[rank] > 0 and rank not in self._excluded:
            del index[bisect_left(index, free_mem[rank] * self._n + rank)]
        free_mem[rank] += sign * size.memory_mb
        self.free_cpu[rank] += sign * size.cpu_shares
        self.free_slots[rank] += sign
        if self.up[rank] and self.free_slots[rank] > 0 and rank not in self._excluded:
            insort(index, free_mem[rank] * self._n + rank)

    def exclude(self, rank: int) -> None:
        """Hide a host from `best`'s first search: it runs the group being placed."""
        if self._indexed(rank):
            del self._index[bisect_left(self._index, self._key(rank))]
        self._excluded.add(rank)

    def include_all(self) -> None:
        """Return every excluded host to the index: the group is placed."""
        excluded, self._excluded = self._excluded, set()
        for rank in excluded:
            if self._indexed(rank):
                insort(self._index, self._key(rank))

    def best(
        self, size: DynoSize, counts: dict[int, int], avoid: frozenset[int] = frozenset()
    ) -> int | None:
        """The host for one more dyno of the group with `counts` (rank → dynos), or None.

        Hosts without the group come first (spread); the group's own hosts are skipped
        if they were not excluded; hosts in `avoid` are never chosen.
        """
        index, n, free_cpu, cpu = self._index, self._n, self.free_cpu, size.cpu_shares
        for position in range(bisect_left(index, size.memory_mb * n), len(index)):
            rank = index[position] % n
            if rank not in counts and free_cpu[rank] >= cpu and rank not in avoid:
                return rank
        # Every host that fits already runs the group: the fewest, the fullest, then id.
        best: tuple[int, int, int] | None = None
        for rank, count in counts.items():
            if (
                rank not in avoid
                and self.up[rank]
                and self.free_slots[rank] > 0
                and self.free_mem[rank] >= size.memory_mb
                and free_cpu[rank] >= cpu
            ):
                candidate = (count, self.free_mem[rank], rank)
                if best is None or candidate < best:
                    best = candidate
        return None if best is None else best[2]

    def largest_free(self) -> int | None:
        """The most free memory on an up host with a free dyno slot, if any."""
        # From the index's top and the few hidden hosts: an overloaded cluster asks
        # this once per unplaceable dyno, so no walk over every host.
        free = [self.free_mem[r] for r in self._excluded if self.up[r] and self.free_slots[r] > 0]
        if self._index:
            free.append(self._index[-1] // self._n)
        return max(free, default=None)

    def _indexed(self, rank: int) -> bool:
        return self.up[rank] and self.free_slots[rank] > 0 and rank not in self._excluded

    def _key(self, rank: int) -> int:
        return self.free_mem[rank] * self._n + rank


class _Replacement(msgspec.Struct, frozen=True, gc=False):
    """A dyno to start in place of others with its name; their room and reasons, worked out once."""

    index: int
    predecessors: tuple[Dyno, ...]
    reasons: tuple[StopReason, ...]  # why each predecessor goes
    lent: tuple[Dyno, ...]  # predecessors on up hosts, whose room the new dyno may take
    start: StartReason


class _Group(msgspec.Struct, frozen=True):
    """One app's process type after the stops that need no replacement: what to add."""

    key: GroupKey
    release: int
    spec: ProcessSpec
    counts: dict[int, int]  # host rank → dynos of this group staying or starting there
    replacements: list[_Replacement]
    fresh: list[int]  # indices of new dynos that replace nothing


def _settle(
    key: GroupKey,
    release: int,
    spec: ProcessSpec,
    dynos: list[Dyno],
    capacity: _Capacity,
    out: _Builder,
) -> _Group:
    """Keep what matches, stop what is surplus, and list the dynos still to start."""
    keepers: dict[int, Dyno] = {}
    others: list[tuple[Dyno, StopReason]] = []
    for dyno in dynos:
        cause = _cause(dyno, release, spec.size, capacity)
        if cause is not None:
            others.append((dyno, cause))
        elif dyno.index not in keepers:
            keepers[dyno.index] = dyno
        else:  # the same name twice: keep one, whatever the input order
            kept, extra = sorted((keepers[dyno.index], dyno), key=_dyno_order)
            keepers[dyno.index] = kept
            out.stop(extra, StopReason.DUPLICATE)
            capacity.give_back(extra)
    surplus = len(keepers) - spec.quantity
    if surplus > 0:
        for dyno in _scale_down_victims(keepers.values(), surplus):
            out.stop(dyno, StopReason.SCALE_DOWN)
            capacity.give_back(dyno)
            del keepers[dyno.index]
    indices = _indices_to_fill(spec.quantity - len(keepers), keepers, others)
    predecessors: dict[int, list[tuple[Dyno, StopReason]]] = {index: [] for index in indices}
    for dyno, cause in others:
        if dyno.index in predecessors:
            predecessors[dyno.index].append((dyno, cause))
        else:
            # Without a replacement, an outdated dyno goes because its name is no longer
            # wanted, unless a current dyno already holds that name.
            superseded = cause in _OUTDATED and dyno.index not in keepers
            out.stop(dyno, StopReason.SCALE_DOWN if superseded else cause)
            capacity.give_back(dyno)
    counts = Counter(capacity.rank[dyno.host_id] for dyno in keepers.values())
    fresh = [index for index in indices if not predecessors[index]]
    replacements = [_replacement(i, predecessors[i]) for i in indices if predecessors[i]]
    return _Group(key, release, spec, dict(counts), replacements, fresh)


def _cause(dyno: Dyno, release: int, size: DynoSize, capacity: _Capacity) -> StopReason | None:
    """Why a placed dyno cannot stay as it is, or None if it can."""
    state = capacity.host_state(dyno.host_id)
    if state is HostState.DOWN:
        return StopReason.HOST_DOWN
    if state is HostState.DRAINING:
        return StopReason.HOST_DRAINING
    if dyno.release != release:
        return StopReason.NEW_RELEASE
    if dyno.size != size:
        return StopReason.RESIZE
    return None


_OUTDATED = frozenset({StopReason.NEW_RELEASE, StopReason.RESIZE})
# A lost dyno is the most pressing reason to start its replacement, a resize the least.
_START_FOR = {
    StopReason.HOST_DOWN: StartReason.HOST_DOWN,
    StopReason.HOST_DRAINING: StartReason.HOST_DRAINING,
    StopReason.NEW_RELEASE: StartReason.NEW_RELEASE,
    StopReason.RESIZE: StartReason.RESIZE,
}


def _replacement(index: int, predecessors: list[tuple[Dyno, StopReason]]) -> _Replacement:
    if len(predecessors) == 1:  # nearly always: one old dyno per name
        dyno, reason = predecessors[0]
        lent = (dyno,) if reason in _OUTDATED else ()
        return _Replacement(index, (dyno,), (reason,), lent, _START_FOR[reason])
    predecessors.sort(key=lambda pair: _dyno_order(pair[0]))
    reasons = tuple(reason for _, reason in predecessors)
    return _Replacement(
        index=index,
        predecessors=tuple(dyno for dyno, _ in predecessors),
        reasons=reasons,
        lent=tuple(dyno for dyno, reason in predecessors if reason in _OUTDATED),
        start=next(started for cause, started in _START_FOR.items() if cause in reasons),
    )


def _scale_down_victims(keepers: Iterable[Dyno], count: int) -> list[Dyno]:
    """Take from the host with the most of the group (keeps the spread), highest index first."""
    per_host: dict[str, list[Dyno]] = {}
    for dyno in sorted(keepers, key=lambda d: d.index):
        per_host.setdefault(dyno.host_id, []).append(dyno)
    heap = [(-len(ds), -ds[-1].index, host_id) for host_id, ds in per_host.items()]
    heapq.heapify(heap)
    victims: list[Dyno] = []
    while len(victims) < count:
        _, _, host_id = heapq.heappop(heap)
        dynos = per_host[host_id]
        victims.append(dynos.pop())
        if dynos:
            heapq.heappush(heap, (-len(dynos), -dynos[-1].index, host_id))
    return victims


def _indices_to_fill(
    count: int, keepers: dict[int, Dyno], others: list[tuple[Dyno, StopReason]]
) -> list[int]:
    """Names for new dynos: those of running predecessors, then of lost ones, then the lowest free.

    Reusing a running predecessor's name pairs the new dyno with the old one, so a
    draining host's dyno is replaced rather than dropped.
    """
    if count <= 0:
        return []
    running = sorted({d.index for d, cause in others if cause is not StopReason.HOST_DOWN})
    lost = sorted({d.index for d, _ in others} - set(running))
    chosen = [index for index in running + lost if index not in keepers][:count]
    taken = keepers.keys() | set(chosen)
    candidate = 1
    while len(chosen) < count:
        if candidate not in taken:
            chosen.append(candidate)
        candidate += 1
    return chosen


def _fill(group: _Group, capacity: _Capacity, out: _Builder, avoid: frozenset[int]) -> None:
    """Place the group's missing dynos, replacements first; stop predecessors once placed."""
    app, process_type = group.key
    size, counts, release = group.spec.size, group.counts, group.release
    # Hiding the group's hosts costs two index updates per host, which pays only when
    # enough dynos are placed that walking past those hosts each time would cost more.
    hide = len(group.replacements) + len(group.fresh) > _HIDE_AFTER
    if hide:
        for rank in counts:
            capacity.exclude(rank)

    def best() -> int | None:
        rank = capacity.best(size, counts, avoid)
        if rank is None and avoid:
            # No other host has room: an avoided one is better than none (it may work
            # again; the executor's backoff keeps the retries apart).
            rank = capacity.best(size, counts)
        return rank

    def place(index: int, lent: tuple[Dyno, ...]) -> tuple[Dyno, bool] | None:
        # First beside the predecessor (both run for a moment during a rolling deploy).
        # Failing that, a predecessor on an up host lends its room to its own
        # replacement, which then starts only after it stops: a full cluster can still
        # roll out a release of same-sized dynos.
        rank = best()
        stop_first = False
        if rank is None and lent:
            for dyno in lent:
                capacity.give_back(dyno)
            rank = best()
            if rank is None:
                for dyno in lent:
                    capacity.take_back(dyno)
                return None
            stop_first = True
        elif rank is None:
            return None
        else:
            # The predecessors' room comes back once they stop, in the end state.
            for dyno in lent:
                capacity.give_back(dyno)
        if rank in counts:
            counts[rank] += 1
        else:
            counts[rank] = 1
            if hide:
                capacity.exclude(rank)
        capacity.take(rank, size)
        host_id = capacity.ids[rank]
        new = Dyno(
            app=app,
            release=release,
            process_type=process_type,
            index=index,
            size=size,
            host_id=host_id,
        )
        return new, stop_first

    for item in group.replacements:
        placed = place(item.index, item.lent)
        if placed is None:
            _unplaceable(group, item.index, item, capacity, out)
            continue
        new, stop_first = placed
        out.starts.append(
            Start(dyno=new, reason=item.start, replaces=item.predecessors, stop_first=stop_first)
        )
        for dyno, reason in zip(item.predecessors, item.reasons, strict=True):
            # Nothing serves from a down host, so its stop need not wait for anything.
            out.stop(dyno, reason, None if reason is StopReason.HOST_DOWN else new)
    for index in group.fresh:
        placed = place(index, ())
        if placed is None:
            _unplaceable(group, index, None, capacity, out)
        else:
            out.starts.append(Start(dyno=placed[0], reason=StartReason.SCALE_UP))
    capacity.include_all()


def _unplaceable(
    group: _Group,
    index: int,
    replacement: _Replacement | None,
    capacity: _Capacity,
    out: _Builder,
) -> None:
    """Record a dyno that fits nowhere; its running predecessors stay, lost ones go."""
    kept: list[Dyno] = []
    if replacement is not None:
        for dyno, why in zip(replacement.predecessors, replacement.reasons, strict=True):
            if why is StopReason.HOST_DOWN:
                out.stop(dyno, why)
            else:
                kept.append(dyno)
    size = group.spec.size
    if not capacity.any_up:
        reason, detail = UnplaceableReason.NO_UP_HOSTS, "No host is up."
    else:
        largest = capacity.largest_free()
        most = (
            "every up host is at its dyno limit"
            if largest is None
            else f"the most free memory on an up host is {largest} MB"
        )
        reason = UnplaceableReason.NO_CAPACITY
        detail = f"No up host has room for a {size.name} dyno ({size.memory_mb} MB); {most}."
    out.unplaceable.append(
        Unplaceable(
            app=group.key[0],
            release=group.release,
            process_type=group.key[1],
            index=index,
            size=size,
            reason=reason,
            detail=detail,
            kept=tuple(kept),
        )
    )


class _Builder:
    def __init__(self) -> None:
        self.starts: list[Start] = []
        self.stops: list[Stop] = []
        self.unplaceable: list[Unplaceable] = []

    def stop(self, dyno: Dyno, reason: StopReason, replacement: Dyno | None = None) -> None:
        self.stops.append(Stop(dyno=dyno, reason=reason, replacement=replacement))

    def plan(self) -> Plan:
        # Decisions come out in placement order (largest groups first); sorting by
        # app, type and name makes the plan read like `slipway ps` and keeps it stable.
        return Plan(
            starts=tuple(sorted(self.starts, key=lambda start: _dyno_order(start.dyno))),
            stops=tuple(sorted(self.stops, key=lambda stop: _dyno_order(stop.dyno))),
            unplaceable=tuple(
                sorted(self.unplaceable, key=lambda u: (u.app, u.process_type, u.index))
            ),
        )


def _dyno_order(dyno: Dyno) -> tuple[str, str, int, str, int, int, str]:
    """A total order on dynos, so that no decision depends on the input's order."""
    return (
        dyno.app,
        dyno.process_type,
        dyno.index,
        dyno.host_id,
        dyno.release,
        dyno.size.memory_mb,
        dyno.size.name,
    )
