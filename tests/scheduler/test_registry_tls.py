"""A second engine, reached over tcp+TLS, pulls a freshly pushed image over TLS (#18 item 4).

The real registry-proxy (and its Distribution) serves HTTPS with a certificate the
platform CA (`libs.bus.tls`) issued for the address it advertises: the root side of
the second engine's veth, an address that engine routes to (never its own loopback).
The engine, in its own network namespace with its own /etc/docker, has never seen the
image and has no `--insecure-registry`: until its operator trusts the CA
(`certs.d/<host:port>/ca.crt`) every pull is refused and the dyno is listed crashed
saying so; once trusted, the next attempt pulls with a short-lived pull credential
for that app alone, and the dyno serves. The scheduler reaches that engine as a remote
host: `tcp://<address>:2376`, TLS both ways (`dockerd --tlsverify`, a client certificate
registered with `HOSTS_ADD`); a registration it cannot use is refused, saying why.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiodocker
import aiohttp
import pytest

from slipway.contracts import scheduler as sc
from slipway.contracts.registry import IMAGES_LIST, ListImages
from slipway.libs.bus import Bus
from slipway.libs.bus import tls as bustls
from slipway.libs.errors import InvalidRequest
from slipway.services.registry_proxy import certificate
from slipway.services.registry_proxy.client import docker_auth
from slipway.services.registry_proxy.settings import RegistryProxySettings
from tests.conftest import assert_eventually
from tests.dockerhosts import DockerHost, extra_docker_hosts
from tests.registry_proxy.conftest import RunningRegistry, start_registry
from tests.scheduler.conftest import Cluster
from tests.scheduler.test_release_failures import dyno_changes

pytestmark = [pytest.mark.docker, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def remote_host() -> Iterator[DockerHost]:
    """An engine with no image, its own /etc/docker, on tcp+TLS; torn down after the module."""
    with extra_docker_hosts(1, own_etc=True, tls=True) as hosts:
        yield hosts[0]


def peer_address(host: DockerHost) -> str:
    """The machine's side of the engine's veth: where that engine reaches this machine."""
    return host.address.rsplit(".", 1)[0] + ".1"


@pytest.fixture
async def tls_registry(
    cluster: Cluster, remote_host: DockerHost, tmp_path: Path
) -> AsyncIterator[tuple[RunningRegistry, Path]]:
    """registry-proxy on HTTPS, advertised at the engine's peer address, its certificate
    issued by the platform CA as an operator would (`certificate.py`); and that CA."""
    advertised = peer_address(remote_host)
    cert, key, ca = certificate.issue(tmp_path / "nats-tls", tmp_path / "tls", [advertised])
    settings = RegistryProxySettings(
        nats_url=cluster.nats.url,
        home=str(tmp_path / "registry-home"),
        # Every address: the engine comes through the veth, this machine's engine (the
        # push) through loopback. Credentials name the advertised one.
        registry_host="0.0.0.0",  # noqa: S104
        registry_port=0,
        registry_advertise=advertised,
        registry_tls_cert=str(cert),
        registry_tls_key=str(key),
        registry_gc_delay_s=0.0,
        shutdown_grace=10.0,
    )
    running = await start_registry(settings)
    try:
        yield running, ca
    finally:
        if not running.task.done():
            await running.stop()


@pytest.fixture
def pushed_names() -> Iterator[list[str]]:
    """Image names tagged on this machine's engine, removed afterwards."""
    names: list[str] = []
    yield names
    for name in names:
        subprocess.run(["docker", "rmi", name], check=False, capture_output=True)


async def push_fresh(
    cluster: Cluster, registry: RunningRegistry, image: str, app_id: str, names: list[str]
) -> str:
    """Push `image` as the builder would (push credential for the app); its digest."""
    builder = await Bus.connect(cluster.nats.url, "builder")
    try:
        auth = await docker_auth(builder, app_id, "push")
        port = registry.address.rsplit(":", 1)[1]
        # This machine's engine goes through loopback (no CA needed there); the
        # repository is the same one the credential names.
        local = f"127.0.0.1:{port}/apps/{app_id}:v1"
        await asyncio.to_thread(
            subprocess.run, ["docker", "tag", image, local], check=True, capture_output=True
        )
        names.append(local)
        login = {**auth.auth, "serveraddress": f"127.0.0.1:{port}"}
        docker = aiodocker.Docker()
        try:
            await docker.images.push(local.rsplit(":", 1)[0], tag="v1", auth=login)
        finally:
            await docker.close()
        listed = await builder.call(IMAGES_LIST, ListImages(app_id=app_id))
        (pushed,) = listed.images
        return pushed.digest
    finally:
        await builder.close()


