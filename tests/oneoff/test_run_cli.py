"""`slipway run` without a terminal, through the real CLI entry point (#17 item 5, Must show).

The `slipway` console script as a subprocess against the real gateway, with the
scheduler's one-off code on the real Docker engine: input from /dev/null or a pipe
gets a dyno without a TTY, the input's end closes the dyno's stdin, output comes back
byte for byte and the command's exit status is the CLI's.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slipway.services.scheduler.oneoff import OneOffs
from tests.gateway.conftest import Api, Stack
from tests.oneoff.test_oneoff import released_app

pytestmark = [pytest.mark.docker, pytest.mark.integration]

SLIPWAY = Path(sys.executable).parent / "slipway"


async def slipway_run(
    stack: Stack, user: Api, home: Path, *words: str, stdin: bytes | None
) -> tuple[int, bytes, bytes]:
    """`slipway run -a hello WORDS...` with stdin from /dev/null (None) or a pipe."""
    env = {
        **os.environ,
        "SLIPWAY_API_URL": stack.url,
        "SLIPWAY_API_KEY": user.token or "",
        "SLIPWAY_CONFIG_DIR": str(home / "cli"),
        "HOME": str(home),
    }
    process = await asyncio.create_subprocess_exec(
        str(SLIPWAY),
        "run",
        "-a",
        "hello",
        *words,
        stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=home,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=120)
    assert process.returncode is not None
    return process.returncode, out, err


@pytest.fixture
async def alice(stack: Stack, scheduler_oneoffs: OneOffs, image: str) -> Api:
    user = await stack.user("alice@example.com")
    await released_app(stack, user, "hello", image)
    return user


async def test_echo_hi_from_dev_null(stack: Stack, alice: Api, tmp_path: Path) -> None:
    """`slipway run -a hello -- echo hi < /dev/null` prints hi and exits 0."""
    status, out, err = await slipway_run(stack, alice, tmp_path, "--", "echo", "hi", stdin=None)
    assert (status, out) == (0, b"hi\n"), err.decode()


async def test_false_exits_1(stack: Stack, alice: Api, tmp_path: Path) -> None:
    """`slipway run -a hello -- false` exits 1 and prints nothing of its own."""
    status, out, err = await slipway_run(stack, alice, tmp_path, "--", "false", stdin=None)
    assert (status, out) == (1, b""), err.decode()


async def test_piped_stdin_reaches_the_dyno_and_ends(
    stack: Stack, alice: Api, tmp_path: Path
) -> None:
    """`printf ... | slipway run -- wc -l`: the lines arrive, then EOF, so wc ends and counts."""
    status, out, err = await slipway_run(
        stack, alice, tmp_path, "--", "wc", "-l", stdin=b"one\ntwo\nthree\n"
    )
    assert (status, out.strip()) == (0, b"3"), err.decode()


async def test_binary_input_comes_back_byte_for_byte(
    stack: Stack, alice: Api, tmp_path: Path
) -> None:
    """No TTY: `cat` returns every byte unchanged (no CR added, Ctrl-D and NUL are data)."""
    blob = bytes(range(256)) * 512  # 128 KiB, many chunks
    status, out, err = await slipway_run(stack, alice, tmp_path, "--", "cat", stdin=blob)
    assert status == 0, err.decode()
    assert out == blob


async def test_no_tty_flag_and_a_failing_status_with_stderr(
    stack: Stack, alice: Api, tmp_path: Path
) -> None:
    """`--no-tty`: the status of the dyno's command is the CLI's; its stderr comes back too."""
    status, out, err = await slipway_run(
        stack, alice, tmp_path, "--no-tty", "--", "echo to-err >&2; exit 42", stdin=b""
    )
    assert status == 42, err.decode()
    assert out == b"to-err\n"
