"""A build's output as it happens: to the pusher's `remote:` lines and to `output_stream_url`.

Output is live only (core NATS, `output_subject(build_id)`): a follower
subscribes before anything it wants can be published. For a push the gateway
subscribes before it sends the build command, so it misses nothing. A client of
`output_stream_url` may come late: the follower subscribes, asks the builder for
what was produced so far (`BUILD_OUTPUT_GET`), and then skips the live chunks
that text already holds (the chunks delivered before the builder's answer whose
text ends it), so nothing is shown twice; later chunks are ordered by `seq`.

Chunks wait for the reader in a bounded `Backlog` (services/gateway/logs/backlog.py):
a pusher or stream client that reads slowly loses the oldest waiting lines, shown
as `[... N lines dropped]`, and the gateway's memory stays bounded.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
import nats.errors
import structlog
from aiohttp import web
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from slipway.contracts.builder import (
    BUILD_OUTPUT_GET,
    BuildOutput,
    BuildOutputText,
    GetBuildOutput,
    output_subject,
)
from slipway.libs.errors import SlipwayError
from slipway.services.gateway.core.state import GATEWAY, Gateway
from slipway.services.gateway.git import builds, sources
from slipway.services.gateway.git.passthrough import raw
from slipway.services.gateway.http.errors import ErrorBody
from slipway.services.gateway.http.routing import Routes, reply
from slipway.services.gateway.logs.backlog import Backlog, dropped_marker

log = structlog.get_logger("slipway.gateway.buildoutput")

routes = Routes("builds")

_decode = msgspec.json.Decoder(BuildOutput)
POLL = 1.0  # how often a quiet follower checks whether the build ended without a final chunk
IDLE_NOTICE = 10.0  # seconds without a word from any builder before a push is told so


def _chunk_size(chunk: BuildOutput) -> int:
    return len(chunk.text) + 64


@dataclass
class Follower:
    """The live output of one build, from the moment `open` returned."""

    gw: Gateway
    build_id: str
    backlog: Backlog[BuildOutput]
    subscription: Subscription | None = None
    last_seq: int = -1
    status: str = "pending"
    pending: list[BuildOutput] = field(default_factory=list)
    dropped: int = 0

    @classmethod
    async def open(cls, gw: Gateway, build_id: str) -> Follower:
        """Subscribe now: every chunk published after this returns will be seen (or counted)."""
        settings = gw.settings
        backlog: Backlog[BuildOutput] = Backlog(
            settings.live_backlog_lines, settings.live_backlog_bytes, _chunk_size
        )

        async def on_chunk(msg: Msg) -> None:
            backlog.put([_decode.decode(msg.data)])

        follower = cls(gw, build_id, backlog)
        follower.subscription = await gw.bus.nc.subscribe(output_subject(build_id), cb=on_chunk)
        await gw.bus.nc.flush()
        return follower

    async def close(self) -> None:
        if self.subscription is not None:
            with contextlib.suppress(nats.errors.Error):
                await self.subscription.unsubscribe()

    async def _take_queued(self) -> list[BuildOutput]:
        # What arrived and was not read yet: NATS delivers a subscription's messages in the
        # order the server sent them, before it resolves a later reply.
        dropped, taken = self.backlog.take_now()
        self.dropped += dropped
        return sorted(taken, key=lambda chunk: chunk.seq)

    async def catch_up(self) -> str:
        """What the builder produced so far, minus nothing: later chunks skip what it holds."""
        so_far = await builder_output(self.gw, self.build_id)
        queued = await self._take_queued()
        if so_far is None:
            self.pending = queued
            return ""
        # The longest run of queued chunks whose text ends the snapshot was already in it.
        covered = 0
        for end in range(len(queued), 0, -1):
            if so_far.text.endswith("".join(chunk.text for chunk in queued[:end])):
                covered = end
                break
        if covered:
            self.last_seq = queued[covered - 1].seq
        self.pending = queued[covered:]
        if so_far.finished:
            self.status = so_far.status
            self.pending = []
            self.last_seq = max([self.last_seq, *(c.seq for c in queued)])
        return so_far.text

    @property
    def done(self) -> bool:
        return self.status != "pending"

    async def chunks(self, deadline: float, *, idle_notice: str = "") -> AsyncIterator[str]:
        """Each new chunk's text in order, until the final chunk, the build's end or `deadline`.

        `idle_notice` is yielded once if no builder said anything for `IDLE_NOTICE` seconds.
        """
        quiet_since = time.monotonic()
        while not self.done:
            if self.dropped:
                yield dropped_marker(self.dropped) + "\n"
                self.dropped = 0
            for chunk in self.pending:
                for text in self._accept(chunk):
                    yield text
            self.pending = []
            if self.done:
                return
            if time.monotonic() > deadline:
                return
            dropped, chunks = await self.backlog.take(POLL)
            if not chunks:
                await self._check_row()
                idle = time.monotonic() - quiet_since > IDLE_NOTICE
                if idle_notice and self.last_seq < 0 and idle:
                    yield idle_notice
                    idle_notice = ""
                continue
            self.dropped += dropped
            self.pending = sorted(chunks, key=lambda chunk: chunk.seq)

    def _accept(self, chunk: BuildOutput) -> list[str]:
        if chunk.seq <= self.last_seq:
            return []  # a duplicate, or already in the text caught up with
        self.last_seq = chunk.seq
        if chunk.final:
            self.status = chunk.status if chunk.status != "pending" else "failed"
        return [chunk.text] if chunk.text else []

    async def _check_row(self) -> None:
        # A builder that died before its final chunk still ends in BUILD_FINISHED.
        build = await builds.get_build(self.gw.reader, self.build_id)
        if build is not None and build.status != "pending":
            self.status = build.status


async def builder_output(gw: Gateway, build_id: str) -> BuildOutputText | None:
    """What the builder that runs or ran `build_id` holds of its output (None: none does).

    Every builder is asked (each keeps the builds it ran); the others answer NotFound.
    """
    try:
        found = await gw.bus.gather(
            BUILD_OUTPUT_GET, GetBuildOutput(build_id=build_id), timeout=5.0, settle=1.0
        )
    except SlipwayError as exc:
        log.info("build.output_unavailable", build=build_id, error=repr(exc))
        return None
    if not found.replies:
        log.info("build.output_unavailable", build=build_id, errors=len(found.errors))
        return None
    # One builder ran it; were a redelivered build ever run twice, the finished run wins.
    return max(found.replies.values(), key=lambda out: (out.finished, len(out.text)))


@routes.get(
    "/build-streams/{build}",
    summary="A build's output as plain text, as it happens (signed output_stream_url)",
    response=str,
    public=True,
    extension=True,
)
@raw
async def stream(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    build_id = request.match_info["build"]
    sources.check_signature(request, "output", build_id)
    build = await builds.get_build(gw.reader, build_id)
    if build is None:
        return reply(ErrorBody(id="not_found", message="Couldn't find that build."), 404)
    follower = await Follower.open(gw, build_id)
    response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
    await response.prepare(request)
    try:
        text = await follower.catch_up()
        if text:
            await response.write(text.encode())
        if build.status != "pending" and not text:
            await response.write(b"(The output of this build is no longer kept.)\n")
            follower.status = build.status
        deadline = time.monotonic() + gw.settings.build_timeout
        async for text in follower.chunks(deadline):
            await response.write(text.encode())
    finally:
        await follower.close()
    await response.write_eof()
    return response
