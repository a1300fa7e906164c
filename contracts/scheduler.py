"""The scheduler's facts about dynos, the labels it puts on containers, and its read API.

Every change of a dyno's state is published as `DYNO_CHANGED` (stream EVT):
network-wirer keeps the router's upstreams equal to the `up` web dynos,
log-shipper writes `heroku[web.1]: State changed from starting to up` lines.
`DYNOS_LIST` answers the current picture, so both can reconcile after a missed
event or their own restart.

Containers carry the `LABEL_*` labels below; a service that finds containers on
an engine (log-shipper following logs, the scheduler adopting after a restart)
reads them and nothing else.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from slipway.contracts import subjects
from slipway.contracts.base import Event, EventSpec, Message, Rpc, only
from slipway.contracts.subjects import OPERATOR, Service

DynoState = Literal["starting", "up", "crashed", "down"]

LABEL_PREFIX = "org.slipway"
# On every container and app network Slipway owns: its scope's `Scope.managed` ("true" in
# the default scope), so an installation filters exactly its own (contracts/scope.py).
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"
LABEL_APP = f"{LABEL_PREFIX}.app"  # the app's id
LABEL_APP_NAME = f"{LABEL_PREFIX}.app-name"
LABEL_TEAM = f"{LABEL_PREFIX}.team"
LABEL_RELEASE = f"{LABEL_PREFIX}.release"  # the release version, "7"
LABEL_TYPE = f"{LABEL_PREFIX}.process-type"  # "web", "worker", "run" for one-offs
LABEL_DYNO = f"{LABEL_PREFIX}.dyno"  # "web.1", "run.4821"
LABEL_HOST = f"{LABEL_PREFIX}.host"  # the host id the scheduler placed it on


class Dyno(msgspec.Struct, frozen=True, kw_only=True):
    """One dyno as the scheduler sees it."""

    app_id: str
    app_name: str
    team_id: str
    name: str  # "web.1"
    process_type: str
    release_version: int
    state: DynoState
    host_id: str
    container_id: str | None = None
    # Where the router reaches a web dyno: the host's private address and the published port.
    address: str | None = None
    port: int | None = None
    # The dyno's own address on its app network and its $PORT: reachable from its host
    # only. A router on that host dials it there, skipping the published port's NAT or
    # userland proxy (a third of the router's cost per request on loopback).
    private_address: str | None = None
    private_port: int | None = None
    size: str = "standard-1x"
    command: str = ""
    restart_count: int = 0
    one_off: bool = False
    updated_at: float = 0.0


class DynoChanged(Event, tag="dyno.changed.v1", frozen=True, kw_only=True):
    dyno: Dyno
    previous_state: DynoState | None = None
    # Heroku-style reason: "Process exited with status 1", "Error R10 (Boot timeout)", "Scaled down"
    # (several lines, newline-separated, when Heroku says several: R15, SIGKILL, exit status)
    reason: str = ""


class ListDynos(Message, tag="scheduler.dynos.list.v1", frozen=True, kw_only=True):
    app_id: str | None = None  # None: every app
    web_only: bool = False


class DynoList(Message, tag="scheduler.dynos.v1", frozen=True, kw_only=True):
    dynos: list[Dyno]


DYNO_CHANGED: EventSpec[DynoChanged] = EventSpec(
    subjects.evt("dyno", "changed"), DynoChanged, publishers=only(Service.SCHEDULER)
)
DYNOS_LIST: Rpc[ListDynos, DynoList] = Rpc(
    Service.SCHEDULER,
    "dynos.list",
    subjects.rpc(Service.SCHEDULER, "dynos.list"),
    ListDynos,
    DynoList,
    callers=only(Service.GATEWAY, Service.NETWORK_WIRER, Service.LOG_SHIPPER),
)


# ---- additions for the scheduler service (issue 5) ---------------------------------------

LABEL_SIZE = f"{LABEL_PREFIX}.size"  # the dyno size's name, "standard-1x"

HostState = Literal["up", "draining", "down"]
DeployStatus = Literal["succeeded", "failed"]


class HostInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One Docker engine in the scheduler's registry."""

    id: str
    endpoint: str  # "unix:///var/run/docker.sock" or "tcp://10.0.0.5:2376"
    address: str  # the private address ports are published on
    memory_mb: int
    max_dynos: int | None = None
    state: HostState = "up"
    dynos: int = 0
    last_seen: float = 0.0


