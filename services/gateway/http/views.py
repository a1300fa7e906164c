"""What the API answers with: Heroku Platform API v3 resource shapes as msgspec Structs.

Field names follow `heroku-platform-api-schema.json`; fields Heroku has but
Slipway has no use for are answered with their neutral value (false, null, [])
so Heroku tooling finds what it expects. Slipway's additions are marked so.
The OpenAPI document is generated from these very types, so it cannot drift.
"""

from __future__ import annotations

import uuid
from typing import Annotated

import msgspec

from slipway.libs.auditchain import AuditEntry, Checkpoint

Timestamp = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]


def stable_id(kind: str, name: str) -> str:
    """A UUID for a thing without a row (a dyno size, an image digest), the same everywhere."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"slipway:{kind}:{name}"))


GENERATION_ID = stable_id("generation", "cedar")


class View(msgspec.Struct, frozen=True, kw_only=True):
    """Root of the response shapes."""


class NamedRef(View, frozen=True, kw_only=True):
    id: str
    name: str


class UserRef(View, frozen=True, kw_only=True):
    id: str | None  # None for a release the platform made without a user
    email: str


class Account(View, frozen=True, kw_only=True):
    """GET /account, and a user created by a platform admin."""

    id: str
    email: str
    name: str | None
    created_at: Timestamp
    updated_at: Timestamp
    last_login: Timestamp | None = None
    allow_tracking: bool = False
    beta: bool = False
    verified: bool = True
    federated: bool = False
    two_factor_authentication: bool = False
    default_team: NamedRef | None
    default_organization: NamedRef | None
    suspended_at: Timestamp | None = None
    delinquent_at: Timestamp | None = None
    sms_number: str | None = None
    country_of_residence: str | None = None
    identity_provider: None = None
    # Slipway: may create, invite and disable users (POST /users, /users/{user}/invitations).
    platform_admin: bool = False


class AccessToken(View, frozen=True, kw_only=True):
    id: str
    # The secret is shown once, in the answer to the request that created it.
    token: str | None
    expires_in: int | None


class AuthorizationUser(View, frozen=True, kw_only=True):
    id: str
    email: str
    full_name: str | None


class OAuthAuthorization(View, frozen=True, kw_only=True):
    id: str
    description: str
    scope: list[str]
    created_at: Timestamp
    updated_at: Timestamp
    access_token: AccessToken
    refresh_token: None = None
    client: None = None
    grant: None = None
    session: None = None
    user: AuthorizationUser


class Team(View, frozen=True, kw_only=True):
    id: str
    name: str
    role: str | None
    type: str = "team"
    default: bool
    created_at: Timestamp
    updated_at: Timestamp
    membership_limit: int | None = None
    credit_card_collections: bool = False
    provisioned_licenses: bool = False
    enterprise_account: None = None
    identity_provider: None = None
    # Slipway: set once the team's key was destroyed; its encrypted data is gone for good.
    shredded_at: Timestamp | None = None


class MemberUser(View, frozen=True, kw_only=True):
    id: str
    email: str
    name: str | None


class TeamMember(View, frozen=True, kw_only=True):
    id: str
    email: str
    role: str
    federated: bool = False
    two_factor_authentication: bool = False
    identity_provider: None = None
    created_at: Timestamp
    updated_at: Timestamp
    user: MemberUser


class App(View, frozen=True, kw_only=True):
    id: str
    name: str
    created_at: Timestamp
    updated_at: Timestamp
    released_at: Timestamp | None
    maintenance: bool
    git_url: str
    web_url: str
    owner: UserRef
    team: NamedRef
    organization: NamedRef
    region: NamedRef
    stack: NamedRef
    build_stack: NamedRef
    acm: bool = False
    archived_at: Timestamp | None = None
    buildpack_provided_description: str | None = None
    internal_routing: bool | None = None
    repo_size: int | None = None
    slug_size: int | None = None
    space: None = None
    # Heroku's platform generations: "cedar" runs classic buildpacks on dynos, as Slipway does.
    generation: NamedRef = NamedRef(id=GENERATION_ID, name="cedar")


class SlugRef(View, frozen=True, kw_only=True):
    id: str


class Artifact(View, frozen=True, kw_only=True):
    type: str
    id: str


class Image(View, frozen=True, kw_only=True):
    """Slipway: the OCI image a release runs."""

    ref: str
    digest: str


class AppRef(View, frozen=True, kw_only=True):
    id: str
    name: str


class Release(View, frozen=True, kw_only=True):
    id: str
    version: int
    description: str
    status: str
    current: bool
    eligible_for_rollback: bool
    created_at: Timestamp
    updated_at: Timestamp
    app: AppRef
    user: UserRef
    slug: SlugRef | None
    artifacts: list[Artifact]
    addon_plan_names: list[str] = []
    output_stream_url: str | None = None
    # Slipway: what the scheduler runs for this release.
    image: Image | None
    process_types: dict[str, str]


class DynoSizeRef(View, frozen=True, kw_only=True):
    id: str
    name: str


class Formation(View, frozen=True, kw_only=True):
    id: str
    type: str
    quantity: int
    size: str
    dyno_size: DynoSizeRef
    command: str
    app: AppRef
    created_at: Timestamp
    updated_at: Timestamp


class AuditRecord(AuditEntry, frozen=True, kw_only=True):
    """An audit entry as stored in the chain, with its chain hash h_seq (hex)."""

    hash: str


class AuditLog(View, frozen=True, kw_only=True):
    """Slipway: a team's audit chain (or an app's entries in it) and its signed checkpoints."""

    team: NamedRef
    app: AppRef | None = None
    entries: list[AuditRecord]
    checkpoints: list[Checkpoint]
    complete: bool  # true when `entries` is the whole chain, so it can be verified alone


class AuditKey(View, frozen=True, kw_only=True):
    """Slipway: an Ed25519 public key that signs audit checkpoints (hex)."""

    key_id: str
    algorithm: str = "ed25519"
    public_key: str
    # When it first signed, and when the next key took over (null: still in use).
    valid_from: Timestamp | None = None
    valid_until: Timestamp | None = None


class KeyRotation(View, frozen=True, kw_only=True):
    """Slipway: the team's key-encryption key after a rotation."""

    team: NamedRef
    kek_version: int


