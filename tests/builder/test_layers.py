"""A slug is two layers on the run stack: the app's dependency folders, then its own files.

The real-build tests run the builder against real Docker and compare the images'
layers by digest (`RootFS.Layers`): a one-line change to the app must leave every
layer but the app's exactly as it was. The plain tests check the split itself on
a folder made here.
"""

from __future__ import annotations

import os
import re
import shutil
import tarfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote

import aiohttp
import pytest

from slipway.contracts.registry import CREDENTIALS_ISSUE, Credentials, IssueCredentials
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.natsserver import NatsServer
from slipway.services.builder import slug
from slipway.services.builder.errors import BuildpackFailed
from tests.builder.conftest import (
    EXAMPLES,
    BuildResult,
    Harness,
    builder_stack,
    http_get,
    running,
    tarball,
)
from tests.builder.test_integrations import registry  # noqa: F401 - a fixture used below

T = TypeVar("T", bound=Callable[..., Awaitable[None]])


def real_build(test: T) -> T:
    """The marks of a test that runs a real build (the module also has plain tests)."""
    for mark in (
        pytest.mark.asyncio(loop_scope="session"),
        pytest.mark.docker,
        pytest.mark.slow,
        pytest.mark.integration,
        pytest.mark.timeout(300),
    ):
        test = mark(test)
    return test


async def layers(harness: Harness, image: str) -> list[str]:
    info = await harness.docker.images.inspect(image)
    return list(info["RootFS"]["Layers"])


@real_build
async def test_one_changed_file_changes_only_the_app_layer(
    harness: Harness, tmp_path: Path
) -> None:
    """Two builds of an app, one line apart, share every layer but the app's, and the
    second image serves the changed line."""
    app_id = harness.app_id()
    run_stack = await layers(harness, harness.settings.run_image)
    first = await harness.build(EXAMPLES / "python-hello", app_id=app_id)
    assert first.status == "succeeded", first.text
    assert "Dependencies in a layer of their own" in first.text

    source = tmp_path / "python-hello"
    shutil.copytree(EXAMPLES / "python-hello", source)
    hello = source / "hello.py"
    hello.write_text(hello.read_text().replace("Hello from", "Hello again from"))
    second = await harness.build(source, app_id=app_id)
    assert second.status == "succeeded", second.text
    assert "Dependencies unchanged: their layer is reused" in second.text

    assert first.release is not None and second.release is not None
    before = await layers(harness, first.release.image_ref)
    after = await layers(harness, second.release.image_ref)
    # The run stack, then the dependencies (the virtualenv), then the app's own files.
    assert len(before) == len(after) == len(run_stack) + 2
    assert before[: len(run_stack)] == after[: len(run_stack)] == run_stack
    assert before[-2] == after[-2]
    assert before[-1] != after[-1]
    async with running(harness.docker, second.release.image_ref) as url:
        assert "Hello again from python-hello on web.1" in await http_get(url)


@real_build
async def test_an_app_with_no_dependency_folder_is_one_layer(harness: Harness) -> None:
    """A build that made none of the dependency folders gets one layer, as before."""
    site = {"static.json": '{"root": "site"}', "site/index.html": "<h1>one layer</h1>\n"}
    result = await harness.build(tarball(site), app_id=harness.app_id())
    assert result.status == "succeeded", result.text
    assert "Dependencies" not in result.text
    assert result.release is not None
    run_stack = await layers(harness, harness.settings.run_image)
    image = await layers(harness, result.release.image_ref)
    assert len(image) == len(run_stack) + 1
    assert image[:-1] == run_stack
    async with running(harness.docker, result.release.image_ref) as url:
        assert "one layer" in await http_get(url)


@real_build
async def test_a_second_push_uploads_only_the_app_layer(
    tmp_path: Path,
    registry: tuple[str, str, str],  # noqa: F811 - the fixture imported above
) -> None:
    """In registry mode the second build's push sends the app's layer and config, and not
    the dependency layer the registry already holds (the engine asks first)."""
    host, user, password = registry
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    try:
        async with builder_stack(nats, tmp_path / "home", registry_mode="registry") as h:
            proxy = await Bus.connect(nats.url, Service.REGISTRY_PROXY)

            async def issue(req: IssueCredentials) -> Credentials:
                return Credentials(
                    registry=host, repository=f"{host}/apps/{req.app_id}", username=user,
                    password=password, expires_at=time.time() + req.ttl_s,
                )  # fmt: skip

            await proxy.serve(CREDENTIALS_ISSUE, issue)
            try:
                app_id = h.app_id()
                first = await h.build(EXAMPLES / "python-hello", app_id=app_id)
                assert first.status == "succeeded", first.text
                log = tmp_path / "registry.log"
                seen = len(log.read_bytes())
                source = tmp_path / "python-hello"
                shutil.copytree(EXAMPLES / "python-hello", source)
                hello = source / "hello.py"
                hello.write_text(hello.read_text().replace("Hello from", "Hello again from"))
                second = await h.build(source, app_id=app_id)
                assert second.status == "succeeded", second.text
                uploaded = uploads(log.read_bytes()[seen:].decode(errors="replace"))
            finally:
                await proxy.close()
            auth = aiohttp.encode_basic_auth(user, password)
            before = await manifest_layers(host, app_id, first, auth)
            after = await manifest_layers(host, app_id, second, auth)
            # The run stack's layers, the dependency layer, the app's: all but the last shared.
            assert len(after) == len(await layers(h, h.settings.run_image)) + 2
            assert before[:-1] == after[:-1] and before[-1] != after[-1]
            assert after[-1] in uploaded  # what the log shows is what was sent
            assert not set(after[:-1]) & uploaded
    finally:
        nats.stop()


