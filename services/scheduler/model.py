"""The values placement reads and writes: hosts, dynos, the desired formation and the plan.

Plain frozen msgspec Structs with no behaviour beyond naming, so the same values can
later be stored by the scheduler and sent over the bus without a translation layer.
The ones a plan makes by the hundred thousand are `gc=False`: they hold only strings,
ints and other frozen values, so they can never be part of a reference cycle, and
the garbage collector need not walk them (a large plan is about a fifth faster).
Sizes are `contracts.gateway.DynoSize`, the table the gateway validates formations
against, so a dyno carries the limits it was placed with.
"""

from __future__ import annotations

import enum

import msgspec

from slipway.contracts.gateway import DynoSize


class HostState(enum.StrEnum):
    """Whether a host takes new dynos (up), sheds them (draining) or has lost them (down)."""

    UP = "up"
    DRAINING = "draining"
    DOWN = "down"


class Host(msgspec.Struct, frozen=True, kw_only=True):
    """One Docker engine and what it can hold.

    `cpu_shares` and `max_dynos` are optional hard limits (None: unlimited); memory is
    always one. `labels` are carried for operators and future placement constraints;
    placement ignores them today.
    """

    id: str
    memory_mb: int
    cpu_shares: int | None = None
    max_dynos: int | None = None
    state: HostState = HostState.UP
    labels: dict[str, str] = {}


class Dyno(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One container of one process type of one release of one app, on one host."""

    app: str  # the app's id: names can change, ids cannot
    release: int  # the release version (v12 → 12)
    process_type: str
    index: int  # web.1 → 1
    size: DynoSize
    host_id: str

    @property
    def name(self) -> str:
        """The name customers see, Heroku style: `web.1`."""
        return f"{self.process_type}.{self.index}"


class ProcessSpec(msgspec.Struct, frozen=True, kw_only=True):
    """How many dynos of one process type should run, and how big."""

    quantity: int
    size: DynoSize


class DesiredFormation(msgspec.Struct, frozen=True, kw_only=True):
    """Everything one app should be running: one release, a spec per process type."""

    app: str
    release: int
    processes: dict[str, ProcessSpec]
    # Hosts that refused to start this app's dynos lately (starts.py): its new dynos go
    # elsewhere while another host has room, and back to one of these only when none has.
    avoid: frozenset[str] = frozenset()


class ClusterState(msgspec.Struct, frozen=True, kw_only=True):
    """The hosts and the dynos the scheduler believes are placed on them."""

    hosts: tuple[Host, ...]
    dynos: tuple[Dyno, ...] = ()


class StartReason(enum.StrEnum):
    SCALE_UP = "scale-up"  # the formation asks for a dyno nothing else stands for
    NEW_RELEASE = "new-release"  # replaces the same-named dyno of another release
    RESIZE = "resize"  # replaces the same-named dyno of another size
    HOST_DRAINING = "host-draining"  # replaces the same-named dyno on a draining host
    HOST_DOWN = "host-down"  # replaces the same-named dyno lost with a down host


class StopReason(enum.StrEnum):
    SCALE_DOWN = "scale-down"
    NEW_RELEASE = "new-release"
    RESIZE = "resize"
    HOST_DRAINING = "host-draining"
    HOST_DOWN = "host-down"  # bookkeeping: the container is removed when the host returns
    DUPLICATE = "duplicate"  # a second dyno of the same name, release and size
    PROCESS_TYPE_REMOVED = "process-type-removed"
    APP_REMOVED = "app-removed"


class UnplaceableReason(enum.StrEnum):
    NO_UP_HOSTS = "no-up-hosts"
    NO_CAPACITY = "no-capacity"


class Start(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Start `dyno` (its `host_id` says where), standing in for `replaces` (stopped in the plan)."""

    dyno: Dyno
    reason: StartReason
    replaces: tuple[Dyno, ...] = ()
    # No host has room beside the predecessors: stop them first, then start this one.
    stop_first: bool = False


class Stop(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Stop `dyno`; when `replacement` is set, only after that dyno is running (and healthy)."""

    dyno: Dyno
    reason: StopReason
    replacement: Dyno | None = None


class Unplaceable(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """A dyno the formation wants that fits on no eligible host; `kept` keep running instead."""

    app: str
    release: int
    process_type: str
    index: int
    size: DynoSize
    reason: UnplaceableReason
    detail: str
    kept: tuple[Dyno, ...] = ()

    @property
    def name(self) -> str:
        return f"{self.process_type}.{self.index}"


class Plan(msgspec.Struct, frozen=True, kw_only=True):
    """What to change so the cluster matches the desired formations.

    The plan states an end state, not an order. A stop with a `replacement` must wait
    for it (start-new then stop-old); how many such pairs run at once, and the health
    checks between them, are the executor's business (rolling deploys, issue 5).
    Capacity holds while both a replacement and its predecessor run; where no host has
    that headroom, the replacement takes the predecessor's room and says `stop_first`.
    """

    starts: tuple[Start, ...] = ()
    stops: tuple[Stop, ...] = ()
    unplaceable: tuple[Unplaceable, ...] = ()

    @property
    def has_changes(self) -> bool:
        """Whether anything is to be started or stopped."""
        return bool(self.starts or self.stops)
