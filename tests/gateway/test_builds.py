"""The Builds and Sources APIs: upload, build, status, output stream, cache purge."""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from slipway.contracts.builder import BUILD_FINISHED, BuildFinished
from slipway.libs.natsserver import NatsServer
from slipway.libs.service import ServiceApp
from slipway.services.gateway.app import create_service
from slipway.services.gateway.git import sources
from tests.conftest import assert_eventually
from tests.gateway import fakebuilder
from tests.gateway.conftest import Api, Stack, gateway_settings, run_in_background, stop
from tests.gateway.fakebuilder import FakeBuilder

pytestmark = pytest.mark.integration

builder = fakebuilder.builder  # the fixture, named for this module

SOURCE_LIMIT = 64 * 1024
MARKER = b"canary-source-7f3a9c"


@pytest.fixture
async def gateway_service(
    nats_server: NatsServer, slipway_home: Path, keyring_service: ServiceApp
) -> AsyncIterator[ServiceApp]:
    """The real gateway with a small source limit."""
    settings = gateway_settings(nats_server.url, slipway_home, source_max_bytes=SOURCE_LIMIT)
    service = create_service(settings)
    task = await run_in_background(service)
    yield service
    await stop(service, task)


def tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def checksum(data: bytes) -> str:
    return "SHA256:" + hashlib.sha256(data).hexdigest()


async def upload(stack: Stack, who: Api, data: bytes, app: str | None = None) -> dict[str, str]:
    """POST a source, PUT `data` to its put_url (no token); the source_blob URLs."""
    path = f"/apps/{app}/sources" if app else "/sources"
    blob: dict[str, str] = (await who.ok("POST", path, status=201))["source_blob"]
    async with stack.session.put(blob["put_url"], data=io.BytesIO(data)) as answer:
        assert answer.status == 200, await answer.text()
    return blob


async def create_build(who: Api, app: str, url: str, **extra: Any) -> Any:
    return await who.post(f"/apps/{app}/builds", {"source_blob": {"url": url, **extra}})


async def test_build_from_an_uploaded_source(stack: Stack, builder: FakeBuilder) -> None:
    """POST /sources, PUT, POST /builds: pending at once, then succeeded with its release."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    data = tarball({"app.py": b"print(1)\n"})
    blob = await upload(stack, alice, data)
    created = await create_build(alice, "hello", blob["get_url"], version="v1.0")
    assert created.status == 201, created.body
    build = created.body
    assert build["status"] == "pending"
    assert build["release"] is None
    assert build["source_blob"] == {
        "url": blob["get_url"],
        "checksum": checksum(data),
        "version": "v1.0",
        "version_description": None,
    }
    assert build["user"]["email"] == "alice@example.com"
    assert {"id", "app", "created_at", "updated_at", "output_stream_url", "stack"} <= set(build)

    async def released() -> Any:
        info = await alice.ok("GET", f"/apps/hello/builds/{build['id']}")
        assert info["status"] == "succeeded"
        assert info["release"] is not None
        return info

    info = await assert_eventually(released)
    assert info["release"]["version"] == 2
    release = await alice.ok("GET", "/apps/hello/releases/v2")
    assert release["id"] == info["release"]["id"]
    assert [b["id"] for b in await alice.ok("GET", "/apps/hello/builds")] == [build["id"]]
    [request] = builder.requests
    assert request.source.checksum == checksum(data)
    audit = await alice.ok("GET", "/apps/hello/audit")
    assert any(e["action"] == "build.create" for e in audit["entries"])


async def test_sources_are_encrypted_at_rest_and_deleted_after_the_build(
    stack: Stack, builder: FakeBuilder
) -> None:
    """The stored file is ciphertext (no plaintext marker); it is gone once the build ends."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    data = tarball({"secret.txt": MARKER})
    blob = await upload(stack, alice, data, app="hello")
    [stored] = list((stack.home / "gateway" / "sources").iterdir())
    content = stored.read_bytes()
    assert data not in content
    assert MARKER not in content
    created = await create_build(alice, "hello", blob["get_url"])
    assert created.status == 201

    def deleted() -> None:
        assert not stored.exists()

    await assert_eventually(deleted)
    async with stack.session.get(blob["get_url"]) as answer:
        assert answer.status == 410


