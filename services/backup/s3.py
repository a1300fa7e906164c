"""An S3-compatible bucket as a destination for sealed objects (aiobotocore).

`s3://bucket/prefix` names it; the endpoint, region, addressing style, CA and
credentials come from the backup service's settings (README: Backups, storage).
Objects are already sealed, so the bucket needs no trust beyond keeping bytes; what
this module adds is that the bytes kept are the bytes sent:

- every upload carries its Content-MD5, which AWS, MinIO and Ceph check before they
  keep anything (a mismatch is refused with BadDigest);
- the ETag the server answers is compared with the MD5 of what was sent (for a
  multipart upload: each part's and the composite one), so a server that does not
  check Content-MD5 itself (moto's emulator does not) still cannot keep a damaged
  object unnoticed: it is deleted and the put fails, to be retried.

An object above `multipart_bytes` goes up in parts: invisible until complete, aborted
on any failure, and `sweep_partial` aborts what a crash left behind (a bucket
lifecycle rule "abort incomplete multipart uploads" is the belt to that braces).
Credentials are read from the named file or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY,
handed to botocore and never logged; no instance metadata service is ever asked.
"""

from __future__ import annotations

import asyncio
import base64
import configparser
import contextlib
import datetime as dt
import hashlib
import os
import re
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import structlog
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from slipway.services.backup.errors import StorageError
from slipway.services.backup.settings import MIB, BackupSettings
from slipway.services.backup.storage import check_key

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = structlog.get_logger("slipway.backup.s3")

SCHEME = "s3://"
# S3's own bucket naming rules (lower case, 3 to 63, no leading/trailing dot or dash).
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]\Z")
# AWS refuses parts under 5 MiB (the last one excepted) and more than 10,000 of them.
MIN_PART_BYTES = 5 * MIB
MAX_PARTS = 10_000
# An interrupted multipart upload older than this is a crash's leftover, not another
# host's upload still under way in the same bucket.
STALE_UPLOAD = dt.timedelta(days=1)
# Server-side encryption with a key the server picks per object: the ETag is then not
# the MD5 of the bytes, so it cannot be compared (Content-MD5 is still checked there).
OPAQUE_ETAG_SSE = {"aws:kms", "aws:kms:dsse"}


@dataclass(frozen=True)
class S3Options:
    """How to reach the bucket: one set shared by the primary and a copy destination."""

    endpoint: str = ""
    region: str = "us-east-1"
    path_style: bool = False
    ca_file: str = ""
    credentials_file: str = ""
    multipart_bytes: int = 64 * MIB
    part_bytes: int = 16 * MIB
    check_etag: bool = True
    # Keys per listing page: S3's maximum; tests make it small to cross pages.
    page_keys: int = 1000

    @classmethod
    def from_settings(cls, settings: BackupSettings) -> S3Options:
        """The `SLIPWAY_BACKUP_S3_*` settings."""
        return cls(
            endpoint=settings.backup_s3_endpoint,
            region=settings.backup_s3_region,
            path_style=settings.backup_s3_path_style,
            ca_file=settings.backup_s3_ca_file,
            credentials_file=settings.backup_s3_credentials_file,
            multipart_bytes=settings.backup_s3_multipart_bytes,
            part_bytes=settings.backup_s3_part_bytes,
            check_etag=settings.backup_s3_check_etag,
        )


