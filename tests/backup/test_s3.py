"""The S3-compatible destination against a real S3 server: moto's standalone one (an emulator).

`moto_server` runs as its own process on a loopback port; each test uses its own bucket.
The ObjectStore contract (ranges, pagination, deletes), the multipart path, refused
keys and endpoints, damaged uploads, TLS with an on-prem CA, and a backup stack whose
copy destination is the bucket: the local objects lost, the restore reads the copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import io
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session

from slipway.services.backup.app import create_service as create_backup
from slipway.services.backup.errors import StorageError
from slipway.services.backup.s3 import MIN_PART_BYTES, S3Bucket, S3Options, parse_url
from slipway.services.backup.settings import BackupSettings
from tests.addons.conftest import AddonStack
from tests.addons.test_postgresql import provisioned
from tests.backup.conftest import backup_settings
from tests.backup.test_backups import restored, sql
from tests.gateway.conftest import Api, run_in_background, stop
from tests.log_shipper.drain_servers import self_signed

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

ACCESS_KEY = "slipway-test-access"
SECRET_KEY = "slipway-test-secret-" + "9f2c" * 8
RUNNING = re.compile(r"Running on (https?)://127\.0\.0\.1:(\d+)")


@dataclass(frozen=True)
class MotoServer:
    endpoint: str
    ca_file: str = ""


def start_moto(folder: Path, *tls: str) -> Iterator[MotoServer]:
    """`moto_server` on a free loopback port; its log goes to a file, never a full pipe."""
    folder.mkdir(parents=True, exist_ok=True)
    log_path = folder / "moto.log"
    moto = str(Path(sys.executable).with_name("moto_server"))
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [moto, "-H", "127.0.0.1", "-p", "0", *tls], stdout=log, stderr=log
        )
    try:
        deadline = time.monotonic() + 30
        while not (found := RUNNING.search(log_path.read_text(errors="replace"))):
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"moto_server did not start: {log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        yield MotoServer(f"{found[1]}://127.0.0.1:{found[2]}")
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One plain-HTTP moto server for the module."""
    yield from start_moto(tmp_path_factory.mktemp("moto"))


@pytest.fixture(scope="module")
def moto_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """A moto server behind HTTPS with a certificate no system bundle trusts (an on-prem CA)."""
    folder = tmp_path_factory.mktemp("moto-tls")
    cert, key = self_signed(folder)
    for server in start_moto(folder, "-c", str(cert), "-k", str(key)):
        yield dataclasses.replace(server, ca_file=str(cert))


@pytest.fixture(autouse=True)
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The standard variables, so no test ever falls back to anything else."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)


@contextlib.asynccontextmanager
async def raw_client(server: MotoServer) -> AsyncIterator[S3Client]:
    """A plain client, to look at the bucket behind S3Bucket's back."""
    config = AioConfig(s3={"addressing_style": "path"})
    async with get_session().create_client(
        "s3",
        region_name="us-east-1",
        endpoint_url=server.endpoint,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        verify=server.ca_file or None,
        config=config,
    ) as client:
        yield client


async def new_bucket(server: MotoServer) -> str:
    name = f"slipway-{uuid.uuid4().hex[:12]}"
    async with raw_client(server) as client:
        await client.create_bucket(Bucket=name)
    return name


async def names_in(server: MotoServer, bucket: str) -> list[str]:
    async with raw_client(server) as client:
        answer = await client.list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in answer.get("Contents", []))


@contextlib.asynccontextmanager
async def opened(url: str, server: MotoServer, **options: Any) -> AsyncIterator[S3Bucket]:
    values: dict[str, Any] = {"endpoint": server.endpoint, "path_style": True, **options}
    bucket = S3Bucket(url, S3Options(**values))
    try:
        yield bucket
    finally:
        await bucket.close()


@pytest.fixture
async def bucket(moto: MotoServer) -> AsyncIterator[S3Bucket]:
    """A fresh bucket in the moto server, objects under the prefix `site/objects`."""
    name = await new_bucket(moto)
    async with opened(f"s3://{name}/site/objects", moto) as store:
        yield store