async def test_output_stream_shows_everything_once_as_it_happens(
    stack: Stack, builder: FakeBuilder
) -> None:
    """A late reader gets what was already produced, then the rest live, with no duplicate."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    builder.hold = asyncio.Event()
    blob = await upload(stack, alice, tarball({"app.py": b"x\n"}))
    build = (await create_build(alice, "hello", blob["get_url"])).body
    await asyncio.wait_for(builder.holding.wait(), 30)
    # No token: the URL carries its own signature.
    async with (
        aiohttp.ClientSession() as anonymous,
        anonymous.get(build["output_stream_url"]) as answer,
    ):
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        first = await answer.content.readline()
        second = await answer.content.readline()
        builder.hold.set()
        rest = await answer.content.read()
    text = (first + second + rest).decode()
    assert text == builder.text(build["id"])
    assert text.count("Fetched source") == 1
    assert text.endswith("-----> Compiled slug\n")


async def test_output_stream_of_a_finished_build(stack: Stack, builder: FakeBuilder) -> None:
    """After the end the stream is the whole output at once."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    blob = await upload(stack, alice, tarball({"app.py": b"x\n"}))
    build = (await create_build(alice, "hello", blob["get_url"])).body

    async def finished() -> None:
        info = await alice.ok("GET", f"/apps/hello/builds/{build['id']}")
        assert info["status"] == "succeeded"

    await assert_eventually(finished)
    async with stack.session.get(build["output_stream_url"]) as answer:
        assert (await answer.text()) == builder.text(build["id"])
    forged = build["output_stream_url"].replace("sig=", "sig=0")
    async with stack.session.get(forged) as answer:
        assert answer.status == 403


async def test_failed_build_has_no_release(stack: Stack, builder: FakeBuilder) -> None:
    """BUILD_FINISHED failed → status failed, release null, releases unchanged."""
    alice = await stack.user("alice@example.com")
    await stack.app(alice, "hello")
    blob = await upload(stack, alice, tarball({"FAIL": b"1\n"}))
    build = (await create_build(alice, "hello", blob["get_url"])).body

    async def failed() -> Any:
        info = await alice.ok("GET", f"/apps/hello/builds/{build['id']}")
        assert info["status"] == "failed"
        return info

    info = await assert_eventually(failed)
    assert info["release"] is None
    assert info["error"] == "FAIL is present"
    assert [r["version"] for r in await alice.ok("GET", "/apps/hello/releases")] == [1]


