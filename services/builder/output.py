"""A build's output: published live line by line, and kept for `BUILD_OUTPUT_GET`, bounded.

A build runs customer code, which may print without end. Every build's output
is bounded the same way, whatever produced it (buildpacks, a Dockerfile, the
builder's own lines):

- a line longer than `line_max_chars` is cut, ending in `[... cut]`;
- the first `max_lines` lines (and at most `max_bytes`) go out live and are kept;
- after that only the last `tail_lines` lines are held; the ones they push out
  are counted, and when the build ends `[... N lines dropped]` and then the held
  lines are sent. The end of a build is what explains a failure, so it is the
  part kept.
"""

from __future__ import annotations

from collections import deque

from slipway.contracts.base import encode
from slipway.contracts.builder import BuildOutput, BuildStatus, output_subject
from slipway.libs.bus import Bus

MAX_LINES = 10_000
MAX_BYTES = 4 * 1024 * 1024
TAIL_LINES = 200
LINE_MAX_CHARS = 4096
CUT = " [... cut]"


def dropped_marker(count: int) -> str:
    """The line that stands for `count` lines left out."""
    return f"[... {count} lines dropped]"


def cut_line(text: str, limit: int) -> str:
    """`text`, or its first `limit` characters marked as cut."""
    return text if len(text) <= limit else text[:limit] + CUT


class OutputStream:
    """Sends each line as a `BuildOutput` chunk and keeps a bounded copy; see the module doc."""

    def __init__(
        self,
        bus: Bus,
        build_id: str,
        *,
        max_lines: int = MAX_LINES,
        max_bytes: int = MAX_BYTES,
        tail_lines: int = TAIL_LINES,
        line_max_chars: int = LINE_MAX_CHARS,
    ) -> None:
        self.bus = bus
        self.build_id = build_id
        self.subject = output_subject(build_id)
        self.max_lines = max_lines
        self.max_bytes = max_bytes
        self.line_max_chars = line_max_chars
        self.lines: list[str] = []
        self.held: deque[str] = deque(maxlen=max(tail_lines, 0))
        self.dropped = 0
        self.size = 0
        self.seq = 0
        self.status: BuildStatus = "pending"
        self.closed = False

    @property
    def overflowing(self) -> bool:
        """True once the head is full: later lines only reach the held tail."""
        return len(self.lines) >= self.max_lines or self.size >= self.max_bytes

    async def line(self, text: str) -> None:
        """Publish one line of output (a trailing newline is added), within the bounds."""
        text = cut_line(text, self.line_max_chars)
        if self.overflowing:
            self._hold(text)
            return
        self.lines.append(text)
        self.size += len(text.encode()) + 1
        await self._send(BuildOutput(build_id=self.build_id, seq=self.seq, text=text + "\n"))

    async def close(self, status: BuildStatus) -> None:
        """Send the held tail (after the dropped marker), then the final chunk with the status."""
        for text in self._ending():
            await self._send(BuildOutput(build_id=self.build_id, seq=self.seq, text=text + "\n"))
        self.status = status
        self.closed = True
        await self._send(
            BuildOutput(build_id=self.build_id, seq=self.seq, final=True, status=status)
        )

    @property
    def text(self) -> str:
        """Everything kept: the head, the dropped marker if any, the held tail."""
        return "".join(line + "\n" for line in [*self.lines, *self._ending()])

    def _hold(self, text: str) -> None:
        if self.held.maxlen == 0 or len(self.held) == self.held.maxlen:
            self.dropped += 1
        if self.held.maxlen:
            self.held.append(text)

    def _ending(self) -> list[str]:
        marker = [dropped_marker(self.dropped)] if self.dropped else []
        return [*marker, *self.held]

    async def _send(self, chunk: BuildOutput) -> None:
        self.seq += 1
        await self.bus.live_publish(self.subject, encode(chunk))
