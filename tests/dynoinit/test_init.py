"""The dyno init (dynoinit/init.c) for real: in a run-stack container, as a dyno runs it.

Each test starts a container of `slipway/stack-run:bookworm` with the built init
mounted read-only at /.slipway/init as its entrypoint, hardened as dynos are
(read-only root, uid 10000, no capabilities, no Docker log), feeds it an env frame
on stdin, and reads its output from a receiver socket in a temporary folder mounted
at /.slipway/log (tests/dynoinit/receiver.py), decoded with contracts/dynoinit.py.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import pytest

from slipway.contracts import dynoinit
from slipway.services.scheduler.settings import built_init
from tests.conftest import assert_eventually
from tests.dynoinit.receiver import Receiver

pytestmark = [pytest.mark.docker, pytest.mark.integration]

STACK = "slipway/stack-run:bookworm"
OUT, ERR = dynoinit.KIND_STDOUT, dynoinit.KIND_STDERR


@dataclass
class Dyno:
    """One container running the init: its name, its docker CLI process, its folders."""

    name: str
    process: asyncio.subprocess.Process
    logs: Path
    signals: Path

    async def finish(self, timeout: float = 60) -> tuple[int, str]:
        """Wait for the container's end: its exit status and the init's own stderr."""
        _, err = await asyncio.wait_for(self.process.communicate(), timeout)
        assert self.process.returncode is not None
        return self.process.returncode, err.decode()


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """The log folder (mounted read-only) and a signal folder the app may write to."""
    logs, signals = tmp_path / "log", tmp_path / "signal"
    logs.mkdir(mode=0o755)
    signals.mkdir()
    signals.chmod(0o777)
    return logs, signals


@pytest.fixture
def names() -> Iterator[list[str]]:
    """Container names to remove at the end, whatever happened."""
    made: list[str] = []
    yield made
    if made:
        subprocess.run(["docker", "rm", "-f", *made], capture_output=True, check=False)


Start = Callable[..., Awaitable[Dyno]]


@pytest.fixture
def start(folders: tuple[Path, Path], names: list[str]) -> Start:
    """`await start(script, frame, *init_flags)`: a running dyno, the frame written."""
    logs, signals = folders

    async def run(script: str, frame: bytes, *flags: str) -> Dyno:
        name = f"slipway-test-init-{uuid.uuid4().hex[:10]}"
        names.append(name)
        process = await asyncio.create_subprocess_exec(
            "docker", "run", "-i", "--rm", "--name", name,
            "--log-driver", "none", "--read-only", "--tmpfs", "/tmp", "--user", "10000:10000",
            "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--network", "none",
            "--mount", f"type=bind,source={built_init()},target={dynoinit.INIT_PATH},readonly",
            "-v", f"{logs}:{dynoinit.LOG_DIR}:ro", "-v", f"{signals}:/signal",
            "--entrypoint", dynoinit.INIT_PATH, STACK, *flags, "--", "bash", "-c", script,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert process.stdin is not None
        process.stdin.write(frame)
        await process.stdin.drain()
        process.stdin.close()
        return Dyno(name=name, process=process, logs=logs, signals=signals)

    return run


def frame(**env: str) -> bytes:
    return dynoinit.encode_env(env)


async def test_the_env_arrives_over_the_image_env_and_lines_keep_order_and_stream(
    start: Start, folders: tuple[Path, Path]
) -> None:
    """Config from the frame is in the env (over the image's LANG); lines in order, per stream."""
    script = (
        'echo "g=$GREETING lang=$LANG"; echo err-1 >&2; '
        "for i in $(seq 1 200); do echo out-$i; done; echo err-2 >&2"
    )
    async with Receiver(folders[0]) as receiver:
        dyno = await start(script, frame(GREETING="hello world", LANG="C"))
        status, _ = await dyno.finish()
        assert status == 0
        assert receiver.lines(OUT) == ["g=hello world lang=C"] + [f"out-{i}" for i in range(1, 201)]
        assert receiver.lines(ERR) == ["err-1", "err-2"]
        assert not receiver.dropped()


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"SLPWENV2" + struct.pack(">L", 0), "it does not start with SLPWENV1"),
        (b"SLPWENV1" + struct.pack(">L", (1 << 20) + 1), "1048577 bytes is more than"),
        (b"SLPWENV1" + struct.pack(">L", 100) + b"A=1", "it ended early"),
        (b"SLPWENV1" + struct.pack(">L", 8) + b"A=1\0NOEQ", "an entry is not KEY=VALUE"),
        (b"SLPWENV1" + struct.pack(">L", 4) + b"=abc", "an entry is not KEY=VALUE"),
        (b"SLPW", "no complete header"),
    ],
    ids=["magic", "too-long", "truncated", "no-equals", "empty-key", "short-header"],
)
async def test_a_malformed_frame_is_refused_and_nothing_runs(
    start: Start, folders: tuple[Path, Path], raw: bytes, says: str
) -> None:
    """Exit 1 with one line on stderr; the command never runs."""
    async with Receiver(folders[0]) as receiver:
        dyno = await start("echo ran", raw)
        status, err = await dyno.finish()
        assert status == 1
        assert f"slipway-init: refused the env frame: {says}" in err
        assert "ran" not in receiver.lines(OUT)


