"""The builder's contracts: the build command, its live output and its outcome.

The gateway turns a `git push` or a `POST /apps/{app}/builds` into `BUILD_REQUEST`
(stream CMD; any of several builders takes it). The builder fetches the source
from `source.url` (checked against `source.checksum`), streams output on
`subjects.live("build", build_id)` as `BuildOutput` chunks ending with one whose
`final` is set, sends `gateway.RELEASE_CREATE` on success, and records the
outcome as `BUILD_FINISHED`.

Images the builder makes from buildpacks have `ENTRYPOINT [LAUNCHER]`: the
launcher sources `/app/.profile.d/*.sh`, then runs its one argument with
`bash -c`, so the scheduler starts a process type with `Cmd = [command]`. An
image from a Dockerfile keeps its own entrypoint; with no Procfile its one
process type, `web`, has an empty command, meaning the image's own `CMD`.

Output is live only (core NATS): a client that wants all of it subscribes before
the command is sent. The builder also keeps the whole output, readable with
`BUILD_OUTPUT_GET` while the build is recent.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from slipway.contracts import subjects
from slipway.contracts.base import (
    Command,
    CommandSpec,
    Event,
    EventSpec,
    LiveSpec,
    Message,
    Ok,
    Rpc,
    only,
)
from slipway.contracts.subjects import Service

LAUNCHER = "/usr/local/bin/slipway-launch"

BuildStatus = Literal["pending", "succeeded", "failed"]


class SourceBlob(msgspec.Struct, frozen=True, kw_only=True):
    """Where the builder fetches a gzipped tarball of the source (Heroku's `source_blob`)."""

    url: str
    checksum: str | None = None  # "SHA256:<hex>", Heroku's spelling
    version: str | None = None  # the commit, for git pushes
    # True only for the gateway's own signed get_url (POST /sources, git pushes): the builder
    # then fetches it from its configured gateway, without redirects. A customer's URL is
    # False and passes the egress guard (libs/egress.py), which refuses the gateway's address.
    platform: bool = False


class BuildRequested(Command, tag="build.requested.v1", frozen=True, kw_only=True):
    build_id: str
    app_id: str
    app_name: str
    team_id: str
    source: SourceBlob
    # Buildpack URLs or names ("python", "nodejs", "static", a git URL, a local path), in order;
    # empty means detect among the built-in ones.
    buildpacks: list[str] = []
    stack: str = "bookworm"
    actor: str


class BuildOutput(Message, tag="build.output.v1", frozen=True, kw_only=True):
    """One chunk of a build's output (whole lines); `final` closes the stream."""

    build_id: str
    seq: int
    text: str = ""
    final: bool = False
    status: BuildStatus = "pending"


class BuildFinished(Event, tag="build.finished.v1", frozen=True, kw_only=True):
    build_id: str
    app_id: str
    app_name: str
    team_id: str
    status: BuildStatus
    image_ref: str | None = None
    image_digest: str | None = None
    process_types: dict[str, str] = {}
    error: str | None = None  # a one-line reason when failed
    duration_s: float = 0.0
    builder: str = ""  # the instance that ran it (its bus name), which holds its output


class GetBuildOutput(Message, tag="builder.output.get.v1", frozen=True, kw_only=True):
    build_id: str


class BuildOutputText(Message, tag="builder.output.v1", frozen=True, kw_only=True):
    build_id: str
    text: str
    finished: bool
    status: BuildStatus


class PurgeCache(Message, tag="builder.cache.purge.v1", frozen=True, kw_only=True):
    app_id: str
    team_id: str


BUILD_REQUEST: CommandSpec[BuildRequested] = CommandSpec(
    Service.BUILDER,
    "build",
    subjects.cmd(Service.BUILDER, "build"),
    BuildRequested,
    senders=only(Service.GATEWAY),
)
BUILD_FINISHED: EventSpec[BuildFinished] = EventSpec(
    subjects.evt("build", "finished"), BuildFinished, publishers=only(Service.BUILDER)
)
# Both are asked of every builder (fan-out): a build's output is kept by the builder that
# ran it, and each builder's engine holds its own caches. A builder that did not run the
# build answers NotFound at once, so the caller's gather settles quickly either way.
BUILD_OUTPUT_GET: Rpc[GetBuildOutput, BuildOutputText] = Rpc(
    Service.BUILDER,
    "output.get",
    subjects.rpc(Service.BUILDER, "output.get"),
    GetBuildOutput,
    BuildOutputText,
    fanout=True,
    callers=only(Service.GATEWAY),
)
CACHE_PURGE: Rpc[PurgeCache, Ok] = Rpc(
    Service.BUILDER,
    "cache.purge",
    subjects.rpc(Service.BUILDER, "cache.purge"),
    PurgeCache,
    Ok,
    fanout=True,
    callers=only(Service.GATEWAY),
)


BUILD_OUTPUT = LiveSpec("build", writers=only(Service.BUILDER), readers=only(Service.GATEWAY))


def output_subject(build_id: str) -> str:
    """The live subject a build's output is published on."""
    return BUILD_OUTPUT.subject(build_id)