async def test_build_finished_is_handled_once(stack: Stack, builder: FakeBuilder) -> None:
    """A redelivered BUILD_FINISHED (same event id) changes nothing; a stray one is ignored."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    blob = await upload(stack, alice, tarball({"app.py": b"x\n"}))
    build = (await create_build(alice, "hello", blob["get_url"])).body

    async def succeeded() -> Any:
        info = await alice.ok("GET", f"/apps/hello/builds/{build['id']}")
        assert info["status"] == "succeeded"
        return info

    before = await assert_eventually(succeeded)
    late = BuildFinished(
        build_id=build["id"],
        app_id=app["id"],
        app_name="hello",
        team_id=app["team"]["id"],
        status="failed",
    )
    await stack.bus.publish(BUILD_FINISHED, late)
    stray = BuildFinished(
        build_id=str(uuid.uuid4()), app_id=app["id"], app_name="hello", team_id="t", status="failed"
    )
    await stack.bus.publish(BUILD_FINISHED, stray)
    await stack.bus.publish(BUILD_FINISHED, late)  # a duplicate publish, stored once by JetStream

    async def consumed() -> None:
        async with stack.gw.reader.execute(
            "SELECT count(*) FROM processed_messages WHERE message_id IN (?, ?)",
            (late.event_id, stray.event_id),
        ) as cursor:
            row = await cursor.fetchone()
        assert row is not None
        assert row[0] == 2

    await assert_eventually(consumed)
    after = await alice.ok("GET", f"/apps/hello/builds/{build['id']}")
    assert after["status"] == "succeeded"  # a finished build never changes outcome
    assert after["updated_at"] == before["updated_at"]


async def test_bad_build_requests_are_refused(stack: Stack, builder: FakeBuilder) -> None:
    """Private URLs, malformed checksums, empty sources and viewers are refused."""
    alice = await stack.user("alice@example.com")
    vera = await stack.user("vera@example.com")
    await alice.ok("POST", "/teams", {"name": "acme"}, 201)
    await stack.join(alice, "acme", vera, "viewer")
    await stack.app(alice, "hello", team="acme")
    far = await create_build(alice, "hello", "http://10.20.30.40/source.tgz")
    assert (far.status, far.error_id) == (422, "invalid_params")
    assert "a private address" in far.body["message"]
    ftp = await create_build(alice, "hello", "ftp://127.0.0.1/source.tgz")
    assert ftp.status == 422
    bad_sum = await create_build(alice, "hello", "http://127.0.0.1:9/x.tgz", checksum="md5:1")
    assert bad_sum.status == 422
    empty = (await alice.ok("POST", "/apps/hello/sources", status=201))["source_blob"]
    not_uploaded = await create_build(alice, "hello", empty["get_url"])
    assert not_uploaded.status == 422
    assert "PUT the tarball first" in not_uploaded.body["message"]
    unknown = await alice.post("/apps/hello/builds", {"source_blob": {"url": 1}})
    assert unknown.status == 422
    viewer = await create_build(vera, "hello", "http://127.0.0.1:9/x.tgz")
    assert viewer.status == 403
    missing = await alice.get(f"/apps/hello/builds/{uuid.uuid4()}")
    assert (missing.status, missing.error_id) == (404, "not_found")
    assert builder.requests == []


async def test_source_urls_are_checked(stack: Stack) -> None:
    """PUT over the limit → 413; a forged or swapped signature → 403."""
    alice = await stack.user("alice@example.com")
    blob = (await alice.ok("POST", "/sources", status=201))["source_blob"]
    async with stack.session.put(blob["put_url"], data=io.BytesIO(b"x" * (SOURCE_LIMIT + 1))) as r:
        assert r.status == 413
        assert str(SOURCE_LIMIT) in (await r.json())["message"]
    get_as_put = blob["get_url"]
    async with stack.session.put(get_as_put, data=io.BytesIO(b"x")) as r:
        assert r.status == 403
    async with stack.session.get(blob["put_url"]) as r:
        assert r.status == 403
    async with stack.session.get(blob["get_url"].split("?")[0]) as r:
        assert r.status == 403


async def test_build_cache_purge_reaches_the_builder(stack: Stack, builder: FakeBuilder) -> None:
    """DELETE /apps/{app}/build-cache → the builder's CACHE_PURGE for that app."""
    alice = await stack.user("alice@example.com")
    app = await stack.app(alice, "hello")
    answer = await alice.delete("/apps/hello/build-cache")
    assert answer.status == 202
    [purge] = builder.purges
    assert (purge.app_id, purge.team_id) == (app["id"], app["team"]["id"])


async def test_expired_sources_are_swept(stack: Stack) -> None:
    """A source past its TTL (never built) is deleted: file, row and URLs."""
    alice = await stack.user("alice@example.com")
    blob = await upload(stack, alice, tarball({"app.py": b"x\n"}))
    folder = stack.home / "gateway" / "sources"
    assert len(list(folder.iterdir())) == 1
    async with stack.gw.db.transaction() as conn:
        await conn.execute("UPDATE sources SET expires_at = 0")
    await sources.SourceSweeper(stack.gw).sweep()
    assert list(folder.iterdir()) == []
    async with stack.session.get(blob["get_url"]) as answer:
        assert answer.status == 410