class AddHost(Message, tag="scheduler.hosts.add.v1", frozen=True, kw_only=True):
    """Register an engine; TLS files are paths on the scheduler's machine (never the keys)."""

    id: str
    endpoint: str
    address: str = "127.0.0.1"
    memory_mb: int | None = None  # None: what the engine reports
    max_dynos: int | None = None
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


class ListHosts(Message, tag="scheduler.hosts.list.v1", frozen=True, kw_only=True):
    pass


class HostList(Message, tag="scheduler.hosts.v1", frozen=True, kw_only=True):
    hosts: list[HostInfo]


class HostRef(Message, tag="scheduler.hosts.ref.v1", frozen=True, kw_only=True):
    """Drain or remove one host; removing needs it empty (drain first) unless `force`."""

    id: str
    force: bool = False


class HostAnswer(Message, tag="scheduler.host.v1", frozen=True, kw_only=True):
    host: HostInfo


class RestartDynos(Message, tag="scheduler.dynos.restart.v1", frozen=True, kw_only=True):
    """Restart every dyno of the app, one process type ("web") or one dyno ("web.1")."""

    app_id: str
    target: str | None = None


class StopDyno(Message, tag="scheduler.dynos.stop.v1", frozen=True, kw_only=True):
    """Stop one dyno or a process type; the formation brings it back at the next change."""

    app_id: str
    target: str


class DeployFinished(Event, tag="deploy.finished.v1", frozen=True, kw_only=True):
    """A release reached all its dynos, or did not: then the previous one keeps serving."""

    app_id: str
    app_name: str
    team_id: str
    release_version: int
    status: DeployStatus
    phase: Literal["release", "boot", "done"] = "done"
    reason: str = ""


DEPLOY_FINISHED: EventSpec[DeployFinished] = EventSpec(
    subjects.evt("deploy", "finished"), DeployFinished, publishers=only(Service.SCHEDULER)
)
HOSTS_ADD: Rpc[AddHost, HostAnswer] = Rpc(
    Service.SCHEDULER,
    "hosts.add",
    subjects.rpc(Service.SCHEDULER, "hosts.add"),
    AddHost,
    HostAnswer,
    callers=only(Service.GATEWAY, OPERATOR),
)
HOSTS_LIST: Rpc[ListHosts, HostList] = Rpc(
    Service.SCHEDULER,
    "hosts.list",
    subjects.rpc(Service.SCHEDULER, "hosts.list"),
    ListHosts,
    HostList,
    callers=only(Service.GATEWAY, Service.MONITOR, OPERATOR),
)
HOSTS_DRAIN: Rpc[HostRef, HostAnswer] = Rpc(
    Service.SCHEDULER,
    "hosts.drain",
    subjects.rpc(Service.SCHEDULER, "hosts.drain"),
    HostRef,
    HostAnswer,
    callers=only(Service.GATEWAY, OPERATOR),
)
HOSTS_REMOVE: Rpc[HostRef, HostAnswer] = Rpc(
    Service.SCHEDULER,
    "hosts.remove",
    subjects.rpc(Service.SCHEDULER, "hosts.remove"),
    HostRef,
    HostAnswer,
    callers=only(Service.GATEWAY, OPERATOR),
)
DYNOS_RESTART: Rpc[RestartDynos, DynoList] = Rpc(
    Service.SCHEDULER,
    "dynos.restart",
    subjects.rpc(Service.SCHEDULER, "dynos.restart"),
    RestartDynos,
    DynoList,
    callers=only(Service.GATEWAY),
)
DYNOS_STOP: Rpc[StopDyno, DynoList] = Rpc(
    Service.SCHEDULER,
    "dynos.stop",
    subjects.rpc(Service.SCHEDULER, "dynos.stop"),
    StopDyno,
    DynoList,
    callers=only(Service.GATEWAY),
)


# ---- memory quota errors (issue 20) -------------------------------------------------------

# A dyno's quota is its size's memory (`DynoSize.memory_mb`): the container gets it as its
# memory reservation, and a hard limit this many times larger (Heroku restarts a dyno at
# twice its quota), so it can go over its quota (R14) before the kernel kills it (R15).
MEMORY_HARD_LIMIT_FACTOR = 2
# Heroku's words, said as `heroku[<dyno>]` lines: R14 by the log-shipper, which samples the
# dyno's memory; R15 by the scheduler, which sees the container die killed by the kernel.
R14_TEXT = "Error R14 (Memory quota exceeded)"
R15_TEXT = "Error R15 (Memory quota vastly exceeded)"
