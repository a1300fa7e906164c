"""One build from command to image: fetch, unpack, compile (or Docker build), publish.

`Builder.handle` is the `BUILD_REQUEST` handler. It is idempotent per build id:
a build already finished is not run again; its outcome is announced again with
the same command and event ids, so a crash between recording and announcing
loses nothing and duplicates nothing. A build left pending by a crash runs
again from the start.

Destroying an app cancels its builds in progress (as Heroku does): `cancel_builds`
cancels their tasks, whose own clean-up removes the build container and scratch
folder; the build ends `failed` ("the app was destroyed"), its live output says so
and no release is sent. A command for an app already destroyed is refused the same
way, without building anything (see `appdata.py`).
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import aiodocker
import structlog

from slipway.contracts.builder import BUILD_FINISHED, BuildFinished, BuildRequested
from slipway.contracts.gateway import RELEASE_CREATE, CreateRelease
from slipway.contracts.keyring import Purpose
from slipway.libs.bus import Bus
from slipway.libs.crypto import Binding, envelope
from slipway.libs.errors import SlipwayError
from slipway.services.builder.buildmetrics import BuildMetrics
from slipway.services.builder.compile import compile_app
from slipway.services.builder.errors import BuildError
from slipway.services.builder.image import build_dockerfile, image_labels, publish
from slipway.services.builder.output import OutputStream
from slipway.services.builder.procfile import read_procfile
from slipway.services.builder.settings import BuilderSettings
from slipway.services.builder.slugimage import build_slug_image
from slipway.services.builder.source import extract, fetch
from slipway.services.builder.store import BuildRecord, BuildStore

log = structlog.get_logger("slipway.builder")

# Ids of what a build sends are derived from its id, so a retry sends the same ones.
_IDS = uuid.UUID("5d1e8c3a-9b0f-4a57-8a51-6a0c2b8f4e11")
# What the build output says of the slug's dependency layer (slugimage.py).
_DEPENDENCY_NOTES = {
    "reused": "       Dependencies unchanged: their layer is reused",
    "built": "       Dependencies in a layer of their own",
}


def derived_id(kind: str, build_id: str) -> str:
    """The command or event id of `kind` for one build."""
    return uuid.uuid5(_IDS, f"{kind}:{build_id}").hex


@dataclass
class Builder:
    """The builder's working parts: settings, bus, engine, store, builds in progress."""

    settings: BuilderSettings
    bus: Bus
    docker: aiodocker.Docker
    store: BuildStore
    running: dict[str, OutputStream] = field(default_factory=dict)
    # build id → (app id, the task running it), for cancelling an app's builds.
    tasks: dict[str, tuple[str, asyncio.Task[BuildRecord]]] = field(default_factory=dict)
    # Apps destroyed (tombstones, kept in memory too so that the check and the start of
    # a build happen with no await between them: a destroy cannot slip in unseen).
    destroyed: set[str] = field(default_factory=set)
    metrics: BuildMetrics | None = None  # None when the service's metrics are off

    async def handle(self, cmd: BuildRequested) -> None:
        """Run the build `cmd` asks for (once), then announce its outcome."""
        record = await self.store.get(cmd.build_id)
        if record is not None and record.finished:
            log.info("build.already_finished", build_id=cmd.build_id, status=record.status)
            await self.announce(cmd, record)
            return
        if cmd.build_id in self.running:
            return  # a redelivery while this very process still runs it
        await self.store.start(cmd.build_id, cmd.app_id, cmd.app_name, cmd.team_id)
        out = OutputStream(
            self.bus,
            cmd.build_id,
            max_lines=self.settings.output_max_lines,
            max_bytes=self.settings.output_max_bytes,
            tail_lines=self.settings.output_tail_lines,
        )
        if cmd.app_id in self.destroyed:
            await self.announce(cmd, await self._cancelled(cmd, out))
            return
        self.running[cmd.build_id] = out
        started = time.monotonic()
        if self.metrics is not None:
            self.metrics.started.inc()
        task = asyncio.ensure_future(self._build_and_record(cmd, out))
        self.tasks[cmd.build_id] = (cmd.app_id, task)
        try:
            record = await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # this handler itself is being stopped, not just the build
            record = await self._cancelled(cmd, out)
        finally:
            self.running.pop(cmd.build_id, None)
            self.tasks.pop(cmd.build_id, None)
        if self.metrics is not None:
            self.metrics.finish(record.status, time.monotonic() - started)
        await self.announce(cmd, record)

    async def cancel_builds(self, app_id: str) -> int:
        """Cancel the app's builds in progress and wait for their clean-up; how many."""
        doomed = [task for app, task in self.tasks.values() if app == app_id and not task.done()]
        for task in doomed:
            task.cancel()
        if doomed:
            await asyncio.wait(doomed)
        return len(doomed)

    async def _cancelled(self, cmd: BuildRequested, out: OutputStream) -> BuildRecord:
        """End a build of a destroyed app: say so, keep nothing of it."""
        reason = "build cancelled: the app was destroyed"
        await out.line(f" !     {reason}")
        await out.close("failed")
        await self.store.forget_build(cmd.build_id)
        log.info("build.cancelled", build_id=cmd.build_id, app_id=cmd.app_id)
        return BuildRecord(
            cmd.build_id, cmd.app_id, cmd.app_name, cmd.team_id, "failed", error=reason
        )

    async def _build_and_record(self, cmd: BuildRequested, out: OutputStream) -> BuildRecord:
        started = time.monotonic()
        record = await self._run(cmd, out)
        record = replace(record, duration_s=time.monotonic() - started)
        await self.store.finish(record)
        await self._keep_output(record, out.text)
        await out.close("succeeded" if record.status == "succeeded" else "failed")
        log.info("build.finished", build_id=cmd.build_id, status=record.status, error=record.error)
        return record

    async def _run(self, cmd: BuildRequested, out: OutputStream) -> BuildRecord:
        base = BuildRecord(cmd.build_id, cmd.app_id, cmd.app_name, cmd.team_id, "failed")
        work = self.settings.builds_dir() / cmd.build_id
        await asyncio.to_thread(shutil.rmtree, work, True)
        (work / "app").mkdir(parents=True)
        # /app in the image keeps this mode: readable by the dyno user whatever the umask.
        (work / "app").chmod(0o755)
        try:
            return await self._steps(cmd, out, work, base)
        except BuildError as exc:
            await out.line(f" !     {exc.message}")
            return replace(base, error=exc.message)
        except (SlipwayError, aiodocker.DockerError, OSError) as exc:
            log.exception("build.internal_error", build_id=cmd.build_id)
            reason = f"the builder failed: {type(exc).__name__}"
            await out.line(f" !     {reason}")
            return replace(base, error=reason)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _steps(
        self, cmd: BuildRequested, out: OutputStream, work: Path, base: BuildRecord
    ) -> BuildRecord:
        s = self.settings
        await out.line("-----> Fetching source")
        size = await fetch(cmd.source, work / "source.tgz", s)
        await asyncio.to_thread(
            extract, work / "source.tgz", work / "app", max_bytes=s.extracted_max_bytes,
            max_entries=s.extracted_max_entries, max_ratio=s.extracted_max_ratio,
        )  # fmt: skip
        verified = ", checksum verified" if cmd.source.checksum else ""
        await out.line(f"       {size} bytes{verified}")
        image_id, process_types = await self._image(cmd, out, work)
        image = await publish(
            self.docker, self.bus, mode=s.registry_mode, local_tag=_tag(cmd), image_id=image_id,
            app_id=cmd.app_id, build_id=cmd.build_id, sink=out.line,
        )  # fmt: skip
        await out.line(f"-----> Done: {image.ref}")
        return replace(
            base,
            status="succeeded",
            image_ref=image.ref,
            image_digest=image.digest,
            process_types=process_types,
            description=_description(cmd),
        )

    async def _image(
        self, cmd: BuildRequested, out: OutputStream, work: Path
    ) -> tuple[str, dict[str, str]]:
        """Build the image on the engine: from the app's Dockerfile, or buildpacks + slug."""
        app_dir = work / "app"
        procfile = read_procfile(app_dir)
        labels = image_labels(cmd.app_id, cmd.build_id)
        if (app_dir / "Dockerfile").is_file():
            await out.line("-----> Building from the app's Dockerfile")
            image_id = await build_dockerfile(
                self.docker, self.settings, app_dir, work, tag=_tag(cmd), labels=labels,
                sink=out.line,
            )  # fmt: skip
            return image_id, procfile if procfile is not None else {"web": ""}
        process_types = await compile_app(self, cmd, out, work, procfile)
        await out.line("-----> Compressing and building the image")
        built = await build_slug_image(
            self.docker, self.settings, app_dir, work, tag=_tag(cmd), app_id=cmd.app_id,
            labels=labels, web=process_types.get("web"),
        )  # fmt: skip
        image_id = built.image_id
        if built.dependencies in _DEPENDENCY_NOTES:
            await out.line(_DEPENDENCY_NOTES[built.dependencies])
        size = (await self.docker.images.inspect(image_id))["Size"]
        await out.line(f"       Done: {size / 1e6:.1f} MB image")
        return image_id, process_types

    async def _keep_output(self, record: BuildRecord, text: str) -> None:
        try:
            sealed = await envelope.encrypt(
                self.bus, record.team_id, Purpose.BUILD_SOURCE, output_binding(record),
                text.encode(),
            )  # fmt: skip
        except SlipwayError as exc:
            # The outcome stands without its stored output; the live stream had all of it.
            log.error("build.output_not_kept", build_id=record.build_id, error=exc.message)
            return
        await self.store.save_output(record.build_id, sealed)

    async def announce(self, cmd: BuildRequested, record: BuildRecord) -> None:
        """Send the release (on success) and the BUILD_FINISHED event, with derived ids."""
        if record.status == "succeeded" and record.image_ref and record.image_digest:
            await self.bus.send(
                RELEASE_CREATE,
                CreateRelease(
                    command_id=derived_id("release", record.build_id),
                    app_id=record.app_id,
                    image_ref=record.image_ref,
                    image_digest=record.image_digest,
                    process_types=record.process_types or {},
                    description=record.description,
                    build_id=record.build_id,
                    actor=cmd.actor or "service:builder",
                ),
            )
        await self.bus.publish(
            BUILD_FINISHED,
            BuildFinished(
                event_id=derived_id("finished", record.build_id),
                build_id=record.build_id,
                app_id=record.app_id,
                app_name=record.app_name,
                team_id=record.team_id,
                status="succeeded" if record.status == "succeeded" else "failed",
                image_ref=record.image_ref,
                image_digest=record.image_digest,
                process_types=record.process_types or {},
                error=record.error,
                duration_s=record.duration_s,
                builder=self.bus.instance,
            ),
        )


def output_binding(record: BuildRecord) -> Binding:
    """Where a build's sealed output lives."""
    return Binding(
        team=record.team_id, app=record.app_id, kind="build-output", record=record.build_id
    )


def _tag(cmd: BuildRequested) -> str:
    # Repository names are lower case; ids already are, but a gateway may change that.
    return f"slipway/app-{cmd.app_id.lower()}:{cmd.build_id.lower()}"


def _description(cmd: BuildRequested) -> str:
    version = cmd.source.version
    return f"Deploy {version[:7]}" if version else f"Deploy build {cmd.build_id[:8]}"
