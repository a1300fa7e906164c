"""What the proxy refuses, seen at the registry API itself, and that it is the only door."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import uuid
from pathlib import Path

import pytest

from slipway.services.registry_proxy.client import DockerAuth, docker_auth
from tests.registry_proxy.conftest import MANIFEST_V2, BusFactory, RegistryHttp, RunningRegistry

pytestmark = [pytest.mark.integration]


async def test_v2_challenges_without_credentials(http: RegistryHttp) -> None:
    """`/v2/` answers 401 with a Basic challenge, as engines expect before they log in."""
    status, headers, body = await http.request("GET", "/v2/")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic realm=")
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"


async def test_v2_answers_with_valid_credentials(
    http: RegistryHttp, bus_factory: BusFactory, app_id: str
) -> None:
    """With a credential the engine's ping succeeds and names the API version."""
    auth = await docker_auth(await bus_factory("scheduler"), app_id, "pull")
    status, headers, _ = await http.request("GET", "/v2/", auth)
    assert status == 200
    assert headers["Docker-Distribution-API-Version"] == "registry/2.0"


async def test_forged_credentials_are_refused(
    http: RegistryHttp, bus_factory: BusFactory, app_id: str
) -> None:
    """A token whose claims were edited (pull turned into push) fails its signature."""
    auth = await docker_auth(await bus_factory("scheduler"), app_id, "pull")
    version, claims, signature = auth.auth["password"].split(".")
    forged_claims = _edited(claims)
    forged = DockerAuth(
        {**auth.auth, "password": f"{version}.{forged_claims}.{signature}"},
        auth.repository,
        auth.expires_at,
    )
    status, _, body = await http.request("POST", f"/v2/apps/{app_id}/blobs/uploads/", forged)
    assert status == 401
    assert b"bad signature" in body


def _edited(claims: str) -> str:
    raw = base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4))
    edited = raw.replace(b'"pull"', b'"push"')
    assert edited != raw
    return base64.urlsafe_b64encode(edited).rstrip(b"=").decode()


async def test_catalog_and_delete_are_refused(
    http: RegistryHttp, bus_factory: BusFactory, app_id: str
) -> None:
    """No credential lists other apps' repositories or deletes through the proxy."""
    auth = await docker_auth(await bus_factory("builder"), app_id, "push")
    image = await http.push_image(auth, "v1", b"layer-" + uuid.uuid4().bytes)
    status, _, _ = await http.request("GET", "/v2/_catalog", auth)
    assert status == 403
    status, _, _ = await http.request("DELETE", f"/v2/apps/{app_id}/manifests/{image.digest}", auth)
    assert status == 403
    assert await http.manifest_status(auth, image.digest) == 200


async def test_pull_credentials_may_read_but_not_write(
    http: RegistryHttp, bus_factory: BusFactory, app_id: str
) -> None:
    """Pull reads manifests and blobs of its app; any write is denied."""
    push = await docker_auth(await bus_factory("builder"), app_id, "push")
    layer = b"layer-" + uuid.uuid4().bytes
    image = await http.push_image(push, "v1", layer)
    pull = await docker_auth(await bus_factory("scheduler"), app_id, "pull")
    status, _, body = await http.request("GET", f"/v2/apps/{app_id}/blobs/{image.layer}", pull)
    assert (status, body) == (200, layer)
    for method in ("POST", "PUT", "PATCH"):
        status, _, _ = await http.request(method, f"/v2/apps/{app_id}/blobs/uploads/", pull)
        assert status == 403, method


