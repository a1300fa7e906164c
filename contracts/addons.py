"""Add-ons (PostgreSQL): their plans, the facts the gateway and the scheduler exchange, labels.

The gateway owns the add-on records and the customer's password (sealed like config
vars). The flow:

    gateway   ADDON_CREATED    (state provisioning)  ->  scheduler runs the database,
    scheduler ADDON_CREDENTIALS_GET (rpc)            <-  asks for the role's SCRAM verifier,
    scheduler ADDON_CHANGED    (provisioned)         ->  gateway sets DATABASE_URL (a release)
    gateway   ADDON_DESTROYED                        ->  scheduler removes container and volume,
    scheduler ADDON_CHANGED    (deprovisioned)       ->  gateway forgets the record

Only a SCRAM-SHA-256 verifier of the password ever leaves the gateway, over request/reply
(never persisted in a stream): it lets PostgreSQL check a login but not log in.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from slipway.contracts import subjects
from slipway.contracts.base import Event, EventSpec, Message, Ok, Rpc, only
from slipway.contracts.scheduler import LABEL_PREFIX
from slipway.contracts.subjects import Service

# On an add-on's container and volume, next to LABEL_MANAGED / LABEL_APP / LABEL_TEAM.
LABEL_ADDON = f"{LABEL_PREFIX}.addon"  # the add-on's id
LABEL_ADDON_NAME = f"{LABEL_PREFIX}.addon-name"
LABEL_PLAN = f"{LABEL_PREFIX}.plan"

# The `postgres` user of addons/postgresql/Dockerfile: the socket folder's tmpfs is its.
POSTGRES_UID = 999
POSTGRES_PORT = 5432

AddonState = Literal["provisioning", "provisioned", "deprovisioned"]
# What the scheduler reports; "failed" leaves the record for the customer to destroy.
AddonOutcome = Literal["provisioned", "failed", "deprovisioned"]


class AddonPlan(msgspec.Struct, frozen=True, kw_only=True):
    """What a database of one plan may use: the scheduler turns this into limits and settings."""

    name: str  # "postgresql:standard"
    service: str  # "postgresql"
    description: str
    memory_mb: int
    max_connections: int
    shared_buffers_mb: int
    pids_limit: int
    storage_gb: int  # a guide, not enforced: Docker volumes on the default driver have no quota
    price_cents: int = 0
    # Base backup retention (services/backup/retention.py): the newest backup of each of
    # the last `keep_daily` days that have one, of the last `keep_weekly` ISO weeks, of the
    # last `keep_monthly` months; the WAL from the oldest kept backup on stays with them.
    keep_daily: int = 7
    keep_weekly: int = 4
    keep_monthly: int = 0


ADDON_PLANS: dict[str, AddonPlan] = {
    plan.name: plan
    for plan in (
        AddonPlan(
            name="postgresql:mini",
            service="postgresql",
            description="PostgreSQL Mini: 256 MB RAM, 20 connections",
            memory_mb=256,
            max_connections=20,
            shared_buffers_mb=32,
            pids_limit=64,
            storage_gb=1,
            keep_daily=2,
            keep_weekly=0,
        ),
        AddonPlan(
            name="postgresql:standard",
            service="postgresql",
            description="PostgreSQL Standard: 1 GB RAM, 120 connections",
            memory_mb=1024,
            max_connections=120,
            shared_buffers_mb=256,
            pids_limit=256,
            storage_gb=64,
            keep_daily=7,
            keep_weekly=4,
        ),
        AddonPlan(
            name="postgresql:premium",
            service="postgresql",
            description="PostgreSQL Premium: 4 GB RAM, 400 connections",
            memory_mb=4096,
            max_connections=400,
            shared_buffers_mb=1024,
            pids_limit=512,
            storage_gb=256,
            keep_daily=7,
            keep_weekly=12,
            keep_monthly=12,
        ),
    )
}
ADDON_SERVICES = ("postgresql",)


class RestoreFrom(msgspec.Struct, frozen=True, kw_only=True):
    """Where a restored database comes from: a backup of another add-on (contracts/backup.py)."""

    source_addon_id: str
    num: int = 0  # the base backup; 0: the latest one that ends before `to_time`
    to_time: str = ""  # ISO 8601 point in time; "": everything archived


class AddonDesired(msgspec.Struct, frozen=True, kw_only=True):
    """One add-on as the scheduler runs it: no secret in here."""

    addon_id: str
    addon_name: str  # "postgresql-amber-4821": also the database's host name on the app network
    app_id: str
    app_name: str
    team_id: str
    plan: str
    database: str
    user: str
    restore: RestoreFrom | None = None  # a new database made from a backup


class AddonCreated(Event, tag="addon.created.v1", frozen=True, kw_only=True):
    addon: AddonDesired
    actor: str


class AddonDestroyed(Event, tag="addon.destroyed.v1", frozen=True, kw_only=True):
    addon: AddonDesired
    actor: str


class AddonChanged(Event, tag="addon.changed.v1", frozen=True, kw_only=True):
    """The scheduler's answer to a create or destroy."""

    addon_id: str
    app_id: str
    state: AddonOutcome
    host_id: str = ""
    reason: str = ""


