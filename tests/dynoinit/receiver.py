"""A stand-in for the log-shipper's socket: accepts the dyno init's connections, keeps records.

    async with Receiver(folder) as receiver:     # listens on <folder>/logs.sock (0666)
        ...                                      # a container with <folder> at /.slipway/log
        receiver.lines(dynoinit.KIND_STDOUT)     # ["first line", ...]

The folder is what the scheduler bind-mounts read-only at `/.slipway/log`; dynos run as
uid 10000, so the folder is 0755 and the socket 0666, as the log-shipper makes them.
Records are decoded with contracts/dynoinit.py, the format's only definition.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from pathlib import Path
from types import TracebackType

from slipway.contracts import dynoinit


class Receiver:
    """Every record of every connection, in arrival order."""

    def __init__(self, folder: Path, *, reading: bool = True) -> None:
        self.folder = folder
        self.reading = reading  # False: accept, then never read (a stuck log-shipper)
        self.records: list[dynoinit.Record] = []
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def path(self) -> Path:
        return self.folder / dynoinit.LOG_SOCKET_NAME

    async def start(self) -> None:
        """Listen (the folder is made readable to the dyno user)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        # The dyno user (uid 10000) connects: the log-shipper's socket is 0666 too.
        os.chmod(self.path, 0o666)  # noqa: S103

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def __aenter__(self) -> Receiver:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        decoder = dynoinit.LogStreamDecoder()
        try:
            if not self.reading:
                await asyncio.Event().wait()  # until the server closes the connection
            while data := await reader.read(1 << 16):
                self.records.extend(decoder.feed(data))
        except (ConnectionError, dynoinit.FrameError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def lines(self, kind: int | None = None) -> list[str]:
        """The output lines received (of one stream, or both), decoded."""
        wanted = {kind} if kind else {dynoinit.KIND_STDOUT, dynoinit.KIND_STDERR}
        return [r.payload.decode(errors="replace") for r in self.records if r.kind in wanted]

    def dropped(self) -> list[tuple[int, int]]:
        """`(count, since_ns)` of every dropped record."""
        return [
            dynoinit.decode_dropped(r.payload)
            for r in self.records
            if r.kind == dynoinit.KIND_DROPPED
        ]
