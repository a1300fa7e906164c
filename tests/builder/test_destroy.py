"""A destroyed app leaves nothing on the builder: cache, images, records, running builds."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from pathlib import Path

import aiodocker
import pytest

from slipway.contracts import gateway as gw
from slipway.contracts.builder import BUILD_OUTPUT_GET, GetBuildOutput
from slipway.libs.errors import NotFound
from slipway.services.builder.app import BUILDER
from slipway.services.builder.appdata import destroy_app
from tests.builder.conftest import TEAM, Harness, tarball
from tests.builder.test_builds import COMPILE, HELLO_APP, third_party_buildpack
from tests.conftest import assert_eventually

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(300),
]

PUSH_REGISTRY = "127.0.0.1:5999"  # what registry mode tags before a push (never contacted)


async def destroy(harness: Harness, app_id: str) -> None:
    """Publish APP_DESTROYED as the gateway does on `apps:destroy`."""
    await harness.bus.publish(
        gw.APP_DESTROYED,
        gw.AppDestroyed(app_id=app_id, name=f"name-{app_id}", team_id=TEAM, actor="user:t"),
    )


def stored_builds(harness: Harness, app_id: str) -> list[tuple[str, bytes | None]]:
    """(build id, sealed output) of the app's rows in the builder's database."""
    db = sqlite3.connect(harness.settings.db_path())
    try:
        rows = db.execute("SELECT build_id, output FROM builds WHERE app_id = ?", (app_id,))
        return list(rows.fetchall())
    finally:
        db.close()


async def exists(docker: aiodocker.Docker, *, volume: str | None = None, image: str = "") -> bool:
    """Whether the engine has the volume or the image reference."""
    try:
        if volume is not None:
            await docker.volumes.get(volume)  # type: ignore[no-untyped-call]
        else:
            await docker.images.inspect(image)
    except aiodocker.DockerError as exc:
        if exc.status != 404:
            raise
        return False
    return True


async def labelled_images(docker: aiodocker.Docker, app_id: str) -> list[object]:
    return list(await docker.images.list(filters={"label": [f"slipway.app={app_id}"]}))


def database_bytes(harness: Harness) -> bytes:
    """The database file and its WAL, as they lie on disk."""
    path = harness.settings.db_path()
    wal = path.with_name(path.name + "-wal")
    return path.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


async def test_destroy_removes_cache_images_and_records_of_that_app_only(
    harness: Harness, tmp_path: Path
) -> None:
    """Cache volume, built and push-tagged images, build rows and sealed output go; not B's."""
    doomed = "app" + uuid.uuid4().hex[:10]
    other = doomed + "0"  # an id the doomed one is a prefix of: exact names only
    harness.app_ids += [doomed, other]
    bp = harness.buildpacks.tarball(third_party_buildpack(tmp_path / "hello"))
    built = await asyncio.gather(
        *(harness.build(tarball(HELLO_APP), app_id=a, buildpacks=[bp]) for a in (doomed, other))
    )
    refs: dict[str, list[str]] = {}
    for result in built:
        assert result.status == "succeeded", result.text
        assert result.release is not None
        push = f"{PUSH_REGISTRY}/apps/{result.app_id}"
        await harness.docker.images.tag(result.release.image_ref, push, tag=result.build_id)
        refs[result.app_id] = [result.release.image_ref, f"{push}:{result.build_id}"]
    ((doomed_build, sealed),) = stored_builds(harness, doomed)
    assert sealed and sealed[-48:] in database_bytes(harness)

    await destroy(harness, doomed)

    async def gone() -> None:
        assert not await exists(harness.docker, volume=f"slipway-build-cache-{doomed}")
        for ref in refs[doomed]:
            assert not await exists(harness.docker, image=ref)
        assert await labelled_images(harness.docker, doomed) == []
        assert stored_builds(harness, doomed) == []

    await assert_eventually(gone, timeout=30, interval=0.1)
    assert sealed[-48:] not in database_bytes(harness)  # not even in a free page or the WAL
    asked = await harness.bus.gather(BUILD_OUTPUT_GET, GetBuildOutput(build_id=doomed_build))
    assert not asked.replies
    assert [isinstance(e, NotFound) for e in asked.errors.values()] == [True]
    assert await exists(harness.docker, volume=f"slipway-build-cache-{other}")
    for ref in refs[other]:
        assert await exists(harness.docker, image=ref)
    assert len(stored_builds(harness, other)) == 1
    # A second delivery (after a partial clean-up, say) finishes quietly.
    await destroy_app(harness.builder[BUILDER], doomed)


async def test_destroy_cancels_a_running_build_of_the_app(harness: Harness, tmp_path: Path) -> None:
    """A build in progress ends failed saying why, its container goes, no release is sent."""
    app_id = harness.app_id()
    slow = COMPILE + 'echo "compiling slowly"\nsleep 600\n'
    bp = harness.buildpacks.tarball(third_party_buildpack(tmp_path / "slow", slow))
    build_id = uuid.uuid4().hex
    running = asyncio.create_task(
        harness.build(tarball(HELLO_APP), app_id=app_id, buildpacks=[bp], build_id=build_id)
    )
    label = {"label": [f"slipway.build={build_id}"]}

    async def compiling() -> None:
        out = harness.builder[BUILDER].running.get(build_id)
        assert out is not None and out.text.endswith("compiling slowly\n")

    await assert_eventually(compiling, timeout=60, interval=0.1)
    await destroy(harness, app_id)
    result = await asyncio.wait_for(running, 60)
    assert result.status == "failed"
    assert result.text.endswith(" !     build cancelled: the app was destroyed\n")
    assert result.finished.status == "failed"
    assert result.finished.error == "build cancelled: the app was destroyed"
    assert result.release is None

    async def gone() -> None:
        assert await harness.docker.containers.list(all=True, filters=label) == []
        assert not await exists(harness.docker, volume=f"slipway-build-cache-{app_id}")
        assert stored_builds(harness, app_id) == []
        assert await labelled_images(harness.docker, app_id) == []

    await assert_eventually(gone, timeout=30, interval=0.1)


async def test_a_build_for_a_destroyed_app_is_refused(harness: Harness, tmp_path: Path) -> None:
    """A build command arriving after the app's destruction builds and keeps nothing."""
    app_id = harness.app_id()
    await destroy(harness, app_id)

    def tombstoned() -> None:
        assert app_id in harness.builder[BUILDER].destroyed

    await assert_eventually(tombstoned, timeout=30)
    bp = harness.buildpacks.tarball(third_party_buildpack(tmp_path / "hello"))
    result = await harness.build(tarball(HELLO_APP), app_id=app_id, buildpacks=[bp])
    assert result.status == "failed"
    assert "Fetching source" not in result.text
    assert result.finished.error == "build cancelled: the app was destroyed"
    assert result.release is None
    assert not await exists(harness.docker, volume=f"slipway-build-cache-{app_id}")
    assert stored_builds(harness, app_id) == []