async def test_lines_dropped_while_nobody_listens_are_counted_once_a_receiver_appears(
    start: Start, folders: tuple[Path, Path]
) -> None:
    """A small ring fills while no socket exists: the rest is dropped, counted, announced."""
    logs, signals = folders
    script = (
        "for i in $(seq 1 100); do echo line-$i; done; touch /signal/printed; "
        "while [ ! -e /signal/go ]; do sleep 0.05; done; echo after"
    )
    dyno = await start(script, frame(), "--buffer", "1024")

    async def printed() -> None:
        assert (signals / "printed").exists()

    await assert_eventually(printed, timeout=30)
    async with Receiver(logs) as receiver:

        async def reconnected() -> None:
            assert "line-1" in receiver.lines(OUT)

        await assert_eventually(reconnected, timeout=30)
        (signals / "go").touch()
        status, _ = await dyno.finish()
        assert status == 0
        kinds = [r.kind for r in receiver.records]
        kept = receiver.lines(OUT)[:-1]
        assert kept == [f"line-{i}" for i in range(1, len(kept) + 1)] and 0 < len(kept) < 100
        [(count, since_ns)] = receiver.dropped()
        assert count == 100 - len(kept) and since_ns > 0
        # In place: after the lines kept, before the line printed once there was room.
        assert kinds == [OUT] * len(kept) + [dynoinit.KIND_DROPPED, OUT]
        assert receiver.lines(OUT)[-1] == "after"


async def test_a_restarted_receiver_is_found_again(
    start: Start, folders: tuple[Path, Path]
) -> None:
    """The log-shipper goes away and comes back on a new socket: the init reconnects."""
    logs, signals = folders
    script = "echo one; while [ ! -e /signal/go ]; do sleep 0.05; done; echo two"
    first = Receiver(logs)
    await first.start()
    dyno = await start(script, frame())

    async def got_one() -> None:
        assert first.lines(OUT) == ["one"]

    await assert_eventually(got_one, timeout=30)
    await first.close()
    async with Receiver(logs) as second:
        (signals / "go").touch()
        assert (await dyno.finish())[0] == 0
        assert second.lines(OUT) == ["two"]
        assert first.lines(OUT) == ["one"]


async def test_a_receiver_that_stops_reading_never_blocks_the_app(
    start: Start, folders: tuple[Path, Path]
) -> None:
    """20 MB of output into a socket nobody reads: the app runs on, lines are dropped."""
    logs, signals = folders
    script = (
        'python3 -c \'import sys; [sys.stdout.write("x" * 99 + "\\n") '
        "for _ in range(200000)]'; touch /signal/done; sleep 600"
    )
    async with Receiver(logs, reading=False) as stuck:
        dyno = await start(script, frame())

        async def done() -> None:
            assert (signals / "done").exists()

        await assert_eventually(done, timeout=60)
        assert stuck.connections == 1 and not stuck.records
        kill = await asyncio.create_subprocess_exec("docker", "kill", dyno.name)
        assert await kill.wait() == 0
        await dyno.finish()


@pytest.mark.parametrize(("script", "status"), [("exit 7", 7), ("kill -KILL $$", 137)])
async def test_the_exit_status_is_the_commands(
    start: Start, folders: tuple[Path, Path], script: str, status: int
) -> None:
    """Its exit code, or 128 + the signal that killed it."""
    async with Receiver(folders[0]):
        dyno = await start(script, frame())
        assert (await dyno.finish())[0] == status


async def test_sigterm_reaches_the_app_and_its_last_words_are_kept(
    start: Start, folders: tuple[Path, Path]
) -> None:
    """`docker stop`'s SIGTERM reaches the command's group; what it prints then arrives."""
    script = "trap 'echo got-term; exit 0' TERM; echo ready; while :; do sleep 0.1; done"
    async with Receiver(folders[0]) as receiver:
        dyno = await start(script, frame())

        async def ready() -> None:
            assert "ready" in receiver.lines(OUT)

        await assert_eventually(ready, timeout=30)
        kill = await asyncio.create_subprocess_exec("docker", "kill", "--signal", "TERM", dyno.name)
        assert await kill.wait() == 0
        status, _ = await dyno.finish()
        assert status == 0
        assert receiver.lines(OUT) == ["ready", "got-term"]


