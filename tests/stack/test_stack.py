"""The stack images scripts/build-stack makes: what each one has, and what the run stack lacks."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
RUN, BUILD = "slipway/stack-run:bookworm", "slipway/stack-build:bookworm"


def in_image(image: str, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "run", "--rm", "--network", "none", image, "bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_run_stack_has_runtimes_and_no_compilers() -> None:
    """Python and Node.js run; gcc, cc, make and apt's compilers are absent."""
    result = in_image(
        RUN,
        "python3 --version && node --version && "
        "for tool in gcc cc make g++ clang; do command -v $tool && exit 9; done; true",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Python 3." in result.stdout and result.stdout.count("\n") >= 2


def test_both_stacks_run_as_the_dyno_user() -> None:
    """uid 10000, HOME /app: nothing in a dyno or a build runs as root by default."""
    for image in (RUN, BUILD):
        result = in_image(image, 'echo "$(id -u) $HOME $(pwd)"')
        assert result.stdout.strip() == "10000 /app /app", image


def test_build_stack_compiles_and_packages() -> None:
    """The build stack has a C compiler, venv and npm for the buildpacks."""
    result = in_image(
        BUILD,
        "echo 'int main(void){return 0;}' > /tmp/t.c && gcc -o /tmp/t /tmp/t.c && /tmp/t"
        " && python3 -m venv /tmp/v && npm --version && git --version",
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_build_stack_is_a_no_op_when_the_recipe_is_unchanged() -> None:
    """A second run finds the images of this recipe and builds nothing."""
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-stack")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "up to date" in result.stdout
