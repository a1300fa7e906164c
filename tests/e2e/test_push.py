"""End to end: `git push` to the gateway, the real builder (local image mode), the image serves.

The gateway, keyring and builder run in this event loop on a real nats-server;
git and Docker are real. The image is kept on this engine (no registry) and run
by hand, as a dyno would be, to see HTTP 200. Everything the builder made for
this app (images, cache volume, build network) is removed at the end.
"""

from __future__ import annotations

import contextlib
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiodocker
import pytest

from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.builder.app import create_service
from slipway.services.builder.settings import BuilderSettings
from tests.builder.conftest import http_get, running
from tests.gateway import conftest as gateway_fixtures
from tests.gateway.conftest import Stack, run_in_background, stop
from tests.gateway.gitclient import git, push_url

pytestmark = [pytest.mark.integration, pytest.mark.docker, pytest.mark.slow, pytest.mark.alone]

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

slipway_home = gateway_fixtures.slipway_home
keyring_service = gateway_fixtures.keyring_service
gateway_service = gateway_fixtures.gateway_service
stack = gateway_fixtures.stack


@pytest.fixture
async def real_builder(
    nats_server: NatsServer, slipway_home: Path, keyring_service: ServiceApp
) -> AsyncIterator[BuilderSettings]:
    """The real builder service, keeping images on this engine."""
    settings = BuilderSettings(
        nats_url=nats_server.url,
        home=str(slipway_home),
        registry_mode="local",
        ca_bundle=CA_BUNDLE,
        build_network=f"slipway-e2e-builds-{uuid.uuid4().hex[:8]}",
        build_timeout=300.0,
        shutdown_grace=10.0,
    )
    service = create_service(settings)
    task = await run_in_background(service)
    yield settings
    await stop(service, task)


async def remove_app_artifacts(docker: aiodocker.Docker, app_id: str, network: str) -> None:
    for image in await docker.images.list(filters={"label": [f"slipway.app={app_id}"]}):
        for tag in image.get("RepoTags") or [image["Id"]]:
            with contextlib.suppress(aiodocker.DockerError):
                await docker.images.delete(tag, force=True)
    with contextlib.suppress(aiodocker.DockerError):
        volume = await docker.volumes.get(f"slipway-build-cache-{app_id}")  # type: ignore[no-untyped-call]
        await volume.delete()
    with contextlib.suppress(aiodocker.DockerError):
        await (await docker.networks.get(network)).delete()


# (example, what the build says, what the image answers, the web command's start)
EXAMPLE_APPS = [
    ("python-hello", "Python app detected", "Hello from python-hello", "gunicorn"),
    ("node-hello", "Node.js app detected", "Hello from node-hello", ""),
    ("docker-hello", "Building from the app's Dockerfile", "Hello from docker-hello", ""),
]


@pytest.mark.timeout(600)
@pytest.mark.parametrize(("example", "detected", "greeting", "web"), EXAMPLE_APPS)
async def test_push_an_example_and_run_its_image(
    stack: Stack,
    real_builder: BuilderSettings,
    tmp_path: Path,
    example: str,
    detected: str,
    greeting: str,
    web: str,
) -> None:
    """git push → build output as remote: lines → release → the image answers HTTP 200."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    tree = tmp_path / example
    shutil.copytree(EXAMPLES / example, tree)
    await git(tree, "init", "-q", "-b", "main")
    await git(tree, "add", "-A")
    assert (await git(tree, "commit", "-q", "-m", example)).code == 0
    docker = aiodocker.Docker()
    try:
        run = await git(tree, "push", push_url(stack.url, "hello", alice.token), "main")
        assert run.code == 0, run.out
        assert f"remote: -----> {detected}" in run.out
        assert "remote: -----> Released v2" in run.out
        release = (await alice.ok("GET", "/apps/hello/releases"))[-1]
        assert release["version"] == 2
        assert release["process_types"]["web"].startswith(web)
        async with running(docker, release["image"]["ref"]) as url:
            assert greeting in await http_get(url)
    finally:
        await remove_app_artifacts(docker, app["id"], real_builder.build_network)
        await docker.close()
