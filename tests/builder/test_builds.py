"""Builds that go wrong, third-party buildpacks, the cache, idempotency, concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import tarfile
import uuid
from pathlib import Path

import aiodocker
import msgspec
import pytest

from slipway.contracts.base import Ok
from slipway.contracts.builder import (
    BUILD_OUTPUT_GET,
    BUILD_REQUEST,
    CACHE_PURGE,
    BuildRequested,
    GetBuildOutput,
    PurgeCache,
    SourceBlob,
    output_subject,
)
from slipway.libs.natsserver import NatsServer
from slipway.services.builder.app import create_service
from slipway.services.builder.settings import BuilderSettings
from slipway.services.builder.store import BuildStore
from tests.builder.conftest import (
    EXAMPLES,
    TEAM,
    Harness,
    builder_stack,
    run_once,
    tarball,
)
from tests.gateway.conftest import run_in_background, stop

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(300),
]

DETECT = '#!/bin/sh\n[ -f "$1/hello.txt" ] && echo Hello && exit 0\nexit 1\n'
COMPILE = """#!/bin/bash
set -e
echo "-----> Hello buildpack compiling"
echo "build dir $1, cache dir $2, env dir $3"
mkdir -p "$1/.profile.d"
echo 'export FROM_PROFILE=profile-ok' > "$1/.profile.d/hello.sh"
cp "$1/hello.txt" "$1/compiled.txt"
"""
RELEASE = """#!/bin/sh
cat <<YAML
---
config_vars:
  GREETING: "hi there"
default_process_types:
  web: cat /app/compiled.txt
  worker: sleep infinity