async def test_orphans_are_reaped(start: Start, folders: tuple[Path, Path]) -> None:
    """A process left behind by the command becomes the init's child and does not stay a zombie."""
    script = (
        "bash -c 'sleep 0.2 & echo $! > /tmp/orphan'; orphan=$(cat /tmp/orphan); "
        "for i in $(seq 1 200); do [ -e /proc/$orphan ] || { echo reaped; exit 0; }; sleep 0.05; "
        "done; grep State /proc/$orphan/status"
    )
    async with Receiver(folders[0]) as receiver:
        dyno = await start(script, frame())
        await dyno.finish()
        assert receiver.lines(OUT) == ["reaped"]


async def test_the_last_lines_before_exit_and_long_lines_arrive_whole(
    start: Start, folders: tuple[Path, Path]
) -> None:
    """2000 lines printed just before exit all arrive; a 40000-byte line arrives cut in 16 KiB."""
    script = "python3 -c 'print(\"x\" * 40000)'; for i in $(seq 1 2000); do echo l-$i; done"
    async with Receiver(folders[0]) as receiver:
        dyno = await start(script, frame())
        assert (await dyno.finish())[0] == 0
        lines = receiver.lines(OUT)
        assert [len(x) for x in lines[:3]] == [16384, 16384, 40000 - 2 * 16384]
        assert lines[3:] == [f"l-{i}" for i in range(1, 2001)]


async def test_a_small_ring_wraps_without_losing_count_or_order(
    start: Start, folders: tuple[Path, Path]
) -> None:
    """A 4 KiB ring wraps hundreds of times: every line arrives whole, in order, or is counted."""
    script = "for i in $(seq 1 5000); do echo l-$i; done"
    async with Receiver(folders[0]) as receiver:
        dyno = await start(script, frame(), "--buffer", "4096")
        assert (await dyno.finish())[0] == 0
        numbers = [int(line.removeprefix("l-")) for line in receiver.lines(OUT)]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        assert len(numbers) + sum(count for count, _ in receiver.dropped()) == 5000
        assert receiver.connections == 1  # no record was ever malformed


async def test_a_tty_one_off_is_raw_until_the_frame_then_cooked(tmp_path: Path) -> None:
    """READY first; the frame is not echoed; after GO the command has a normal terminal and env."""
    async with aiodocker.Docker() as docker:
        container = await docker.containers.create(
            {
                "Image": STACK,
                "User": "10000:10000",
                "Entrypoint": [dynoinit.INIT_PATH, "--tty", "--"],
                "Cmd": [
                    "bash",
                    "-c",
                    'stty -a | tr " ;" "\\n\\n" | grep -x -e icanon -e echo; '
                    'echo "g=$GREETING"; read x; echo "typed=$x"',
                ],
                "Tty": True,
                "OpenStdin": True,
                "StdinOnce": False,
                "HostConfig": {
                    "LogConfig": {"Type": "none", "Config": {}},
                    "NetworkMode": "none",
                    "Mounts": [
                        {
                            "Type": "bind",
                            "Source": str(built_init()),
                            "Target": dynoinit.INIT_PATH,
                            "ReadOnly": True,
                        }
                    ],
                },
            },
            name=f"slipway-test-init-{uuid.uuid4().hex[:10]}",
        )
        try:
            async with container.attach(stdin=True, stdout=True, stderr=True) as stream:
                await container.start()
                seen = b""
                while dynoinit.TTY_READY not in seen:
                    message = await asyncio.wait_for(stream.read_out(), 30)
                    assert message is not None
                    seen += message.data
                assert seen == dynoinit.TTY_READY  # nothing before it
                await stream.write_in(frame(GREETING="hi", SECRET_CANARY="s3cr3t-canary"))
                while dynoinit.TTY_GO not in seen:
                    message = await asyncio.wait_for(stream.read_out(), 30)
                    assert message is not None
                    seen += message.data
                await stream.write_in(b"abc\r")
                after = seen.split(dynoinit.TTY_GO, 1)[1]
                while (message := await asyncio.wait_for(stream.read_out(), 30)) is not None:
                    after += message.data
            status = await container.wait()
        finally:
            await container.delete(force=True)
    text = after.decode()
    assert status["StatusCode"] == 0
    assert "icanon" in text.split() and "echo" in text.split()
    assert "g=hi" in text and "typed=abc" in text
    assert "s3cr3t-canary" not in text  # raw, without echo, while the frame passed