class GetAddonCredentials(
    Message, tag="gateway.addon.credentials.get.v1", frozen=True, kw_only=True
):
    addon_id: str
    app_id: str


class AddonCredentials(Message, tag="gateway.addon.credentials.v1", frozen=True, kw_only=True):
    user: str
    # "SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>", what pg_authid stores.
    verifier: str


class GetDatabaseInfo(Message, tag="scheduler.addon.info.get.v1", frozen=True, kw_only=True):
    addon_id: str
    app_id: str
    database: str  # the customer's database in it, which the query runs in


class DatabaseInfo(Message, tag="scheduler.addon.info.v1", frozen=True, kw_only=True):
    """What `pg:info` shows, read by one query inside the database's container."""

    running: bool
    host_id: str = ""
    version: str = ""
    size_bytes: int = 0
    connections: int = 0
    max_connections: int = 0
    tables: int = 0


ADDON_CREATED: EventSpec[AddonCreated] = EventSpec(
    subjects.evt("addon", "created"), AddonCreated, publishers=only(Service.GATEWAY)
)
ADDON_DESTROYED: EventSpec[AddonDestroyed] = EventSpec(
    subjects.evt("addon", "destroyed"), AddonDestroyed, publishers=only(Service.GATEWAY)
)
ADDON_CHANGED: EventSpec[AddonChanged] = EventSpec(
    subjects.evt("addon", "changed"), AddonChanged, publishers=only(Service.SCHEDULER)
)
ADDON_CREDENTIALS_GET: Rpc[GetAddonCredentials, AddonCredentials] = Rpc(
    Service.GATEWAY,
    "addon.credentials.get",
    subjects.rpc(Service.GATEWAY, "addon.credentials.get"),
    GetAddonCredentials,
    AddonCredentials,
    callers=only(Service.SCHEDULER),
)
ADDON_INFO_GET: Rpc[GetDatabaseInfo, DatabaseInfo] = Rpc(
    Service.SCHEDULER,
    "addon.info.get",
    subjects.rpc(Service.SCHEDULER, "addon.info.get"),
    GetDatabaseInfo,
    DatabaseInfo,
    callers=only(Service.GATEWAY),
)


class ApplyAddonCredentials(
    Message, tag="scheduler.addon.credentials.apply.v1", frozen=True, kw_only=True
):
    """Set the role's password in the running database to the gateway's current one
    (`pg:credentials:rotate`): the scheduler asks ADDON_CREDENTIALS_GET for its verifier,
    sets it and ends the role's open sessions, which logged in with the old one."""

    addon_id: str
    app_id: str
    database: str
    user: str


ADDON_CREDENTIALS_APPLY: Rpc[ApplyAddonCredentials, Ok] = Rpc(
    Service.SCHEDULER,
    "addon.credentials.apply",
    subjects.rpc(Service.SCHEDULER, "addon.credentials.apply"),
    ApplyAddonCredentials,
    Ok,
    callers=only(Service.GATEWAY),
)


class ListProvisionedAddons(
    Message, tag="gateway.addons.provisioned.list.v1", frozen=True, kw_only=True
):
    """Every add-on the gateway holds as provisioned: the scheduler asks at its start, so a
    database that is on no host (a platform restored on a fresh machine) comes back."""


class ProvisionedAddon(msgspec.Struct, frozen=True, kw_only=True):
    """One provisioned add-on and the host the scheduler last said it runs on."""

    addon: AddonDesired
    host_id: str = ""


class ProvisionedAddons(Message, tag="gateway.addons.provisioned.v1", frozen=True, kw_only=True):
    addons: list[ProvisionedAddon] = msgspec.field(default_factory=list)


ADDONS_PROVISIONED_LIST: Rpc[ListProvisionedAddons, ProvisionedAddons] = Rpc(
    Service.GATEWAY,
    "addons.provisioned.list",
    subjects.rpc(Service.GATEWAY, "addons.provisioned.list"),
    ListProvisionedAddons,
    ProvisionedAddons,
    callers=only(Service.SCHEDULER),
)