async def test_blob_mount_from_another_app_becomes_a_plain_upload(
    http: RegistryHttp, bus_factory: BusFactory, app_id: str
) -> None:
    """Knowing another app's layer digest does not let a push mount that layer."""
    builder = await bus_factory("builder")
    victim = str(uuid.uuid4())
    theirs = await http.push_image(
        await docker_auth(builder, victim, "push"), "v1", b"secret-" + uuid.uuid4().bytes
    )
    mine = await docker_auth(builder, app_id, "push")
    status, headers, _ = await http.request(
        "POST",
        f"/v2/apps/{app_id}/blobs/uploads/",
        mine,
        params={"mount": theirs.layer, "from": f"apps/{victim}"},
    )
    assert status == 202  # an upload session, not 201 Created (mounted)
    assert "/blobs/uploads/" in headers["Location"]
    status, _, _ = await http.request("GET", f"/v2/apps/{app_id}/blobs/{theirs.layer}", mine)
    assert status == 404


async def test_upload_locations_point_at_the_proxy(
    http: RegistryHttp, bus_factory: BusFactory, app_id: str
) -> None:
    """A chunked upload follows the Location headers back to the proxy and lands whole."""
    auth = await docker_auth(await bus_factory("builder"), app_id, "push")
    status, headers, _ = await http.request("POST", f"/v2/apps/{app_id}/blobs/uploads/", auth)
    assert status == 202
    chunks = [os.urandom(1 << 20) for _ in range(3)]
    location = headers["Location"]
    for chunk in chunks:
        assert location.startswith("/v2/")  # relative: resolved against the proxy
        path, _, query = location.partition("?")
        status, headers, _ = await http.request(
            "PATCH",
            path + ("?" + query if query else ""),
            auth,
            data=chunk,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert status == 202
        location = headers["Location"]
    whole = b"".join(chunks)
    digest = "sha256:" + hashlib.sha256(whole).hexdigest()
    path, _, query = location.partition("?")
    status, _, body = await http.request("PUT", f"{path}?{query}&digest={digest}", auth)
    assert status == 201, body
    status, _, body = await http.request("GET", f"/v2/apps/{app_id}/blobs/{digest}", auth)
    assert status == 200
    assert body == whole


def _listening_inodes() -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # TCP_LISTEN
                inodes.add(fields[9])
    return inodes


def _socket_inodes(pid: int) -> set[str]:
    inodes: set[str] = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:  # closed while we looked
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


async def test_distribution_is_reachable_only_through_the_proxy(
    registry: RunningRegistry,
) -> None:
    """Distribution listens on no TCP port, only on a socket in a folder only we may enter."""
    distribution = registry.state.distribution
    pid = distribution.pid
    assert pid is not None
    listening = _listening_inodes()
    assert _socket_inodes(os.getpid()) & listening  # the proxy (in this process) does listen
    assert not (_socket_inodes(pid) & listening)
    assert stat.S_ISSOCK(distribution.socket.stat().st_mode)
    assert stat.S_IMODE(distribution.socket.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(registry.settings.storage_path().stat().st_mode) == 0o700
    key = registry.settings.signing_key_path()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "path",
    [
        "/v2/apps/{mine}/manifests/../../../apps/{theirs}/manifests/v1",
        "/v2/apps/{mine}/blobs/..%2F..%2F..%2Fapps%2F{theirs}%2Fmanifests%2Fv1",
        "/v2/apps/{mine}/manifests/%2E%2E/%2E%2E/%2E%2E/apps/{theirs}/manifests/v1",
        "/v2/apps/{theirs}/../{mine}/manifests/v1",
    ],
)
async def test_dot_segments_do_not_escape_the_repository(
    http: RegistryHttp, bus_factory: BusFactory, app_id: str, path: str
) -> None:
    """A path that would resolve into another app's repository is refused."""
    builder = await bus_factory("builder")
    theirs = str(uuid.uuid4())
    await http.push_image(await docker_auth(builder, theirs, "push"), "v1", b"secret")
    mine = await docker_auth(builder, app_id, "pull")
    status, _, body = await http.request(
        "GET", path.format(mine=app_id, theirs=theirs), mine, headers={"Accept": MANIFEST_V2}
    )
    assert status in (400, 403, 404), body
    assert b"schemaVersion" not in body
