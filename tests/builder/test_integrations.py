"""The builder with its neighbours: config vars from the gateway, pushes to a registry.

The gateway's CONFIG_SEALED_GET and registry-proxy's CREDENTIALS_ISSUE are
answered here by small responders speaking the real contracts (the config is
sealed through the real keyring as the gateway seals it); the registry is a
real Distribution (`docker-registry`) with basic auth on loopback.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import msgspec
import pytest

from slipway.contracts.gateway import CONFIG_SEALED_GET, GetSealedConfig, SealedConfig
from slipway.contracts.keyring import Purpose
from slipway.contracts.registry import CREDENTIALS_ISSUE, Credentials, IssueCredentials
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus
from slipway.libs.crypto import Binding, envelope
from slipway.libs.natsserver import NatsServer
from tests.builder.conftest import TEAM, Harness, builder_stack, tarball
from tests.builder.test_builds import third_party_buildpack

pytestmark = [
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.docker,
    pytest.mark.slow,
    pytest.mark.integration,
    pytest.mark.timeout(300),
]

SHOW_ENV = """#!/bin/bash
echo "-----> env dir has: $(ls "$3" | tr '\\n' ' ')"
echo "-----> SECRET_WORD is $(cat "$3/SECRET_WORD")"
"""


async def test_config_vars_reach_env_dir(harness: Harness, tmp_path: Path) -> None:
    """The app's config vars, sealed by the gateway, appear as ENV_DIR files during compile."""
    app_id = harness.app_id()
    gateway = await Bus.connect(harness.settings.nats_url, Service.GATEWAY)
    version = uuid.uuid4().hex
    place = Binding(team=TEAM, app=app_id, kind="config", record=version)
    values = {"SECRET_WORD": "swordfish", "OTHER": "x"}
    sealed = await envelope.encrypt(
        gateway, TEAM, Purpose.CONFIG, place, msgspec.json.encode(values)
    )

    async def sealed_config(req: GetSealedConfig) -> SealedConfig:
        if req.app_id != app_id:
            return SealedConfig(app_id=req.app_id, team_id=TEAM, config_version=None)
        return SealedConfig(
            app_id=app_id,
            team_id=TEAM,
            config_version=version,
            ciphertext=sealed,
            binding_kind="config",
            binding_record=version,
        )

    await gateway.serve(CONFIG_SEALED_GET, sealed_config)
    try:
        bp = third_party_buildpack(tmp_path / "env", SHOW_ENV)
        result = await harness.build(
            tarball({"hello.txt": "hi\n"}),
            app_id=app_id,
            buildpacks=[harness.buildpacks.tarball(bp)],
        )
    finally:
        await gateway.close()
    assert result.status == "succeeded", result.text
    assert "-----> env dir has: OTHER SECRET_WORD" in result.text
    assert "-----> SECRET_WORD is swordfish" in result.text


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _bcrypt(password: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # the only bcrypt at hand: glibc's, through the deprecated module

        # bcrypt is what Distribution's htpasswd demands; ruff flags every crypt method.
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))  # noqa: S324


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A real registry on loopback demanding basic auth: (host:port, user, password)."""
    port = _free_port()
    user, password = "builder-test", uuid.uuid4().hex
    (tmp_path / "htpasswd").write_text(f"{user}:{_bcrypt(password)}\n")
    config = tmp_path / "registry.yml"
    config.write_text(
        "version: 0.1\n"
        f"storage:\n  filesystem:\n    rootdirectory: {tmp_path / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"auth:\n  htpasswd:\n    realm: slipway-test\n    path: {tmp_path / 'htpasswd'}\n"
    )
    log = (tmp_path / "registry.log").open("w")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise AssertionError("docker-registry did not start") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}", user, password
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


async def test_registry_mode_pushes_with_credentials(
    tmp_path: Path, registry: tuple[str, str, str]
) -> None:
    """In registry mode the image is pushed with issued credentials; the ref is repo@digest."""
    host, user, password = registry
    nats = NatsServer(tmp_path / "nats")
    nats.start()
    try:
        async with builder_stack(nats, tmp_path / "home", registry_mode="registry") as h:
            app_id = h.app_id()
            proxy = await Bus.connect(nats.url, Service.REGISTRY_PROXY)

            async def issue(req: IssueCredentials) -> Credentials:
                assert req.access == "push"
                return Credentials(
                    registry=host,
                    repository=f"{host}/apps/{req.app_id}",
                    username=user,
                    password=password,
                    expires_at=time.time() + req.ttl_s,
                )

            await proxy.serve(CREDENTIALS_ISSUE, issue)
            try:
                # A tiny image (FROM scratch): what is under test is the push, not the size.
                app = {
                    "Dockerfile": "FROM scratch\nCOPY hello.txt /hello.txt\n",
                    "hello.txt": "hi\n",
                }
                result = await h.build(tarball(app), app_id=app_id)
            finally:
                await proxy.close()
            assert result.status == "succeeded", result.text
            assert result.release is not None
            digest = result.release.image_digest
            assert digest.startswith("sha256:")
            assert result.release.image_ref == f"{host}/apps/{app_id}@{digest}"
            await _assert_manifest(host, app_id, digest, (user, password))
    finally:
        nats.stop()


async def _assert_manifest(host: str, app_id: str, digest: str, auth: tuple[str, str]) -> None:
    url = f"http://{host}/v2/apps/{app_id}/manifests/{digest}"
    accept = "application/vnd.docker.distribution.manifest.v2+json"
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Accept": accept}) as anonymous:
            assert anonymous.status == 401  # the registry does demand credentials
        basic = aiohttp.encode_basic_auth(*auth)
        async with session.get(url, headers={"Accept": accept, "Authorization": basic}) as answer:
            assert answer.status == 200
            assert answer.headers["Docker-Content-Digest"] == digest
