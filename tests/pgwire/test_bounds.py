"""libs/pgwire.py against a hostile server: what it announces is checked before it is read.

A real PostgreSQL never sends a message this large, so a small unix-socket server of the
test's own plays the hostile one.
"""

from __future__ import annotations

import asyncio
import struct
from pathlib import Path

import pytest

from slipway.libs import pgwire


async def _hostile(path: Path, answer: bytes) -> asyncio.Server:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)  # the startup message
        writer.write(answer)
        await writer.drain()
        writer.close()
        await writer.wait_closed()

    return await asyncio.start_unix_server(serve, path=str(path / ".s.PGSQL.5432"))


async def test_an_oversized_message_is_refused_before_it_is_read(tmp_path: Path) -> None:
    """A length over MAX_MESSAGE is a ProtocolViolation, not a 2 GiB buffer."""
    server = await _hostile(tmp_path, b"R" + struct.pack("!i", 2**31 - 1) + b"\0" * 64)
    async with server:
        with pytest.raises(pgwire.ProtocolViolation, match="2147483647 bytes"):
            await pgwire.connect(tmp_path, user="slipway_backup")


async def test_a_negative_length_is_refused(tmp_path: Path) -> None:
    """A length under 4 (its own size) is a ProtocolViolation too."""
    server = await _hostile(tmp_path, b"R" + struct.pack("!i", -8))
    async with server:
        with pytest.raises(pgwire.ProtocolViolation, match="-8 bytes"):
            await pgwire.connect(tmp_path, user="slipway_backup")