YAML
"""


def third_party_buildpack(root: Path, compile_script: str = COMPILE) -> Path:
    """A buildpack folder as a third party would write it (shell, no Slipway code)."""
    for name, text in (("detect", DETECT), ("compile", compile_script), ("release", RELEASE)):
        path = root / "bin" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(0o755)
    return root


HELLO_APP = {"hello.txt": "hello from a third-party buildpack\n"}


async def test_third_party_buildpack_from_git_runs_unchanged(
    harness: Harness, tmp_path: Path
) -> None:
    """A shell buildpack cloned over https git detects, compiles and releases like on Heroku."""
    url = harness.buildpacks.git(third_party_buildpack(tmp_path / "hello-buildpack"))
    result = await harness.build(
        tarball(HELLO_APP), app_id=harness.app_id(), buildpacks=[url + "#main"]
    )
    assert result.status == "succeeded", result.text
    assert "-----> Hello app detected" in result.text
    assert "-----> Hello buildpack compiling" in result.text
    assert "build dir /app, cache dir /cache, env dir /env" in result.text
    assert result.release is not None
    assert result.release.process_types == {
        "web": "cat /app/compiled.txt",
        "worker": "sleep infinity",
    }
    out = await run_once(
        harness.docker, result.release.image_ref, 'echo "$FROM_PROFILE|$GREETING"; cat compiled.txt'
    )
    assert out == "profile-ok|hi there\nhello from a third-party buildpack\n"


async def test_buildpacks_run_in_order_from_a_tarball_url(harness: Harness, tmp_path: Path) -> None:
    """Two buildpacks named in order both compile; a named one that does not detect fails."""
    bp = third_party_buildpack(tmp_path / "hello")
    app = {**HELLO_APP, "public/index.html": "<p>static</p>\n"}
    result = await harness.build(
        tarball(app), app_id=harness.app_id(), buildpacks=["static", harness.buildpacks.tarball(bp)]
    )
    assert result.status == "succeeded", result.text
    assert result.text.index("Static app detected") < result.text.index("Hello app detected")
    assert result.release is not None
    assert result.release.process_types["worker"] == "sleep infinity"
    refused = await harness.build(tarball(app), app_id=harness.app_id(), buildpacks=["nodejs"])
    assert refused.status == "failed"
    assert "App not compatible with buildpack: nodejs" in refused.text


async def test_failing_compile_fails_the_build_without_a_release(
    harness: Harness, tmp_path: Path
) -> None:
    """A compile that exits non-zero: failed status, its error in the output, no release."""
    failing = COMPILE + 'echo "ERROR: libfrobnicate is missing" >&2\nexit 3\n'
    bp = third_party_buildpack(tmp_path / "failing", failing)
    url = harness.buildpacks.tarball(bp)
    result = await harness.build(tarball(HELLO_APP), app_id=harness.app_id(), buildpacks=[url])
    assert result.status == "failed"
    assert "ERROR: libfrobnicate is missing" in result.text
    assert result.finished.status == "failed"
    assert result.finished.error is not None
    assert "\n" not in result.finished.error
    assert "exited 3" in result.finished.error
    assert result.release is None


async def test_an_app_nothing_detects_fails_clearly(harness: Harness) -> None:
    """Without buildpacks named, an app no built-in detects fails saying what to add."""
    result = await harness.build(tarball({"README": "nothing here\n"}), app_id=harness.app_id())
    assert result.status == "failed"
    assert "No default language could be detected" in (result.finished.error or "")


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        (_link("escape", "../../../etc/passwd"), "points outside the source"),
        (_link("abs", "/etc/shadow"), "points outside the source"),
        (_link("hard", "../outside", tarfile.LNKTYPE), "points outside the source"),
        (tarfile.TarInfo("../evil.txt"), "leaves the source folder"),
        (tarfile.TarInfo("/etc/evil.txt"), "is an absolute path"),
    ],
)
async def test_hostile_sources_are_rejected(
    harness: Harness, member: tarfile.TarInfo, reason: str
) -> None:
    """Links out of the build dir, `..` and absolute members fail the build with the reason."""
    result = await harness.build(
        tarball({"requirements.txt": ""}, extra=[member]), app_id=harness.app_id()
    )
    assert result.status == "failed"
    assert reason in result.text
    assert reason in (result.finished.error or "")
    assert result.release is None


async def test_checksum_mismatch_and_oversized_source_are_rejected(harness: Harness) -> None:
    """A blob that does not match its checksum, or is over the limit, is not built."""
    blob = harness.serve(tarball(HELLO_APP))
    cmd = _command(harness, blob.url, "SHA256:" + "0" * 64)
    result = await harness.send(cmd)
    assert result.status == "failed"
    assert "source checksum mismatch" in result.text
    big = harness.serve(b"x" * (harness.settings.source_max_bytes + 1))
    result = await harness.send(_command(harness, big.url, big.checksum))
    assert "source is larger than the limit" in result.text


def _command(harness: Harness, url: str, checksum: str | None) -> BuildRequested:
    return BuildRequested(
        build_id=uuid.uuid4().hex,
        app_id=harness.app_id(),
        app_name="n",
        team_id=TEAM,
        source=SourceBlob(url=url, checksum=checksum, platform=True),  # the gateway's own URL
        actor="user:t",
    )


async def test_junk_procfile_line_fails_the_build(harness: Harness) -> None:
    """A Procfile line that is not `<type>: <command>` fails the build naming the line."""
    app = {"requirements.txt": "", "Procfile": "web: gunicorn app:app\nthis is not a process\n"}
    result = await harness.build(tarball(app), app_id=harness.app_id())
    assert result.status == "failed"
    assert "Procfile line 2 is not `<process type>: <command>`" in result.text
    assert result.release is None


async def test_never_exiting_buildpack_is_killed_at_the_time_limit(
    tmp_path: Path, builder_home: Path
) -> None:
    """A compile that never ends is killed after SLIPWAY_BUILD_TIMEOUT with a clear message."""
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    try:
        async with builder_stack(nats, tmp_path / "home", build_timeout=4.0) as h:
            forever = COMPILE + 'echo "waiting forever"\nsleep 100000\n'
            bp = third_party_buildpack(tmp_path / "forever", forever)
            url = h.buildpacks.tarball(bp)
            result = await h.build(tarball(HELLO_APP), app_id=h.app_id(), buildpacks=[url])
            assert result.status == "failed"
            assert "waiting forever" in result.text
            assert "build timed out after 4s" in result.text
            labelled = await h.docker.containers.list(
                all=True, filters={"label": [f"slipway.build={result.build_id}"]}
            )
            assert labelled == []  # the killed container was removed
    finally:
        nats.stop()


async def test_two_builds_of_one_app_at_once_both_succeed(harness: Harness) -> None:
    """Concurrent builds of one app (sharing its cache) both finish with their own image."""
    app_id = harness.app_id()
    source = tarball(EXAMPLES / "node-hello")
    first, second = await asyncio.gather(
        harness.build(source, app_id=app_id), harness.build(source, app_id=app_id)
    )
    for result in (first, second):
        assert result.status == "succeeded", result.text
        assert result.release is not None
    assert first.release and second.release
    assert first.release.image_ref != second.release.image_ref


async def test_redelivered_command_for_a_finished_build_does_not_rebuild(
    harness: Harness,
) -> None:
    """The same build id again: no new output, the same release command id is re-sent."""
    result = await harness.build(tarball(EXAMPLES / "docker-hello"), app_id=harness.app_id())
    assert result.release is not None
    again = BuildRequested(
        build_id=result.build_id,
        app_id=result.app_id,
        app_name="again",
        team_id=TEAM,
        source=harness.serve(b"not even a tarball"),
        actor="user:t",
    )
    chunks = await harness.bus.nc.subscribe(output_subject(result.build_id))
    await harness.bus.nc.flush()
    await harness.bus.send(BUILD_REQUEST, again)
    for _ in range(400):
        if len(harness.releases[result.build_id]) > 1:
            break
        await asyncio.sleep(0.05)
    releases = harness.releases[result.build_id]
    assert len(releases) == 2
    assert releases[0].command_id == releases[1].command_id
    assert releases[0].image_ref == releases[1].image_ref
    await harness.bus.nc.flush()
    assert chunks.pending_msgs == 0  # nothing was built again
    await chunks.unsubscribe()


async def test_output_is_kept_encrypted_and_served_whole(
    harness: Harness, builder_home: Path
) -> None:
    """BUILD_OUTPUT_GET returns the whole output; the database holds only ciphertext."""
    result = await harness.build(tarball(EXAMPLES / "docker-hello"), app_id=harness.app_id())
    found = await harness.bus.gather(BUILD_OUTPUT_GET, GetBuildOutput(build_id=result.build_id))
    (reply,) = found.replies.values()
    assert reply.finished
    assert reply.status == "succeeded"
    assert reply.text == result.text
    db = sqlite3.connect(harness.settings.db_path())
    try:
        (stored,) = db.execute(
            "SELECT output FROM builds WHERE build_id = ?", (result.build_id,)
        ).fetchone()
    finally:
        db.close()
    assert stored
    assert b"Building from the app's Dockerfile" not in stored


async def test_a_second_builder_knows_nothing_of_the_first_ones_build(
    harness: Harness, tmp_path: Path
) -> None:
    """Asked of every builder, a build's output comes from the one that ran it; the other
    answers NotFound rather than leaving the caller to wait."""
    result = await harness.build(tarball(EXAMPLES / "docker-hello"), app_id=harness.app_id())
    other = create_service(
        msgspec.structs.replace(harness.settings, home=str(tmp_path / "other"), instance="other")
    )
    task = await run_in_background(other)
    try:
        both = {other.bus.instance, harness.builder.bus.instance}
        found = await harness.bus.gather(
            BUILD_OUTPUT_GET, GetBuildOutput(build_id=result.build_id), expect=both
        )
        assert set(found.errors) == {other.bus.instance}
        assert found.errors[other.bus.instance].code == "not_found"
        (ran_it,) = found.replies
        assert ran_it == harness.builder.bus.instance
        assert result.finished is not None
        assert result.finished.builder == ran_it  # the event names who holds the output
        assert found.replies[ran_it].text == result.text
    finally:
        await stop(other, task)


async def test_cache_purge_removes_the_app_cache(harness: Harness) -> None:
    """CACHE_PURGE deletes the app's cache volume."""
    app_id = harness.app_id()
    result = await harness.build(tarball(EXAMPLES / "node-hello"), app_id=app_id)
    assert result.status == "succeeded"
    volume = f"slipway-build-cache-{app_id}"
    await harness.docker.volumes.get(volume)  # type: ignore[no-untyped-call]
    purged = await harness.bus.gather(CACHE_PURGE, PurgeCache(app_id=app_id, team_id=TEAM))
    assert not purged.errors
    (reply,) = purged.replies.values()
    assert isinstance(reply, Ok)
    with pytest.raises(aiodocker.DockerError):
        await harness.docker.volumes.get(volume)  # type: ignore[no-untyped-call]


