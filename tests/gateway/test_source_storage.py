"""Sources on disk: streamed in encrypted chunks, bound to their place, read back streaming."""

from __future__ import annotations

import os

import aiohttp
import pytest

from slipway.contracts.keyring import Purpose
from slipway.libs.crypto import envelope
from slipway.services.gateway.git import sources
from tests.gateway.conftest import Stack
from tests.gateway.test_builds import upload

pytestmark = pytest.mark.integration


async def test_upload_is_stored_encrypted_and_read_back_whole(stack: Stack) -> None:
    """A 1 MiB upload is not on disk in the clear and comes back byte for byte."""
    alice = await stack.user("alice@example.com")
    data = os.urandom(1024 * 1024)
    blob = await upload(stack, alice, data)
    stored = sources.source_path(stack.gw, blob["get_url"].split("/sources/")[1].split("/")[0])
    assert data[:4096] not in stored.read_bytes()
    async with stack.session.get(blob["get_url"]) as answer:
        assert answer.status == 200
        assert await answer.read() == data


async def test_source_file_moved_to_another_source_does_not_decrypt(stack: Stack) -> None:
    """The file of one source copied over another's answers 500 data_integrity."""
    alice = await stack.user("alice@example.com")
    first = await upload(stack, alice, b"first source")
    second = await upload(stack, alice, b"second source")
    ids = [blob["get_url"].split("/sources/")[1].split("/")[0] for blob in (first, second)]
    paths = [sources.source_path(stack.gw, ident) for ident in ids]
    paths[1].write_bytes(paths[0].read_bytes())
    async with stack.session.get(second["get_url"]) as answer:
        assert answer.status == 500
        assert (await answer.json())["id"] == "data_integrity"


async def test_tampered_chunk_cuts_the_download(stack: Stack) -> None:
    """A byte changed in the middle of a stored source: the download never completes."""
    alice = await stack.user("alice@example.com")
    data = os.urandom(512 * 1024)
    blob = await upload(stack, alice, data)
    ident = blob["get_url"].split("/sources/")[1].split("/")[0]
    path = sources.source_path(stack.gw, ident)
    sealed = bytearray(path.read_bytes())
    sealed[len(sealed) // 2] ^= 1
    path.write_bytes(bytes(sealed))
    with pytest.raises(aiohttp.ClientPayloadError):
        async with stack.session.get(blob["get_url"]) as answer:
            await answer.read()


async def test_source_stored_by_an_older_gateway_still_reads(stack: Stack) -> None:
    """A source written as one envelope record (the old format) is served as before."""
    alice = await stack.user("alice@example.com")
    blob = await upload(stack, alice, b"placeholder")
    ident = blob["get_url"].split("/sources/")[1].split("/")[0]
    source = await sources.get_source(stack.gw.reader, ident)
    assert source is not None
    old = await envelope.encrypt(
        stack.gw.bus, source.team_id, Purpose.BUILD_SOURCE, sources.binding(source), b"old bytes"
    )
    sources.source_path(stack.gw, ident).write_bytes(old)
    async with stack.session.get(blob["get_url"]) as answer:
        assert answer.status == 200
        assert await answer.read() == b"old bytes"
