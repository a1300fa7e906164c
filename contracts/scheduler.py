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
from slipway.contracts.base import Event, EventSpec, Message, Rpc
from slipway.contracts.subjects import Service

DynoState = Literal["starting", "up", "crashed", "down"]

LABEL_PREFIX = "org.slipway"
LABEL_MANAGED = f"{LABEL_PREFIX}.managed"  # "true" on every container the scheduler owns
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
    size: str = "standard-1x"
    command: str = ""
    restart_count: int = 0
    one_off: bool = False
    updated_at: float = 0.0


class DynoChanged(Event, tag="dyno.changed.v1", frozen=True, kw_only=True):
    dyno: Dyno
    previous_state: DynoState | None = None
    # Heroku-style reason: "Process exited with status 1", "Error R10 (Boot timeout)", "Scaled down"
    reason: str = ""


class ListDynos(Message, tag="scheduler.dynos.list.v1", frozen=True, kw_only=True):
    app_id: str | None = None  # None: every app
    web_only: bool = False


class DynoList(Message, tag="scheduler.dynos.v1", frozen=True, kw_only=True):
    dynos: list[Dyno]


DYNO_CHANGED: EventSpec[DynoChanged] = EventSpec(subjects.evt("dyno", "changed"), DynoChanged)
DYNOS_LIST: Rpc[ListDynos, DynoList] = Rpc(
    Service.SCHEDULER,
    "dynos.list",
    subjects.rpc(Service.SCHEDULER, "dynos.list"),
    ListDynos,
    DynoList,
)
