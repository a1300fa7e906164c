"""The gateway's facts (stream EVT), its one command (stream CMD) and the dyno size table.

Events are written to the gateway's transactional outbox in the same database
transaction as the change they describe, then relayed to JetStream with the
event id as `Nats-Msg-Id`. A consumer may therefore see an event more than once
(after a crash outside JetStream's duplicate window) and must key its work by
`event_id`.

No event ever carries a config value: `ConfigChanged` names the keys and the
config version only; readers fetch values through the gateway's API.

The builder tells the gateway a build produced an image with `RELEASE_CREATE`;
the gateway answers by recording a release and publishing `RELEASE_CREATED`.
"""

from __future__ import annotations

import msgspec

from slipway.contracts import subjects
from slipway.contracts.base import Command, CommandSpec, Event, EventSpec, Message, Rpc, only
from slipway.contracts.subjects import OPERATOR, Service


class DynoSize(msgspec.Struct, frozen=True, kw_only=True):
    """What a dyno of one size may use: the scheduler turns this into container limits."""

    name: str
    memory_mb: int
    cpu_shares: int  # Docker CpuShares: relative weight, 1024 = one full share
    pids_limit: int


# Heroku's names and memory; CPU weight and pids grow with the size.
DYNO_SIZES: dict[str, DynoSize] = {
    size.name: size
    for size in (
        DynoSize(name="eco", memory_mb=512, cpu_shares=256, pids_limit=256),
        DynoSize(name="basic", memory_mb=512, cpu_shares=512, pids_limit=256),
        DynoSize(name="standard-1x", memory_mb=512, cpu_shares=1024, pids_limit=512),
        DynoSize(name="standard-2x", memory_mb=1024, cpu_shares=2048, pids_limit=1024),
        DynoSize(name="performance-m", memory_mb=2560, cpu_shares=4096, pids_limit=4096),
        DynoSize(name="performance-l", memory_mb=14336, cpu_shares=8192, pids_limit=16384),
    )
}
DEFAULT_DYNO_SIZE = "standard-1x"


class ProcessFormation(msgspec.Struct, frozen=True, kw_only=True):
    """The desired count and size of one process type."""

    type: str
    quantity: int
    size: str
    command: str = ""


# ---- apps -------------------------------------------------------------------------------


class AppCreated(Event, tag="app.created.v1", frozen=True, kw_only=True):
    app_id: str
    name: str
    team_id: str
    actor: str


class AppRenamed(Event, tag="app.renamed.v1", frozen=True, kw_only=True):
    app_id: str
    old_name: str
    new_name: str
    team_id: str
    actor: str


class MaintenanceChanged(Event, tag="maintenance.changed.v1", frozen=True, kw_only=True):
    """The router answers a maintenance page while `maintenance` is on."""

    app_id: str
    name: str
    team_id: str
    maintenance: bool
    actor: str


class AppFeatureChanged(Event, tag="app.feature.changed.v1", frozen=True, kw_only=True):
    """An app feature was switched (`hsts`: the router adds Strict-Transport-Security to
    the app's HTTPS answers)."""

    app_id: str
    name: str
    team_id: str
    feature: str
    enabled: bool
    actor: str


class AppDestroyed(Event, tag="app.destroyed.v1", frozen=True, kw_only=True):
    app_id: str
    name: str
    team_id: str
    actor: str


# ---- config, releases, formation --------------------------------------------------------


class ConfigChanged(Event, tag="config.changed.v1", frozen=True, kw_only=True):
    """Keys only, never values: the values live encrypted in the gateway."""

    app_id: str
    app_name: str
    team_id: str
    config_version: str
    keys_set: list[str] = []
    keys_removed: list[str] = []
    release_version: int
    actor: str


class ReleaseCreated(Event, tag="release.created.v1", frozen=True, kw_only=True):
    """A new release exists; the scheduler rolls it out with the app's formation."""

    app_id: str
    app_name: str
    team_id: str
    release_id: str
    version: int
    description: str
    image_ref: str | None = None
    image_digest: str | None = None
    config_version: str | None = None
    process_types: dict[str, str] = {}
    formation: list[ProcessFormation] = []
    rollback_of: int | None = None
    actor: str


class FormationChanged(Event, tag="formation.changed.v1", frozen=True, kw_only=True):
    """The whole desired formation of the app after the change, not only the delta."""

    app_id: str
    app_name: str
    team_id: str
    release_version: int
    formation: list[ProcessFormation]
    actor: str


# ---- teams ------------------------------------------------------------------------------


class TeamCreated(Event, tag="team.created.v1", frozen=True, kw_only=True):
    team_id: str
    name: str
    actor: str


class TeamShredded(Event, tag="team.shredded.v1", frozen=True, kw_only=True):
    """The team's key was destroyed: services drop what they hold for it."""

    team_id: str
    name: str
    actor: str


# ---- the builder's command ----------------------------------------------------------------


class CreateRelease(Command, tag="release.create.v1", frozen=True, kw_only=True):
    """A build produced an image: make it the app's next release (idempotent by command id)."""

    app_id: str
    image_ref: str
    image_digest: str
    process_types: dict[str, str] = {}
    description: str = ""
    build_id: str | None = None
    actor: str = "service:builder"