def parse_url(url: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); anything else is refused."""
    if not url.startswith(SCHEME):
        raise StorageError(f"not an s3:// URL: {url[:80]!r}")
    bucket, _, prefix = url[len(SCHEME) :].partition("/")
    prefix = prefix.strip("/")
    if not BUCKET.match(bucket) or ".." in bucket:
        raise StorageError(f"not a valid bucket name in {url[:80]!r}")
    if prefix:
        check_key(prefix)
    return bucket, prefix


def check_endpoint(endpoint: str) -> str:
    """An http(s) URL without user information: credentials never ride in it (it is logged)."""
    if not endpoint:
        return endpoint
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StorageError(f"the S3 endpoint must be an http(s) URL, not {endpoint[:80]!r}")
    if parts.username is not None or parts.password is not None:
        raise StorageError(
            "the S3 endpoint URL carries credentials: give them through "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or SLIPWAY_BACKUP_S3_CREDENTIALS_FILE"
        )
    return endpoint


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str = ""
    session_token: str | None = None

    def __repr__(self) -> str:
        # Whatever prints this (a traceback's locals, a debugger) shows no secret.
        return "Credentials(<hidden>)"


def read_credentials(path: str, environ: Mapping[str, str]) -> Credentials:
    """From the file (INI like ~/.aws/credentials, `[default]`) if named, else AWS_* variables."""
    if path:
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read_string(Path(path).read_text())
        except (OSError, configparser.Error) as exc:
            raise StorageError(f"cannot read the S3 credentials file {path}: {exc}") from None
        section = "default" if parser.has_section("default") else next(iter(parser.sections()), "")
        found: Mapping[str, str] = parser[section] if section else {}
        source = f"the file {path}"
    else:
        found = {k.lower(): v for k, v in environ.items() if k.startswith("AWS_")}
        source = "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY"
    access, secret = found.get("aws_access_key_id", ""), found.get("aws_secret_access_key", "")
    if not access or not secret:
        raise StorageError(f"no S3 credentials: set both keys in {source}")
    return Credentials(access, secret, found.get("aws_session_token") or None)


def ca_bundle(ca_file: str) -> str:
    """The CA bundle that checks the endpoint's certificate: the named one, else the system's."""
    # botocore would otherwise use certifi's bundle, which is not what an operator with an
    # internal CA or a TLS-inspecting proxy manages: the system's (SSL_CERT_FILE honoured) is.
    paths = ssl.get_default_verify_paths()
    chosen = ca_file or paths.cafile or paths.openssl_cafile
    if not Path(chosen).is_file():
        what = "SLIPWAY_BACKUP_S3_CA_FILE" if ca_file else "the system CA bundle"
        raise StorageError(f"{what} {chosen} is not a readable file")
    return chosen


def md5_base64(data: bytes | memoryview) -> tuple[str, str]:
    digest = hashlib.md5(data, usedforsecurity=False).digest()
    return base64.b64encode(digest).decode(), digest.hex()


async def md5_of(data: bytes | memoryview) -> tuple[str, str]:
    """(base64, hex) MD5; a large body is hashed off the event loop (16 MiB is ~30 ms)."""
    if len(data) < MIB:
        return md5_base64(data)
    return await asyncio.to_thread(md5_base64, data)


class S3Bucket:
    """Objects under one prefix of one bucket; the client opens on first use."""

    def __init__(
        self, url: str, options: S3Options, environ: Mapping[str, str] | None = None
    ) -> None:
        self.bucket, self.prefix = parse_url(url)
        self.options = options
        self.name = f"{SCHEME}{self.bucket}/{self.prefix}".rstrip("/")
        self._endpoint = check_endpoint(options.endpoint)
        if options.part_bytes < MIN_PART_BYTES:
            raise StorageError(f"S3 parts must be at least {MIN_PART_BYTES} bytes")
        self._environ = os.environ if environ is None else environ
        self._client: S3Client | None = None
        self._stack = contextlib.AsyncExitStack()
        self._opening = asyncio.Lock()

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    async def client(self) -> S3Client:
        """The open client (made on first use, closed by `close`)."""
        async with self._opening:
            if self._client is None:
                credentials = await asyncio.to_thread(
                    read_credentials, self.options.credentials_file, self._environ
                )
                verify = await asyncio.to_thread(ca_bundle, self.options.ca_file)
                config = AioConfig(
                    region_name=self.options.region,
                    s3={"addressing_style": "path" if self.options.path_style else "auto"},
                    retries={"max_attempts": 4, "mode": "standard"},
                    connect_timeout=10,
                    read_timeout=60,
                    # botocore's default CRC trailers (aws-chunked bodies) are refused by
                    # older MinIO and Ceph; the Content-MD5 sent with every upload is the
                    # check that every S3-compatible server understands.
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                )
                session = get_session()
                self._client = await self._stack.enter_async_context(
                    session.create_client(
                        "s3",
                        region_name=self.options.region,
                        endpoint_url=self._endpoint or None,
                        aws_access_key_id=credentials.access_key,
                        aws_secret_access_key=credentials.secret_key,
                        aws_session_token=credentials.session_token,
                        verify=verify,
                        config=config,
                    )
                )
            return self._client

    async def close(self) -> None:
        """Close the client and its connections."""
        async with self._opening:
            await self._stack.aclose()
            self._client = None

    # ---- the ObjectStore calls --------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        """Store `data` whole under `key`: one PUT, or a multipart upload above the threshold."""
        name = self._object(key)
        async with self._failing("store", key):
            if len(data) > self.options.multipart_bytes:
                await self._put_parts(name, key, data)
            else:
                await self._put_once(name, key, data)

    async def _put_once(self, name: str, key: str, data: bytes) -> None:
        client = await self.client()
        md5, hex_md5 = await md5_of(data)
        answer = await client.put_object(
            Bucket=self.bucket, Key=name, Body=data, ContentMD5=md5, ContentLength=len(data)
        )
        await self._check_etag(name, key, answer, hex_md5)

    async def _put_parts(self, name: str, key: str, data: bytes) -> None:
        client = await self.client()
        size = max(self.options.part_bytes, -(-len(data) // MAX_PARTS))
        upload = await client.create_multipart_upload(Bucket=self.bucket, Key=name)
        upload_id = upload["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            digests: list[bytes] = []
            view = memoryview(data)
            for number, start in enumerate(range(0, len(data), size), start=1):
                chunk = view[start : start + size]
                md5, hex_md5 = await md5_of(chunk)
                answer = await client.upload_part(
                    Bucket=self.bucket,
                    Key=name,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=bytes(chunk),
                    ContentMD5=md5,
                    ContentLength=len(chunk),
                )
                self._compare_etag(key, answer, hex_md5, f" (part {number})")
                parts.append({"PartNumber": number, "ETag": answer["ETag"]})
                digests.append(bytes.fromhex(hex_md5))
            done = await client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=name,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            # Parts kept unfinished cost storage and are never visible: drop them now.
            with contextlib.suppress(ClientError, BotoCoreError, aiohttp.ClientError, OSError):
                await client.abort_multipart_upload(
                    Bucket=self.bucket, Key=name, UploadId=upload_id
                )
            raise
        composite = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
        await self._check_etag(name, key, done, f"{composite}-{len(parts)}")

    def _compare_etag(self, key: str, answer: Mapping[str, Any], expected: str, what: str) -> None:
        if not self.options.check_etag or answer.get("ServerSideEncryption") in OPAQUE_ETAG_SSE:
            return
        if answer.get("SSECustomerAlgorithm"):
            return
        etag = str(answer.get("ETag", "")).strip('"')
        if etag != expected:
            raise StorageError(
                f"{self.name} kept other bytes than were sent for {key}{what}: "
                f"ETag {etag[:40]!r}, MD5 sent {expected}"
            )

    async def _check_etag(
        self, name: str, key: str, answer: Mapping[str, Any], expected: str
    ) -> None:
        try:
            self._compare_etag(key, answer, expected, "")
        except StorageError:
            # The damaged object must not stay where a restore would read it.
            client = await self.client()
            with contextlib.suppress(ClientError, BotoCoreError, aiohttp.ClientError, OSError):
                await client.delete_object(Bucket=self.bucket, Key=name)
            raise

    async def read(self, key: str, offset: int = 0, length: int = -1) -> bytes:
        """The object's bytes [offset, offset+length) (to its end when length < 0), by Range."""
        name = self._object(key)
        if length == 0:
            return b""
        args: dict[str, Any] = {}
        if offset > 0 or length > 0:
            end = "" if length < 0 else str(offset + length - 1)
            args["Range"] = f"bytes={max(offset, 0)}-{end}"
        async with self._failing("read", key):
            client = await self.client()
            try:
                answer = await client.get_object(Bucket=self.bucket, Key=name, **args)
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                if code in ("NoSuchKey", "404"):
                    raise StorageError(f"the object {key} is missing from {self.name}") from None
                if code == "InvalidRange":
                    return b""  # past the end, as a file read there gives nothing
                raise
            async with answer["Body"] as body:
                data: bytes = await body.read()
            return data

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error (S3's own rule too)."""
        name = self._object(key)
        async with self._failing("delete", key):
            client = await self.client()
            await client.delete_object(Bucket=self.bucket, Key=name)

    async def keys(self, prefix: str) -> list[str]:
        """Every key under the folder `prefix`, sorted, across as many listing pages as it takes."""
        folder = self._object(prefix) + "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        found: list[str] = []
        async with self._failing("list", prefix):
            client = await self.client()
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=folder,
                PaginationConfig={"PageSize": self.options.page_keys},
            )
            async for page in pages:
                for item in page.get("Contents", []):
                    key = item["Key"][strip:]
                    # Someone else's object in the bucket under a name we never make.
                    with contextlib.suppress(StorageError):
                        found.append(check_key(key))
        return sorted(found)

    async def sweep_partial(self, older_than: dt.timedelta = STALE_UPLOAD) -> int:
        """Abort multipart uploads under the prefix started before `older_than` ago; how many."""
        cutoff = dt.datetime.now(dt.UTC) - older_than
        aborted = 0
        async with self._failing("sweep", self.prefix or "/"):
            client = await self.client()
            pages = client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else ""
            )
            async for page in pages:
                for upload in page.get("Uploads", []):
                    if upload["Initiated"] <= cutoff:
                        await client.abort_multipart_upload(
                            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                        )
                        aborted += 1
        return aborted

    @contextlib.asynccontextmanager
    async def _failing(self, action: str, key: str) -> AsyncIterator[None]:
        """Any failure of the bucket or the way to it becomes a StorageError naming the object."""
        try:
            yield
        except StorageError:
            raise
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise StorageError(
                f"{self.name} refused to {action} {key}: "
                f"{error.get('Code', '?')} {error.get('Message', '')}".rstrip()
            ) from None
        except (TimeoutError, BotoCoreError, aiohttp.ClientError, OSError) as exc:
            raise StorageError(f"cannot {action} {key} at {self.name}: {exc}") from None
