"""The distribution: editable and wheel installs both import every package as `slipway.*`."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AREAS = ("contracts", "libs", "services", "cli")

PROBE = """
import importlib, json, sys
found = {}
for name in sys.argv[1:]:
    module = importlib.import_module(name)
    found[name] = getattr(module, "__file__", None) or list(module.__path__)[0]
print(json.dumps(found))
"""


def package_names() -> list[str]:
    """Every package in the source tree, under its import name."""
    names = []
    for area in AREAS:
        for init in sorted((ROOT / area).rglob("__init__.py")):
            relative = init.parent.relative_to(ROOT / area)
            if "buildpacks" in relative.parts:
                continue
            names.append(".".join(["slipway", area, *relative.parts]))
    return names


def import_all(
    python: str, env: dict[str, str] | None = None, cwd: Path = Path("/")
) -> dict[str, str]:
    result = subprocess.run(
        [python, "-c", PROBE, *package_names()],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def test_editable_install_imports_every_package_from_the_tree() -> None:
    """The project's venv (editable) imports each package from its top-level folder."""
    found = import_all(sys.executable)
    for name, location in found.items():
        area = name.split(".")[1]
        assert Path(location).is_relative_to(ROOT / area), (name, location)


@pytest.mark.slow
def test_wheel_installs_and_imports_every_package(tmp_path: Path) -> None:
    """A built wheel, installed alone, imports each package from site-packages."""
    dist = tmp_path / "dist"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(dist),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    (wheel,) = dist.glob("slipway-*.whl")
    listed = zipfile.ZipFile(wheel).namelist()
    assert "slipway/contracts/subjects.py" in listed
    target = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--target",
            str(target),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    # -S keeps the venv's editable finder out; dependencies come from the venv's
    # site-packages placed after the wheel's target.
    deps = next(p for p in sys.path if p.endswith("site-packages"))
    env = {"PYTHONPATH": f"{target}:{deps}"}
    result = subprocess.run(
        [sys.executable, "-S", "-c", PROBE, *package_names()],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for name, location in json.loads(result.stdout).items():
        assert Path(location).is_relative_to(target), (name, location)
