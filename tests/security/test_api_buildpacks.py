"""Buildpacks named at the API: built-in ones or https URLs, nothing the builder would open locally.

Each test uploads a real source to the real gateway (real NATS and keyring),
asks for a build with a hostile buildpack, and checks the 422 the customer reads
and that no build was recorded or requested.
"""

from __future__ import annotations

import importlib
import io
import subprocess
import tarfile
from pathlib import Path

import pytest

from slipway.services.gateway.git import builds
from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import Api, Stack

pytestmark = pytest.mark.integration

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
gateway_service = gateway_fixtures.gateway_service
stack = gateway_fixtures.stack


def tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        data = b"print('hello')\n"
        info = tarfile.TarInfo("app.py")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


async def uploaded_source(stack: Stack, who: Api) -> str:
    """A real source of app `hello`, uploaded: its get_url."""
    blob = (await who.ok("POST", "/apps/hello/sources", status=201))["source_blob"]
    async with stack.session.put(blob["put_url"], data=io.BytesIO(tarball())) as answer:
        assert answer.status == 200, await answer.text()
    url: str = blob["get_url"]
    return url


def local_buildpack_repo(root: Path) -> Path:
    """A real git repository holding a buildpack that would read the builder's disk."""
    repo = root / "evil-buildpack"
    (repo / "bin").mkdir(parents=True)
    (repo / "bin" / "detect").write_text("#!/bin/sh\necho evil\n")
    (repo / "bin" / "compile").write_text("#!/bin/sh\ncat /etc/shadow\n")
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "evil"]):
        subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True
        )
    return repo


@pytest.mark.parametrize(
    ("field", "buildpack"),
    [
        ("url", "file://{repo}"),
        ("url", "{repo}"),
        ("url", "ssh://git@127.0.0.1{repo}"),
        ("url", "git@127.0.0.1:evil-buildpack.git"),
        ("url", "http://127.0.0.1:9/evil-buildpack.tgz"),
        ("name", "file://{repo}"),
    ],
    ids=["file-url", "host-path", "ssh-url", "scp-like", "plain-http", "file-as-name"],
)
async def test_a_buildpack_that_is_not_https_is_refused(
    stack: Stack, tmp_path: Path, field: str, buildpack: str
) -> None:
    """file://, host paths, ssh:// and plain http:// buildpacks answer 422; no build starts."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    url = await uploaded_source(stack, alice)
    named = buildpack.format(repo=local_buildpack_repo(tmp_path))

    answer = await alice.post(
        "/apps/hello/builds", {"source_blob": {"url": url}, "buildpacks": [{field: named}]}
    )

    assert answer.status == 422, answer.body
    assert answer.error_id == "invalid_params"
    assert "https:// git or tarball URL" in answer.body["message"]
    assert await alice.ok("GET", "/apps/hello/builds") == []


@pytest.mark.parametrize("buildpack", ["python", "https://git.example.com/buildpacks/go.git#v1"])
async def test_built_in_and_https_buildpacks_are_accepted(stack: Stack, buildpack: str) -> None:
    """A built-in name or an https URL is taken: the build is created (201)."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    url = await uploaded_source(stack, alice)

    answer = await alice.post(
        "/apps/hello/builds", {"source_blob": {"url": url}, "buildpacks": [{"url": buildpack}]}
    )

    assert answer.status == 201, answer.body
    assert [b["url"] for b in answer.body["buildpacks"]] == [buildpack]


def test_the_api_s_built_in_names_are_the_builder_s() -> None:
    """The names the API takes without a URL are exactly the builder's own buildpacks."""
    # Imported by name: mypy takes the builder's `buildpacks/` folder for this module.
    builder_buildpacks = importlib.import_module("slipway.services.builder.buildpacks")
    assert builds.BUILTIN_BUILDPACKS == builder_buildpacks.BUILTINS