def test_urls_name_a_bucket_and_a_prefix() -> None:
    """`s3://bucket/prefix` splits; anything that is not a bucket and clean key is refused."""
    assert parse_url("s3://backups/site/one/") == ("backups", "site/one")
    assert parse_url("s3://backups") == ("backups", "")
    for bad in ("backups/x", "s3://Bad_Bucket/x", "s3://b/../up", "s3://ab", "s3://a..b/x"):
        with pytest.raises(StorageError):
            parse_url(bad)


async def test_put_then_read_whole_by_range_and_past_the_end(
    bucket: S3Bucket, moto: MotoServer
) -> None:
    """What is put reads back whole or by range, under the prefix; a delete removes it."""
    await bucket.put("a1/base/000001/00000", b"0123456789")
    assert await names_in(moto, bucket.bucket) == ["site/objects/a1/base/000001/00000"]
    assert await bucket.read("a1/base/000001/00000") == b"0123456789"
    assert await bucket.read("a1/base/000001/00000", 2, 3) == b"234"
    assert await bucket.read("a1/base/000001/00000", 7) == b"789"
    assert await bucket.read("a1/base/000001/00000", 0, 4) == b"0123"
    assert await bucket.read("a1/base/000001/00000", 10) == b""
    await bucket.delete("a1/base/000001/00000")
    await bucket.delete("a1/base/000001/00000")  # gone already: no error, as S3 itself
    with pytest.raises(StorageError, match="missing"):
        await bucket.read("a1/base/000001/00000")


async def test_keys_are_listed_across_pages_and_only_under_their_folder(
    moto: MotoServer,
) -> None:
    """Two keys a page: all seven come back, sorted; `a10/...` is not under `a1`."""
    name = await new_bucket(moto)
    async with opened(f"s3://{name}/p", moto, page_keys=2) as store:
        wanted = [f"a1/wal/00000001/{n:024X}/00000000" for n in range(7)]
        for key in reversed(wanted):
            await store.put(key, b"w")
        await store.put("a10/base/000001/00000", b"b")
        async with raw_client(moto) as client:  # someone else's object, a name we never make
            await client.put_object(Bucket=name, Key="p/a1/notes.txt", Body=b"x")
        assert await store.keys("a1") == wanted
        assert await store.keys("a10") == ["a10/base/000001/00000"]


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", "a//b", "a/b/", "a b"])
async def test_keys_that_could_leave_the_prefix_are_refused(
    bucket: S3Bucket, moto: MotoServer, key: str
) -> None:
    """A key is ids and hex separated by slashes: refused before any request is made."""
    with pytest.raises(StorageError, match="refusing the object key"):
        await bucket.put(key, b"x")
    with pytest.raises(StorageError, match="refusing the object key"):
        await bucket.read(key)
    assert await names_in(moto, bucket.bucket) == []


async def test_a_large_object_goes_up_in_parts_and_reads_back_across_them(moto: MotoServer) -> None:
    """Above the threshold: a multipart upload (ETag `-3`), whole and ranged reads intact."""
    name = await new_bucket(moto)
    options = {"multipart_bytes": MIN_PART_BYTES, "part_bytes": MIN_PART_BYTES}
    data = os.urandom(2 * MIN_PART_BYTES + 1024 * 1024)
    async with opened(f"s3://{name}", moto, **options) as store:
        await store.put("a1/base/000001/00000", data)
        async with raw_client(moto) as client:
            head = await client.head_object(Bucket=name, Key="a1/base/000001/00000")
        assert head["ETag"].strip('"').endswith("-3"), head["ETag"]
        assert await store.read("a1/base/000001/00000") == data
        boundary = MIN_PART_BYTES - 10
        assert await store.read("a1/base/000001/00000", boundary, 20) == data[boundary:][:20]