def registry_config(host: DockerHost) -> str:
    """The engine's insecure ranges and registries, as `docker info` reports them."""
    form = "{{json .RegistryConfig.InsecureRegistryCIDRs}} {{json .RegistryConfig.IndexConfigs}}"
    return subprocess.run(
        ["docker", "-H", host.socket, "info", "--format", form],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def engine_has(host: DockerHost, reference: str) -> bool:
    found = subprocess.run(
        ["docker", "-H", host.socket, "image", "inspect", reference],
        capture_output=True,
        check=False,
    )
    return found.returncode == 0


async def test_a_fresh_image_is_pulled_over_tls_by_an_engine_that_trusts_the_platform_ca(
    cluster: Cluster,
    remote_host: DockerHost,
    tls_registry: tuple[RunningRegistry, Path],
    sched_image: str,
    pushed_names: list[str],
) -> None:
    """Untrusted CA: refused and said; trusted: pulled, no insecure registry, dyno serves."""
    registry, ca = tls_registry
    app = str(uuid.uuid4())
    digest = await push_fresh(cluster, registry, sched_image, app, pushed_names)
    reference = f"{registry.address}/apps/{app}@{digest}"
    assert registry.address.startswith(peer_address(remote_host) + ":")
    assert not engine_has(remote_host, reference)

    await cluster.start()
    ca_file, cert_file, key_file = remote_host.client_tls()
    await cluster.bus.call(
        sc.HOSTS_ADD,
        sc.AddHost(
            id="h2",
            endpoint=remote_host.tcp_endpoint,
            address=remote_host.address,
            tls_ca=ca_file,
            tls_cert=cert_file,
            tls_key=key_file,
        ),
        timeout=10,
    )
    await cluster.gateway.release(app, 1, {"web": 1}, image=reference)

    async def refused() -> None:
        changes = await dyno_changes(cluster.bus, app)
        assert (
            "web.1",
            "crashed",
            "Could not start on host h2: its image could not be pulled there"
            " (attempt 1 of 3 there); next attempt in 0.5 s",
        ) in changes, changes

    await assert_eventually(refused, timeout=60, interval=0.3)
    assert not engine_has(remote_host, reference)

    remote_host.trust_registry(registry.address, ca.read_bytes())

    async def serving() -> sc.Dyno:
        (dyno,) = await cluster.dynos(app)
        assert (dyno.state, dyno.host_id) == ("up", "h2"), dyno
        return dyno

    dyno = await assert_eventually(serving, timeout=90, interval=0.3)
    assert engine_has(remote_host, reference)
    url = f"http://{dyno.address}:{dyno.port}/"
    async with aiohttp.ClientSession() as session, session.get(url) as answer:
        assert answer.status == 200
        assert await answer.text() == "web.1 v1"
    info = await asyncio.to_thread(registry_config, remote_host)
    # Only Docker's built-in loopback range is insecure; the registry's address is not.
    assert info.startswith('["127.0.0.0/8"]'), info
    assert registry.address not in info


async def test_a_tcp_host_is_registered_only_with_tls_it_can_use(
    cluster: Cluster, remote_host: DockerHost, tmp_path: Path
) -> None:
    """No TLS files, unreadable ones, or a client certificate of another CA: refused as
    invalid with the reason; the engine itself answers no client without its certificate."""
    await cluster.start()
    ca_file, cert_file, key_file = remote_host.client_tls()

    async def refused(
        tls_ca: str | None = None, tls_cert: str | None = None, tls_key: str | None = None
    ) -> str:
        request = sc.AddHost(
            id="h9",
            endpoint=remote_host.tcp_endpoint,
            address=remote_host.address,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
        )
        with pytest.raises(InvalidRequest) as caught:
            await cluster.bus.call(sc.HOSTS_ADD, request, timeout=20)
        return str(caught.value)

    assert "needs tls_ca, tls_cert and tls_key" in await refused()
    missing = str(tmp_path / "missing.pem")
    assert "cannot be used" in await refused(tls_ca=ca_file, tls_cert=missing, tls_key=key_file)
    stranger = bustls.issue(tmp_path / "other-ca", "client")
    assert "does not answer" in await refused(
        tls_ca=ca_file, tls_cert=str(stranger.cert), tls_key=str(stranger.key)
    )
    hosts = await cluster.bus.call(sc.HOSTS_LIST, sc.ListHosts(), timeout=10)
    assert "h9" not in {h.id for h in hosts.hosts}

    # The engine's own side: without a client certificate there is no answer at all.
    context = ssl.create_default_context(cafile=ca_file)
    url = f"https://{remote_host.address}:2376/version"
    try:
        async with aiohttp.ClientSession() as session, session.get(url, ssl=context) as answer:
            status: int | None = answer.status
    except aiohttp.ClientError:
        status = None
    assert status is None
    with_cert = ssl.create_default_context(cafile=ca_file)
    with_cert.load_cert_chain(cert_file, key_file)
    async with aiohttp.ClientSession() as session, session.get(url, ssl=with_cert) as answer:
        assert answer.status == 200
