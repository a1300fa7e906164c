"""A build's output: published live line by line, and kept whole for `BUILD_OUTPUT_GET`."""

from __future__ import annotations

from slipway.contracts.base import encode
from slipway.contracts.builder import BuildOutput, BuildStatus, output_subject
from slipway.libs.bus import Bus


class OutputStream:
    """Sends each line as a `BuildOutput` chunk and remembers all of it."""

    def __init__(self, bus: Bus, build_id: str) -> None:
        self.bus = bus
        self.build_id = build_id
        self.subject = output_subject(build_id)
        self.lines: list[str] = []
        self.seq = 0
        self.status: BuildStatus = "pending"
        self.closed = False

    async def line(self, text: str) -> None:
        """Publish one line of output (a trailing newline is added)."""
        self.lines.append(text)
        await self._send(BuildOutput(build_id=self.build_id, seq=self.seq, text=text + "\n"))

    async def close(self, status: BuildStatus) -> None:
        """Send the final chunk, carrying the build's status."""
        self.status = status
        self.closed = True
        await self._send(
            BuildOutput(build_id=self.build_id, seq=self.seq, final=True, status=status)
        )

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)

    async def _send(self, chunk: BuildOutput) -> None:
        self.seq += 1
        await self.bus.live_publish(self.subject, encode(chunk))
