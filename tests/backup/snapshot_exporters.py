"""Exporters for snapshot tests: a service's three snapshot RPCs, answered from memory.

The real exporters (libs/service/snapshots.py) are tested in tests/snapshot; these stand
in for services a test does not run, over the real bus with the real contracts: each
export is a small tar cut into pieces, each `age(zstd(piece))` sealed to the request's
recipients, exactly the shape a real one answers.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import tarfile

import zstandard

from slipway.contracts import snapshot as sc
from slipway.contracts.base import Ok
from slipway.contracts.subjects import Service
from slipway.libs.bus import Bus, context
from slipway.libs.crypto import age
from slipway.libs.errors import Unavailable


def state_tar(service: str, files: int = 3) -> bytes:
    """A tar like a service's export: members under the service's folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for n in range(files):
            body = f"{service} state file {n}\n".encode() * 200
            info = tarfile.TarInfo(f"{service}/state-{n}.txt")
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue()


class FakeExporter:
    """One instance of `service` that exports a small tar in `pieces` sealed pieces."""

    def __init__(
        self,
        bus: Bus,
        service: Service,
        *,
        host_id: str = "",
        pieces: int = 2,
        damaged: bool = False,
        refuse: str = "",
    ) -> None:
        self.bus = bus
        self.service = service
        self.host_id = host_id
        self.piece_count = pieces
        self.damaged = damaged  # serve each piece with one byte flipped (a bad disk, a bad link)
        self.refuse = refuse  # answer every export with this error instead
        self.tar = state_tar(str(service))
        self.held: dict[str, dict[str, bytes]] = {}
        self.released: list[str] = []
        self.exports = 0
        # Cleared: exports wait until it is set again (a slow export, or one that never ends).
        self.go = asyncio.Event()
        self.go.set()

    async def start(self) -> FakeExporter:
        responder = self.host_id or None
        await self.bus.serve(sc.SNAPSHOT_EXPORT[self.service], self.export, responder=responder)
        await self.bus.serve(sc.SNAPSHOT_PIECE_READ[self.service], self.read, responder=responder)
        await self.bus.serve(sc.SNAPSHOT_RELEASE[self.service], self.release, responder=responder)
        return self

    async def export(self, req: sc.ExportState) -> sc.ExportedState:
        context.require_caller(sc.SNAPSHOT_EXPORT[self.service])
        self.exports += 1
        await self.go.wait()
        if self.refuse:
            raise Unavailable(self.refuse)
        recipients = [age.parse_recipient(r) for r in req.recipients]
        step = -(-len(self.tar) // self.piece_count)
        sealed = {
            f"{i:03d}.age": age.seal(
                zstandard.ZstdCompressor().compress(self.tar[start : start + step]), recipients
            )
            for i, start in enumerate(range(0, len(self.tar), step))
        }
        self.held[req.snapshot_id] = sealed
        return sc.ExportedState(
            snapshot_id=req.snapshot_id,
            service=str(self.service),
            host_id=self.host_id,
            pieces=[
                sc.Piece(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest())
                for name, data in sealed.items()
            ],
            plain_bytes=len(self.tar),
            counts={"state/files": 3},
            left_out=[f"{self.service}: nothing (a test exporter)"],
        )

    async def read(self, req: sc.ReadPiece) -> sc.PieceChunk | None:
        if req.host_id != self.host_id:
            return None
        data = self.held[req.snapshot_id][req.piece]
        if self.damaged:
            data = data[:-1] + bytes([data[-1] ^ 1])
        chunk = data[req.offset : req.offset + min(req.length, 1000)]  # several reads a piece
        return sc.PieceChunk(data=chunk, eof=req.offset + len(chunk) >= len(data))

    async def release(self, req: sc.ReleaseExport) -> Ok | None:
        if req.host_id not in ("", self.host_id):
            return None
        if self.held.pop(req.snapshot_id, None) is not None:
            self.released.append(req.snapshot_id)
        return Ok()
