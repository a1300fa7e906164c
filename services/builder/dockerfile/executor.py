"""A parsed Dockerfile run stage by stage, instruction by instruction, through `Steps`.

Metadata instructions (ENV, ARG, LABEL, WORKDIR, USER, EXPOSE, CMD, ENTRYPOINT,
STOPSIGNAL, VOLUME, SHELL, HEALTHCHECK) only change the stage's `ImageConfig`;
RUN, COPY and ADD make a layer. ARG values are the Dockerfile's defaults (a
build takes no build arguments); they are seen by RUN steps and by substitution,
never stored in the image, as in Docker.
"""

from __future__ import annotations

import asyncio
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import aiodocker

from slipway.libs import safefs
from slipway.libs.egress import EgressError, EgressPolicy, fetch_to_file
from slipway.services.builder.dockerfile.bases import (
    SCRATCH,
    allowed_bases,
    check_inspected,
    check_name,
)
from slipway.services.builder.dockerfile.config import ImageConfig
from slipway.services.builder.dockerfile.context import (
    Placement,
    absolute_dest,
    add_file,
    archive_size,
    context_sources,
    folder_tar,
    is_folder,
    rewrite_stage_tar,
    write_context_tar,
)
from slipway.services.builder.dockerfile.dockerignore import Ignore
from slipway.services.builder.dockerfile.errors import BaseImageRefused, DockerfileError
from slipway.services.builder.dockerfile.metadata import apply_metadata
from slipway.services.builder.dockerfile.parser import Dockerfile, Instruction, Stage, parse_arg
from slipway.services.builder.dockerfile.steps import Steps
from slipway.services.builder.dockerfile.words import expand_vars, expand_words

_FOLDER_BIT = 1 << 31  # Go's os.ModeDir in the engine's path stat


@dataclass
class StageState:
    """Where a stage is: its current image, its config, its ARG values."""

    stage: Stage
    image: str
    config: ImageConfig
    args: dict[str, str] = field(default_factory=dict)
    cmd_set: bool = False

    def env(self) -> dict[str, str]:
        """What `$VAR` sees: ARGs, overridden by ENV."""
        return {**self.args, **self.config.env}


