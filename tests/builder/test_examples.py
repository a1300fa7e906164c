"""The three examples build, and the images answer HTTP when run as dynos would run them."""

from __future__ import annotations

import pytest
import pytest_asyncio

from slipway.contracts.builder import LAUNCHER
from tests.builder.conftest import (
    EXAMPLES,
    BuildResult,
    Harness,
    http_get,
    run_once,
    running,
    tarball,
)

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(300),
]


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def python_app(harness: Harness) -> BuildResult:
    """examples/python-hello, built once for the session."""
    return await harness.build(
        EXAMPLES / "python-hello", app_id=harness.app_id(), version="0123456789abcdef"
    )


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def node_app(harness: Harness) -> BuildResult:
    """examples/node-hello, built once for the session."""
    return await harness.build(EXAMPLES / "node-hello", app_id=harness.app_id())


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def docker_app(harness: Harness) -> BuildResult:
    """examples/docker-hello, built once for the session."""
    return await harness.build(EXAMPLES / "docker-hello", app_id=harness.app_id())


async def test_python_hello_builds_and_serves(harness: Harness, python_app: BuildResult) -> None:
    """The python buildpack makes an image whose web process answers on $PORT."""
    assert python_app.status == "succeeded", python_app.text
    assert "-----> Python app detected" in python_app.text
    assert python_app.finished.status == "succeeded"
    release = python_app.release
    assert release is not None
    assert release.app_id == python_app.app_id
    assert release.build_id == python_app.build_id
    assert release.description == "Deploy 0123456"
    assert release.image_digest.startswith("sha256:")
    assert release.process_types["web"].startswith("gunicorn --bind 0.0.0.0:$PORT")
    async with running(harness.docker, release.image_ref) as url:
        assert "Hello from python-hello on web.1" in await http_get(url)


async def test_slug_is_root_owned_and_runs_profile_d(
    harness: Harness, python_app: BuildResult
) -> None:
    """The launcher sources .profile.d (venv on PATH) and /app is not writable by the dyno."""
    assert python_app.release is not None
    image = python_app.release.image_ref
    info = await harness.docker.images.inspect(image)
    assert info["Config"]["Entrypoint"] == [LAUNCHER]
    assert info["Config"]["Labels"]["slipway.app"] == python_app.app_id
    assert info["Config"]["Labels"]["slipway.build"] == python_app.build_id
    out = await run_once(
        harness.docker,
        image,
        "id -u; command -v gunicorn; stat -c '%U' /app /app/hello.py;"
        " touch /app/hello.py 2>/dev/null && echo WRITABLE || echo READONLY;"
        " touch /app/new 2>/dev/null && echo WRITABLE || echo READONLY",
    )
    assert out.split() == [
        "10000",
        "/app/.venv/bin/gunicorn",
        "root",
        "root",
        "READONLY",
        "READONLY",
    ]


async def test_node_hello_builds_and_serves(harness: Harness, node_app: BuildResult) -> None:
    """The nodejs buildpack runs npm ci and the start script serves on $PORT."""
    assert node_app.status == "succeeded", node_app.text
    assert "-----> Node.js app detected" in node_app.text
    assert "npm ci" in node_app.text
    assert node_app.release is not None
    assert node_app.release.process_types == {"web": "node server.js"}
    async with running(harness.docker, node_app.release.image_ref) as url:
        assert "Hello from node-hello" in await http_get(url)


async def test_docker_hello_builds_and_serves(harness: Harness, docker_app: BuildResult) -> None:
    """A root Dockerfile is built with Docker; its own CMD is the web process."""
    assert docker_app.status == "succeeded", docker_app.text
    assert "Building from the app's Dockerfile" in docker_app.text
    assert "Step 1/" in docker_app.text  # the engine's output was streamed
    assert docker_app.release is not None
    assert docker_app.release.process_types == {"web": ""}
    async with running(harness.docker, docker_app.release.image_ref) as url:
        assert await http_get(url) == "Hello from docker-hello\n"


async def test_second_python_build_uses_the_cache(
    harness: Harness, python_app: BuildResult
) -> None:
    """Unchanged requirements.txt: the cached virtualenv is used and pip installs nothing."""
    assert "Installing dependencies from requirements.txt" in python_app.text
    again = await harness.build(EXAMPLES / "python-hello", app_id=python_app.app_id)
    assert again.status == "succeeded", again.text
    assert "-----> Using cached virtualenv (requirements.txt unchanged)" in again.text
    assert "Installing dependencies" not in again.text
    assert again.release is not None
    async with running(harness.docker, again.release.image_ref) as url:
        assert "Hello from python-hello" in await http_get(url)


async def test_second_node_build_uses_the_cache(harness: Harness, node_app: BuildResult) -> None:
    """Unchanged package-lock.json: node_modules comes from the cache, npm ci does not run."""
    again = await harness.build(EXAMPLES / "node-hello", app_id=node_app.app_id)
    assert again.status == "succeeded", again.text
    assert "-----> Using cached node_modules (package-lock.json unchanged)" in again.text
    assert "npm ci" not in again.text


async def test_static_site_builds_and_serves(harness: Harness) -> None:
    """The static buildpack serves static.json's root with python3's http.server on $PORT."""
    site = {"static.json": '{"root": "site"}', "site/index.html": "<h1>static hello</h1>\n"}
    result = await harness.build(tarball(site), app_id=harness.app_id())
    assert result.status == "succeeded", result.text
    assert "-----> Static app detected" in result.text
    assert result.release is not None
    async with running(harness.docker, result.release.image_ref) as url:
        assert await http_get(url + "/index.html") == "<h1>static hello</h1>\n"