def corrupt_in_flight(client: S3Client, operation: str) -> None:
    """Flip one byte of each `operation` body after its Content-MD5 was computed."""

    def flip(request: Any, **_: Any) -> None:
        body = bytearray(request.body.getvalue())  # botocore hands the body over as a BytesIO
        body[len(body) // 2] ^= 0x01
        request.body = io.BytesIO(bytes(body))

    client.meta.events.register(f"before-send.s3.{operation}", flip)


@pytest.mark.parametrize(
    ("size", "operation"), [(1024, "PutObject"), (MIN_PART_BYTES + 100, "UploadPart")]
)
async def test_an_upload_damaged_on_the_way_is_refused_and_not_kept(
    moto: MotoServer, size: int, operation: str
) -> None:
    """A byte flipped between us and the bucket: the put fails and no object is left."""
    name = await new_bucket(moto)
    options = {"multipart_bytes": MIN_PART_BYTES, "part_bytes": MIN_PART_BYTES}
    async with opened(f"s3://{name}/x", moto, **options) as store:
        corrupt_in_flight(await store.client(), operation)
        with pytest.raises(StorageError, match="kept other bytes than were sent"):
            await store.put("a1/wal/00000001/000000010000000000000001/00000000", os.urandom(size))
    assert await names_in(moto, name) == []
    async with raw_client(moto) as client:
        uploads = await client.list_multipart_uploads(Bucket=name)
    assert uploads.get("Uploads", []) == []


async def test_interrupted_multipart_uploads_are_swept(moto: MotoServer) -> None:
    """A crash's unfinished upload under the prefix is aborted; one elsewhere is left alone."""
    name = await new_bucket(moto)
    async with raw_client(moto) as client:
        await client.create_multipart_upload(Bucket=name, Key="x/a1/base/000001/00000")
        await client.create_multipart_upload(Bucket=name, Key="other/thing")
        async with opened(f"s3://{name}/x", moto) as store:
            # moto answers a fixed 2010 `Initiated` for every upload, so the default age
            # (a day: younger ones may be another host's, under way) cannot be shown here.
            assert await store.sweep_partial(older_than=dt.timedelta(0)) == 1
        left = await client.list_multipart_uploads(Bucket=name)
    assert [u["Key"] for u in left.get("Uploads", [])] == ["other/thing"]


async def test_credentials_come_from_the_named_file_and_are_never_shown(
    moto: MotoServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A credentials file works without the variables; no error message carries the secret."""
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    name = await new_bucket(moto)
    async with opened(f"s3://{name}", moto) as store:
        with pytest.raises(StorageError, match="no S3 credentials") as missing:
            await store.put("a1/x", b"x")
    assert SECRET_KEY not in str(missing.value)
    creds = tmp_path / "credentials"
    creds.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    async with opened(f"s3://{name}", moto, credentials_file=str(creds)) as store:
        await store.put("a1/x", b"x")
        assert await store.read("a1/x") == b"x"
    # A server that is not there: the error names the destination, not the secret.
    async with opened(
        f"s3://{name}", MotoServer("http://127.0.0.1:9"), credentials_file=str(creds)
    ) as store:
        with pytest.raises(StorageError) as down:
            await store.read("a1/x")
    assert SECRET_KEY not in str(down.value) and ACCESS_KEY not in str(down.value)


def test_an_endpoint_carrying_credentials_is_refused() -> None:
    """Credentials in the endpoint URL would be logged with it: refused, pointing elsewhere."""
    with pytest.raises(StorageError, match="AWS_ACCESS_KEY_ID"):
        S3Bucket("s3://b1b/x", S3Options(endpoint=f"https://{ACCESS_KEY}:{SECRET_KEY}@s3.local"))


async def test_tls_is_verified_against_the_system_bundle_or_the_named_ca(
    moto_tls: MotoServer,
) -> None:
    """An endpoint whose certificate no system CA signed is refused, accepted with its CA."""
    name = await new_bucket(moto_tls)
    async with opened(f"s3://{name}", moto_tls) as store:
        with pytest.raises(StorageError, match=r"(?i)certificate"):
            await store.put("a1/x", b"x")
    async with opened(f"s3://{name}", moto_tls, ca_file=moto_tls.ca_file) as store:
        await store.put("a1/x", b"x")
        assert await store.read("a1/x") == b"x"


# ---- the backup service storing in the bucket ----------------------------------------------


@contextlib.asynccontextmanager
async def backup_service_on(
    addons: AddonStack, moto: MotoServer, folder: Path, **overrides: Any
) -> AsyncIterator[BackupSettings]:
    """The backup service with the bucket settings (credentials from a file) and `overrides`."""
    creds = folder / "s3-credentials"
    creds.write_text(
        f"[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n"
    )
    settings = backup_settings(
        addons,
        backup_s3_endpoint=moto.endpoint,
        backup_s3_path_style=True,
        backup_s3_credentials_file=str(creds),
        **overrides,
    )
    service = create_backup(settings)
    task = await run_in_background(service)
    try:
        yield settings
    finally:
        await stop(service, task)


async def captured(addons: AddonStack, app_name: str) -> tuple[Api, dict[str, Any], dict[str, Any]]:
    """An add-on with two rows and a completed backup b001: (owner, app, add-on)."""
    alice = await addons.stack.user("alice@example.com")
    app = await addons.stack.app(alice, app_name)
    addon = await provisioned(alice, app_name)
    await sql(addons, alice, app, "CREATE TABLE t (n int); INSERT INTO t VALUES (41), (42)")
    backup = await alice.ok("POST", f"/apps/{app_name}/addons/{addon['name']}/backups", status=201)
    assert backup["state"] == "completed", backup
    return alice, app, addon


async def restored_rows(
    addons: AddonStack, owner: Api, app: dict[str, Any], addon: dict[str, Any]
) -> list[str]:
    """Restore the latest backup as a new add-on; the rows of `t` there."""
    created = await owner.ok(
        "POST",
        f"/apps/{app['name']}/addons",
        {"plan": "postgresql:mini", "config": {"restore_from": addon["name"]}},
        status=202,
    )
    found = await restored(owner, app["name"], created["name"])
    var = found["config_vars"][0]
    return (await sql(addons, owner, app, "SELECT n FROM t ORDER BY n", var)).split()


@pytest.mark.docker
@pytest.mark.integration
@pytest.mark.slow
async def test_a_restore_reads_the_bucket_copy_when_the_local_objects_are_gone(
    addon_stack: AddonStack, moto: MotoServer, tmp_path: Path
) -> None:
    """SLIPWAY_BACKUP_COPY_TO=s3://...: capture, lose every local object, restore all the same."""
    name = await new_bucket(moto)
    copy_to = f"s3://{name}/offsite"
    async with backup_service_on(addon_stack, moto, tmp_path, backup_copy_to=copy_to) as settings:
        alice, app, addon = await captured(addon_stack, "offsite")
        base = f"{addon['id']}/base/000001/00000"
        assert f"offsite/{base}" in await names_in(moto, name)
        local = settings.storage_root() / addon["id"]
        lost = [Path(d, f) for d, _, files in os.walk(local) for f in files]
        for path in lost:
            path.unlink(missing_ok=True)
        assert settings.storage_root() / base in lost

        assert await restored_rows(addon_stack, alice, app, addon) == ["41", "42"]


@pytest.mark.docker
@pytest.mark.integration
@pytest.mark.slow
async def test_a_bucket_as_the_primary_destination_serves_capture_and_restore(
    addon_stack: AddonStack, moto: MotoServer, tmp_path: Path
) -> None:
    """SLIPWAY_BACKUP_S3_URL: objects and manifests go to the bucket only, restores read it."""
    name = await new_bucket(moto)
    url = f"s3://{name}/primary"
    async with backup_service_on(addon_stack, moto, tmp_path, backup_s3_url=url) as settings:
        alice, app, addon = await captured(addon_stack, "inbucket")
        stored = await names_in(moto, name)
        assert f"primary/{addon['id']}/base/000001/00000" in stored
        assert f"primary/{addon['id']}/manifests/00000001" in stored
        assert not (settings.storage_root() / addon["id"]).exists()

        assert await restored_rows(addon_stack, alice, app, addon) == ["41", "42"]