def uploads(log: str) -> set[str]:
    """The blob digests a registry's access log shows completed uploads of."""
    found = re.findall(r'"PUT /v2/[^ ]*/blobs/uploads/[^ ]*[?&]digest=([^ &"]+)', log)
    return {unquote(digest) for digest in found}


async def manifest_layers(host: str, app_id: str, build: BuildResult, auth: str) -> list[str]:
    """The layer blob digests of the image a build released, as the registry has them."""
    assert build.release is not None
    url = f"http://{host}/v2/apps/{app_id}/manifests/{build.release.image_digest}"
    headers = {
        "Accept": "application/vnd.docker.distribution.manifest.v2+json",
        "Authorization": auth,
    }
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers) as answer,
    ):
        assert answer.status == 200
        body = await answer.json(content_type=None)
    return [layer["digest"] for layer in body["layers"]]


def build_folder(root: Path) -> Path:
    """A build folder as a buildpack leaves it: app files, a venv, gems under vendor/."""
    app = root / "app"
    (app / ".venv" / "lib").mkdir(parents=True)
    (app / ".venv" / "lib" / "dep.py").write_text("DEP = 1\n")
    (app / ".venv" / "python").symlink_to("/usr/bin/python3")
    (app / "vendor" / "bundle").mkdir(parents=True)
    (app / "vendor" / "bundle" / "gem.rb").write_text("gem\n")
    (app / "vendor" / "own.rb").write_text("own\n")
    (app / "hello.py").write_text("print('hello')\n")
    return app


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {member.name: member for member in tar.getmembers()}


def test_the_two_layers_hold_the_build_folder_without_overlap(tmp_path: Path) -> None:
    """Every file and link of /app is in exactly one layer; folders on the way are in both."""
    app = build_folder(tmp_path)
    for part in slug.Part:
        slug.write_layer(app, tmp_path / f"{part.value}.tar", part)
    deps = members(tmp_path / "dependencies.tar")
    own = members(tmp_path / "app.tar")
    leaves = {n for n, m in {**deps, **own}.items() if not m.isdir() and n.startswith("app/")}
    on_disk = {
        "app/" + str(path.relative_to(app))
        for path in app.rglob("*")
        if path.is_symlink() or not path.is_dir()
    }
    assert leaves == on_disk
    assert not {n for n in deps if not deps[n].isdir()} & {n for n in own if not own[n].isdir()}
    assert {"app/.venv/lib/dep.py", "app/.venv/python", "app/vendor/bundle/gem.rb"} <= set(deps)
    assert {"app/hello.py", "app/vendor/own.rb", "usr/local/bin/slipway-launch"} <= set(own)
    assert deps["app/vendor"].isdir() and own["app/vendor"].isdir()
    assert deps["app/.venv/python"].issym()
    assert deps["app/.venv/python"].linkname == "/usr/bin/python3"
    assert all(m.uid == 0 and m.gid == 0 for m in [*deps.values(), *own.values()])


def test_the_dependency_key_follows_contents_not_times(tmp_path: Path) -> None:
    """Same packages reinstalled (new times): same key; a changed byte, a changed app file
    or another run stack: the key says which."""
    app = build_folder(tmp_path)
    key = slug.dependency_key(app, "sha256:run")
    assert key is not None
    os.utime(app / ".venv" / "lib" / "dep.py", (1, 1))
    os.utime(app / ".venv", (2, 2))
    assert slug.dependency_key(app, "sha256:run") == key
    (app / "hello.py").write_text("print('changed')\n")
    assert slug.dependency_key(app, "sha256:run") == key
    assert slug.dependency_key(app, "sha256:other-run-stack") != key
    (app / ".venv" / "lib" / "dep.py").write_text("DEP = 2\n")
    assert slug.dependency_key(app, "sha256:run") != key


def test_no_dependency_folder_means_no_key(tmp_path: Path) -> None:
    """A build folder without any of the folders (a folder on the way is not one) has no key."""
    app = tmp_path / "app"
    (app / "vendor").mkdir(parents=True)
    (app / "index.html").write_text("<h1>hi</h1>\n")
    assert slug.dependency_key(app, "sha256:run") is None


def test_a_link_named_like_a_dependency_folder_is_kept_as_a_link(tmp_path: Path) -> None:
    """`.venv -> /etc` is stored as a link: nothing of the host folder is read into a layer."""
    app = tmp_path / "app"
    app.mkdir()
    (app / ".venv").symlink_to("/etc")
    slug.write_layer(app, tmp_path / "deps.tar", slug.Part.DEPENDENCIES)
    found = members(tmp_path / "deps.tar")
    assert set(found) == {"app", "app/.venv"}
    assert found["app/.venv"].issym() and found["app/.venv"].linkname == "/etc"


def test_a_fifo_among_the_dependencies_fails_the_build(tmp_path: Path) -> None:
    """A FIFO the build left in a dependency folder is refused, not read (which would hang)."""
    app = build_folder(tmp_path)
    os.mkfifo(app / ".venv" / "lib" / "pipe")
    with pytest.raises(BuildpackFailed, match=r"/app/\.venv/lib/pipe is a FIFO"):
        slug.dependency_key(app, "sha256:run")
