"""A build container's output: read from an attach, never from a log Docker keeps.

The configs are checked without Docker; the rest runs real containers of the
build stack image through `run_build_container` (no network, removed at the end).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiodocker
import pytest
from aiodocker.stream import Message

from slipway.services.builder.container import (
    NO_LOG,
    BuildMounts,
    container_config,
    fetch_config,
    read_output,
    run_build_container,
)
from slipway.services.builder.errors import BuildTimedOut
from slipway.services.builder.settings import BuilderSettings

SETTINGS = BuilderSettings(nats_url="", build_network="slipway-test-none")


def test_every_build_container_config_logs_to_nothing() -> None:
    """Build and buildpack fetch containers get LogConfig none: Docker keeps no output."""
    mounts = BuildMounts(Path("/a"), Path("/e"), Path("/b"), Path("/s"), "cache")
    configs = [
        container_config(SETTINGS, mounts, {}, {}),
        fetch_config(SETTINGS, Path("/t"), "true", {}, {}),
    ]
    for config in configs:
        assert config["HostConfig"]["LogConfig"] == NO_LOG == {"Type": "none", "Config": {}}


@pytest.fixture
async def docker() -> AsyncIterator[aiodocker.Docker]:
    async with aiodocker.Docker() as client:
        yield client


def shell(script: str) -> dict[str, Any]:
    """A container of the build image running `script`, with no network and no log."""
    return {
        "Image": SETTINGS.build_image,
        "Cmd": ["/bin/bash", "-c", script],
        "Labels": {"slipway.test": "builder"},
        "HostConfig": {"NetworkMode": "none", "LogConfig": NO_LOG},
    }


async def run(docker: aiodocker.Docker, script: str, timeout: float = 60) -> tuple[int, list[str]]:
    """Run `script`; its exit code and the lines it printed."""
    lines: list[str] = []

    async def sink(line: str) -> None:
        lines.append(line)

    code = await run_build_container(docker, shell(script), sink, timeout=timeout)
    return code, lines


@pytest.mark.docker
@pytest.mark.integration
async def test_output_arrives_whole_in_order_to_the_last_byte(docker: aiodocker.Docker) -> None:
    """The first line, stderr, a character split between writes, an unended last line."""
    script = (
        "echo first; echo to-stderr >&2; printf 'caf\\xc3'; printf '\\xa9\\n';"
        " seq 1 20000; printf 'no newline at the end'; exit 3"
    )
    code, lines = await run(docker, script)
    assert code == 3
    assert "to-stderr" in lines  # stdout and stderr are two pipes: no order between them
    lines.remove("to-stderr")
    assert lines[:2] == ["first", "café"]
    assert lines[2:-1] == [str(n) for n in range(1, 20001)]
    assert lines[-1] == "no newline at the end"


@pytest.mark.docker
@pytest.mark.integration
async def test_a_container_past_its_time_is_stopped_after_its_last_words(
    docker: aiodocker.Docker,
) -> None:
    """Past the limit the container is killed; what it printed before is still sent."""
    lines: list[str] = []

    async def sink(line: str) -> None:
        lines.append(line)

    with pytest.raises(BuildTimedOut):
        await run_build_container(docker, shell("echo started; exec sleep 600"), sink, timeout=3)
    assert lines == ["started"]


@pytest.mark.docker
@pytest.mark.integration
async def test_a_failing_sink_does_not_hold_the_container(docker: aiodocker.Docker) -> None:
    """The container runs to its end though nobody takes its output; then the error is raised."""

    async def sink(line: str) -> None:
        raise RuntimeError(f"sink gone at {line!r}")

    # 8 MB: far past what the attach buffers hold, so a reader that stopped would stall it.
    with pytest.raises(RuntimeError, match="sink gone at '1'"):
        await run_build_container(docker, shell("seq 1 1000000; echo done"), sink, timeout=60)


class Frames:
    """An attach that hands over these frames, in this order (what the engine interleaves)."""

    def __init__(self, *frames: tuple[int, bytes]) -> None:
        self.frames = [Message(stream, data) for stream, data in frames]

    async def read_out(self) -> Message | None:
        return self.frames.pop(0) if self.frames else None


async def test_a_line_of_one_stream_is_not_cut_by_a_frame_of_the_other() -> None:
    """stderr's frame arriving while stdout is mid-line (and mid-character) stays its own
    line; stdout's line is whole once its end arrives. The engine interleaves so under load
    (a CI run lost "to-stderr" inside a line of `seq` output)."""
    lines: list[str] = []

    async def sink(line: str) -> None:
        lines.append(line)

    stdout, stderr = 1, 2
    attach = Frames(
        (stdout, b"12"),
        (stderr, b"to-stderr\n"),
        (stdout, b"34 caf\xc3"),
        (stderr, b"half "),
        (stdout, b"\xa9\n"),
        (stderr, b"and the rest\n"),
        (stdout, b"no newline at the end"),
    )
    await read_output(attach, sink)  # type: ignore[arg-type]
    assert lines == ["to-stderr", "1234 café", "half and the rest", "no newline at the end"]