# ---- builds and sources (services/gateway/git/builds.py, sources.py) ---------------------------


class SourceUrls(View, frozen=True, kw_only=True):
    get_url: str
    put_url: str


class Source(View, frozen=True, kw_only=True):
    """POST /sources: where to upload a tarball, and where a build fetches it."""

    source_blob: SourceUrls


class BuildSourceBlob(View, frozen=True, kw_only=True):
    url: str
    checksum: str | None = None
    version: str | None = None
    version_description: str | None = None


class BuildpackRef(View, frozen=True, kw_only=True):
    url: str
    name: str | None = None


class ReleaseRef(View, frozen=True, kw_only=True):
    id: str
    version: int  # Slipway: Heroku sends the id only; the version saves a request


class AppIdRef(View, frozen=True, kw_only=True):
    id: str


class Build(View, frozen=True, kw_only=True):
    id: str
    app: AppIdRef
    buildpacks: list[BuildpackRef] | None
    created_at: Timestamp
    updated_at: Timestamp
    output_stream_url: str
    source_blob: BuildSourceBlob
    release: ReleaseRef | None
    slug: SlugRef | None = None
    stack: str
    generation: str = "cedar"  # see App.generation
    status: str
    user: UserRef
    # Slipway: a one-line reason when the build failed.
    error: str | None = None


class MetricPoint(View, frozen=True, kw_only=True):
    """Slipway: one step of an app's metric series (GET /apps/{app}/metrics/series).

    null where nothing was measured: CPU and memory when no dyno was sampled in the step
    (CPU in % of one CPU and memory in MB, each dyno's mean over the step, summed over the
    app's dynos); requests and status counts before the app existed; percentiles (the
    upper bound of the histogram bucket holding them, about 9% wide) when no request came.
    """

    at: int  # the step's start, unix seconds
    cpu_percent: float | None
    memory_mb: float | None
    memory_quota_mb: float | None
    requests: int | None
    status_2xx: int | None
    status_3xx: int | None
    status_4xx: int | None
    status_5xx: int | None
    p50_ms: float | None
    p95_ms: float | None


class MetricSeries(View, frozen=True, kw_only=True):
    """Slipway: an app's metrics over a period, one point per step, oldest first."""

    period: str  # "1h" (60 points of 60 s) or "24h" (288 points of 300 s)
    step: int
    points: list[MetricPoint]