async def test_failing_dockerfile_build_fails_with_the_engine_error(harness: Harness) -> None:
    """A Dockerfile whose RUN fails: failed status, the step's output streamed, no release."""
    app = {
        "Dockerfile": "FROM slipway/stack-run:bookworm\nRUN echo compiling-step && exit 7\n",
    }
    result = await harness.build(tarball(app), app_id=harness.app_id())
    assert result.status == "failed"
    assert "compiling-step" in result.text
    assert "image build failed" in (result.finished.error or "")
    assert "returned a non-zero code: 7" in (result.finished.error or "")
    assert result.release is None


async def test_restart_removes_containers_of_builds_left_pending(tmp_path: Path) -> None:
    """A builder that died mid-build left a container running: the next start removes it."""
    home = tmp_path / "home"
    build_id = uuid.uuid4().hex
    settings = BuilderSettings(home=str(home))
    store = await BuildStore.open(settings.db_path())
    await store.start(build_id, "app-x", "app-x", TEAM)  # recorded, never finished
    await store.close()
    docker = aiodocker.Docker()
    orphan = await docker.containers.run(
        {
            "Image": settings.run_image,
            "Cmd": ["sleep", "infinity"],
            "Labels": {"slipway.build": build_id, "slipway.test": "builder"},
        }
    )
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    try:
        async with builder_stack(nats, home):
            left = await docker.containers.list(
                all=True, filters={"label": [f"slipway.build={build_id}"]}
            )
            assert left == []
    finally:
        nats.stop()
        with contextlib.suppress(aiodocker.DockerError):
            await orphan.delete(force=True)
        await docker.close()