APP_CREATED: EventSpec[AppCreated] = EventSpec(
    subjects.evt("app", "created"), AppCreated, publishers=only(Service.GATEWAY)
)
APP_RENAMED: EventSpec[AppRenamed] = EventSpec(
    subjects.evt("app", "renamed"), AppRenamed, publishers=only(Service.GATEWAY)
)
MAINTENANCE_CHANGED: EventSpec[MaintenanceChanged] = EventSpec(
    subjects.evt("app", "maintenance.changed"), MaintenanceChanged, publishers=only(Service.GATEWAY)
)
APP_FEATURE_CHANGED: EventSpec[AppFeatureChanged] = EventSpec(
    subjects.evt("app", "feature.changed"), AppFeatureChanged, publishers=only(Service.GATEWAY)
)
APP_DESTROYED: EventSpec[AppDestroyed] = EventSpec(
    subjects.evt("app", "destroyed"), AppDestroyed, publishers=only(Service.GATEWAY)
)
CONFIG_CHANGED: EventSpec[ConfigChanged] = EventSpec(
    subjects.evt("config", "changed"), ConfigChanged, publishers=only(Service.GATEWAY)
)
RELEASE_CREATED: EventSpec[ReleaseCreated] = EventSpec(
    subjects.evt("release", "created"), ReleaseCreated, publishers=only(Service.GATEWAY)
)
FORMATION_CHANGED: EventSpec[FormationChanged] = EventSpec(
    subjects.evt("formation", "changed"), FormationChanged, publishers=only(Service.GATEWAY)
)
TEAM_CREATED: EventSpec[TeamCreated] = EventSpec(
    subjects.evt("team", "created"), TeamCreated, publishers=only(Service.GATEWAY)
)
TEAM_SHREDDED: EventSpec[TeamShredded] = EventSpec(
    subjects.evt("team", "shredded"), TeamShredded, publishers=only(Service.GATEWAY)
)

RELEASE_CREATE: CommandSpec[CreateRelease] = CommandSpec(
    Service.GATEWAY,
    "release.create",
    subjects.cmd(Service.GATEWAY, "release.create"),
    CreateRelease,
    senders=only(Service.BUILDER, OPERATOR),
)


# ---- what other services read from the gateway (RPC) --------------------------------------


class GetSealedConfig(Message, tag="gateway.config.sealed.get.v1", frozen=True, kw_only=True):
    """Asked by the scheduler only: the ciphertext of one config version, never the values."""

    app_id: str
    config_version: str | None = None  # None: the current release's


class SealedConfig(Message, tag="gateway.config.sealed.v1", frozen=True, kw_only=True):
    """Decrypt with `libs.crypto.envelope` (purpose config) and this binding; empty = no vars."""

    app_id: str
    team_id: str
    config_version: str | None
    ciphertext: bytes = b""
    binding_kind: str = "config"
    binding_record: str = ""


class GetDesired(Message, tag="gateway.desired.get.v1", frozen=True, kw_only=True):
    app_id: str | None = None  # None: every app


class AppDesired(msgspec.Struct, frozen=True, kw_only=True):
    """What should run for one app: its current release and formation, and how it is routed."""

    app_id: str
    app_name: str
    team_id: str
    maintenance: bool = False
    release_version: int | None = None
    image_ref: str | None = None
    image_digest: str | None = None
    config_version: str | None = None
    process_types: dict[str, str] = {}
    formation: list[ProcessFormation] = []
    domains: list[str] = []
    hsts: bool = False  # the app feature: Strict-Transport-Security on its HTTPS answers


class DesiredState(Message, tag="gateway.desired.v1", frozen=True, kw_only=True):
    apps: list[AppDesired]


CONFIG_SEALED_GET: Rpc[GetSealedConfig, SealedConfig] = Rpc(
    Service.GATEWAY,
    "config.sealed.get",
    subjects.rpc(Service.GATEWAY, "config.sealed.get"),
    GetSealedConfig,
    SealedConfig,
    callers=only(Service.SCHEDULER, Service.BUILDER),
)
DESIRED_GET: Rpc[GetDesired, DesiredState] = Rpc(
    Service.GATEWAY,
    "desired.get",
    subjects.rpc(Service.GATEWAY, "desired.get"),
    GetDesired,
    DesiredState,
    callers=only(
        Service.SCHEDULER,
        Service.NETWORK_WIRER,
        Service.LOG_SHIPPER,
        Service.BUILDER,
        Service.REGISTRY_PROXY,
        Service.BACKUP,
    ),
)


# ---- log retention (services/gateway/api/logsettings.py; applied by every log-shipper) --------


class LogRetentionChanged(Event, tag="log_retention.changed.v1", frozen=True, kw_only=True):
    """How long the app's stored log history is kept; None: the platform default.

    `revision` grows by one with each change of the app's setting: a log-shipper
    keeps the value of the highest revision it has seen, so a redelivered or
    reordered event never brings an older value back.
    """

    app_id: str
    team_id: str
    retention_days: float | None = None
    revision: int
    actor: str


LOG_RETENTION_CHANGED: EventSpec[LogRetentionChanged] = EventSpec(
    subjects.evt("app", "log_retention.changed"),
    LogRetentionChanged,
    publishers=only(Service.GATEWAY),
)