@dataclass
class DockerfileBuild:
    """One Dockerfile build in `context`, with scratch space in `work`."""

    steps: Steps
    context: Path
    # The builder's own folder for this build (root-owned, above `context`): no container
    # mounts it and no customer byte is unpacked into it (scratch files: safefs.create_nofollow).
    work: Path
    policy: EgressPolicy
    dockerfile: Dockerfile
    done: list[StageState] = field(default_factory=list)

    async def build(self) -> StageState:
        """Run every stage; the last one's state (its image is the result)."""
        s = self.steps.settings
        allowed = allowed_bases(s.run_image, s.build_image, s.dockerfile_base_images)
        ignore = await asyncio.to_thread(Ignore.read, self.context)
        stages = self.dockerfile.stages
        total = sum(1 + len(stage.instructions) for stage in stages)
        number = 0
        for stage in stages:
            number += 1
            named = f" AS {stage.name}" if stage.name else ""
            await self.steps.sink(f"Step {number}/{total} : FROM {stage.base}{named}")
            state = await self._from(stage, allowed)
            for instruction in stage.instructions:
                number += 1
                await self.steps.sink(f"Step {number}/{total} : {instruction}")
                await self._step(state, instruction, allowed, ignore)
            self.done.append(state)
        return self.done[-1]

    async def _from(self, stage: Stage, allowed: tuple[str, ...]) -> StageState:
        earlier = self._stage_named(stage.base)
        if earlier is not None:
            return StageState(stage, earlier.image, earlier.config.copy())
        name = check_name(stage.base, allowed)
        if name == SCRATCH:
            return StageState(stage, await self.steps.empty_image(), ImageConfig())
        info = await self._inspect(name, f"Dockerfile line {stage.line}: FROM {stage.base}")
        return StageState(stage, str(info["Id"]), ImageConfig.of_image(info))

    async def _inspect(self, name: str, where: str) -> dict[str, object]:
        try:
            info: dict[str, object] = await self.steps.docker.images.inspect(name)
        except aiodocker.DockerError:
            raise DockerfileError(
                f"{where}: the image is not on this builder (Slipway never pulls base images;"
                " ask the operator to load it)"
            ) from None
        check_inspected(name, info)
        return info

    def _stage_named(self, ref: str) -> StageState | None:
        for state in self.done:
            if state.stage.name is not None and state.stage.name == ref.lower():
                return state
        if ref.isdigit() and int(ref) < len(self.done):
            return self.done[int(ref)]
        return None

    async def _step(
        self, state: StageState, ins: Instruction, allowed: tuple[str, ...], ignore: Ignore
    ) -> None:
        match ins.keyword:
            case "RUN":
                await self._run(state, ins)
            case "COPY" | "ADD":
                await self._copy(state, ins, allowed, ignore)
            case "ARG":
                self._arg(state, ins)
            case _:
                note = apply_metadata(state.config, ins, self.dockerfile.escape, state.env())
                if ins.keyword == "CMD":
                    state.cmd_set = True
                elif ins.keyword == "ENTRYPOINT" and not state.cmd_set:
                    state.config.cmd = None  # as Docker: an inherited CMD goes with ENTRYPOINT
                if note:
                    await self.steps.sink(f" ---> {note}")

    def _arg(self, state: StageState, ins: Instruction) -> None:
        declared = parse_arg(ins, self.dockerfile.escape, state.env())
        for name, default in declared.items():
            value = default if default is not None else self.dockerfile.global_args.get(name)
            if value is not None:
                state.args[name] = value

    async def _run(self, state: StageState, ins: Instruction) -> None:
        argv = ins.exec_form if ins.exec_form is not None else [*state.config.shell, ins.args]
        extra = {k: v for k, v in state.args.items() if k not in state.config.env}
        state.image = await self.steps.run(state.image, state.config, argv, extra)

    async def _copy(
        self, state: StageState, ins: Instruction, allowed: tuple[str, ...], ignore: Ignore
    ) -> None:
        where = f"Dockerfile line {ins.line}: {ins.keyword}"
        env = state.env()
        if ins.exec_form is not None:
            words = [expand_vars(word, env) for word in ins.exec_form]
        else:
            words = expand_words(ins.args, env, self.dockerfile.escape)
        if len(words) < 2:
            raise DockerfileError(f"{where} needs a source and a destination")
        *sources, dest = words
        if len(sources) > 1 and not dest.endswith("/"):
            raise DockerfileError(f"{where} with several sources needs a destination ending in /")
        uid, gid = await self._owner(state, ins.flags.get("chown"), where)
        mode = _mode(ins.flags.get("chmod"), where)
        target = absolute_dest(dest, state.config.workdir)
        place = Placement(target, dest.endswith("/"), uid, gid, mode)
        if "from" in ins.flags:
            await self._copy_from(state, ins.flags["from"], sources, place, allowed, where)
        elif ins.keyword == "ADD" and any(_is_url(s) for s in sources):
            if len(sources) != 1:
                raise DockerfileError(f"{where}: one URL at a time")
            await self._add_url(state, sources[0], place, where)
        else:
            await self._copy_local(state, ins.keyword, sources, place, ignore, where)

    async def _copy_local(
        self,
        state: StageState,
        keyword: str,
        sources: list[str],
        place: Placement,
        ignore: Ignore,
        where: str,
    ) -> None:
        found = await asyncio.to_thread(self._sources, sources, ignore, where)
        folder = len(found) > 1 or any(is_folder(self.context, p) for p in found)
        if (
            keyword == "ADD"
            and len(found) == 1
            and await asyncio.to_thread(self._archive, found[0])
        ):
            await self._add_archive(state, found[0], place, where)
            return
        if not place.into_folder and not folder:
            folder = await self._is_folder_in_image(state, place.dest)
        place = Placement(place.dest, place.into_folder or folder, place.uid, place.gid, place.mode)
        tar_path = self.work / "step.tar"
        with safefs.create_nofollow(tar_path) as out:
            await asyncio.to_thread(write_context_tar, self.context, found, place, ignore, out)
            out.seek(0)
            state.image = await self.steps.put(state.image, state.config, out)

    def _sources(self, sources: list[str], ignore: Ignore, where: str) -> list[str]:
        return [p for s in sources for p in context_sources(self.context, s, ignore, where)]

    def _archive(self, relative: str) -> bool:
        path = self.context / relative
        return not path.is_symlink() and path.is_file() and tarfile.is_tarfile(path)

    async def _add_archive(
        self, state: StageState, relative: str, place: Placement, where: str
    ) -> None:
        """ADD of a local tar (plain or compressed): the engine unpacks it inside the image."""
        steps = self.steps
        limit = steps.settings.extracted_max_bytes
        # Opened once, without following links: the size scan and the upload read one file.
        with safefs.open_regular(self.context, relative) as archive:
            size = await asyncio.to_thread(archive_size, archive, relative, limit)
            if size > limit:
                raise DockerfileError(
                    f"{where} {relative}: the archive unpacks to more than {limit} bytes"
                    " (SLIPWAY_EXTRACTED_MAX_BYTES); ADD a smaller one or unpack it in a RUN step"
                )
            archive.seek(0)
            container = await steps.idle_container(state.image, state.config)
            if not await self._is_folder_in_image(state, place.dest):
                tar_path = self.work / "folder.tar"  # the builder's own scratch folder
                with safefs.create_nofollow(tar_path) as out:
                    folder_tar(out, place.dest, place)
                    out.seek(0)
                    await steps.put_archive(container, out, "/")
            await steps.put_archive(container, archive, place.dest)
        state.image = await steps.commit(container, state.config)

    async def _add_url(self, state: StageState, url: str, place: Placement, where: str) -> None:
        """ADD of a URL: fetched here through the egress guard, never unpacked (as Docker)."""
        download = self.work / "download"
        s = self.steps.settings
        try:
            await fetch_to_file(
                url, download, policy=self.policy, max_bytes=s.source_max_bytes,
                timeout=min(s.fetch_timeout, self.steps.remaining()),
            )  # fmt: skip
        except EgressError as exc:
            raise DockerfileError(f"{where} {url}: {exc.message}") from None
        name = posixpath.basename(urlsplit(url).path) or "index.html"
        folder = place.into_folder or await self._is_folder_in_image(state, place.dest)
        target = posixpath.join(place.dest, name) if folder else place.dest
        tar_path = self.work / "step.tar"
        with safefs.create_nofollow(tar_path) as out:
            add_file(out, download, target, place, place.mode if place.mode is not None else 0o600)
            out.seek(0)
            state.image = await self.steps.put(state.image, state.config, out)
        download.unlink(missing_ok=True)

    async def _copy_from(
        self,
        state: StageState,
        ref: str,
        sources: list[str],
        place: Placement,
        allowed: tuple[str, ...],
        where: str,
    ) -> None:
        image = await self._source_image(state, ref, allowed, where)
        for source in sources:
            if any(char in source for char in "*?["):
                raise DockerfileError(f"{where} --from: wildcards are not supported; name the path")
            path = posixpath.normpath(posixpath.join("/", source))
            fetched, rewritten = self.work / "from.tar", self.work / "step.tar"
            limit = self.steps.settings.extracted_max_bytes
            await self.steps.fetch(image, path, fetched, limit)
            source_folder = await asyncio.to_thread(_top_is_folder, fetched)
            root = place.dest
            if not source_folder and (
                place.into_folder or await self._is_folder_in_image(state, place.dest)
            ):
                root = posixpath.join(place.dest, posixpath.basename(path))
            with fetched.open("rb") as given, safefs.create_nofollow(rewritten) as out:
                await asyncio.to_thread(rewrite_stage_tar, given, path, root, place, out)
                out.seek(0)
                state.image = await self.steps.put(state.image, state.config, out)

    async def _source_image(
        self, state: StageState, ref: str, allowed: tuple[str, ...], where: str
    ) -> str:
        earlier = self._stage_named(ref)
        if earlier is not None:
            return earlier.image
        if ref.lower() == (state.stage.name or "") or ref == str(state.stage.index):
            raise DockerfileError(f"{where} --from={ref}: a stage cannot copy from itself")
        name = check_name(ref, allowed, what=f"{where} --from=")
        if name == SCRATCH:
            raise BaseImageRefused(f"{where} --from=scratch: scratch has no files")
        return str((await self._inspect(name, f"{where} --from={ref}"))["Id"])

    async def _is_folder_in_image(self, state: StageState, path: str) -> bool:
        found = await self.steps.stat(state.image, state.config, path)
        return found is not None and bool(int(found.get("mode", 0)) & _FOLDER_BIT)

    async def _owner(self, state: StageState, spec: str | None, where: str) -> tuple[int, int]:
        """--chown=user[:group], by number or by name in the image's /etc/passwd and group."""
        if not spec:
            return 0, 0
        user, _, group = spec.partition(":")
        passwd = "" if user.isdigit() else await self.steps.read_file(state.image, "/etc/passwd")
        uid, primary = _lookup(passwd, user, where, "user")
        if not group:
            return uid, primary if primary is not None else uid
        groups = "" if group.isdigit() else await self.steps.read_file(state.image, "/etc/group")
        gid, _ = _lookup(groups, group, where, "group")
        return uid, gid


def _lookup(table: str, name: str, where: str, what: str) -> tuple[int, int | None]:
    if name.isdigit():
        return int(name), None
    for line in table.splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[0] == name and fields[2].isdigit():
            primary = int(fields[3]) if len(fields) > 3 and fields[3].isdigit() else None
            return int(fields[2]), primary
    raise DockerfileError(f"{where} --chown: no {what} {name!r} in the image")


def _mode(value: str | None, where: str) -> int | None:
    if value is None:
        return None
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o7777:
        raise DockerfileError(f"{where} --chmod={value}: give an octal mode such as 755")
    return mode


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _top_is_folder(fetched: Path) -> bool:
    with tarfile.open(fetched, mode="r|") as tar:
        first = tar.next()
        return first is not None and first.isdir()
