"""The dyno init's `--pipe` mode (attached one-offs without a TTY), in a real container.

`docker run -i` with the built init as entrypoint, hardened like a dyno: the env frame
and then the client's bytes arrive on one stdin; the command must get the env, exactly
the bytes after the frame, and EOF when stdin closes; its stdout and stderr are the
container's, and its status is the container's.
"""

from __future__ import annotations

import subprocess

import pytest

from slipway.contracts import dynoinit
from slipway.services.scheduler.settings import built_init

pytestmark = [pytest.mark.docker, pytest.mark.integration]

STACK = "slipway/stack-run:bookworm"


def run_piped(script: str, stdin: bytes, *flags: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            "docker",
            "run",
            "-i",
            "--rm",
            "--network",
            "none",
            "--read-only",
            "--user",
            "10000:10000",
            "--cap-drop",
            "ALL",
            "--log-driver",
            "none",
            "--mount",
            f"type=bind,source={built_init()},target={dynoinit.INIT_PATH},readonly",
            "--entrypoint",
            dynoinit.INIT_PATH,
            STACK,
            *flags,
            "--",
            "bash",
            "-c",
            script,
        ],
        input=stdin,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_input_after_the_frame_reaches_the_command_byte_for_byte_then_eof() -> None:
    """The bytes after the frame are the command's stdin, unchanged, ended by EOF."""
    blob = bytes(range(256)) * 64
    frame = dynoinit.encode_env({"GREETING": "hi there"})
    done = run_piped(
        'od -An -v -tx1 | wc -l; echo "g=$GREETING" >&2; exit 9', frame + blob, "--pipe"
    )
    assert done.returncode == 9
    assert done.stdout.strip() == str(len(blob) // 16).encode()
    assert done.stderr == b"g=hi there\n"


def test_a_bad_frame_runs_nothing() -> None:
    """No frame: refused on stderr, status 1, the command never runs."""
    done = run_piped("echo ran", b"not a frame at all", "--pipe")
    assert done.returncode == 1
    assert done.stdout == b""
    assert b"refused the env frame" in done.stderr


def test_tty_and_pipe_together_are_refused() -> None:
    """`--tty --pipe` is a usage error, not a guess."""
    done = run_piped("echo ran", dynoinit.encode_env({}), "--tty", "--pipe")
    assert done.returncode == 2 and done.stdout == b""
